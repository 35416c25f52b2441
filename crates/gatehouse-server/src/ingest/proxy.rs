//! Who really sent a request, and which URL they called, when gatehouse runs
//! behind a reverse proxy. Forwarding headers are believed only from
//! configured proxies: from anyone else they are attacker-controlled text.

use std::net::IpAddr;

use axum::http::{header, HeaderMap, Uri};
use ipnet::IpNet;

/// The configured trusted proxies, and how requests reach this process.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    /// Whether connections to this process are TLS (`server.tls`): the
    /// scheme of the URL a direct caller used.
    direct_tls: bool,
}

/// Parses `10.0.0.0/8`, `192.0.2.7` or `::1` into a network.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR range (e.g. \"10.0.0.0/8\")"))
}

impl TrustedProxies {
    /// From validated config.
    pub fn new(networks: &[String]) -> Result<Self, String> {
        networks
            .iter()
            .map(|n| parse_network(n))
            .collect::<Result<_, _>>()
            .map(|networks| Self {
                networks,
                direct_tls: false,
            })
    }

    /// Says that this process serves HTTPS itself (`server.tls`).
    pub fn serving_tls(self, direct_tls: bool) -> Self {
        Self { direct_tls, ..self }
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(&address))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy,
    /// the right-most `X-Forwarded-For` entry that is not itself trusted.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|hop| !self.trusts(*hop))
            .unwrap_or(peer)
    }

    /// The URL the provider called: `configured` (`server.public_url`) when
    /// set; else, from a trusted proxy, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host`; else this connection's scheme (`https` under
    /// `server.tls`) + `Host`. Path and query verbatim.
    pub fn public_url(&self, configured: Option<&str>, peer: IpAddr, headers: &HeaderMap, uri: &Uri) -> String {
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Some(base) = configured {
            return format!("{base}{path_and_query}");
        }
        let first = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let host_header = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let direct_scheme = if self.direct_tls { "https" } else { "http" };
        let (scheme, host) = if self.trusts(peer) {
            let scheme = match first("x-forwarded-proto") {
                Some("https") => "https",
                Some(_) => "http",
                None => direct_scheme,
            };
            (scheme, first("x-forwarded-host").or(host_header))
        } else {
            (direct_scheme, host_header)
        };
        format!("{scheme}://{}{path_and_query}", host.unwrap_or("localhost"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxies = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap();
        let forwarded = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "hooks.example.com"),
            ("host", "internal:8080"),
        ]);
        let uri: Uri = "/in/twilio?foo=1".parse().unwrap();
        let proxy: IpAddr = "10.2.3.4".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            proxies.client_address(proxy, &forwarded),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(proxies.client_address(stranger, &forwarded), stranger);
        assert_eq!(
            proxies.public_url(None, proxy, &forwarded, &uri),
            "https://hooks.example.com/in/twilio?foo=1"
        );
        assert_eq!(
            proxies.public_url(None, stranger, &forwarded, &uri),
            "http://internal:8080/in/twilio?foo=1"
        );
        assert_eq!(
            proxies.public_url(Some("https://gw.example.org"), stranger, &forwarded, &uri),
            "https://gw.example.org/in/twilio?foo=1"
        );
    }

    #[test]
    fn served_over_tls_the_direct_scheme_is_https() {
        let proxies = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap().serving_tls(true);
        let uri: Uri = "/in/twilio".parse().unwrap();
        let direct = headers(&[("host", "hooks.example.com")]);
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            proxies.public_url(None, stranger, &direct, &uri),
            "https://hooks.example.com/in/twilio"
        );
        let proxy: IpAddr = "10.2.3.4".parse().unwrap();
        assert_eq!(
            proxies.public_url(None, proxy, &direct, &uri),
            "https://hooks.example.com/in/twilio",
            "a trusted proxy that says nothing keeps the connection's scheme"
        );
        let plain = headers(&[("host", "hooks.example.com"), ("x-forwarded-proto", "http")]);
        assert_eq!(
            proxies.public_url(None, proxy, &plain, &uri),
            "http://hooks.example.com/in/twilio"
        );
    }

    #[test]
    fn networks_parse_or_explain() {
        assert!(parse_network("10.0.0.0/8").is_ok());
        assert!(parse_network("::1").is_ok());
        assert!(parse_network("192.0.2.7").is_ok());
        assert!(parse_network("not-an-ip").unwrap_err().contains("CIDR"));
    }
}
