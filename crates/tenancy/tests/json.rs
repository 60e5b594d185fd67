//! `TenantJson` (feature `json`): a JSON body that may name its tenant,
//! read once by the layer and parsed once by the handler's extractor.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use tower::ServiceExt;
use tower_tenancy::{BodyTenant, TenancyLayer, TenantJson, TenantPolicy};

#[derive(Deserialize)]
struct Thing {
    name: String,
    tenant_id: Option<String>,
}

impl BodyTenant for Thing {
    fn body_tenant(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }
}

async fn create(TenantJson(ctx, Json(thing)): TenantJson<Json<Thing>>) -> String {
    format!("{}:{:?}:{}", ctx.tenant_id(), ctx.source(), thing.name)
}

/// A body parser that does not look at the content type, unlike the layer:
/// the case the extractor's own conflict check exists for.
struct AnyJson<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for AnyJson<T> {
    type Rejection = StatusCode;

    async fn from_request(req: Request, state: &S) -> Result<Self, StatusCode> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        serde_json::from_slice(&bytes)
            .map(AnyJson)
            .map_err(|_| StatusCode::UNPROCESSABLE_ENTITY)
    }
}

impl<T: BodyTenant> BodyTenant for AnyJson<T> {
    fn body_tenant(&self) -> Option<&str> {
        self.0.body_tenant()
    }
}

async fn create_any(TenantJson(ctx, AnyJson(thing)): TenantJson<AnyJson<Thing>>) -> String {
    format!("{}:{}", ctx.tenant_id(), thing.name)
}

fn app(policy: TenantPolicy) -> Router {
    let layer = TenancyLayer::builder(policy)
        .body_tenant_routes(|parts| parts.uri.path() != "/undeclared")
        .build()
        .expect("valid");
    Router::new()
        .route("/things", post(create))
        .route("/undeclared", post(create))
        .route("/any", post(create_any))
        .layer(layer)
}

async fn call(
    app: &Router,
    uri: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, String) {
    let mut request = axum::http::Request::post(uri).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 16).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

const JSON: &str = "application/json";

#[tokio::test]
async fn the_body_names_the_tenant_and_the_handler_gets_both() {
    let app = app(TenantPolicy::required());
    let (status, body) = call(
        &app,
        "/things",
        JSON,
        &[],
        r#"{"name":"lamp","tenant_id":"acme"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "acme:Body:lamp"));
    let (status, body) = call(
        &app,
        "/things",
        JSON,
        &[("x-tenant-id", "acme")],
        r#"{"name":"lamp"}"#,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "acme:Header:lamp")
    );
    let (status, body) = call(
        &app,
        "/things",
        JSON,
        &[("x-tenant-id", "acme")],
        r#"{"name":"lamp","tenant_id":"globex"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("tenant_conflict"), "{body}");
}

#[tokio::test]
async fn the_body_extractor_refuses_first_with_its_own_answer() {
    let app = app(TenantPolicy::required());
    let (status, _) = call(
        &app,
        "/things",
        JSON,
        &[("x-tenant-id", "acme")],
        r#"{"name":"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "axum's Json rejection");
    let (status, _) = call(
        &app,
        "/things",
        JSON,
        &[("x-tenant-id", "acme")],
        r#"{"nom":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn a_body_tenant_on_an_undeclared_route_is_a_wiring_bug() {
    let app = app(TenantPolicy::required());
    let (status, body) = call(
        &app,
        "/undeclared",
        JSON,
        &[("x-tenant-id", "acme")],
        r#"{"name":"lamp","tenant_id":"acme"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["code"], "internal");
    assert_eq!(
        v["detail"], "Internal server error",
        "the cause is logged, not sent"
    );
    // Without a tenant in the body the route works.
    let (status, _) = call(
        &app,
        "/undeclared",
        JSON,
        &[("x-tenant-id", "acme")],
        r#"{"name":"lamp"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_body_the_layer_did_not_read_cannot_name_another_tenant() {
    let app = app(TenantPolicy::required());
    // text/plain: the layer does not take it for JSON, this parser does.
    let (status, body) = call(
        &app,
        "/any",
        "text/plain",
        &[("x-tenant-id", "acme")],
        r#"{"name":"lamp","tenant_id":"globex"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("tenant_conflict"), "{body}");
    let (status, body) = call(
        &app,
        "/any",
        "text/plain",
        &[("x-tenant-id", "acme")],
        r#"{"name":"lamp","tenant_id":"acme"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "acme:lamp"));
}

#[tokio::test]
async fn a_single_tenant_policy_ignores_body_tenants() {
    let app = app(TenantPolicy::single("main".parse().expect("valid")));
    let (status, body) = call(
        &app,
        "/things",
        JSON,
        &[],
        r#"{"name":"lamp","tenant_id":"acme"}"#,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "main:Default:lamp")
    );
}

#[tokio::test]
async fn without_the_layer_it_is_an_internal_error() {
    let app = Router::new().route("/things", post(create));
    let (status, body) = call(&app, "/things", JSON, &[], r#"{"name":"lamp"}"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
}
