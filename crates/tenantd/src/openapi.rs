//! `GET /openapi.json`: the description of every route.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::records;
use crate::routes::{RouteFacts, Routes};

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

/// `/openapi.json`.
pub fn routes() -> Routes {
    let document = ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    Routes::new().get("/openapi.json", RouteFacts::public(), move || {
        let document = document.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], document).into_response() }
    })
}
