//! The client IP of a request: the peer, unless the peer is a trusted proxy,
//! in which case its `X-Forwarded-For` (or `X-Real-IP`) is believed.
//!
//! `X-Forwarded-For` lists the hops left to right, each proxy appending the
//! address it received from. Only the entries appended by trusted proxies
//! can be believed, so the client is the right-most entry that is not a
//! trusted proxy itself: whatever a client writes in its own header stays
//! to the left of that and is never taken.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Trusted proxy ranges.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// From ranges already checked by the config.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client address of a request from `peer` with these header values.
    pub fn client_ip(
        &self,
        peer: IpAddr,
        forwarded_for: Option<&str>,
        real_ip: Option<&str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        if let Some(xff) = forwarded_for {
            // The nearest hop we believe so far: start at the peer.
            let mut nearest = peer;
            for entry in xff.rsplit(',') {
                let Some(ip) = parse_hop(entry) else {
                    // Garbage: nothing further left can be believed.
                    return nearest;
                };
                if !self.trusts(ip) {
                    return ip;
                }
                nearest = ip;
            }
            // Every hop is a trusted proxy: the left-most is the origin.
            return nearest;
        }
        real_ip.and_then(parse_hop).unwrap_or(peer)
    }
}

/// An address as proxies write it: bare, `ip:port`, `[v6]:port`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    t.parse::<IpAddr>()
        .ok()
        .or_else(|| t.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, from dual-stack sockets)
/// as plain IPv4, so one range matches both forms.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter()
                .filter_map(|n| mecha_config::parse_cidr(n))
                .collect(),
        )
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("203.0.113.5"), Some("1.1.1.1"), Some("2.2.2.2")),
            ip("203.0.113.5")
        );
        let none = proxies(&[]);
        assert_eq!(
            none.client_ip(ip("10.0.0.1"), Some("1.1.1.1"), None),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let t = proxies(&["10.0.0.0/8", "192.168.0.0/16"]);
        // The client forged "6.6.6.6"; the edge appended the real client.
        assert_eq!(
            t.client_ip(
                ip("10.0.0.2"),
                Some("6.6.6.6, 203.0.113.9, 192.168.1.1"),
                None
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), Some("203.0.113.9:5000"), None),
            ip("203.0.113.9")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), Some("[2001:db8::7]:443"), None),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn all_trusted_hops_give_the_left_most_and_garbage_stops_the_walk() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), Some("10.1.1.1, 10.2.2.2"), None),
            ip("10.1.1.1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.2"), Some("1.2.3.4, junk, 10.2.2.2"), None),
            ip("10.2.2.2")
        );
        assert_eq!(t.client_ip(ip("10.0.0.2"), Some(""), None), ip("10.0.0.2"));
    }

    #[test]
    fn x_real_ip_is_used_without_forwarded_for() {
        let t = proxies(&["127.0.0.1"]);
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), None, Some("198.51.100.1")),
            ip("198.51.100.1")
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), None, Some("nonsense")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn mapped_v6_peers_match_v4_ranges() {
        let t = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("::ffff:10.0.0.1"), Some("198.51.100.2"), None),
            ip("198.51.100.2")
        );
    }
}
