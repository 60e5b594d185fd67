//! [`TenancyError`]: every way tenant resolution can refuse a request, and
//! its HTTP form (DESIGN.md section 3).

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::auth::AuthError;
use crate::id::TENANT_ID_RULE;
use crate::resolve::TenantSource;

/// A refusal from tenant resolution or policy.
///
/// Each variant maps to one status and one machine `code`; the `detail` texts
/// keep seed 000's wording where it exists. None of them echo a raw input
/// value except a tenant id that has already been validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenancyError {
    /// Multi-tenancy is on, the tenant is required and no source named one.
    #[error("Tenant ID required. Use header '{header}' or query parameter 'tenant_id'")]
    Required {
        /// The configured tenant header name, as the client must send it.
        header: String,
    },
    /// A source named a tenant that does not match the id format.
    #[error("Invalid tenant id from the {from}: {TENANT_ID_RULE}")]
    InvalidTenantId {
        /// Where the bad value came from.
        from: TenantSource,
    },
    /// Two sources named different tenants.
    #[error("{}", conflict_detail(*first, *second))]
    Conflict {
        /// The source that was read first.
        first: TenantSource,
        /// The source that disagreed with it.
        second: TenantSource,
    },
    /// The tenant is not in `allowed_tenants`. The list itself is not
    /// disclosed: it would tell an outsider which customers exist.
    #[error("Tenant '{tenant}' not authorized")]
    NotAllowed {
        /// The (valid) tenant id that was refused.
        tenant: String,
    },
    /// The request carried a credential for one tenant and named another.
    #[error("The credential belongs to another tenant than the one requested")]
    Mismatch,
    /// A credential was required, malformed, or did not verify.
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    /// The registry does not know the tenant.
    #[error("Tenant '{tenant}' not found")]
    UnknownTenant {
        /// The (valid) tenant id.
        tenant: String,
    },
    /// The tenant exists but is suspended.
    #[error("Tenant '{tenant}' is suspended")]
    Suspended {
        /// The (valid) tenant id.
        tenant: String,
    },
    /// The client's address is outside the tenant's `allowed_ips`.
    #[error("This address is not allowed to act for tenant '{tenant}'")]
    IpNotAllowed {
        /// The (valid) tenant id.
        tenant: String,
    },
    /// The `X-Forwarded-For` chain written by trusted proxies has an entry
    /// that is not an address: the client cannot be told from the proxy.
    #[error("Unreadable X-Forwarded-For: every entry a trusted proxy added must be an IP address")]
    InvalidForwardedFor,
    /// The tenancy layer was not installed in front of a handler that asked
    /// for a tenant: a wiring bug in the service, not a client error.
    #[error("tenant resolution is not configured for this route")]
    NotConfigured,
}

fn conflict_detail(first: TenantSource, second: TenantSource) -> String {
    if first == second {
        format!("Conflicting tenant ids: the {first} is given twice with different tenants")
    } else {
        format!("Conflicting tenant ids: the {first} and the {second} name different tenants")
    }
}

impl TenancyError {
    /// The HTTP status this refusal is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Required { .. }
            | Self::InvalidTenantId { .. }
            | Self::Conflict { .. }
            | Self::InvalidForwardedFor => StatusCode::BAD_REQUEST,
            Self::NotAllowed { .. }
            | Self::Mismatch
            | Self::Suspended { .. }
            | Self::IpNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::UnknownTenant { .. } => StatusCode::NOT_FOUND,
            Self::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Required { .. } => "tenant_required",
            Self::InvalidTenantId { .. } => "invalid_tenant_id",
            Self::Conflict { .. } => "tenant_conflict",
            Self::NotAllowed { .. } => "tenant_not_allowed",
            Self::Mismatch => "tenant_mismatch",
            Self::Unauthorized(_) => "unauthorized",
            Self::UnknownTenant { .. } => "tenant_not_found",
            Self::Suspended { .. } => "tenant_suspended",
            Self::IpNotAllowed { .. } => "ip_not_allowed",
            Self::InvalidForwardedFor => "invalid_forwarded_for",
            Self::NotConfigured => "internal",
        }
    }
}

/// The `code` of an error response, as a response extension, so outer
/// middleware (metrics, audit) can classify errors without parsing bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub String);

/// Builds the `{"detail": ..., "code": ...}` body every tenantd error uses
/// (and sets [`ErrorCode`]).
pub fn error_response(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({ "detail": detail, "code": code }).to_string();
    let mut response = (status, body).into_response();
    response.extensions_mut().insert(ErrorCode(code.to_owned()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl IntoResponse for TenancyError {
    fn into_response(self) -> Response {
        if matches!(self, Self::NotConfigured) {
            tracing::error!("a handler asked for a tenant but no TenancyLayer is installed");
        }
        let mut response = error_response(self.status(), self.code(), &self.to_string());
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
