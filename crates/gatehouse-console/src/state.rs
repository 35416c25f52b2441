//! What the console and the API share at run time: the store, and a
//! catalog of the configured sources, routes and destinations with every
//! secret left out, so nothing rendered from it can leak one.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use http::request::Parts;
use http::HeaderMap;

use gatehouse_deliver::config::{DestinationConfig, RouteConfig};
use gatehouse_deliver::replay::ReplayRoutes;
use gatehouse_store::Store;

/// Shared by every console page and API handler.
#[derive(Clone)]
pub struct ConsoleState {
    /// The database.
    pub store: Arc<dyn Store>,
    /// The configured sources, routes and destinations (no secrets).
    pub catalog: Arc<Catalog>,
    /// The routes as replay needs them (built once from the catalog).
    pub replay_routes: Arc<ReplayRoutes>,
    /// Whether cookies carry the `Secure` attribute (the console is served
    /// over HTTPS, directly or behind a proxy).
    pub secure_cookies: bool,
    /// Finds the client behind trusted proxies; `None` takes the peer.
    pub client_address: Option<ClientAddress>,
}

/// Finds a request's client address from its peer and headers (the server
/// believes `X-Forwarded-For` only from configured trusted proxies).
pub type ClientAddress = Arc<dyn Fn(IpAddr, &HeaderMap) -> IpAddr + Send + Sync>;

impl ConsoleState {
    /// Builds the state; fails only when a route's event globs do not
    /// compile (config validation has already rejected those).
    pub fn new(store: Arc<dyn Store>, catalog: Catalog, secure_cookies: bool) -> Result<Self, String> {
        let replay_routes = ReplayRoutes::new(&catalog.routes)?;
        Ok(Self {
            store,
            catalog: Arc::new(catalog),
            replay_routes: Arc::new(replay_routes),
            secure_cookies,
            client_address: None,
        })
    }

    /// Uses `find` to tell the client's address behind trusted proxies, for
    /// the audit log and login limits.
    pub fn with_client_address(mut self, find: ClientAddress) -> Self {
        self.client_address = Some(find);
        self
    }

    /// The address a request came from (the client behind trusted proxies),
    /// when the server recorded the peer.
    pub fn remote_addr(&self, parts: &Parts) -> Option<String> {
        let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
        let client = match &self.client_address {
            Some(find) => find(peer.ip(), &parts.headers),
            None => peer.ip(),
        };
        Some(client.to_string())
    }
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("backend", &self.store.backend())
            .field("catalog", &self.catalog)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

/// The configuration as the console may show it.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// `[[sources]]`, in config order.
    pub sources: Vec<SourceInfo>,
    /// `[[routes]]`, in config order (route config holds no secrets).
    pub routes: Vec<RouteConfig>,
    /// `[[destinations]]`, in config order, without secrets.
    pub destinations: Vec<DestinationInfo>,
}

impl Catalog {
    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|route| route.name == name)
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceInfo> {
        self.sources.iter().find(|source| source.name == name)
    }

    /// The destination named `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationInfo> {
        self.destinations.iter().find(|destination| destination.name == name)
    }
}

/// A source without its secrets.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SourceInfo {
    /// The name (`POST /in/{name}`).
    pub name: String,
    /// The provider that verifies it (`stripe`, `github`…).
    pub provider: String,
    /// The event-type globs it subscribes to.
    pub events: Vec<String>,
}

/// A destination without its secret or header values.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DestinationInfo {
    /// The name routes refer to.
    pub name: String,
    /// `http` or `exec`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `http`: the URL without credentials or query string; `exec`: the
    /// program (its arguments are left out, they may hold tokens).
    pub target: String,
}

impl DestinationInfo {
    /// What may be shown of a destination's config.
    pub fn from_config(config: &DestinationConfig) -> Self {
        let target = match config.kind.as_str() {
            "exec" => config.command.first().cloned().unwrap_or_default(),
            _ => config.url.as_deref().map(public_url).unwrap_or_default(),
        };
        Self {
            name: config.name.clone(),
            kind: config.kind.clone(),
            target,
        }
    }
}

/// `url` without user info, query or fragment: those are where people put
/// credentials (`?token=…`) even when they should not.
pub fn public_url(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    match url.find("://") {
        Some(scheme_end) => {
            let rest = &url[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            format!("{}{host}{}", &url[..scheme_end + 3], &rest[authority_end..])
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_and_queries() {
        assert_eq!(public_url("https://u:p@x.test/a/b?token=1#f"), "https://x.test/a/b");
        assert_eq!(public_url("http://x.test:8080"), "http://x.test:8080");
        assert_eq!(public_url("http://x.test/p@q"), "http://x.test/p@q");
    }
}
