//! `GET /openapi.json`: the description of every route.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::records;
use serde_json::json;

use crate::routes::{Access, RouteFacts, RouteTable, Routes, Scope};

/// The OpenAPI document, assembled from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(title = "tenantd", description = "Multi-tenant records and jobs API"),
    paths(
        crate::health::health,
        crate::health::ready,
        crate::health::tenants,
        crate::tenants::http::move_tenant,
        records::http::create_record,
        records::http::list_records,
        records::http::get_record,
        records::http::replace_record,
        records::http::delete_record,
        records::http::search_records,
        crate::jobs::http::submit,
        crate::jobs::http::list,
        crate::jobs::http::status,
        crate::jobs::http::cancel,
        crate::tenants::http::create_tenant,
        crate::tenants::http::list_tenants,
        crate::tenants::http::get_tenant,
        crate::tenants::http::update_tenant,
        crate::tenants::http::delete_tenant,
        crate::keys::http::issue_key,
        crate::keys::http::list_keys,
        crate::keys::http::revoke_key,
        crate::keys::http::rotate_key,
        crate::limits::http::me,
        crate::usage::http::usage,
        crate::usage::http::metrics,
        crate::billing::http::close,
        crate::billing::http::events,
        crate::audit::http::tenant_audit,
        crate::audit::http::admin_audit,
    ),
    components(schemas(
        ErrorBody,
        records::Record,
        records::RecordInput,
        records::SearchRequest,
        records::SearchPage,
        records::SearchHit,
        crate::jobs::Job,
        crate::jobs::JobPage,
        crate::jobs::JobStatus,
        crate::jobs::SubmitInput,
        crate::tenants::Tenant,
        crate::tenants::model::CreateTenant,
        crate::tenants::model::PatchTenant,
        crate::tenants::http::CreatedTenant,
        crate::tenants::http::DeletedTenant,
        crate::tenants::http::TenantWithUsage,
        crate::tenants::http::TenantUsage,
        crate::tenants::service::TenantPage,
        crate::tenants::moves::MoveTenant,
        crate::tenants::moves::MoveReport,
        crate::tenants::moves::Tier,
        crate::health::TenantStorageHealth,
        crate::health::TenantStorageHealthPage,
        crate::keys::ApiKeyInfo,
        crate::keys::IssueKey,
        crate::keys::IssuedKey,
        crate::keys::RotateKey,
        crate::limits::http::TenantSelf,
        crate::limits::http::QuotaReport,
        crate::limits::http::QuotaUse,
        crate::limits::http::WindowView,
        crate::usage::report::UsageReport,
        crate::usage::report::ApiCalls,
        crate::usage::report::Cost,
        crate::usage::report::CostLine,
        crate::usage::report::MetricsReport,
        crate::usage::report::DayMetrics,
        crate::usage::report::RequestTotals,
        crate::usage::report::Latency,
        crate::billing::CloseReport,
        crate::billing::BillingEvent,
        crate::billing::EventStatus,
        crate::audit::http::AuditPage,
        crate::audit::AuditEvent,
    ))
)]
pub struct ApiDoc;

/// The document with each operation's facts from the route table: its
/// audit action (`x-audit-action`, and `x-audited`), a tenant route the
/// scope a restricted key needs (`x-required-scope`, and an `apiKey`
/// security requirement) and the usage counter it adds to
/// (`x-usage-class`), an operator route the admin key. The facts are read from the table, so the
/// document cannot disagree with what the server enforces.
pub fn document(table: &RouteTable) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    for (method, path, facts) in table.iter() {
        let method = method.as_str().to_ascii_lowercase();
        let Some(operation) = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}",
                path.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(serde_json::Value::as_object_mut)
        else {
            continue;
        };
        operation.insert("x-audit-action".into(), facts.action.into());
        operation.insert("x-audited".into(), facts.audited().into());
        match facts.access {
            Access::Tenant(scope) => {
                operation.insert("x-usage-class".into(), facts.usage.as_str().into());
                operation.insert("x-required-scope".into(), scope.as_str().into());
                operation.insert(
                    "security".into(),
                    json!([{"api_key": [scope.as_str()]}, {"bearer": [scope.as_str()]}, {}]),
                );
            }
            Access::Admin => {
                operation.insert("security".into(), json!([{"admin_key": []}]));
            }
            Access::Public => {}
        }
    }
    if let Some(root) = doc.as_object_mut() {
        let components = root
            .entry("components")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(components) = components {
            components.insert(
                "securitySchemes".into(),
                json!({
                    "api_key": {"type": "apiKey", "in": "header", "name": "x-api-key",
                        "description": format!("A tenant API key. A key with scopes may call only the routes whose scope it holds ({}); `<resource>:write` includes `<resource>:read`; a key without scopes is unrestricted.", Scope::vocabulary())},
                    "bearer": {"type": "http", "scheme": "bearer",
                        "description": "A tenant API key or a JWT of the tenant's identity provider (held to the tenantd scopes in its `scope` claim, if it carries any)."},
                    "admin_key": {"type": "http", "scheme": "bearer",
                        "description": "The operator's admin key (also accepted as `x-admin-key`)."}
                }),
            );
        }
    }
    doc
}

/// `/openapi.json`, described from `table` (every route's facts).
pub fn routes(table: &RouteTable) -> Routes {
    let document = document(table).to_string();
    Routes::new().get(
        "/openapi.json",
        RouteFacts::public().named("openapi.read"),
        move || {
            let document = document.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], document).into_response() }
        },
    )
}
