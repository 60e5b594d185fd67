//! Credentials decide the tenant: cross-tenant attempts with valid
//! credentials on every tenant route, `auth.required`, JWTs.

use crate::support::{TestApp, TestStorage};
use jsonwebtoken::{EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{admin_config, assert_error};

const JWT_SECRET: &str = "jwt-secret-for-tests-0123456789abcdef";

#[backends]
async fn a_key_never_reaches_another_tenant_on_any_route() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |c| c.jobs.workers = Some(0))).await;
    let (_, acme) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let (_, globex) = app
        .create_tenant(json!({"id": "globex", "name": "Globex"}))
        .await;
    let theirs = app.record_with_key(&globex, "globex-secret").await;
    let resp = app
        .with_key(Method::POST, &globex, "/detect/submit")
        .json(&json!({"repository_url": "https://example.invalid/r.git"}))
        .send()
        .await
        .expect("submit");
    let job: Value = resp.json().await.expect("json");
    let job = job["detection_id"].as_str().expect("id").to_owned();

    let record_body = json!({"name": "x", "kind": "k", "url": "https://x"});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/records".into(), None),
        (Method::POST, "/records".into(), Some(record_body.clone())),
        (
            Method::POST,
            "/records/search".into(),
            Some(json!({"query": "secret"})),
        ),
        (Method::GET, format!("/records/{theirs}"), None),
        (
            Method::PUT,
            format!("/records/{theirs}"),
            Some(record_body.clone()),
        ),
        (Method::DELETE, format!("/records/{theirs}"), None),
        (
            Method::POST,
            "/detect/submit".into(),
            Some(json!({"repository_url": "https://e.invalid/x.git"})),
        ),
        (Method::GET, "/detect".into(), None),
        (Method::GET, format!("/detect/{job}/status"), None),
        (Method::POST, format!("/detect/{job}/cancel"), None),
    ];
    for (method, path, body) in &routes {
        // Naming the other tenant by header, query or body: 403 mismatch.
        let mut req = app
            .with_key(method.clone(), &acme, path)
            .header("X-Tenant-ID", "globex");
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("send");
        assert_error(resp, 403, "tenant_mismatch").await;
        let sep = if path.contains('?') { '&' } else { '?' };
        let resp = app
            .with_key(
                method.clone(),
                &acme,
                &format!("{path}{sep}tenant_id=globex"),
            )
            .send()
            .await
            .expect("send");
        assert_error(resp, 403, "tenant_mismatch").await;
        if let Some(b) = body
            && b.is_object()
        {
            let mut b = b.clone();
            b["tenant_id"] = json!("globex");
            let resp = app
                .with_key(method.clone(), &acme, path)
                .json(&b)
                .send()
                .await
                .expect("send");
            assert_error(resp, 403, "tenant_mismatch").await;
        }
    }
    // Without naming a tenant, acme's key acts in acme: globex's objects
    // are 404 and never appear.
    for (method, path, body) in &routes[3..6] {
        let mut req = app.with_key(method.clone(), &acme, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        assert_error(req.send().await.expect("send"), 404, "not_found").await;
    }
    for path in [format!("/detect/{job}/status")] {
        let resp = app
            .with_key(Method::GET, &acme, &path)
            .send()
            .await
            .expect("get");
        assert_error(resp, 404, "not_found").await;
    }
    let resp = app
        .with_key(Method::POST, &acme, "/records/search")
        .json(&json!({"query": "globex secret"}))
        .send()
        .await
        .expect("search");
    let page: Value = resp.json().await.expect("json");
    assert_eq!(page["total"], 0);
    // globex's record and job are intact.
    let resp = app
        .with_key(Method::GET, &globex, &format!("/records/{theirs}"))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let resp = app
        .with_key(Method::GET, &globex, &format!("/detect/{job}/status"))
        .send()
        .await
        .expect("get");
    let job: Value = resp.json().await.expect("json");
    assert_eq!(job["status"], "pending");
    app.finish().await;
}

#[backends]
async fn required_credentials_and_bad_credentials() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |c| c.auth.required = true)).await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let resp = app
        .req(Method::GET, "acme", "/records")
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 401, "unauthorized").await;
    assert!(detail.contains("Authentication required"), "{detail}");
    let resp = app
        .with_key(Method::GET, &key, "/records")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    // A forged key for the same tenant, and a key with the header naming
    // the right tenant: the credential decides, never the header.
    let forged = format!("acme_sk_{}", "A".repeat(40));
    let resp = app
        .with_key(Method::GET, &forged, "/records")
        .header("X-Tenant-ID", "acme")
        .send()
        .await
        .expect("get");
    let body = resp.text().await.expect("text");
    assert!(
        body.contains("unauthorized") && !body.contains(&forged[8..]),
        "{body}"
    );
    // Health stays open.
    let resp = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    app.finish().await;
}

