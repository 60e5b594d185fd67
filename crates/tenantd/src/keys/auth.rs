//! The process's [`Authenticator`]: API keys through the registry cache,
//! JWTs through [`JwtVerifier`].

use std::sync::Arc;

use async_trait::async_trait;
use tenancy::{AuthError, Authenticator, Credential, KeyHasher, Principal};

use super::jwt::JwtVerifier;
use crate::tenants::registry::Registry;

/// Verifies API keys and JWTs.
pub struct CredentialVerifier {
    registry: Arc<Registry>,
    hasher: KeyHasher,
    jwt: Option<JwtVerifier>,
}

impl CredentialVerifier {
    /// A verifier over the registry cache.
    pub fn new(registry: Arc<Registry>, hasher: KeyHasher, jwt: Option<JwtVerifier>) -> Self {
        Self {
            registry,
            hasher,
            jwt,
        }
    }
}

#[async_trait]
impl Authenticator for CredentialVerifier {
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        match credential {
            Credential::ApiKey(key) => self.registry.verify_key(&self.hasher.hash(key)),
            Credential::Bearer(token) => match &self.jwt {
                Some(jwt) => jwt.verify(token),
                None => Err(AuthError::TokensNotAccepted),
            },
        }
    }
}
