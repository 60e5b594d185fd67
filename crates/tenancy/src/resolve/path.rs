//! [`PathPrefixResolver`]: the tenant is the path segment after a prefix,
//! `/t/{tenant}/…`, and the inner service sees the path without it.

use async_trait::async_trait;
use http::request::Parts;

use super::{Candidate, ResolveInput, TenantResolver, TenantSource};
use crate::error::TenancyError;
use crate::policy::PolicyError;

/// Reads the tenant from the path: with prefix `/t`, `/t/acme/records`
/// names `acme`.
///
/// Once the tenant is decided the layer strips `/t/acme` from the URI, so
/// the inner router sees `/records` (the query string is kept; axum's
/// `OriginalUri` extension keeps the full one). The routes are therefore
/// written once, without a `{tenant}` parameter. For that to reach routing,
/// the layer must wrap the router (`layer.layer(router)`, or a
/// `ServiceBuilder` around it), not be added with `Router::layer`, which
/// runs after a route was matched on the unstripped path.
///
/// The segment is not percent-decoded: a tenant id never needs escaping,
/// so `%2e%2e`, `..`, `a;b` and the like are refused as invalid ids (400
/// `invalid_tenant_id`), as is an empty segment followed by more path
/// (`/t//records`). A path outside the prefix (`/health`, `/tx/acme`)
/// names no tenant and is left alone. Paths are case-sensitive: `/T/acme`
/// is outside `/t`.
///
/// ```
/// use tower_tenancy::{PathPrefixResolver, TenancyLayer, TenantPolicy};
///
/// let layer = TenancyLayer::builder(TenantPolicy::required())
///     .resolver(PathPrefixResolver::new("/t")?)
///     .build()?;
/// let app = tower::Layer::layer(&layer, axum::Router::<()>::new());
/// # let _ = app;
/// # Ok::<(), tower_tenancy::PolicyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct PathPrefixResolver {
    /// Starts with `/` and has no trailing `/`; empty for a tenant in the
    /// first segment.
    prefix: Box<str>,
}

impl PathPrefixResolver {
    /// Tenants are the segment after `prefix` (`/t`; `/` for the first
    /// segment). An error when the prefix is not plain path segments
    /// (letters, digits, `-`, `_`, `.`, `~`; no `.` or `..` segment).
    pub fn new(prefix: &str) -> Result<Self, PolicyError> {
        let trimmed = prefix.trim().trim_matches('/');
        let well_formed = trimmed.is_empty()
            || trimmed.split('/').all(|segment| {
                !segment.is_empty()
                    && segment != "."
                    && segment != ".."
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            });
        if !well_formed {
            return Err(PolicyError::InvalidPathPrefix(prefix.to_owned()));
        }
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        };
        Ok(Self {
            prefix: prefix.into(),
        })
    }

    /// The tenant segment and what follows it, when `path` is under the
    /// prefix (at a segment boundary).
    fn split<'a>(&self, path: &'a str) -> Option<(&'a str, &'a str)> {
        let after = path.strip_prefix(&*self.prefix)?.strip_prefix('/')?;
        Some(match after.find('/') {
            Some(end) => after.split_at(end),
            None => (after, ""),
        })
    }

    fn find(&self, parts: &Parts) -> Result<Option<Candidate>, TenancyError> {
        match self.split(parts.uri.path()) {
            None | Some(("", "")) => Ok(None),
            Some(("", _)) => Err(TenancyError::InvalidTenantId {
                from: TenantSource::Path,
            }),
            Some((segment, _)) => Ok(Candidate::new(segment, TenantSource::Path)),
        }
    }
}

#[async_trait]
impl TenantResolver for PathPrefixResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        self.find(input.parts)
    }

    fn hint(&self) -> Option<String> {
        Some(format!("a path starting '{}/{{tenant}}/'", self.prefix))
    }

    /// Strips the prefix and a valid tenant segment; anything else is left
    /// as it came.
    fn inner_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let (segment, rest) = self.split(path)?;
        if !crate::id::is_valid(segment) {
            return None;
        }
        Some(if rest.is_empty() { "/" } else { rest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(resolver: &PathPrefixResolver, uri: &str) -> Result<Option<String>, TenancyError> {
        let parts = http::Request::builder()
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0;
        resolver
            .find(&parts)
            .map(|c| c.map(|c| c.value().to_owned()))
    }

    fn t() -> PathPrefixResolver {
        PathPrefixResolver::new("/t/").expect("valid prefix")
    }

    #[test]
    fn the_segment_after_the_prefix_is_the_tenant() {
        for (uri, inner) in [
            ("/t/acme/records", "/records"),
            ("/t/acme/records/?limit=1", "/records/"),
            ("/t/acme", "/"),
            ("/t/acme/", "/"),
            ("/t/Acme-1/a/b", "/a/b"),
        ] {
            let tenant = uri
                .trim_start_matches("/t/")
                .split(['/', '?'])
                .next()
                .unwrap_or_default();
            assert_eq!(find(&t(), uri).expect("ok").as_deref(), Some(tenant));
            let path = uri.split('?').next().unwrap_or_default();
            assert_eq!(t().inner_path(path), Some(inner), "{uri}");
        }
    }

    #[test]
    fn paths_outside_the_prefix_are_left_alone() {
        for uri in [
            "/",
            "/health",
            "/tx/acme",
            "/T/acme",
            "/t",
            "/t/",
            "/records/t/acme",
        ] {
            assert_eq!(find(&t(), uri), Ok(None), "{uri}");
            assert_eq!(t().inner_path(uri), None, "{uri}");
        }
    }

    #[test]
    fn hostile_segments_are_proposed_raw_and_never_stripped() {
        for (uri, segment) in [
            ("/t/../admin", ".."),
            ("/t/%2e%2e/admin", "%2e%2e"),
            ("/t/ac%6De/records", "ac%6De"),
            ("/t/a;b/records", "a;b"),
            ("/t/.acme/x", ".acme"),
        ] {
            assert_eq!(find(&t(), uri).expect("ok").as_deref(), Some(segment));
            assert!(
                !crate::id::is_valid(segment),
                "{segment} reaches the policy"
            );
            assert_eq!(t().inner_path(uri), None, "{uri}");
        }
        assert_eq!(
            find(&t(), "/t//records"),
            Err(TenancyError::InvalidTenantId {
                from: TenantSource::Path
            })
        );
    }

    #[test]
    fn a_root_prefix_takes_the_first_segment() {
        let root = PathPrefixResolver::new("/").expect("valid");
        assert_eq!(find(&root, "/acme/x").expect("ok").as_deref(), Some("acme"));
        assert_eq!(root.inner_path("/acme/x"), Some("/x"));
        let deep = PathPrefixResolver::new("api/tenants").expect("valid");
        assert_eq!(
            find(&deep, "/api/tenants/acme/x").expect("ok").as_deref(),
            Some("acme")
        );
    }

    #[test]
    fn a_prefix_must_be_plain_segments() {
        for bad in ["/t/{tenant}", "/t/../x", "/a//b", "/t?x", "/t%2f"] {
            assert!(PathPrefixResolver::new(bad).is_err(), "{bad}");
        }
    }
}
