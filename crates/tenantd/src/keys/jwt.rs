//! JWT bearer tokens with a `tenant_id` claim in the payload, verified with
//! HS256 against the configured shared secret: signature, `exp`
//! (required), `nbf`, and `iss` / `aud` when configured.
//!
//! `exp` and `nbf` are checked twice, each time with the configured
//! leeway: by jsonwebtoken against the system clock, then by
//! [`check_times`] against the injected [`Clock`]. The library's own check
//! cannot be pointed at another clock, and turning it off would leave the
//! claims' format checks (an `exp` that is not a number) to us as well;
//! keeping both means a token is accepted only when both clocks agree it
//! is valid, so an injected clock can expire tokens early (tests move it
//! forward) but never revive an expired one. In production both are the
//! system clock and the second check costs two comparisons.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tenancy::{AuthError, Principal, PrincipalKind, TenantId};

use crate::clock::Clock;
use crate::config::JwtConfig;

/// Verifies HS256 tokens.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
    clock: Clock,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `config` checking times against `clock` (see the
    /// module docs), or `None` when no HS256 secret is set.
    pub fn from_config(config: &JwtConfig, clock: Clock) -> Option<Self> {
        let secret = config.hs256_secret.as_ref()?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Some(Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            tenant_claim: config.tenant_claim.clone(),
            clock,
        })
    }

    /// Verifies `token`; the principal of its tenant claim.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::InvalidToken(reason(e.kind())))?;
        check_times(&data.claims, &self.clock, self.validation.leeway)?;
        principal_from_claims(&data.claims, &self.tenant_claim)
    }
}

/// Checks `exp` and `nbf` of claims jsonwebtoken has verified (so each is
/// absent or a whole number of seconds) against `clock`, with `leeway`
/// seconds, as jsonwebtoken does against the system clock.
pub fn check_times(claims: &Value, clock: &Clock, leeway: u64) -> Result<(), AuthError> {
    let now = u64::try_from(clock.now_ms() / 1_000).unwrap_or(0);
    let claim = |name: &str| claims.get(name).and_then(Value::as_u64);
    if claim("exp").is_some_and(|exp| exp < now.saturating_sub(leeway)) {
        return Err(AuthError::InvalidToken(reason(
            &ErrorKind::ExpiredSignature,
        )));
    }
    if claim("nbf").is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(AuthError::InvalidToken(reason(
            &ErrorKind::ImmatureSignature,
        )));
    }
    Ok(())
}

/// Reads the tenant and subject out of verified claims.
pub fn principal_from_claims(claims: &Value, tenant_claim: &str) -> Result<Principal, AuthError> {
    let tenant = claims
        .get(tenant_claim)
        .and_then(Value::as_str)
        .ok_or(AuthError::InvalidToken("no tenant claim"))?;
    let tenant = TenantId::new(tenant.trim())
        .map_err(|_| AuthError::InvalidToken("invalid tenant claim"))?;
    let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
    // `scope` (RFC 8693: space-separated) or `scp` (an array in some
    // providers' tokens); either form under either name.
    let scopes: Vec<String> = ["scope", "scp"]
        .iter()
        .filter_map(|name| claims.get(*name))
        .flat_map(|value| match value {
            Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    Ok(Principal::new(
        tenant,
        PrincipalKind::Jwt { subject },
        scopes,
    ))
}

/// A fixed phrase per failure (never the token or its contents).
pub fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_config(
            &JwtConfig {
                hs256_secret: Some(SECRET.into()),
                issuer: Some("https://issuer.test".into()),
                audience: Some("tenantd".into()),
                ..JwtConfig::default()
            },
            Clock::system(),
        )
        .expect("configured")
    }

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode")
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn verifies_and_reads_the_tenant() {
        let t = token(
            json!({"tenant_id": "acme", "sub": "u1", "iss": "https://issuer.test",
                   "aud": "tenantd", "exp": now() + 60}),
            SECRET,
        );
        let p = verifier().verify(&t).expect("valid");
        assert_eq!(p.tenant_id().as_str(), "acme");
        assert_eq!(p.actor(), "jwt:u1");
    }

    #[test]
    fn refuses_each_defect_with_its_reason() {
        let base = json!({"tenant_id": "acme", "iss": "https://issuer.test",
                          "aud": "tenantd", "exp": now() + 60});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        let cases = [
            (
                token(base.clone(), "another-secret-another-secret-xx"),
                "bad signature",
            ),
            (token(with("exp", json!(now() - 3600)), SECRET), "expired"),
            (
                token(with("nbf", json!(now() + 3600)), SECRET),
                "not yet valid",
            ),
            (
                token(with("iss", json!("https://evil.test")), SECRET),
                "wrong issuer",
            ),
            (token(with("aud", json!("other")), SECRET), "wrong audience"),
            (
                token(with("tenant_id", json!("bad id!")), SECRET),
                "invalid tenant claim",
            ),
            ("not-a-token".to_owned(), "malformed"),
        ];
        for (t, why) in cases {
            assert_eq!(verifier().verify(&t), Err(AuthError::InvalidToken(why)));
        }
        let mut no_exp = base.clone();
        no_exp.as_object_mut().expect("object").remove("exp");
        assert_eq!(
            verifier().verify(&token(no_exp, SECRET)),
            Err(AuthError::InvalidToken("missing required claim"))
        );
    }

    #[test]
    fn times_are_checked_against_the_injected_clock_too() {
        let manual = std::sync::Arc::new(tenancy::ratelimit::ManualClock::new(
            u64::try_from(now() * 1000).expect("after 1970"),
        ));
        let verifier = JwtVerifier::from_config(
            &JwtConfig {
                hs256_secret: Some(SECRET.into()),
                leeway_secs: 30,
                ..JwtConfig::default()
            },
            Clock::new(manual.clone()),
        )
        .expect("configured");
        let t = token(
            json!({"tenant_id": "acme", "exp": now() + 60, "nbf": now()}),
            SECRET,
        );
        assert!(verifier.verify(&t).is_ok());
        // Within the leeway past `exp` on the injected clock: still valid.
        manual.advance(std::time::Duration::from_secs(80));
        assert!(verifier.verify(&t).is_ok());
        manual.advance(std::time::Duration::from_secs(20));
        assert_eq!(verifier.verify(&t), Err(AuthError::InvalidToken("expired")));
        // An injected clock behind `nbf` refuses too; one behind `exp`
        // never revives a token the system clock calls expired.
        manual.set(u64::try_from((now() - 3600) * 1000).expect("after 1970"));
        assert_eq!(
            verifier.verify(&t),
            Err(AuthError::InvalidToken("not yet valid"))
        );
        let expired = token(json!({"tenant_id": "acme", "exp": now() - 3600}), SECRET);
        assert_eq!(
            verifier.verify(&expired),
            Err(AuthError::InvalidToken("expired"))
        );
    }
}
