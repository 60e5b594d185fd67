//! [`SubdomainResolver`]: the tenant is the first label of the host name,
//! `{tenant}.example.com`.

use async_trait::async_trait;
use http::header::HOST;
use http::request::Parts;
use http::uri::Authority;

use super::{Candidate, ResolveInput, TenantResolver, TenantSource};
use crate::error::TenancyError;
use crate::policy::PolicyError;

/// Reads the tenant from the host name: `acme.example.com` names `acme`.
///
/// The host comes from the request URI's authority (HTTP/2, absolute-form
/// requests) or else the `Host` header, and is compared without its port
/// and in lower case (DNS names are case-insensitive, so `ACME.example.com`
/// also names `acme`: give tenants reached by host name lower-case ids).
/// International names arrive in their ASCII (punycode) form, so
/// `bücher.example.com` is the tenant `xn--bcher-kva`; a host with raw
/// non-ASCII bytes is refused.
///
/// | host | result |
/// |---|---|
/// | `acme.example.com`, `ACME.Example.COM:8443`, `acme.example.com.` | `acme` |
/// | `example.com`, `other.org`, `badexample.com`, `127.0.0.1`, an ignored label (`www`) | no tenant: the next resolver, or the policy's default / 400 `tenant_required` |
/// | `a.b.example.com`, `.example.com`, `a..example.com`, `user@acme.example.com`, non-ASCII bytes, two `Host` headers | 400 `invalid_tenant_id` |
///
/// The `Host` header is chosen by the client, like any header: a host name
/// is not a credential. Behind a proxy, have it pass the original `Host`
/// on (this resolver does not read `X-Forwarded-Host`).
///
/// ```
/// use tower_tenancy::{SubdomainResolver, TenancyLayer, TenantPolicy};
///
/// let layer = TenancyLayer::builder(TenantPolicy::required())
///     .resolver(SubdomainResolver::new("example.com")?.ignore(["www", "api"]))
///     .build()?;
/// # Ok::<(), tower_tenancy::PolicyError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SubdomainResolver {
    /// Lower case, without leading or trailing dots.
    base: Box<str>,
    ignored: Vec<Box<str>>,
}

impl SubdomainResolver {
    /// Tenants are the labels directly under `base_domain`
    /// (`example.com`); an error when it is not a plain DNS name.
    pub fn new(base_domain: &str) -> Result<Self, PolicyError> {
        let base = base_domain.trim().trim_matches('.').to_ascii_lowercase();
        let well_formed = !base.is_empty()
            && base.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !well_formed {
            return Err(PolicyError::InvalidDomain(base_domain.to_owned()));
        }
        Ok(Self {
            base: base.into(),
            ignored: Vec::new(),
        })
    }

    /// Labels that name no tenant (`www`, `api`): such a host is treated
    /// like the bare base domain. Compared in lower case.
    pub fn ignore<I, S>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.ignored.extend(
            labels
                .into_iter()
                .map(|l| l.as_ref().to_ascii_lowercase().into()),
        );
        self
    }

    fn find(&self, parts: &Parts) -> Result<Option<Candidate>, TenancyError> {
        let invalid = TenancyError::InvalidTenantId {
            from: TenantSource::Host,
        };
        let Some(host) = host_of(parts).map_err(|()| invalid.clone())? else {
            return Ok(None);
        };
        let host = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
        let Some(label) = host
            .strip_suffix(&*self.base)
            .and_then(|rest| rest.strip_suffix('.'))
        else {
            // The base domain itself, or another domain entirely.
            return Ok(None);
        };
        if label.is_empty() {
            return Err(invalid);
        }
        if self.ignored.iter().any(|ignored| **ignored == *label) {
            return Ok(None);
        }
        // A deeper name (`a.b.example.com`) is proposed whole: its dot
        // makes the policy refuse it as an invalid id.
        Ok(Candidate::new(label, TenantSource::Host))
    }
}

