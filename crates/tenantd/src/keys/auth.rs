//! The process's [`Authenticator`]: API keys through the registry cache,
//! tokens of a tenant's OIDC issuer through [`OidcVerifier`], other JWTs
//! through [`JwtVerifier`] (HS256).

use std::sync::Arc;

use async_trait::async_trait;
use tenancy::{AuthError, Authenticator, Credential, KeyHasher, Principal};

use super::jwks::{OidcVerifier, unverified_issuer};
use super::jwt::JwtVerifier;
use crate::tenants::registry::Registry;

/// Verifies API keys and JWTs.
pub struct CredentialVerifier {
    registry: Arc<Registry>,
    hasher: KeyHasher,
    jwt: Option<JwtVerifier>,
    oidc: OidcVerifier,
}

impl CredentialVerifier {
    /// A verifier over the registry cache.
    pub fn new(
        registry: Arc<Registry>,
        hasher: KeyHasher,
        jwt: Option<JwtVerifier>,
        oidc: OidcVerifier,
    ) -> Self {
        Self {
            registry,
            hasher,
            jwt,
            oidc,
        }
    }
}

#[async_trait]
impl Authenticator for CredentialVerifier {
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        match credential {
            Credential::ApiKey(key) => self.registry.verify_key(&self.hasher.hash(key)),
            Credential::Bearer(token) => {
                // A token of a tenant's own issuer goes to that issuer's
                // keys; anything else to the shared HS256 secret.
                if let Some(issuer) = unverified_issuer(token).filter(|i| self.oidc.knows(i)) {
                    return self.oidc.verify(token, &issuer).await;
                }
                match &self.jwt {
                    Some(jwt) => jwt.verify(token),
                    None => Err(AuthError::TokensNotAccepted),
                }
            }
        }
    }
}