fn jwt(claims: Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

#[backends]
async fn hs256_tokens_carry_the_tenant() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.auth.jwt.hs256_secret = Some(JWT_SECRET.into());
            c.auth.jwt.issuer = Some("https://issuer.test".into());
            c.auth.jwt.audience = Some("tenantd".into());
        }),
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "frozen", "name": "Frozen", "status": "suspended"}))
        .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = json!({"tenant_id": "acme", "sub": "user-1", "iss": "https://issuer.test",
                      "aud": "tenantd", "exp": now + 300});
    let send = |token: String, tenant: Option<&'static str>| {
        let mut req = app
            .client
            .get(format!("{}/records", app.base))
            .bearer_auth(token);
        if let Some(t) = tenant {
            req = req.header("X-Tenant-ID", t);
        }
        req.send()
    };
    let resp = send(jwt(good.clone(), JWT_SECRET), None)
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let resp = send(jwt(good.clone(), JWT_SECRET), Some("globex"))
        .await
        .expect("get");
    assert_error(resp, 403, "tenant_mismatch").await;
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    for (claims, secret, detail) in [
        (
            good.clone(),
            "wrong-secret-wrong-secret-wrong-secret",
            "Invalid token: bad signature",
        ),
        (
            with("iss", json!("https://evil.test")),
            JWT_SECRET,
            "Invalid token: wrong issuer",
        ),
        (
            with("aud", json!("someone-else")),
            JWT_SECRET,
            "Invalid token: wrong audience",
        ),
        (
            with("exp", json!(now - 3600)),
            JWT_SECRET,
            "Invalid token: expired",
        ),
    ] {
        let resp = send(jwt(claims, secret), Some("acme")).await.expect("get");
        assert_eq!(assert_error(resp, 401, "unauthorized").await, detail);
    }
    let resp = send(jwt(with("tenant_id", json!("frozen")), JWT_SECRET), None)
        .await
        .expect("get");
    assert_error(resp, 403, "tenant_suspended").await;
    let resp = send(jwt(with("tenant_id", json!("ghost")), JWT_SECRET), None)
        .await
        .expect("get");
    assert_error(resp, 404, "tenant_not_found").await;
    app.finish().await;
}

/// A P-256 test key (PKCS#8 DER, base64) and its public point, made with
/// `openssl ecparam -name prime256v1`. Test data only.
const EC_PRIVATE_PKCS8: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgOtUGuYgkqmlHiiaROCG4jOji8wSQO8qdD1UpL+8Tgw+hRANCAASDGUn+K53VduGXYlmSZ7BrUrtrg/oCW6RK/ohPKy8px8iq1FSoOmPurMXnnDnzRsJop3EkLCJP8hRVTiRnpdDk";
const EC_X: &str = "gxlJ_iud1Xbhl2JZkmewa1K7a4P6AlukSv6ITysvKcc";
const EC_Y: &str = "yKrUVKg6Y-6sxeecOfNGwmincSQsIk_yFFVOJGel0OQ";

/// Serves an OIDC discovery document and a JWKS on a random port; returns
/// the issuer URL and a counter of JWKS fetches.
async fn test_issuer() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let issuer = format!("http://{}", listener.local_addr().expect("addr"));
    let fetches = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/jwks",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    axum::Json(json!({"keys": [{
                        "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                        "x": EC_X, "y": EC_Y
                    }]}))
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (issuer, fetches)
}

fn es256(claims: &Value, kid: &str) -> String {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(EC_PRIVATE_PKCS8)
        .expect("base64");
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &EncodingKey::from_ec_der(&der)).expect("encode")
}

#[backends]
async fn tokens_of_a_tenants_own_issuer_are_verified_against_its_jwks() {
    let (issuer, fetches) = test_issuer().await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "oidc": {
        "issuer": issuer, "client_id": "acme-client", "client_secret": "s3cret-value",
        "redirect_url": "https://api.test/cb"}}))
        .await;
    app.create_tenant(json!({"id": "globex", "name": "Globex"}))
        .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = json!({"iss": issuer, "aud": "acme-client", "sub": "alice", "exp": now + 300});
    let call = |token: String| {
        app.client
            .get(format!("{}/records", app.base))
            .bearer_auth(token)
            .send()
    };
    // No tenant claim: the issuer's tenant.
    let resp = call(es256(&good, "k1")).await.expect("get");
    assert_eq!(resp.status(), 200);
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let resp = call(es256(&with("tenant_id", json!("acme")), "k1"))
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    for (claims, kid, detail) in [
        (
            with("tenant_id", json!("globex")),
            "k1",
            "Invalid token: tenant claim does not match issuer",
        ),
        (
            with("aud", json!("globex-client")),
            "k1",
            "Invalid token: wrong audience",
        ),
        (
            with("exp", json!(now - 3600)),
            "k1",
            "Invalid token: expired",
        ),
        (
            good.clone(),
            "unknown-kid",
            "Invalid token: unknown signing key",
        ),
    ] {
        let resp = call(es256(&claims, kid)).await.expect("get");
        assert_eq!(assert_error(resp, 401, "unauthorized").await, detail);
    }
    // An HS256 token claiming to come from acme's issuer is not accepted
    // (no algorithm confusion with the issuer's public key).
    let forged = jwt(with("tenant_id", json!("acme")), JWT_SECRET);
    let resp = call(forged).await.expect("get");
    assert_eq!(
        assert_error(resp, 401, "unauthorized").await,
        "Invalid token: algorithm not accepted"
    );
    // The JWKS was fetched once, then served from the cache (the unknown
    // kid may trigger one refetch).
    let n = fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&n), "{n} fetches");
    app.finish().await;
}
