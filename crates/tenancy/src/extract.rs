//! The axum extractors that hand handlers the decided tenant: [`Tenant`],
//! `Option<Tenant>`, and (feature `json`) [`TenantJson`] for JSON bodies
//! that may name their tenant.

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::context::TenantContext;
use crate::error::TenancyError;

/// Extractor for the request's tenant, as the [`crate::TenancyLayer`]
/// decided it (from the credential, the resolver, a declared route's body,
/// or the default tenant).
///
/// Without the layer in front it refuses with a 500 (a route that asks
/// for a tenant must sit behind it). On exempt paths, where no tenant is
/// decided, take `Option<Tenant>`: it is `None` there.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_tenancy::{Tenant, TenancyLayer, TenantPolicy};
///
/// async fn hello(Tenant(ctx): Tenant) -> String {
///     format!("hello, {}", ctx.tenant_id())
/// }
///
/// /// Exempt from tenancy, but greets a tenant when one is decided.
/// async fn health(tenant: Option<Tenant>) -> &'static str {
///     if tenant.is_some() { "ok (tenant)" } else { "ok" }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// use tower::ServiceExt;
/// let app = Router::new()
///     .route("/hello", get(hello))
///     .route("/health", get(health))
///     .layer(TenancyLayer::builder(TenantPolicy::required()).build()?);
///
/// let request = http::Request::get("/hello")
///     .header("X-Tenant-ID", "acme")
///     .body(axum::body::Body::empty())?;
/// let response = app.oneshot(request).await?;
/// let body = axum::body::to_bytes(response.into_body(), 1024).await?;
/// assert_eq!(body, "hello, acme");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = TenancyError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Tenant)
            .ok_or(TenancyError::NotConfigured)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Tenant {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<TenantContext>().cloned().map(Tenant))
    }
}

impl std::ops::Deref for Tenant {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.0
    }
}

#[cfg(feature = "json")]
pub use json::{BodyTenant, TenantJson, TenantJsonRejection};

#[cfg(feature = "json")]
mod json {
    use axum::Json;
    use axum_core::extract::{FromRequest, Request};
    use axum_core::response::{IntoResponse, Response};

    use crate::context::TenantContext;
    use crate::error::TenancyError;
    use crate::resolve::TenantSource;
    use crate::service::BodyTenantRead;

    /// A request body that may name its tenant (a `tenant_id` field).
    ///
    /// Implement it for your body type, and for your own JSON extractor if
    /// you use one instead of `axum::Json` (this crate implements it for
    /// `Json<T>`).
    pub trait BodyTenant {
        /// The body's `tenant_id`, if sent.
        fn body_tenant(&self) -> Option<&str>;
    }

    impl<T: BodyTenant> BodyTenant for Json<T> {
        fn body_tenant(&self) -> Option<&str> {
            self.0.body_tenant()
        }
    }

    /// A JSON body (parsed by the extractor `J`, e.g. `Json<T>`) together
    /// with the request's tenant.
    ///
    /// The layer decided the tenant before anything ran, from the head
    /// *and* this body's `tenant_id` (on routes declared with
    /// [`crate::TenancyLayerBuilder::body_tenant_routes`]); this extractor
    /// only parses the body with `J` and takes that decision. It refuses:
    /// - whatever `J` refuses (a malformed body), first;
    /// - with a 500 when the layer is missing, or when the body names a
    ///   tenant on a route the layer was not told reads bodies (the tenant
    ///   was decided without it);
    /// - with 400 `tenant_conflict` when the body names another tenant than
    ///   the decided one (the layer judged the same bytes, so this only
    ///   trips if `J` reads a body the layer did not take for JSON). With a
    ///   single-tenant policy, bodies are not looked at.
    ///
    /// ```
    /// use axum::{Json, Router, routing::post};
    /// use serde::Deserialize;
    /// use tower_tenancy::{BodyTenant, Tenant, TenantJson, TenancyLayer, TenantPolicy};
    ///
    /// #[derive(Deserialize)]
    /// struct NewThing { name: String, tenant_id: Option<String> }
    ///
    /// impl BodyTenant for NewThing {
    ///     fn body_tenant(&self) -> Option<&str> { self.tenant_id.as_deref() }
    /// }
    ///
    /// async fn create(TenantJson(ctx, Json(thing)): TenantJson<Json<NewThing>>) -> String {
    ///     format!("{} in {}", thing.name, ctx.tenant_id())
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// use tower::ServiceExt;
    /// let layer = TenancyLayer::builder(TenantPolicy::required())
    ///     .body_tenant_routes(|parts| parts.uri.path() == "/things")
    ///     .build()?;
    /// let app = Router::new().route("/things", post(create)).layer(layer);
    /// let request = http::Request::post("/things")
    ///     .header("content-type", "application/json")
    ///     .body(axum::body::Body::from(r#"{"name":"lamp","tenant_id":"acme"}"#))?;
    /// let response = app.oneshot(request).await?;
    /// let body = axum::body::to_bytes(response.into_body(), 1024).await?;
    /// assert_eq!(body, "lamp in acme");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct TenantJson<J>(pub TenantContext, pub J);

    /// Why [`TenantJson`] refused: the body extractor's own rejection, or
    /// a tenancy refusal.
    #[derive(Debug)]
    pub enum TenantJsonRejection<R> {
        /// The body extractor refused (its response is sent as it is).
        Body(R),
        /// The tenant could not be taken (see [`TenantJson`]).
        Tenancy(TenancyError),
    }

    impl<R: IntoResponse> IntoResponse for TenantJsonRejection<R> {
        fn into_response(self) -> Response {
            match self {
                Self::Body(rejection) => rejection.into_response(),
                Self::Tenancy(refusal) => refusal.into_response(),
            }
        }
    }

    impl<S, J> FromRequest<S> for TenantJson<J>
    where
        S: Send + Sync,
        J: FromRequest<S> + BodyTenant,
    {
        type Rejection = TenantJsonRejection<J::Rejection>;

        async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
            let ctx = req.extensions().get::<TenantContext>().cloned();
            let read_by_layer = req.extensions().get::<BodyTenantRead>().is_some();
            let body = J::from_request(req, state)
                .await
                .map_err(TenantJsonRejection::Body)?;
            let refuse = TenantJsonRejection::Tenancy;
            let ctx = ctx.ok_or(refuse(TenancyError::NotConfigured))?;
            let named = body.body_tenant().map(str::trim).filter(|t| !t.is_empty());
            if named.is_some() && !read_by_layer {
                return Err(refuse(TenancyError::BodyTenantNotDeclared));
            }
            if let Some(named) = named
                && named != ctx.tenant_id().as_str()
                && ctx.source() != TenantSource::Default
            {
                return Err(refuse(TenancyError::Conflict {
                    first: ctx.source(),
                    second: TenantSource::Body,
                }));
            }
            Ok(Self(ctx, body))
        }
    }
}
