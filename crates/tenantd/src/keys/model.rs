//! API key metadata: what the admin API shows (never the secret or its
//! hash) and what issuing takes.

use serde::{Deserialize, Serialize};
use tenancy::TenantId;
use utoipa::ToSchema;

use crate::tenants::model::Limits;

/// A key as listed: id, name, a non-secret prefix and times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// `key_…`.
    pub id: String,
    /// The owning tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Operator's label.
    pub name: String,
    /// First characters of the key, to recognise it (`acme_sk_Ab12Cd…`).
    pub prefix: String,
    /// Scopes (empty = unrestricted).
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// When it stops (stopped) working because it was revoked or rotated.
    pub revoked_at: Option<String>,
    /// Last use, updated in batches (may lag by the flush interval).
    pub last_used_at: Option<String>,
    /// The key's own rate limits, inside its tenant's (omitted: none).
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

/// Body of `POST /admin/tenants/{id}/api-keys`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueKey {
    /// Label (default `default`).
    #[serde(default)]
    pub name: Option<String>,
    /// RFC 3339 expiry (must be in the future).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The key's own rate limits (a budget inside the tenant's).
    #[serde(default)]
    pub limits: Limits,
}

/// Body of `POST /admin/tenants/{id}/api-keys/{key_id}/rotate`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the old key keeps working (default 0: stops now).
    #[serde(default)]
    pub grace_seconds: u64,
}

/// A newly issued key: the only response that ever holds the secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedKey {
    /// Metadata, as listings show it.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key. Store it now: it cannot be shown again.
    pub key: String,
}

/// A key row for the registry cache: what authentication needs.
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// Owner.
    pub tenant_id: TenantId,
    /// Id.
    pub id: String,
    /// HMAC of the key.
    pub hash: tenancy::KeyHash,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Unix ms of expiry.
    pub expires_ms: Option<i64>,
    /// Unix ms from which it is revoked.
    pub revoked_ms: Option<i64>,
    /// The key's own rate limits.
    pub limits: Limits,
}

/// Validated issue parameters.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Label.
    pub name: String,
    /// Expiry (RFC 3339, normalised).
    pub expires_at: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The key's own rate limits.
    pub limits: Limits,
}

impl IssueKey {
    /// Validates into a [`NewKey`] at `now_ms` (an expiry must be later);
    /// `Err` names the field.
    pub fn validate(self, now_ms: i64) -> Result<NewKey, String> {
        let name = self.name.unwrap_or_else(|| "default".to_owned());
        let name = name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err("name: 1 to 100 characters".to_owned());
        }
        let expires_at = match self.expires_at {
            None => None,
            Some(text) => {
                let at = time::OffsetDateTime::parse(
                    text.trim(),
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| "expires_at: not an RFC 3339 time".to_owned())?;
                if at.unix_timestamp_nanos() / 1_000_000 <= i128::from(now_ms) {
                    return Err("expires_at: must be in the future".to_owned());
                }
                Some(crate::clock::rfc3339(at))
            }
        };
        if self.scopes.len() > 32 {
            return Err("scopes: at most 32".to_owned());
        }
        for scope in &self.scopes {
            if crate::routes::Scope::parse(scope).is_none() {
                return Err(format!(
                    "scopes: '{}' is not a scope; use {}",
                    crate::error::truncate_for_echo(scope),
                    crate::routes::Scope::vocabulary()
                ));
            }
        }
        Ok(NewKey {
            name,
            expires_at,
            scopes: self.scopes,
            limits: self.limits,
        })
    }
}

/// A fresh key id.
pub fn new_key_id() -> String {
    format!("key_{}", ulid::Ulid::new())
}
