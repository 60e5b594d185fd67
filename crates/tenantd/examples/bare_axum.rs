//! The peer that `scripts/bench-http.sh --peers` measures tenantd against:
//! axum 0.8 with nothing added (no tenancy, no auth, no limits, no usage
//! counting, no storage, no tracing), answering `GET /records/{id}` with a
//! fixed JSON body read once at startup. tenantd's figures are reported as
//! ratios to this one, so what the ratio shows is the cost of what tenantd
//! adds on top of the same framework and runtime, on the same machine in
//! the same run; nginx serving the same bytes is the machine's ceiling.
//!
//! It is built with tenantd's own axum and tokio (same versions, same
//! features) so that the comparison is not one of framework builds.
//!
//! Usage: `bare_axum [PORT] [BODY_FILE]` (or `BARE_AXUM_PORT`,
//! `BARE_AXUM_BODY`); the port defaults to 18082 and the body to `{}`.
//! Serves on 127.0.0.1 until killed.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

const DEFAULT_PORT: u16 = 18082;

/// The one handler: the body as tenantd would send it (same bytes, same
/// content type); `Bytes` clones are a reference count, as a static
/// response should be.
async fn record(State(body): State<Bytes>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], body)
}

/// The argument at `index`, else the environment variable `var`.
fn arg_or_env(index: usize, var: &str) -> Option<String> {
    std::env::args()
        .nth(index)
        .or_else(|| std::env::var(var).ok())
}

// Multi-thread runtime with one worker per core, as tenantd runs.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let port = match arg_or_env(1, "BARE_AXUM_PORT") {
        Some(p) => p.parse().with_context(|| format!("port {p:?}"))?,
        None => DEFAULT_PORT,
    };
    let body = match arg_or_env(2, "BARE_AXUM_BODY") {
        Some(path) => std::fs::read(&path).with_context(|| format!("reading {path}"))?,
        None => b"{}".to_vec(),
    };
    let app = Router::new()
        .route("/records/{id}", get(record))
        .with_state(Bytes::from(body));
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}
