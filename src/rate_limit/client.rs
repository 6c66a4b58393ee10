//! Who a request counts against: the key of its client for the rate limit
//! and the per-client share of the in-flight cap.
//!
//! Without a trusted proxy, the client is the peer address: anything in the
//! request's headers is the client's own word. Behind proxies, each proxy
//! appends the address it received the request from to `X-Forwarded-For`
//! (or RFC 7239 `Forwarded`), so the entries a client wrote come first and
//! the ones the proxies wrote come last. With `hops` proxies in front, the
//! client is the `hops`-th entry from the right, read across every line of
//! the header (a client can send lines of its own, and a proxy that appends
//! a line of its own leaves them in place). A request with fewer entries
//! than that did not come through the proxies, and counts against its peer.
//!
//! One host owns a whole IPv6 prefix (a /64, usually), so an IPv6 client is
//! keyed by its prefix: otherwise it could pick a fresh address, and a fresh
//! allowance, for every request.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::http::header::{HeaderMap, HeaderName, FORWARDED, X_FORWARDED_FOR};

/// Which header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    XForwardedFor,
    /// RFC 7239's `Forwarded`, its `for=` parameters.
    Forwarded,
}

/// How a request's client is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Proxies in front of switchboard whose header entries are trusted;
    /// 0 trusts no header.
    pub trusted_hops: usize,
    pub header: ForwardedHeader,
    /// The prefix length an IPv6 client is keyed by (128: the address).
    pub ipv6_prefix: u8,
}

impl ClientPolicy {
    /// The key of the client of a request from `peer` with `headers`.
    pub fn key(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let forwarded = if self.trusted_hops == 0 {
            None
        } else {
            self.forwarded_client(headers)
        };
        forwarded.or(peer).map(|ip| self.masked(ip))
    }

    /// The entry the outermost trusted proxy wrote, if every trusted proxy
    /// wrote one.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let (name, parse): (HeaderName, fn(&str) -> Option<IpAddr>) = match self.header {
            ForwardedHeader::XForwardedFor => (X_FORWARDED_FOR, parse_node),
            ForwardedHeader::Forwarded => (FORWARDED, forwarded_for),
        };
        let mut entries: Vec<&str> = Vec::new();
        for line in headers.get_all(name) {
            // A line that is not text makes the whole chain untrustworthy.
            entries.extend(line.to_str().ok()?.split(','));
        }
        let index = entries.len().checked_sub(self.trusted_hops)?;
        parse(entries[index].trim())
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let keep = u32::from(self.ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
                }
            },
        }
    }
}

/// An address as proxies write it: bare, with a port, or an IPv6 address in
/// brackets (with or without a port).
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, _port) = node.rsplit_once(':')?;
    host.parse().ok()
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(value))?
    })
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn policy(trusted_hops: usize, header: ForwardedHeader) -> ClientPolicy {
        ClientPolicy {
            trusted_hops,
            header,
            ipv6_prefix: 64,
        }
    }

    fn headers(name: HeaderName, lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(name.clone(), HeaderValue::from_str(line).unwrap());
        }
        map
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    const PEER: &str = "10.0.0.2";

    #[test]
    fn without_trust_the_peer_is_the_client_whatever_the_headers_say() {
        let forged = headers(X_FORWARDED_FOR, &["1.2.3.4"]);
        let key = policy(0, ForwardedHeader::XForwardedFor).key(ip(PEER), &forged);
        assert_eq!(key, ip(PEER));
    }

    #[test]
    fn one_trusted_proxy_is_believed_for_the_entry_it_wrote_only() {
        let one = policy(1, ForwardedHeader::XForwardedFor);
        // The client's own line first, the proxy's appended after it.
        let lines = headers(X_FORWARDED_FOR, &["6.6.6.6", "203.0.113.9"]);
        assert_eq!(one.key(ip(PEER), &lines), ip("203.0.113.9"));
        let list = headers(X_FORWARDED_FOR, &["6.6.6.6, 7.7.7.7, 203.0.113.9"]);
        assert_eq!(one.key(ip(PEER), &list), ip("203.0.113.9"));
        // No entry: the request did not come through the proxy.
        assert_eq!(one.key(ip(PEER), &HeaderMap::new()), ip(PEER));
    }

    #[test]
    fn two_hops_take_the_second_entry_from_the_right() {
        let two = policy(2, ForwardedHeader::XForwardedFor);
        let chain = headers(X_FORWARDED_FOR, &["6.6.6.6, 203.0.113.9", "198.51.100.1"]);
        assert_eq!(two.key(ip(PEER), &chain), ip("203.0.113.9"));
        let short = headers(X_FORWARDED_FOR, &["203.0.113.9"]);
        assert_eq!(two.key(ip(PEER), &short), ip(PEER), "too few entries");
    }

    #[test]
    fn forwarded_elements_are_read_by_their_for_parameter() {
        let one = policy(1, ForwardedHeader::Forwarded);
        let lines = headers(
            FORWARDED,
            &[
                "for=6.6.6.6;proto=https",
                "for=\"[2001:db8:cafe::17]:4711\";by=10.0.0.1",
            ],
        );
        assert_eq!(one.key(ip(PEER), &lines), ip("2001:db8:cafe::"));
        let ported = headers(FORWARDED, &["proto=http;For=192.0.2.60:8080"]);
        assert_eq!(one.key(ip(PEER), &ported), ip("192.0.2.60"));
        // X-Forwarded-For is not what this proxy writes: ignored.
        let other = headers(X_FORWARDED_FOR, &["192.0.2.60"]);
        assert_eq!(one.key(ip(PEER), &other), ip(PEER));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let none = HeaderMap::new();
        let by_64 = policy(0, ForwardedHeader::XForwardedFor);
        assert_eq!(
            by_64.key(ip("2001:db8:1:2:aaaa::1"), &none),
            ip("2001:db8:1:2::")
        );
        assert_eq!(by_64.key(ip("::ffff:192.0.2.1"), &none), ip("192.0.2.1"));
        let exact = ClientPolicy {
            ipv6_prefix: 128,
            ..by_64
        };
        assert_eq!(exact.key(ip("2001:db8::1"), &none), ip("2001:db8::1"));
    }

    #[test]
    fn garbage_entries_count_against_the_peer() {
        let one = policy(1, ForwardedHeader::XForwardedFor);
        let junk = headers(X_FORWARDED_FOR, &["1.2.3.4, not-an-address"]);
        assert_eq!(one.key(ip(PEER), &junk), ip(PEER));
    }
}
