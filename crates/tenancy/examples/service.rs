//! A small multi-tenant axum service: tenants come from an API key, the
//! `X-Tenant-ID` header or a `tenant` cookie (a resolver of our own), and
//! an in-memory directory says which tenants exist.
//!
//! ```sh
//! cargo run -p tower-tenancy --example service
//! # then, with the key it prints:
//! curl -H 'X-Tenant-ID: globex' localhost:3000/whoami
//! curl -H 'Cookie: tenant=globex' localhost:3000/whoami
//! curl -H "Authorization: Bearer $KEY" localhost:3000/whoami
//! curl -H 'X-Tenant-ID: acme' localhost:3000/whoami      # 401: acme holds keys
//! curl -H 'X-Tenant-ID: nobody' localhost:3000/whoami    # 404 tenant_not_found
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::routing::get;
use axum::{Json, Router};
use tower_tenancy::{
    AuthError, Authenticator, Candidate, ChainResolver, Credential, HeaderResolver, KeyHash,
    KeyHasher, PlainKey, Principal, PrincipalKind, ResolveInput, TenancyError, TenancyLayer,
    Tenant, TenantDirectory, TenantId, TenantPolicy, TenantResolver, TenantSource, TenantStatus,
};

/// Our own resolver: the `tenant` cookie, for browsers.
struct TenantCookie;

#[async_trait]
impl TenantResolver for TenantCookie {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        let cookies = input.parts.headers.get_all(http::header::COOKIE);
        Ok(cookies
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("tenant="))
            .and_then(|tenant| Candidate::new(tenant, TenantSource::Custom("cookie"))))
    }

    fn hint(&self) -> Option<String> {
        Some("cookie 'tenant'".to_owned())
    }
}

/// API keys by their hash: only hashes are kept, never the keys.
struct Keys {
    hasher: KeyHasher,
    by_hash: HashMap<KeyHash, (TenantId, String)>,
}

#[async_trait]
impl Authenticator for Keys {
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        let Credential::ApiKey(key) = credential else {
            return Err(AuthError::TokensNotAccepted);
        };
        let (tenant, key_id) = self
            .by_hash
            .get(&self.hasher.hash(key))
            .ok_or(AuthError::InvalidKey)?;
        let kind = PrincipalKind::ApiKey {
            key_id: key_id.clone(),
        };
        Ok(Principal::new(tenant.clone(), kind, Vec::new()))
    }
}

/// The tenants that exist. `acme` holds a key, so naming it in a header
/// is not enough.
struct Directory(HashMap<TenantId, TenantStatus>);

impl TenantDirectory for Directory {
    fn status(&self, tenant: &TenantId) -> TenantStatus {
        self.0.get(tenant).cloned().unwrap_or(TenantStatus::Unknown)
    }
}

async fn whoami(Tenant(ctx): Tenant) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "tenant": ctx.tenant_id(),
        "source": ctx.source().to_string(),
        "actor": ctx.principal().map(Principal::actor),
    }))
}

/// The service, and acme's API key (shown once, like a real key).
fn app() -> Result<(Router, PlainKey), Box<dyn std::error::Error>> {
    let acme: TenantId = "acme".parse()?;
    let globex: TenantId = "globex".parse()?;
    let hasher = KeyHasher::new(tower_tenancy::random_base62(40).as_bytes());
    let key = PlainKey::generate(&acme);
    let keys = Keys {
        by_hash: HashMap::from([(hasher.hash(&key), (acme.clone(), "key_1".to_owned()))]),
        hasher,
    };
    let active = |credential_required| TenantStatus::Active {
        allowed_ips: Arc::from(Vec::new()),
        credential_required,
    };
    let directory = Directory(HashMap::from([
        (acme, active(true)),
        (globex, active(false)),
    ]));

    let layer = TenancyLayer::builder(TenantPolicy::required())
        .resolver(
            ChainResolver::new()
                .with_header(HeaderResolver::default())
                .with(TenantCookie),
        )
        .authenticator(keys)
        .directory(Arc::new(directory))
        .build()?;
    let router = Router::new()
        .route("/whoami", get(whoami))
        .layer(layer)
        // Outside the layer: no tenant needed.
        .route("/health", get(|| async { "ok" }));
    Ok((router, key))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (router, key) = app()?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    println!("acme's API key: {}", key.expose());
    axum::serve(listener, router).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use tower::ServiceExt;

    async fn call(router: &Router, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
        let mut request = http::Request::get("/whoami");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
        (status, serde_json::from_slice(&body).expect("JSON"))
    }

    #[tokio::test]
    async fn every_way_in_and_every_refusal() {
        let (router, key) = app().expect("app");
        let (status, body) = call(&router, &[("x-tenant-id", "globex")]).await;
        assert_eq!((status, &body["tenant"]), (200, &"globex".into()));
        let (status, body) = call(&router, &[("cookie", "a=b; tenant=globex")]).await;
        assert_eq!((status, &body["source"]), (200, &"cookie resolver".into()));
        let bearer = format!("Bearer {}", key.expose());
        let (status, body) = call(&router, &[("authorization", &bearer)]).await;
        assert_eq!((status, &body["actor"]), (200, &"key:key_1".into()));

        for (headers, status, code) in [
            (&[][..], 400, "tenant_required"),
            (&[("x-tenant-id", "acme")][..], 401, "unauthorized"),
            (&[("x-tenant-id", "nobody")][..], 404, "tenant_not_found"),
            (
                &[("x-tenant-id", "globex"), ("cookie", "tenant=acme")][..],
                400,
                "tenant_conflict",
            ),
            (
                &[
                    ("authorization", bearer.as_str()),
                    ("x-tenant-id", "globex"),
                ][..],
                403,
                "tenant_mismatch",
            ),
        ] {
            let (got, body) = call(&router, headers).await;
            assert_eq!((got, &body["code"]), (status, &code.into()), "{body}");
        }
        let (_, body) = call(&router, &[]).await;
        assert_eq!(
            body["detail"],
            "Tenant ID required. Use header 'X-Tenant-ID' or cookie 'tenant'"
        );
    }
}
