//! Tokens from a tenant's own OIDC issuer (RS256/ES256), verified against
//! the issuer's JWKS ([`cache`]: found through its discovery document,
//! cached per issuer, fetched again when stale or when a token names an
//! unknown key id).
//!
//! The binding decides the tenant (tenants::oidc): the token's `iss` and
//! one of its `aud` values must be a pair that exactly one tenant binds. A
//! token that also carries the tenant claim (`auth.jwt.tenant_claim`) must
//! name that same tenant, else it is refused (401 `Invalid token: tenant
//! claim does not match issuer`): the claim may confirm the binding, never
//! redirect it. All of this is decided from the token's unverified claims
//! before any key is fetched (so a token no tenant could accept costs no
//! network call) and checked again on the verified claims.

mod cache;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tenancy::{AuthError, Principal};

use self::cache::JwksCache;
use super::jwt::{check_times, principal_from_claims, reason};
use crate::clock::Clock;
use crate::config::JwtConfig;
use crate::tenants::oidc::{Binding, Lookup};
use crate::tenants::registry::Registry;

/// Audiences of one token looked at (a token listing more is refused).
const MAX_AUDIENCES: usize = 16;

/// Verifies tokens of registered OIDC issuers.
pub struct OidcVerifier {
    registry: Arc<Registry>,
    keys: JwksCache,
    leeway: u64,
    tenant_claim: String,
    /// `exp` and `nbf` are checked against it too (see [`super::jwt`]).
    clock: Clock,
}

/// The unverified claims of a token: only used to pick the binding and
/// keys that will verify it.
fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// The unverified `iss` of a token: only used to pick the keys that will
/// verify it.
pub fn unverified_issuer(token: &str) -> Option<String> {
    unverified_claims(token)?
        .get("iss")?
        .as_str()
        .map(str::to_owned)
}

impl OidcVerifier {
    /// A verifier over the registry's bindings, with `config`'s leeway,
    /// tenant claim and JWKS cache settings, checking times against `clock`.
    pub fn from_config(registry: Arc<Registry>, config: &JwtConfig, clock: Clock) -> Self {
        Self {
            registry,
            keys: JwksCache::new(
                Duration::from_secs(config.jwks_ttl_secs),
                Duration::from_millis(config.jwks_timeout_ms),
                Duration::from_secs(config.jwks_failure_ttl_secs),
            ),
            leeway: config.leeway_secs,
            tenant_claim: config.tenant_claim.clone(),
            clock,
        }
    }

    /// Whether `issuer` is bound by a registered tenant.
    pub fn knows(&self, issuer: &str) -> bool {
        self.registry.knows_issuer(issuer)
    }

    /// The one binding a token of `issuer` with `claims` can belong to.
    fn binding(&self, issuer: &str, claims: &Map<String, Value>) -> Result<Binding, AuthError> {
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => return Err(AuthError::InvalidToken("missing required claim")),
        };
        if audiences.len() > MAX_AUDIENCES {
            return Err(AuthError::InvalidToken("wrong audience"));
        }
        let mut found: Vec<Binding> = Vec::new();
        for audience in audiences {
            match self.registry.oidc_binding(issuer, audience) {
                Lookup::Unbound => {}
                Lookup::Ambiguous => {
                    return Err(AuthError::InvalidToken(
                        "issuer and audience bound to more than one tenant",
                    ));
                }
                Lookup::Bound(b) => {
                    if !found.iter().any(|f| f.tenant == b.tenant) {
                        found.push(b);
                    }
                }
            }
        }
        if found.is_empty() {
            return Err(AuthError::InvalidToken("wrong audience"));
        }
        if let Some(named) = claims.get(&self.tenant_claim) {
            found.retain(|b| named.as_str() == Some(b.tenant.as_str()));
            if found.is_empty() {
                return Err(AuthError::InvalidToken(
                    "tenant claim does not match issuer",
                ));
            }
        }
        match <[Binding; 1]>::try_from(found) {
            Ok([one]) => Ok(one),
            // Audiences of several tenants and no claim choosing one.
            Err(_) => Err(AuthError::InvalidToken("audiences of more than one tenant")),
        }
    }

    /// Verifies a token of a registered issuer.
    pub async fn verify(&self, token: &str, issuer: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(reason(e.kind())))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::InvalidToken("algorithm not accepted"));
        }
        let unverified = unverified_claims(token).ok_or(AuthError::InvalidToken("malformed"))?;
        let binding = self.binding(issuer, &unverified)?;
        let keys = self
            .keys
            .keys(&binding.issuer, header.kid.as_deref())
            .await?;
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
        validation.set_issuer(&[&binding.issuer]);
        validation.set_audience(&[&binding.client_id]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| AuthError::InvalidToken(reason(e.kind())))?;
        check_times(&data.claims, &self.clock, self.leeway)?;
        let mut claims = data.claims;
        let Some(map) = claims.as_object_mut() else {
            return Err(AuthError::InvalidToken("malformed"));
        };
        // The binding's tenant decides; a claim may only agree with it.
        let tenant = binding.tenant.as_str();
        match map.get(&self.tenant_claim) {
            None => {
                map.insert(self.tenant_claim.clone(), Value::String(tenant.to_owned()));
            }
            Some(named) if named.as_str() == Some(tenant) => {}
            Some(_) => {
                return Err(AuthError::InvalidToken(
                    "tenant claim does not match issuer",
                ));
            }
        }
        principal_from_claims(&claims, &self.tenant_claim)
    }
}
