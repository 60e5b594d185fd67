//! Tokens from a tenant's own OIDC issuer (RS256/ES256), verified against
//! the issuer's JWKS (found through its discovery document, cached, and
//! fetched again when stale or when a token names an unknown key id).
//!
//! The issuer decides the tenant: a token from tenant A's issuer whose
//! tenant claim names B is refused, and its `aud` must be A's client id.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tenancy::{AuthError, Principal};
use tokio::sync::Mutex;

use super::jwt::{principal_from_claims, reason};
use crate::tenants::registry::Registry;

/// A token from a key id we do not know triggers a refetch at most this
/// often per issuer (a flood of forged kids cannot hammer the issuer).
const REFETCH_AFTER: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

struct Cached {
    keys: Arc<JwkSet>,
    fetched: Instant,
}

/// Verifies tokens of registered OIDC issuers.
pub struct OidcVerifier {
    registry: Arc<Registry>,
    client: reqwest::Client,
    cache: Mutex<HashMap<String, Cached>>,
    ttl: Duration,
    leeway: u64,
    tenant_claim: String,
}

/// The unverified `iss` of a token: only used to pick the keys that will
/// verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

impl OidcVerifier {
    /// A verifier over the registry's issuers.
    pub fn new(registry: Arc<Registry>, ttl: Duration, leeway: u64, tenant_claim: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            registry,
            client,
            cache: Mutex::new(HashMap::new()),
            ttl,
            leeway,
            tenant_claim,
        }
    }

    /// Whether `issuer` belongs to a registered tenant.
    pub fn knows(&self, issuer: &str) -> bool {
        self.registry.issuer(issuer).is_some()
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, reqwest::Error> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc: Value = self
            .client
            .get(discovery)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        self.client
            .get(jwks_uri)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// The issuer's keys, fetched if stale (or, with `want_kid` missing
    /// from them, if the last fetch is older than [`REFETCH_AFTER`]).
    async fn keys(&self, issuer: &str, want_kid: Option<&str>) -> Result<Arc<JwkSet>, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.get(issuer) {
            let fresh = c.fetched.elapsed() < self.ttl;
            let has_kid = want_kid.is_none_or(|k| c.keys.find(k).is_some());
            if fresh && (has_kid || c.fetched.elapsed() < REFETCH_AFTER) {
                return Ok(c.keys.clone());
            }
        }
        match self.fetch(issuer).await {
            Ok(set) => {
                let keys = Arc::new(set);
                cache.insert(
                    issuer.to_owned(),
                    Cached {
                        keys: keys.clone(),
                        fetched: Instant::now(),
                    },
                );
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(issuer, error = %e, "fetching the issuer's JWKS failed");
                // A stale set is better than none while the issuer is down.
                cache
                    .get(issuer)
                    .map(|c| c.keys.clone())
                    .ok_or(AuthError::InvalidToken("issuer keys unavailable"))
            }
        }
    }

    /// Verifies a token of a registered issuer.
    pub async fn verify(&self, token: &str, issuer: &str) -> Result<Principal, AuthError> {
        let (tenant, client_id) = self
            .registry
            .issuer(issuer)
            .ok_or(AuthError::InvalidToken("wrong issuer"))?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(reason(e.kind())))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::InvalidToken("algorithm not accepted"));
        }
        let keys = self.keys(issuer, header.kid.as_deref()).await?;
        let jwk = match header.kid.as_deref() {
            Some(kid) => keys.find(kid),
            None => keys.keys.first(),
        }
        .ok_or(AuthError::InvalidToken("unknown signing key"))?;
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|_| AuthError::InvalidToken("unusable signing key"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[&client_id]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| AuthError::InvalidToken(reason(e.kind())))?;
        let mut claims = data.claims;
        let Some(map) = claims.as_object_mut() else {
            return Err(AuthError::InvalidToken("malformed"));
        };
        // The issuer's tenant decides; a claim may only agree with it.
        match map.get(&self.tenant_claim) {
            None => {
                map.insert(self.tenant_claim.clone(), Value::String(tenant.to_string()));
            }
            Some(named) if named.as_str() == Some(tenant.as_str()) => {}
            Some(_) => {
                return Err(AuthError::InvalidToken(
                    "tenant claim does not match issuer",
                ));
            }
        }
        principal_from_claims(&claims, &self.tenant_claim)
    }
}
