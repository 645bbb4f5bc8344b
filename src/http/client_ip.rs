//! The caller's address for per-address limits (staff-login failures): the TCP peer, or, behind
//! `http.trusted_proxy_hops` reverse proxies (e.g. 1 for ingress-nginx), the address the
//! outermost trusted proxy saw, taken from the right of `X-Forwarded-For`. Entries left of that
//! are written by the client and never trusted.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// The address per-client limits apply to.
pub fn client_ip(trusted_proxy_hops: usize, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if trusted_proxy_hops == 0 {
        return peer;
    }
    // every X-Forwarded-For header, in order, as one list
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    // the proxy next to us appended what it saw last; each further trusted proxy one more
    forwarded
        .len()
        .checked_sub(trusted_proxy_hops)
        .and_then(|i| forwarded.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                "x-forwarded-for",
                v.parse().unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn only_trusted_hops_are_believed() {
        let peer: IpAddr = [10, 0, 0, 9].into();
        let client: IpAddr = [203, 0, 113, 7].into();
        // no proxy trusted: the header is the client's own claim
        assert_eq!(client_ip(0, peer, &headers(&["203.0.113.7"])), peer);
        // one proxy (ingress): the last entry is what it saw; a forged first entry is ignored
        assert_eq!(
            client_ip(1, peer, &headers(&["1.2.3.4, 203.0.113.7"])),
            client
        );
        assert_eq!(
            client_ip(1, peer, &headers(&["1.2.3.4", "203.0.113.7"])),
            client
        );
        // two proxies (load balancer + ingress)
        assert_eq!(
            client_ip(2, peer, &headers(&["203.0.113.7, 10.0.0.5"])),
            client
        );
        // missing or malformed: the peer
        assert_eq!(client_ip(1, peer, &HeaderMap::new()), peer);
        assert_eq!(client_ip(2, peer, &headers(&["203.0.113.7"])), peer);
        assert_eq!(client_ip(1, peer, &headers(&["not-an-ip"])), peer);
    }
}
