//! Address ranges in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or a bare address for one
//! host), as `api.trusted_proxies` names them.

use std::fmt;
use std::net::IpAddr;

/// One parsed range. IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) match their IPv4 range,
/// since a dual-stack socket reports IPv4 peers that way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IPv4 or IPv6 address"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(format!("prefix '/{p}' must be 0-{max}")),
            },
        };
        let masked = mask(network, prefix);
        if masked != network {
            // `10.1.2.3/8` is almost always a typo for a host or for `10.0.0.0/8`: refuse it
            // rather than guess which was meant.
            return Err(format!(
                "host bits are set (did you mean {masked}/{prefix} or {network}?)"
            ));
        }
        Ok(Self { network, prefix })
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `ip` with all but its first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// Parses every entry of a list, or names the first bad one and why.
pub fn parse_all(list: &[String]) -> Result<Vec<Cidr>, (String, String)> {
    list.iter()
        .map(|s| Cidr::parse(s).map_err(|why| (s.clone(), why)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_and_bare_addresses_match_what_they_cover() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            net.contains(ip("::ffff:10.0.0.1")),
            "IPv4-mapped peers of a dual-stack socket"
        );
        let host = Cidr::parse("172.18.0.1").unwrap();
        assert!(host.contains(ip("172.18.0.1")) && !host.contains(ip("172.18.0.2")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert_eq!(host.to_string(), "172.18.0.1/32");
    }

    #[test]
    fn malformed_ranges_are_refused_with_the_reason() {
        for (bad, why) in [
            ("10.0.0.0/33", "0-32"),
            ("10.0.0.0/-1", "0-32"),
            ("10.0.0.0/+8", "0-32"),
            ("2001:db8::/129", "0-128"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("gateway", "not an IPv4 or IPv6 address"),
            ("", "not an IPv4"),
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let (entry, _) = parse_all(&["10.0.0.0/8".into(), "nope".into()]).unwrap_err();
        assert_eq!(entry, "nope");
    }
}
