//! Where notifications may go. A webhook URL is `http` or `https`, bounded in length, and —
//! unless `CLAWX_PUSH_ALLOW_PRIVATE_TARGETS` is set — reaches only public addresses: a caller
//! must not be able to make this server call loopback, private or link-local addresses (cloud
//! metadata endpoints among them). The check runs when a URL is registered and again at every
//! connection (a [`PublicResolver`] drops private answers), so a name that later resolves to a
//! private address is not followed either.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use clawx_common::{ServiceError, ServiceResult};

/// Longest webhook URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest FCM registration token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Whether `address` is a public unicast address (not loopback, private, link-local, shared,
/// multicast, documentation or reserved).
pub fn is_public(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            let unique_local = segments[0] & 0xfe00 == 0xfc00;
            let link_local = segments[0] & 0xffc0 == 0xfe80;
            let documentation = segments[0] == 0x2001 && segments[1] == 0x0db8;
            // IPv4-compatible (::/96, deprecated), Teredo (2001::/32), site-local (fec0::/10,
            // deprecated) and local-use NAT64 (64:ff9b:1::/48) may reach private networks.
            let ipv4_compatible = segments[..6] == [0, 0, 0, 0, 0, 0];
            let teredo = segments[0] == 0x2001 && segments[1] == 0;
            let site_local = segments[0] & 0xffc0 == 0xfec0;
            let local_nat64 = segments[0] == 0x64 && segments[1] == 0xff9b && segments[2] == 1;
            // 6to4 (2002::/16) carries an IPv4 address in its next 32 bits: judge that one.
            if segments[0] == 0x2002 {
                let [a, b] = segments[1].to_be_bytes();
                let [c, d] = segments[2].to_be_bytes();
                if !is_public_v4(Ipv4Addr::new(a, b, c, d)) {
                    return false;
                }
            }
            // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
            let nat64 = segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0];
            if nat64 {
                let [a, b] = segments[6].to_be_bytes();
                let [c, d] = segments[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || unique_local
                || link_local
                || documentation
                || ipv4_compatible
                || teredo
                || site_local
                || local_nat64
                || v6 == Ipv6Addr::LOCALHOST)
        }
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    let shared = a == 100 && (64..128).contains(&b);
    let benchmarking = a == 198 && (b == 18 || b == 19);
    let protocol_assignments = a == 192 && b == 0 && c == 0;
    let documentation = (a == 192 && b == 0 && c == 2) || (a == 198 && b == 51 && c == 100) || (a == 203 && b == 0 && c == 113);
    let reserved = a >= 240 || a == 0;
    !(v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4.is_unspecified()
        || shared
        || benchmarking
        || protocol_assignments
        || documentation
        || reserved)
}

fn invalid_url(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid("target.url", message)
}

/// Checks a webhook URL as registered: scheme, length, host, and (unless private targets are
/// allowed) that the host is or resolves to public addresses only. Returns the URL as stored.
pub async fn check_webhook_url(text: &str, allow_private: bool) -> ServiceResult<String> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_URL_BYTES {
        return Err(invalid_url(format!("target.url is required (at most {MAX_URL_BYTES} bytes)")));
    }
    let url = url::Url::parse(text).map_err(|_| invalid_url("target.url must be an absolute http or https URL"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid_url("target.url must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_url("target.url must not carry credentials"));
    }
    let host = url.host().ok_or_else(|| invalid_url("target.url must name a host"))?;
    if !allow_private {
        match host {
            url::Host::Ipv4(v4) if !is_public_v4(v4) => return Err(private_target()),
            url::Host::Ipv6(v6) if !is_public(IpAddr::V6(v6)) => return Err(private_target()),
            url::Host::Domain(name) => {
                let port = url.port_or_known_default().unwrap_or(443);
                let lookup = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::lookup_host((name, port))).await;
                let addresses: Vec<SocketAddr> = match lookup {
                    Ok(Ok(addresses)) => addresses.collect(),
                    _ => return Err(invalid_url("target.url's host cannot be resolved")),
                };
                if addresses.is_empty() || addresses.iter().any(|address| !is_public(address.ip())) {
                    return Err(private_target());
                }
            }
            _ => {}
        }
    }
    Ok(url.to_string())
}

fn private_target() -> ServiceError {
    invalid_url("target.url must reach a public address; loopback, private and link-local targets are refused")
}

/// Whether a stored URL's literal host (if it is an IP address) may be called.
pub fn literal_host_allowed(url: &url::Url, allow_private: bool) -> bool {
    if allow_private {
        return true;
    }
    match url.host() {
        Some(url::Host::Ipv4(v4)) => is_public_v4(v4),
        Some(url::Host::Ipv6(v6)) => is_public(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// Checks an FCM registration token: printable ASCII, bounded.
pub fn check_fcm_token(text: &str) -> ServiceResult<String> {
    let token = text.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(ServiceError::invalid("target.token", format!("target.token must be 1 to {MAX_TOKEN_BYTES} printable ASCII characters")));
    }
    Ok(token.to_string())
}

/// How long a delivery waits for a webhook host's DNS answer.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A DNS resolver for outgoing webhook calls that answers only public addresses (all addresses
/// when private targets are allowed).
#[derive(Clone, Debug)]
pub struct PublicResolver {
    pub allow_private: bool,
}

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let lookup = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host.as_str(), 0)))
                .await
                .map_err(|_| "the host's DNS lookup timed out")??;
            let addresses: Vec<SocketAddr> = lookup.collect();
            let allowed: Vec<SocketAddr> = addresses.into_iter().filter(|address| allow_private || is_public(address.ip())).collect();
            if allowed.is_empty() {
                return Err("the host resolves to no public address".into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "224.0.0.1",
            "255.255.255.255",
            "::7f00:1",
            "::a00:1",
            "2002:c0a8:101::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "64:ff9b:1::a00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn fcm_tokens_are_bounded() {
        assert!(check_fcm_token(&"a".repeat(MAX_TOKEN_BYTES)).is_ok());
        // A longer token would not fit PostgreSQL's unique index on addresses.
        assert!(check_fcm_token(&"a".repeat(MAX_TOKEN_BYTES + 1)).is_err());
        assert!(check_fcm_token(&"a".repeat(4096)).is_err());
        assert!(check_fcm_token("has space").is_err());
    }

    #[tokio::test]
    async fn webhook_urls_are_checked() {
        assert!(check_webhook_url("https://1.1.1.1/hook", false).await.is_ok());
        for refused in [
            "http://127.0.0.1:9/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
            "http://localhost/x",
            "ftp://1.1.1.1/x",
            "https://user:pw@1.1.1.1/",
            "not a url",
            "",
        ] {
            let error = check_webhook_url(refused, false).await.unwrap_err();
            assert_eq!(error.field.as_deref(), Some("target.url"), "{refused}");
        }
        assert!(check_webhook_url("http://127.0.0.1:9/x", true).await.is_ok());
        let long = format!("https://1.1.1.1/{}", "a".repeat(MAX_URL_BYTES));
        assert!(check_webhook_url(&long, true).await.is_err());
        assert!(check_fcm_token("abc:def-123").is_ok());
        assert!(check_fcm_token("has space").is_err());
        assert!(check_fcm_token("").is_err());
    }
}
