//! The layer and extractor in an axum app, end to end (no network).

use async_trait::async_trait;
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower::ServiceExt;
use tower_tenancy::{
    Candidate, ResolveInput, TenancyError, TenancyLayer, Tenant, TenantId, TenantPolicy,
    TenantResolver, TenantSource,
};

async fn whoami(Tenant(ctx): Tenant) -> String {
    format!("{}:{:?}", ctx.tenant_id(), ctx.source())
}

/// A route whose JSON body may name the tenant (declared to the layer with
/// `body_tenant_routes`); the handler still gets the whole body.
async fn body_tenant(Tenant(ctx): Tenant, body: String) -> String {
    assert!(body.starts_with('{'), "the layer hands the body on: {body}");
    ctx.tenant_id().to_string()
}

/// A layer builder that reads the body of `POST /body` for its tenant.
fn declared(policy: TenantPolicy) -> tower_tenancy::TenancyLayerBuilder {
    TenancyLayer::builder(policy).body_tenant_routes(|parts| parts.uri.path() == "/body")
}

fn app(layer: TenancyLayer) -> Router {
    Router::new()
        .route("/who", get(whoami))
        .route("/body", post(body_tenant))
        .route("/plain", post(whoami))
        .route("/health", get(|| async { "ok" }))
        .layer(layer)
}

fn enabled() -> TenantPolicy {
    TenantPolicy::required()
}

fn id(s: &str) -> TenantId {
    s.parse().expect("valid")
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn get_req(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::empty()).expect("request")
}

fn post_req(uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method("POST").uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).expect("JSON error body")
}

#[tokio::test]
async fn refusals_are_json_4xx_never_500() {
    let app = app(declared(enabled()).build().expect("valid"));
    let cases: [(Request<Body>, StatusCode, &str); 4] = [
        (
            get_req("/who", &[]),
            StatusCode::BAD_REQUEST,
            "tenant_required",
        ),
        (
            get_req("/who", &[("x-tenant-id", "a/b")]),
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
        (
            get_req("/who?tenant_id=b", &[("x-tenant-id", "a")]),
            StatusCode::BAD_REQUEST,
            "tenant_conflict",
        ),
        (
            get_req("/who", &[("x-tenant-id", &"x".repeat(10_000))]),
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
    ];
    for (req, status, code) in cases {
        let (got, body) = call(&app, req).await;
        assert_eq!(got, status, "{body}");
        let v = json(&body);
        assert_eq!(v["code"], code);
        assert!(
            v["detail"].as_str().is_some_and(|d| d.len() < 300),
            "{body}"
        );
    }
}

#[tokio::test]
async fn allow_list_refusal_is_403_without_the_list() {
    let policy = enabled().allow([id("secret-co")]);
    let app = app(declared(policy).build().expect("valid"));
    let (status, body) = call(&app, get_req("/who", &[("X-Tenant-ID", "evil")])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["detail"], "Tenant 'evil' not authorized");
    assert!(!body.contains("secret-co"));
}

#[tokio::test]
async fn resolves_header_query_and_default() {
    let app = app(declared(enabled()).build().expect("valid"));
    assert_eq!(
        call(&app, get_req("/who", &[("X-TENANT-ID", " acme ")])).await,
        (StatusCode::OK, "acme:Header".to_owned())
    );
    assert_eq!(
        call(
            &app,
            get_req("/who?tenant_id=acme", &[("x-tenant-id", "  ")])
        )
        .await,
        (StatusCode::OK, "acme:Query".to_owned()),
        "whitespace header falls through to the query"
    );
    let optional = TenantPolicy::optional(id("default"));
    let app = app_with(optional);
    assert_eq!(
        call(&app, get_req("/who", &[])).await,
        (StatusCode::OK, "default:Default".to_owned())
    );
}

fn app_with(policy: TenantPolicy) -> Router {
    app(declared(policy).build().expect("valid"))
}

#[tokio::test]
async fn disabled_puts_everything_in_the_default_tenant() {
    let app = app_with(TenantPolicy::single(id("default")));
    for req in [
        get_req("/who", &[]),
        get_req("/who", &[("x-tenant-id", "acme")]),
        get_req("/who?tenant_id=a/b", &[("x-tenant-id", "zzz")]),
    ] {
        assert_eq!(
            call(&app, req).await,
            (StatusCode::OK, "default:Default".to_owned())
        );
    }
}

#[tokio::test]
async fn exempt_paths_need_no_tenant() {
    let app = app_with(enabled());
    assert_eq!(call(&app, get_req("/health", &[])).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, get_req("/health", &[("x-tenant-id", "a/b")]))
            .await
            .0,
        StatusCode::OK,
        "not even an invalid one is looked at"
    );
}

#[tokio::test]
async fn body_tenant_goes_through_the_same_policy() {
    let policy = enabled().allow([id("a")]);
    let app = app_with(policy);
    let (status, body) = call(&app, post_req("/body", &[], r#"{"tenant_id":"a"}"#)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    let (status, body) = call(&app, post_req("/body", &[], r#"{"tenant_id":"b"}"#)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a body must not bypass the allow-list"
    );
    assert_eq!(json(&body)["code"], "tenant_not_allowed");
    let (status, body) = call(
        &app,
        post_req("/body", &[("x-tenant-id", "a")], r#"{"tenant_id":"b"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json(&body)["code"], "tenant_conflict");
    let (status, _) = call(&app, post_req("/body", &[], r#"{"tenant_id":"  "}"#)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "blank body tenant is absent: required"
    );
}

/// A deployment's own resolver: the organisation header, nothing else.
struct OrgHeader;

#[async_trait]
impl TenantResolver for OrgHeader {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        Ok(input
            .parts
            .headers
            .get("x-org")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Candidate::new(v, TenantSource::Custom("org"))))
    }
}

#[tokio::test]
async fn installed_resolver_wins_over_the_header() {
    let layer = declared(enabled())
        .resolver(OrgHeader)
        .build()
        .expect("valid");
    let app = app(layer);
    let (status, body) = call(
        &app,
        get_req("/who", &[("x-org", "org1"), ("x-tenant-id", "other")]),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "org1:Custom(\"org\")")
    );
    let (status, body) = call(&app, get_req("/who", &[("x-tenant-id", "other")])).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the header is ignored: no tenant → required"
    );
    assert_eq!(json(&body)["code"], "tenant_required");
    let (status, _) = call(&app, get_req("/who", &[("x-org", "bad/org")])).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a custom resolver cannot skip validation"
    );
}

