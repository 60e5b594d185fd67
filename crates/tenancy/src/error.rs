//! [`TenancyError`]: every way tenant resolution can refuse a request, and
//! its default HTTP form, `{"detail": "...", "code": "..."}` (a service
//! can answer differently with
//! [`crate::TenancyLayerBuilder::on_refusal`]).

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::auth::AuthError;
use crate::id::TENANT_ID_RULE;
use crate::resolve::TenantSource;

/// A refusal from tenant resolution or policy.
///
/// Each variant maps to one status and one machine `code`. None of the
/// texts echo a raw input value except a tenant id that has already been
/// validated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TenancyError {
    /// The policy requires a tenant and no source named one.
    #[error("{}", required_detail(hint))]
    Required {
        /// Where the client should name it, from the installed resolver
        /// ("header 'X-Tenant-ID' or query parameter 'tenant_id'"); empty
        /// when the resolver does not say.
        hint: String,
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
    /// The [`crate::TenantDirectory`] does not know the tenant.
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
    /// A body read for its tenant is over the layer's limit
    /// ([`crate::TenancyLayerBuilder::body_limit`]).
    #[error("Request body is larger than the configured limit")]
    BodyTooLarge,
    /// A body read for its tenant could not be read to its end.
    #[error("The request body could not be read")]
    UnreadableBody,
    /// The tenancy layer was not installed in front of a handler that asked
    /// for a tenant: a wiring bug in the service, not a client error.
    #[error("tenant resolution is not configured for this route")]
    NotConfigured,
    /// A JSON body named a tenant on a route the layer was not told reads
    /// one ([`crate::TenancyLayerBuilder::body_tenant_routes`]): the tenant
    /// was decided without it, so serving the request would ignore the
    /// tenant the body asked for. A wiring bug, not a client error.
    #[error("a body named a tenant on a route not declared to take a body tenant")]
    BodyTenantNotDeclared,
}

fn required_detail(hint: &str) -> String {
    if hint.is_empty() {
        "Tenant ID required".to_owned()
    } else {
        format!("Tenant ID required. Use {hint}")
    }
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
            | Self::InvalidForwardedFor
            | Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::NotAllowed { .. }
            | Self::Mismatch
            | Self::Suspended { .. }
            | Self::IpNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::UnknownTenant { .. } => StatusCode::NOT_FOUND,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotConfigured | Self::BodyTenantNotDeclared => StatusCode::INTERNAL_SERVER_ERROR,
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
            Self::BodyTooLarge => "payload_too_large",
            Self::UnreadableBody => "bad_request",
            Self::NotConfigured | Self::BodyTenantNotDeclared => "internal",
        }
    }
}

/// The `code` of an error response, as a response extension, so outer
/// middleware (metrics, audit) can classify errors without parsing bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorCode(pub String);

/// Builds the `{"detail": ..., "code": ...}` JSON error (and sets
/// [`ErrorCode`]): the layer's default refusal, there for a service to
/// answer its own errors in the same shape.
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
    /// The JSON error; a 500 (a wiring bug) is logged with its cause and
    /// answered without it.
    fn into_response(self) -> Response {
        let detail = if self.status().is_server_error() {
            tracing::error!(cause = %self, "tenant resolution is miswired");
            "Internal server error".to_owned()
        } else {
            self.to_string()
        };
        let mut response = error_response(self.status(), self.code(), &detail);
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
