//! Credentials: the [`Authenticator`]
//! seam that turns a request's API key or JWT into a [`Principal`] bound to
//! exactly one tenant.
//!
//! The layer asks the installed authenticator first. A valid credential's
//! tenant wins over every tenant a header, query or body names (a different
//! one is 403 `tenant_mismatch`); an invalid credential is 401 and never
//! falls back to the weaker sources.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::id::TenantId;
use crate::keys::PlainKey;

/// Who is acting, as proven by a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    tenant_id: TenantId,
    kind: PrincipalKind,
    /// Shared with the authenticator's cached key: no copy per request.
    scopes: Arc<[String]>,
}

/// The kind of credential a principal presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalKind {
    /// An API key, by its id (never its secret).
    ApiKey {
        /// The key's id (`key_…`).
        key_id: String,
    },
    /// A JWT, by its subject.
    Jwt {
        /// The `sub` claim, if any.
        subject: Option<String>,
    },
}

impl Principal {
    /// A principal of `tenant_id`.
    pub fn new(tenant_id: TenantId, kind: PrincipalKind, scopes: impl Into<Arc<[String]>>) -> Self {
        Self {
            tenant_id,
            kind,
            scopes: scopes.into(),
        }
    }

    /// The one tenant this principal may act for.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }

    /// What it presented.
    pub fn kind(&self) -> &PrincipalKind {
        &self.kind
    }

    /// Scopes granted to the credential (empty means unrestricted).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// A short actor label for logs and audit: `key:key_…` or `jwt:sub`.
    pub fn actor(&self) -> String {
        match &self.kind {
            PrincipalKind::ApiKey { key_id } => format!("key:{key_id}"),
            PrincipalKind::Jwt { subject } => {
                format!("jwt:{}", subject.as_deref().unwrap_or("-"))
            }
        }
    }
}

/// A credential as presented, before verification. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Something in the API-key format.
    ApiKey(PlainKey),
    /// A bearer token that is not an API key (a JWT, if valid).
    Bearer(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApiKey(_) => f.write_str("Credential::ApiKey(***)"),
            Self::Bearer(_) => f.write_str("Credential::Bearer(***)"),
        }
    }
}

impl Credential {
    /// Reads the credential of a request: `Authorization: Bearer <token>`
    /// or `x-api-key: <key>`. `Ok(None)` when neither is sent; `Err` when
    /// one is sent but unreadable (or both disagree), which is a 401.
    pub fn from_parts(parts: &Parts) -> Result<Option<Self>, AuthError> {
        let bearer = bearer_token(&parts.headers)?.map(str::to_owned);
        let api_key = match parts.headers.get("x-api-key") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| AuthError::Malformed)?
                    .trim()
                    .to_owned(),
            ),
        };
        let token = match (bearer, api_key) {
            (None, None) => return Ok(None),
            (Some(t), None) | (None, Some(t)) => t,
            (Some(a), Some(b)) if a == b => a,
            (Some(_), Some(_)) => return Err(AuthError::Malformed),
        };
        Ok(Some(match PlainKey::parse(&token) {
            Some(key) => Self::ApiKey(key),
            None => Self::Bearer(token),
        }))
    }
}

/// The token of `Authorization: Bearer <token>`: `Ok(None)` without the
/// header, `Err` when it is present but not a non-empty bearer token. Shared
/// by tenant credentials and any other bearer secret the service checks.
pub fn bearer_token(headers: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token))
}

/// Why a credential was refused. Every variant is a 401 whose text names
/// the problem but never echoes the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The route needs a credential and none was sent.
    #[error("Authentication required: send 'Authorization: Bearer <token>' or 'x-api-key'")]
    Missing,
    /// The header is not `Bearer <token>`, or two different ones were sent.
    #[error("Malformed credential: use 'Authorization: Bearer <token>' or 'x-api-key'")]
    Malformed,
    /// No such key (or it was revoked).
    #[error("Invalid API key")]
    InvalidKey,
    /// The key is past its `expires_at` (or its rotation grace period).
    #[error("API key has expired")]
    ExpiredKey,
    /// The token failed verification; the reason is a fixed phrase such as
    /// `bad signature`, `expired`, `wrong issuer`, `wrong audience`.
    #[error("Invalid token: {0}")]
    InvalidToken(&'static str),
    /// The server cannot verify tokens of this kind (no key configured).
    #[error("Tokens are not accepted by this server")]
    TokensNotAccepted,
}

/// Verifies credentials. The process installs one through
/// [`crate::TenancyLayerBuilder::authenticator`].
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Verifies `credential`; a principal on success.
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().uri("/x");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).expect("request").into_parts().0
    }

    const KEY: &str = "acme_sk_0123456789abcdefghijABCDEFGHIJ0123456789";

    #[test]
    fn reads_bearer_and_x_api_key() {
        let c = Credential::from_parts(&parts(&[("authorization", &format!("Bearer {KEY}"))]))
            .expect("ok")
            .expect("some");
        assert!(matches!(c, Credential::ApiKey(_)));
        let c = Credential::from_parts(&parts(&[("x-api-key", KEY)]))
            .expect("ok")
            .expect("some");
        assert!(matches!(c, Credential::ApiKey(_)));
        let c = Credential::from_parts(&parts(&[("authorization", "bearer a.b.c")]))
            .expect("ok")
            .expect("some");
        assert_eq!(c, Credential::Bearer("a.b.c".into()));
        assert_eq!(format!("{c:?}"), "Credential::Bearer(***)");
        assert_eq!(Credential::from_parts(&parts(&[])), Ok(None));
    }

    #[test]
    fn malformed_headers_are_refused_not_ignored() {
        for h in [
            &[("authorization", "Basic abc")][..],
            &[("authorization", "Bearer ")],
            &[("authorization", "token")],
            &[("authorization", "Bearer a"), ("x-api-key", "b")],
        ] {
            assert_eq!(Credential::from_parts(&parts(h)), Err(AuthError::Malformed));
        }
    }
}