#[tokio::test]
async fn extractor_without_layer_is_an_internal_error_not_a_tenant() {
    let app = Router::new().route("/who", get(whoami));
    let (status, body) = call(&app, get_req("/who", &[("x-tenant-id", "a")])).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json(&body)["code"], "internal");
}

#[tokio::test]
async fn a_body_tenant_over_the_limit_is_413_and_a_non_string_is_400() {
    let layer = declared(enabled()).body_limit(64).build().expect("valid");
    let app = app(layer);
    let big = format!(r#"{{"tenant_id":"a","pad":"{}"}}"#, "x".repeat(100));
    let (status, body) = call(&app, post_req("/body", &[], &big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(json(&body)["code"], "payload_too_large");
    let (status, body) = call(&app, post_req("/body", &[], r#"{"tenant_id":7}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(json(&body)["code"], "invalid_tenant_id");
    // Only declared routes' bodies are read: elsewhere a body names nothing.
    let (status, body) = call(&app, post_req("/plain", &[], r#"{"tenant_id":"a"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(json(&body)["code"], "tenant_required");
}

/// The service's own refusal format: plain text, with a header naming the
/// code. The default JSON is what every other test sees.
fn plain_refusals(policy: TenantPolicy) -> TenancyLayer {
    declared(policy)
        .on_refusal(|refusal: TenancyError, parts: &http::request::Parts| {
            let text = format!("{} refused: {refusal}", parts.uri.path());
            let mut response = (refusal.status(), text).into_response();
            response
                .headers_mut()
                .insert("x-refusal", http::HeaderValue::from_static(refusal.code()));
            response
        })
        .build()
        .expect("valid")
}

#[tokio::test]
async fn on_refusal_answers_every_layer_refusal_the_services_way() {
    let app = app(plain_refusals(enabled().allow([id("a")])).clone());
    let big = format!(r#"{{"tenant_id":"a","pad":"{}"}}"#, "x".repeat(3 << 20));
    for (req, status, code) in [
        (
            get_req("/who", &[]),
            StatusCode::BAD_REQUEST,
            "tenant_required",
        ),
        (
            get_req("/who", &[("x-tenant-id", "a/b")]),
            StatusCode::BAD_REQUEST,
            "invalid_tenant_id",
        ),
        (
            get_req("/who", &[("x-tenant-id", "z")]),
            StatusCode::FORBIDDEN,
            "tenant_not_allowed",
        ),
        (
            post_req("/body", &[], &big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        let resp = app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), status);
        assert_eq!(resp.headers()["x-refusal"], code);
        assert_eq!(
            resp.extensions().get::<tower_tenancy::ErrorCode>(),
            Some(&tower_tenancy::ErrorCode(code.to_owned())),
            "outer middleware still sees the code"
        );
        let body = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains(" refused: ") && !text.starts_with('{'),
            "{text}"
        );
    }
    let (status, body) = call(&app, get_req("/who", &[("x-tenant-id", "a")])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a:Header"));
}

#[tokio::test]
async fn the_required_message_names_what_the_resolver_reads() {
    let standard = app(declared(enabled()).build().expect("valid"));
    let (_, body) = call(&standard, get_req("/who", &[])).await;
    assert_eq!(
        json(&body)["detail"],
        "Tenant ID required. Use header 'X-Tenant-ID' or query parameter 'tenant_id'"
    );
    let custom = app(declared(enabled())
        .resolver(OrgHeader)
        .build()
        .expect("valid"));
    let (_, body) = call(&custom, get_req("/who", &[])).await;
    assert_eq!(json(&body)["detail"], "Tenant ID required");
}

#[tokio::test]
async fn exempt_routes_can_take_an_optional_tenant() {
    async fn maybe(tenant: Option<Tenant>) -> String {
        tenant.map_or_else(|| "none".to_owned(), |t| t.tenant_id().to_string())
    }
    let layer = declared(enabled()).build().expect("valid");
    let app = Router::new()
        .route("/health", get(maybe))
        .route("/maybe", get(maybe))
        .layer(layer);
    let (_, body) = call(&app, get_req("/health", &[("x-tenant-id", "a")])).await;
    assert_eq!(body, "none", "exempt: nothing is decided");
    let (_, body) = call(&app, get_req("/maybe", &[("x-tenant-id", "a")])).await;
    assert_eq!(body, "a");
}

#[test]
fn a_single_tenant_policy_cannot_require_credentials() {
    let built = TenancyLayer::builder(TenantPolicy::single(id("main")))
        .require_credentials(true)
        .build();
    assert!(matches!(
        built,
        Err(tower_tenancy::PolicyError::CredentialsWithoutTenants)
    ));
    let unreachable_default =
        TenancyLayer::builder(TenantPolicy::optional(id("default")).allow([id("a")])).build();
    assert!(matches!(
        unreachable_default,
        Err(tower_tenancy::PolicyError::DefaultNotAllowed(_))
    ));
}
