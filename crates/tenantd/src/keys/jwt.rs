//! JWT bearer tokens with a `tenant_id` claim in the payload, verified with
//! HS256 against the configured shared secret: signature, `exp`
//! (required), `nbf`, and `iss` / `aud` when configured.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use tenancy::{AuthError, Principal, PrincipalKind, TenantId};

use crate::config::JwtConfig;

/// Verifies HS256 tokens.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `config`, or `None` when no HS256 secret is set.
    pub fn from_config(config: &JwtConfig) -> Option<Self> {
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
        })
    }

    /// Verifies `token`; the principal of its tenant claim.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::InvalidToken(reason(e.kind())))?;
        principal_from_claims(&data.claims, &self.tenant_claim)
    }
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
        JwtVerifier::from_config(&JwtConfig {
            hs256_secret: Some(SECRET.into()),
            issuer: Some("https://issuer.test".into()),
            audience: Some("tenantd".into()),
            ..JwtConfig::default()
        })
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
}
