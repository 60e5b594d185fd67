//! Credentials, reconciliation and the directory checks of the layer, end
//! to end in an axum app.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use tower::ServiceExt;
use tower_tenancy::{
    AuthError, Authenticator, Credential, IpNet, Principal, PrincipalKind, TenancyLayer, Tenant,
    TenantDirectory, TenantId, TenantPolicy, TenantStatus,
};

const ACME_KEY: &str = "acme_sk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const EXPIRED_KEY: &str = "acme_sk_eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
const BAD_KEY: &str = "acme_sk_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz";
const SUSPENDED_KEY: &str = "frozen_sk_ffffffffffffffffffffffffffffffffffffffff";

/// Knows two keys; everything else is invalid.
struct Keys;

#[async_trait]
impl Authenticator for Keys {
    async fn authenticate(&self, credential: &Credential) -> Result<Principal, AuthError> {
        let Credential::ApiKey(key) = credential else {
            return Err(AuthError::InvalidToken("bad signature"));
        };
        let tenant = match key.expose() {
            ACME_KEY => "acme",
            SUSPENDED_KEY => "frozen",
            EXPIRED_KEY => return Err(AuthError::ExpiredKey),
            _ => return Err(AuthError::InvalidKey),
        };
        Ok(Principal::new(
            TenantId::new(tenant).expect("valid"),
            PrincipalKind::ApiKey {
                key_id: "key_1".into(),
            },
            vec![],
        ))
    }
}

struct Directory(HashMap<&'static str, TenantStatus>);

impl TenantDirectory for Directory {
    fn status(&self, tenant: &TenantId) -> TenantStatus {
        self.0
            .get(tenant.as_str())
            .cloned()
            .unwrap_or(TenantStatus::Unknown)
    }
}

fn directory() -> Arc<Directory> {
    let open = TenantStatus::Active {
        allowed_ips: Arc::from(Vec::new()),
        credential_required: false,
    };
    let office: Vec<IpNet> = vec!["10.1.0.0/16".parse().expect("cidr")];
    Arc::new(Directory(HashMap::from([
        ("acme", open.clone()),
        ("globex", open),
        ("frozen", TenantStatus::Suspended),
        (
            "office",
            TenantStatus::Active {
                allowed_ips: Arc::from(office),
                credential_required: false,
            },
        ),
        (
            "keyed",
            TenantStatus::Active {
                allowed_ips: Arc::from(Vec::new()),
                credential_required: true,
            },
        ),
    ])))
}

async fn whoami(Tenant(ctx): Tenant) -> String {
    let actor = ctx.principal().map(Principal::actor).unwrap_or_default();
    format!("{}:{:?}:{actor}", ctx.tenant_id(), ctx.source())
}

/// A route whose body may name the tenant: the layer decided it already.
async fn body_tenant(Tenant(ctx): Tenant) -> String {
    ctx.tenant_id().to_string()
}

fn app(required: bool) -> Router {
    let layer = TenancyLayer::builder(TenantPolicy::optional(
        TenantId::new("nobody").expect("valid"),
    ))
    .authenticator(Keys)
    .require_credentials(required)
    .directory(directory())
    .trusted_proxies(vec!["192.168.0.0/24".parse().expect("cidr")])
    .body_tenant_routes(|parts| parts.uri.path() == "/body")
    .build()
    .expect("valid");
    Router::new()
        .route("/who", get(whoami))
        .route("/body", post(body_tenant))
        .layer(layer)
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)], peer: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut r = b.body(Body::empty()).expect("request");
    let peer: SocketAddr = format!("{peer}:5555").parse().expect("addr");
    r.extensions_mut().insert(ConnectInfo(peer));
    r
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let body = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    let text = String::from_utf8_lossy(&body).into_owned();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, json, www)
}

#[tokio::test]
async fn a_credential_names_the_tenant_and_its_principal() {
    let app = app(false);
    for headers in [
        vec![("authorization", format!("Bearer {ACME_KEY}"))],
        vec![("x-api-key", ACME_KEY.to_owned())],
        vec![
            ("x-api-key", ACME_KEY.to_owned()),
            ("x-tenant-id", "acme".to_owned()),
        ],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body, _) = call(&app, req("GET", "/who", &h, "10.9.9.9")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "acme:Credential:key:key_1");
    }
}

