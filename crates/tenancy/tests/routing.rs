//! Host-name and path-prefix resolution end to end: what reaches the
//! handler, what is refused, and the path the inner router sees.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::OriginalUri;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use tower::{Layer, ServiceExt};
use tower_tenancy::{
    ChainResolver, HeaderResolver, PathPrefixResolver, SubdomainResolver, TenancyLayer, Tenant,
    TenantId, TenantPolicy,
};

async fn records(Tenant(ctx): Tenant, OriginalUri(original): OriginalUri) -> String {
    format!("{}:{:?}:{original}", ctx.tenant_id(), ctx.source())
}

fn routes() -> Router {
    Router::new()
        .route("/records", get(records))
        .route(
            "/",
            get(|Tenant(ctx): Tenant| async move { format!("root of {}", ctx.tenant_id()) }),
        )
        .route("/health", get(|| async { "ok" }))
}

async fn send<S>(service: S, req: Request<Body>) -> (StatusCode, String)
where
    S: tower::Service<Request<Body>, Response = axum::response::Response> + Send,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let resp = service.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = to_bytes(resp.into_body(), 1 << 16).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn with_host(uri: &str, host: &[u8]) -> Request<Body> {
    let mut req = Request::get(uri).body(Body::empty()).expect("request");
    req.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_bytes(host).expect("header bytes"),
    );
    req
}

fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).expect("JSON")["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_subdomain_names_the_tenant() {
    let layer = TenancyLayer::builder(TenantPolicy::required())
        .resolver(
            SubdomainResolver::new("example.com")
                .expect("valid")
                .ignore(["www"]),
        )
        .build()
        .expect("valid");
    let app = routes().layer(layer);
    for host in [
        "acme.example.com",
        "ACME.example.com:8443",
        "acme.example.com.",
    ] {
        let (status, body) = send(app.clone(), with_host("/records", host.as_bytes())).await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        assert!(body.starts_with("acme:Host:"), "{host}: {body}");
    }
    for (host, status, expected) in [
        (
            &b"example.com"[..],
            StatusCode::BAD_REQUEST,
            "tenant_required",
        ),
        (
            b"www.example.com",
            StatusCode::BAD_REQUEST,
            "tenant_required",
        ),
        (b"evil.com", StatusCode::BAD_REQUEST, "tenant_required"),
        (
            b"a.b.example.com",
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
        (
            b".example.com",
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
        (
            "bücher.example.com".as_bytes(),
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
        (b"x--.example.com", StatusCode::OK, ""),
    ] {
        let (got, body) = send(app.clone(), with_host("/records", host)).await;
        assert_eq!(got, status, "{}: {body}", String::from_utf8_lossy(host));
        if status != StatusCode::OK {
            assert_eq!(code(&body), expected, "{body}");
        }
    }
    let (_, body) = send(app.clone(), with_host("/records", b"example.com")).await;
    assert!(
        body.contains("a host name '{tenant}.example.com'"),
        "{body}"
    );
}

#[tokio::test]
async fn a_header_may_repeat_the_subdomain_never_contradict_it() {
    let layer = TenancyLayer::builder(TenantPolicy::required())
        .resolver(
            ChainResolver::new()
                .with(SubdomainResolver::new("example.com").expect("valid"))
                .with_header(HeaderResolver::default()),
        )
        .build()
        .expect("valid");
    let app = routes().layer(layer);
    let mut agree = with_host("/records", b"acme.example.com");
    agree
        .headers_mut()
        .insert("x-tenant-id", http::HeaderValue::from_static("acme"));
    assert_eq!(send(app.clone(), agree).await.0, StatusCode::OK);
    let mut conflict = with_host("/records", b"acme.example.com");
    conflict
        .headers_mut()
        .insert("x-tenant-id", http::HeaderValue::from_static("globex"));
    let (status, body) = send(app.clone(), conflict).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "tenant_conflict")
    );
}

/// The layer wraps the router, so routing sees the stripped path.
fn path_app(
    policy: TenantPolicy,
) -> impl tower::Service<
    Request<Body>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    let layer = TenancyLayer::builder(policy)
        .resolver(PathPrefixResolver::new("/t").expect("valid"))
        .build()
        .expect("valid");
    layer.layer(routes())
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn a_path_prefix_names_the_tenant_and_is_stripped() {
    let app = path_app(TenantPolicy::required());
    let (status, body) = send(app.clone(), get_req("/t/acme/records?limit=2")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "acme:Path:/t/acme/records?limit=2"),
        "the route is /records; OriginalUri keeps the full path"
    );
    let (status, body) = send(app.clone(), get_req("/t/acme")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "root of acme"));
    let (status, body) = send(app.clone(), get_req("/health")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "ok"),
        "exempt, untouched"
    );
}

#[tokio::test]
async fn hostile_path_prefixes_are_refused_with_a_400() {
    let app = path_app(TenantPolicy::required());
    for (uri, expected) in [
        ("/t/../records", "invalid_tenant_id"),
        ("/t/%2e%2e/records", "invalid_tenant_id"),
        ("/t/a%2Fb/records", "invalid_tenant_id"),
        ("/t/acme;x=1/records", "invalid_tenant_id"),
        ("/t//records", "invalid_tenant_id"),
        ("/t/", "tenant_required"),
        ("/tx/acme/records", "tenant_required"),
        ("/records", "tenant_required"),
    ] {
        let (status, body) = send(app.clone(), get_req(uri)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(code(&body), expected, "{uri}");
    }
    let long = format!("/t/{}/records", "x".repeat(64));
    let (status, body) = send(app.clone(), get_req(&long)).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "invalid_tenant_id")
    );
}

#[tokio::test]
async fn the_allow_list_applies_to_a_path_tenant() {
    let acme: TenantId = "acme".parse().expect("valid");
    let app = path_app(TenantPolicy::required().allow([acme]));
    assert_eq!(
        send(app.clone(), get_req("/t/acme/records")).await.0,
        StatusCode::OK
    );
    let (status, body) = send(app.clone(), get_req("/t/globex/records")).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::FORBIDDEN, "tenant_not_allowed")
    );
}
