//! The client's address behind trusted proxies (`X-Forwarded-For`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::request::Parts;
use ipnet::IpNet;

use crate::error::TenancyError;

/// The client's address: the TCP peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy. Entries left of it are client-controlled and ignored;
/// an unreadable entry right of it (in the part of the chain the trusted
/// proxies wrote) is a refusal: falling back to the peer would let a client
/// that prepends junk be taken for the proxy.
pub fn client_ip(trusted_proxies: &[IpNet], parts: &Parts) -> Result<Option<IpAddr>, TenancyError> {
    let Some(peer) = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
    else {
        return Ok(None);
    };
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Ok(Some(peer));
    }
    let mut hops: Vec<&str> = Vec::new();
    for value in parts.headers.get_all("x-forwarded-for") {
        let text = value
            .to_str()
            .map_err(|_| TenancyError::InvalidForwardedFor)?;
        hops.extend(text.split(',').map(str::trim));
    }
    let mut leftmost = peer;
    for hop in hops.iter().rev() {
        let ip = hop
            .parse::<IpAddr>()
            .map_err(|_| TenancyError::InvalidForwardedFor)?;
        if !trusted(&ip) {
            return Ok(Some(ip));
        }
        leftmost = ip;
    }
    // Every hop is a trusted proxy: the first one is as far as we can see.
    Ok(Some(leftmost))
}
