//! `GET /audit` (the caller's own tenant) and `GET /admin/audit?tenant=`.
//! JSON pages by default; `Accept: application/x-ndjson` streams every
//! matching event, one JSON object per line.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tenancy::{Tenant, TenantId};
use utoipa::{IntoParams, ToSchema};

use super::{AuditEvent, AuditFilter, SYSTEM_CHAIN};
use crate::clock::parse_ms;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::routes::{RouteFacts, Routes, Scope};
use crate::store::Store;
use crate::store::{AdminStore, StoreError, TenantStore};
use crate::tenants::http::Admin;
use crate::tenants::service::TenantAdmin;

/// Default page size.
pub const DEFAULT_LIMIT: u64 = 100;
/// Largest page size.
pub const MAX_LIMIT: u64 = 1_000;
const NDJSON: &str = "application/x-ndjson";

/// `GET /audit` (tenant route).
pub fn tenant_routes() -> Routes {
    Routes::new().get(
        "/audit",
        RouteFacts::tenant(Scope::AuditRead).named("audit.read"),
        tenant_audit,
    )
}

/// `GET /admin/audit`.
pub fn admin_routes() -> Routes {
    Routes::new().get(
        "/admin/audit",
        RouteFacts::admin().named("audit.read"),
        admin_audit,
    )
}

/// Filters and paging.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Exact action (`records.create`, `api_keys.rotate`, …).
    pub action: Option<String>,
    /// Exact actor (`admin`, `key:<id>`, `jwt:<subject>`, `anonymous`).
    pub actor: Option<String>,
    /// From this time (RFC 3339, inclusive).
    pub since: Option<String>,
    /// Until this time (RFC 3339, exclusive).
    pub until: Option<String>,
    /// Page size, 1..=1000 (default 100). Ignored by NDJSON export.
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Query of `GET /admin/audit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AdminAuditQuery {
    /// The tenant whose chain to read; omitted, the system chain (admin
    /// actions on no tenant).
    pub tenant: Option<String>,
    /// Exact action.
    pub action: Option<String>,
    /// Exact actor.
    pub actor: Option<String>,
    /// From (RFC 3339).
    pub since: Option<String>,
    /// Until (RFC 3339).
    pub until: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
    /// Cursor.
    pub cursor: Option<String>,
}

/// A page of events, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Events.
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn time_arg(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            parse_ms(v.trim()).ok_or_else(|| {
                ApiError::Validation(format!(
                    "{name}: expected an RFC 3339 time, e.g. 2026-01-31T12:00:00Z"
                ))
            })
        })
        .transpose()
}

impl AuditQuery {
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::Validation(format!(
                "limit: must be between 1 and {MAX_LIMIT}"
            )));
        }
        let after_seq = match self.cursor.as_deref() {
            None => 0,
            Some(c) => c.trim().parse::<u64>().map_err(|_| {
                ApiError::Validation("cursor: not a cursor from this API".to_owned())
            })?,
        };
        Ok(AuditFilter {
            action: self.action.clone(),
            actor: self.actor.clone(),
            since_ms: time_arg("since", self.since.as_deref())?,
            until_ms: time_arg("until", self.until.as_deref())?,
            after_seq,
            limit,
        })
    }
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)))
}

/// Where events are read from: a tenant's own scope, or the admin path.
#[derive(Clone)]
enum Source {
    Tenant(TenantStore),
    Admin(AdminStore, String),
}

impl Source {
    /// A page of events, their params redacted again on the way out:
    /// events are redacted when written, but one written before a rule
    /// was added (or imported from a dump) must not show what the rule
    /// now hides. Redaction is idempotent, so a current event is shown as
    /// stored and its hash still verifies.
    async fn page(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = match self {
            Self::Tenant(store) => store.audit_events(filter).await?,
            Self::Admin(store, chain) => store.audit().list_events(chain, filter).await?,
        };
        for event in &mut events {
            crate::redact::json(&mut event.params);
        }
        Ok(events)
    }
}

async fn respond(source: Source, filter: AuditFilter, ndjson: bool) -> Result<Response, ApiError> {
    if !ndjson {
        let events = source.page(&filter).await?;
        let next_cursor = (u64::try_from(events.len()).unwrap_or(u64::MAX) == filter.limit)
            .then(|| events.last().map(|e| e.seq.to_string()))
            .flatten();
        return Ok(Json(AuditPage {
            events,
            next_cursor,
        })
        .into_response());
    }
    // Export: every matching event, fetched a page at a time while the
    // body streams, so memory stays flat whatever the chain's length. The
    // first page is read before answering, so a dead store is a clean 503.
    let mut filter = filter;
    filter.limit = MAX_LIMIT;
    let first = source.page(&filter).await?;
    let stream = futures_util::stream::unfold(
        (source, filter, Some(first)),
        |(source, mut filter, page)| async move {
            let page = match page {
                Some(page) => page,
                None => match source.page(&filter).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::error!(error = %e, "audit export stopped: storage failed");
                        return None;
                    }
                },
            };
            let last = page.last()?.seq;
            filter.after_seq = last;
            let mut chunk = Vec::with_capacity(page.len() * 512);
            for event in &page {
                // Serialising a plain struct of strings and numbers cannot
                // fail; an error would only drop that line.
                if serde_json::to_writer(&mut chunk, event).is_ok() {
                    chunk.push(b'\n');
                }
            }
            Some((Ok::<_, std::io::Error>(chunk), (source, filter, None)))
        },
    );
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// The caller's audit log.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, description = "Events (JSON page, or NDJSON with Accept: application/x-ndjson)", body = AuditPage),
              (status = 422, description = "Bad filter", body = ErrorBody)))]
pub(crate) async fn tenant_audit(
    State(store): State<Store>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    respond(
        Source::Tenant(store.scoped(&tenant)),
        filter,
        wants_ndjson(&headers),
    )
    .await
}

/// Any tenant's audit log (or the system chain).
#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(AdminAuditQuery),
    responses((status = 200, description = "Events", body = AuditPage),
              (status = 422, description = "Bad filter", body = ErrorBody)))]
pub(crate) async fn admin_audit(
    _: Admin,
    State(admin): State<TenantAdmin>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<AdminAuditQuery>,
) -> Result<Response, ApiError> {
    let chain = match query.tenant.as_deref() {
        None => SYSTEM_CHAIN.to_owned(),
        Some(t) => TenantId::new(t)
            .map_err(|e| ApiError::Validation(format!("tenant: {e}")))?
            .as_str()
            .to_owned(),
    };
    let filter = AuditQuery {
        action: query.action,
        actor: query.actor,
        since: query.since,
        until: query.until,
        limit: query.limit,
        cursor: query.cursor,
    }
    .filter()?;
    respond(
        Source::Admin(admin.store().clone(), chain),
        filter,
        wants_ndjson(&headers),
    )
    .await
}