#[tokio::test]
async fn a_credential_for_one_tenant_cannot_name_another() {
    let app = app(false);
    let key = [("x-api-key", ACME_KEY), ("x-tenant-id", "globex")];
    let (status, body, _) = call(&app, req("GET", "/who", &key, "10.9.9.9")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tenant_mismatch");
    let (status, body, _) = call(
        &app,
        req(
            "GET",
            "/who?tenant_id=globex",
            &[("x-api-key", ACME_KEY)],
            "10.9.9.9",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tenant_mismatch");

    let mut r = req("POST", "/body", &[("x-api-key", ACME_KEY)], "10.9.9.9");
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    *r.body_mut() = Body::from(r#"{"tenant_id": "globex"}"#);
    let (status, body, _) = call(&app, r).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tenant_mismatch");
    let mut r = req("POST", "/body", &[("x-api-key", ACME_KEY)], "10.9.9.9");
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    *r.body_mut() = Body::from(r#"{"tenant_id": "acme"}"#);
    let (status, body, _) = call(&app, r).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "acme");
}

#[tokio::test]
async fn a_bad_credential_is_401_and_never_falls_back_to_the_header() {
    let app = app(false);
    for (headers, detail) in [
        (vec![("x-api-key", BAD_KEY)], "Invalid API key"),
        (vec![("x-api-key", EXPIRED_KEY)], "API key has expired"),
        (
            vec![
                ("authorization", "Bearer not.a.jwt"),
                ("x-tenant-id", "acme"),
            ],
            "Invalid token: bad signature",
        ),
        (
            vec![
                ("authorization", "Basic YWNtZTpwdw=="),
                ("x-tenant-id", "acme"),
            ],
            "Malformed credential: use 'Authorization: Bearer <token>' or 'x-api-key'",
        ),
        (
            vec![("x-api-key", BAD_KEY), ("x-tenant-id", "acme")],
            "Invalid API key",
        ),
    ] {
        let (status, body, www) = call(&app, req("GET", "/who", &headers, "10.9.9.9")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(body["code"], "unauthorized");
        assert_eq!(body["detail"], detail);
        assert_eq!(www, "Bearer");
        assert!(!body.to_string().contains("zzzz"), "never echoes the key");
    }
}

#[tokio::test]
async fn required_credentials_refuse_header_only_requests() {
    let app = app(true);
    let (status, body, _) = call(
        &app,
        req("GET", "/who", &[("x-tenant-id", "acme")], "10.9.9.9"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    let (status, _, _) = call(
        &app,
        req("GET", "/who", &[("x-api-key", ACME_KEY)], "10.9.9.9"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_directory_refuses_unknown_and_suspended_tenants() {
    let app = app(false);
    let cases = [
        (
            vec![("x-tenant-id", "ghost")],
            StatusCode::NOT_FOUND,
            "tenant_not_found",
        ),
        (
            vec![("x-tenant-id", "frozen")],
            StatusCode::FORBIDDEN,
            "tenant_suspended",
        ),
        (
            vec![("x-api-key", SUSPENDED_KEY)],
            StatusCode::FORBIDDEN,
            "tenant_suspended",
        ),
        // The default tenant is checked too.
        (vec![], StatusCode::NOT_FOUND, "tenant_not_found"),
    ];
    for (headers, status, code) in cases {
        let (got, body, _) = call(&app, req("GET", "/who", &headers, "10.9.9.9")).await;
        assert_eq!(got, status, "{headers:?}");
        assert_eq!(body["code"], code);
    }
    // So is a tenant named only by the body.
    let mut r = req("POST", "/body", &[], "10.9.9.9");
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    *r.body_mut() = Body::from(r#"{"tenant_id": "frozen"}"#);
    let (status, body, _) = call(&app, r).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "tenant_suspended");
}

#[tokio::test]
async fn ip_allow_lists_trust_forwarded_for_only_from_trusted_proxies() {
    let app = app(false);
    let office = [("x-tenant-id", "office")];
    let (status, _, _) = call(&app, req("GET", "/who", &office, "10.1.2.3")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = call(&app, req("GET", "/who", &office, "10.2.0.1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["code"], "ip_not_allowed");

    // A direct client cannot claim an office address.
    let spoof = [("x-tenant-id", "office"), ("x-forwarded-for", "10.1.2.3")];
    let (status, _, _) = call(&app, req("GET", "/who", &spoof, "10.2.0.1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Through the trusted proxy, the forwarded client address counts...
    let (status, _, _) = call(&app, req("GET", "/who", &spoof, "192.168.0.7")).await;
    assert_eq!(status, StatusCode::OK);
    // ...the right-most untrusted hop, not a prefix the client wrote.
    let chain = [
        ("x-tenant-id", "office"),
        ("x-forwarded-for", "10.1.2.3, 172.16.0.9, 192.168.0.8"),
    ];
    let (status, _, _) = call(&app, req("GET", "/who", &chain, "192.168.0.7")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Junk the client prepended is ignored; junk in the part the trusted
    // proxies wrote is a refusal, never a fallback to the proxy's address.
    let junk = [
        ("x-tenant-id", "office"),
        ("x-forwarded-for", "junk, 10.2.0.1"),
    ];
    let (status, _, _) = call(&app, req("GET", "/who", &junk, "192.168.0.7")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for chain in ["10.1.2.3, junk", "junk", "10.1.2.3,"] {
        let headers = [("x-tenant-id", "office"), ("x-forwarded-for", chain)];
        let (status, body, _) = call(&app, req("GET", "/who", &headers, "192.168.0.7")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{chain}");
        assert_eq!(body["code"], "invalid_forwarded_for");
    }
    // Other tenants have no list and accept any address.
    let (status, _, _) = call(
        &app,
        req("GET", "/who", &[("x-tenant-id", "acme")], "203.0.113.5"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_tenant_holding_credentials_is_reached_only_with_one() {
    let app = app(false);
    for headers in [&[("x-tenant-id", "keyed")][..], &[][..]] {
        let mut r = req("POST", "/body", headers, "10.9.9.9");
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("value"));
        *r.body_mut() = Body::from(r#"{"tenant_id": "keyed"}"#);
        let (status, body, _) = call(&app, r).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "unauthorized");
    }
    let (status, _, _) = call(
        &app,
        req("GET", "/who", &[("x-tenant-id", "office")], "10.1.2.3"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "tenants without credentials keep the header"
    );
}

#[tokio::test]
async fn with_tenancy_off_credentials_are_not_looked_at() {
    let layer = TenancyLayer::builder(TenantPolicy::single(
        TenantId::new("default").expect("valid"),
    ))
    .authenticator(Keys)
    .directory(directory())
    .body_tenant_routes(|parts| parts.uri.path() == "/body")
    .build()
    .expect("valid");
    let app = Router::new().route("/who", get(whoami)).layer(layer);
    let (status, body, _) = call(
        &app,
        req("GET", "/who", &[("x-api-key", BAD_KEY)], "10.9.9.9"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "default:Default:");
}
