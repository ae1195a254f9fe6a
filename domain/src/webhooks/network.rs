//! Where webhooks may go. A tenant's URL must not reach into our own network (loopback, private
//! ranges, link-local cloud metadata …) unless an operator allows that network. The check runs when an
//! endpoint is registered and again on every delivery, at DNS resolution time, so a name that later
//! resolves somewhere private (DNS rebinding) is refused too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// A registration waits this long for DNS at most.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    allowed: Vec<IpNet>,
}

impl NetworkPolicy {
    /// Parses comma-separated CIDRs of private networks to allow (empty: none).
    pub fn parse(allowed: &str) -> Result<Self, String> {
        let allowed = allowed
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<IpNet>().map_err(|_| format!("allowed_private_networks: {s:?} is not a CIDR such as 127.0.0.0/8")))
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL a tenant registers: http(s), a host, and every address it resolves to permitted.
    pub async fn check_url(&self, text: &str) -> Result<url::Url, String> {
        let url = url::Url::parse(text).map_err(|e| format!("'{text}' is not a valid URL ({e})"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(format!("webhook URLs must be http or https, not '{}'", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("webhook URLs must not carry credentials; verify deliveries with the signing secret".into());
        }
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((host.trim_matches(['[', ']']), port));
        let addresses: Vec<SocketAddr> = tokio::time::timeout(DNS_TIMEOUT, lookup)
            .await
            .map_err(|_| format!("looking up the host '{host}' took over {DNS_TIMEOUT:?}"))?
            .map_err(|e| format!("the host '{host}' does not resolve ({e})"))?
            .collect();
        match addresses.iter().find(|a| !self.permits(a.ip())) {
            Some(private) => Err(format!(
                "'{host}' resolves to {}, a private, loopback or reserved address; webhooks only go to public addresses",
                private.ip()
            )),
            None if addresses.is_empty() => Err(format!("the host '{host}' has no addresses")),
            None => Ok(url),
        }
    }

    /// The address of a URL whose host is an IP literal (reqwest connects to those without resolving).
    pub fn literal_denied(&self, url: &url::Url) -> Option<IpAddr> {
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => IpAddr::V4(ip),
            url::Host::Ipv6(ip) => IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        (!self.permits(ip)).then_some(ip)
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let reserved = ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240; // reserved
    !reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let reserved = ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b; // NAT64 can reach private IPv4
    !reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_private_and_reserved_addresses() {
        let policy = NetworkPolicy::default();
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "64:ff9b::a00:1"] {
            assert!(!policy.permits(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(policy.permits(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn an_allowlist_opens_its_networks_only() {
        let policy = NetworkPolicy::parse("127.0.0.0/8, ::1/128").unwrap();
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("::1".parse().unwrap()));
        assert!(!policy.permits("10.0.0.1".parse().unwrap()));
        assert!(NetworkPolicy::parse("localhost").unwrap_err().contains("CIDR"));
    }

    #[tokio::test]
    async fn checks_urls_when_registered() {
        let policy = NetworkPolicy::default();
        assert!(policy.check_url("http://127.0.0.1:9000/hook").await.unwrap_err().contains("private"));
        assert!(policy.check_url("http://localhost/hook").await.unwrap_err().contains("private"));
        assert!(policy.check_url("http://[::1]/hook").await.unwrap_err().contains("private"));
        assert!(policy.check_url("ftp://example.com/").await.unwrap_err().contains("http"));
        assert!(policy.check_url("https://user:pw@example.com/").await.unwrap_err().contains("credentials"));
        assert!(policy.check_url("not a url").await.unwrap_err().contains("not a valid URL"));
        let open = NetworkPolicy::parse("127.0.0.0/8").unwrap();
        assert!(open.check_url("http://127.0.0.1:9000/hook").await.is_ok());
        assert_eq!(open.literal_denied(&url::Url::parse("http://10.0.0.1/").unwrap()), Some("10.0.0.1".parse().unwrap()));
    }
}