/// The request's host name without port: from the URI (HTTP/2, absolute
/// form) or the one `Host` header. `Err` when it cannot be read
/// unambiguously.
fn host_of(parts: &Parts) -> Result<Option<String>, ()> {
    let authority = match parts.uri.authority() {
        Some(authority) => authority.clone(),
        None => {
            let mut values = parts.headers.get_all(HOST).iter();
            let Some(value) = values.next() else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err(());
            }
            let text = value.to_str().map_err(|_| ())?;
            text.trim().parse::<Authority>().map_err(|_| ())?
        }
    };
    if authority.as_str().contains('@') {
        // User information has no place in a host name; read past it, a
        // tenant could hide behind another name.
        return Err(());
    }
    let host = authority.host();
    // `Authority` takes any text after the colon; a port is digits.
    let port = authority.as_str().get(host.len()..).unwrap_or_default();
    let port_ok = port.strip_prefix(':').map_or(port.is_empty(), |digits| {
        digits.bytes().all(|b| b.is_ascii_digit())
    });
    if !port_ok {
        return Err(());
    }
    Ok(Some(host.to_owned()))
}

#[async_trait]
impl TenantResolver for SubdomainResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        self.find(input.parts)
    }

    fn hint(&self) -> Option<String> {
        Some(format!("a host name '{{tenant}}.{}'", self.base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(resolver: &SubdomainResolver, host: &[u8]) -> Result<Option<String>, TenancyError> {
        let mut parts = http::Request::builder()
            .uri("/records")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        parts.headers.insert(
            HOST,
            http::HeaderValue::from_bytes(host).expect("header bytes"),
        );
        resolver
            .find(&parts)
            .map(|c| c.map(|c| c.value().to_owned()))
    }

    fn example() -> SubdomainResolver {
        SubdomainResolver::new("Example.COM").expect("valid base")
    }

    #[test]
    fn the_first_label_under_the_base_is_the_tenant() {
        for host in [
            "acme.example.com",
            "ACME.Example.Com",
            "acme.example.com:8443",
            "acme.example.com.",
            " acme.example.com ",
        ] {
            assert_eq!(
                find(&example(), host.as_bytes()).expect("ok").as_deref(),
                Some("acme"),
                "{host}"
            );
        }
        assert_eq!(
            find(&example(), b"xn--bcher-kva.example.com")
                .expect("ok")
                .as_deref(),
            Some("xn--bcher-kva"),
            "punycode is the id"
        );
    }

    #[test]
    fn other_hosts_name_no_tenant() {
        let resolver = example().ignore(["WWW"]);
        for host in [
            "example.com",
            "example.com:80",
            "badexample.com",
            "acme.example.org",
            "example.com.evil.net",
            "127.0.0.1:8080",
            "[::1]:8080",
            "www.example.com",
        ] {
            assert_eq!(find(&resolver, host.as_bytes()), Ok(None), "{host}");
        }
    }

    #[test]
    fn malformed_hosts_are_refused_not_ignored() {
        let invalid = Err(TenancyError::InvalidTenantId {
            from: TenantSource::Host,
        });
        for host in [
            &b".example.com"[..],
            b"user@acme.example.com",
            "bücher.example.com".as_bytes(),
            b"acme.example.com:port",
            b"acme.example.com/x",
        ] {
            assert_eq!(
                find(&example(), host),
                invalid,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
        // Proposed whole, then refused by the policy's id rule.
        for (host, proposed) in [("a.b.example.com", "a.b"), ("a..example.com", "a.")] {
            assert_eq!(
                find(&example(), host.as_bytes()).expect("ok").as_deref(),
                Some(proposed)
            );
            assert!(!crate::id::is_valid(proposed), "{proposed}");
        }
    }

    #[test]
    fn two_host_headers_are_refused() {
        let mut parts = http::Request::builder()
            .uri("/")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        parts
            .headers
            .append(HOST, http::HeaderValue::from_static("a.example.com"));
        parts
            .headers
            .append(HOST, http::HeaderValue::from_static("b.example.com"));
        assert!(example().find(&parts).is_err());
    }

    #[test]
    fn the_uri_authority_wins_over_the_header() {
        let mut parts = http::Request::builder()
            .uri("https://acme.example.com/records")
            .body(())
            .expect("request")
            .into_parts()
            .0;
        parts
            .headers
            .insert(HOST, http::HeaderValue::from_static("other.example.com"));
        let found = example().find(&parts).expect("ok").expect("found");
        assert_eq!(found.value(), "acme");
    }

    #[test]
    fn a_base_domain_must_be_a_dns_name() {
        for bad in [
            "",
            ".",
            "example.com:80",
            "exa mple.com",
            "a..b",
            "*.example.com",
        ] {
            assert!(SubdomainResolver::new(bad).is_err(), "{bad:?}");
        }
        assert!(SubdomainResolver::new(".example.com.").is_ok());
    }
}
