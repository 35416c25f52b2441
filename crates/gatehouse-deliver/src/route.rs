//! Routes as the engine runs them, and the [`RouteTable`] built once from
//! config: every route with its compiled jq programs, retry schedule and
//! destination.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};

use gatehouse_core::RetryPolicy;

use crate::config::{ConfigIssue, RouteConfig};
use crate::destination::{http, Destination, ResolvedDestination};
use crate::jq::Program;
use crate::outcome::RetryRules;

/// A set of event-type globs; `*` alone takes every type, typed or not.
#[derive(Clone, Debug)]
pub struct EventTypes(Option<GlobSet>);

impl EventTypes {
    /// Compiles the globs; the error names the one at fault.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        if patterns.iter().any(|p| p == "*") {
            return Ok(Self(None));
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(Glob::new(pattern).map_err(|e| format!("{pattern:?} is not a valid glob: {e}"))?);
        }
        Ok(Self(Some(builder.build().map_err(|e| e.to_string())?)))
    }

    /// Whether `event_type` matches. Events without a type only match `*`.
    pub fn matches(&self, event_type: Option<&str>) -> bool {
        match (&self.0, event_type) {
            (None, _) => true,
            (Some(globs), Some(event_type)) => globs.is_match(event_type),
            (Some(_), None) => false,
        }
    }
}

/// One route, ready to run.
#[derive(Debug)]
pub struct Route {
    /// Its name.
    pub name: Arc<str>,
    /// The source it takes events from.
    pub source: String,
    /// The event types it takes.
    pub events: EventTypes,
    /// Where it delivers.
    pub destination: Arc<Destination>,
    /// Delivered only if this yields something other than `false`/`null`.
    pub filter: Option<Program>,
    /// Its first output replaces the body.
    pub transform: Option<Program>,
    /// Fresh data fetched before each attempt and sent with the event.
    pub enrich: Option<crate::enrich::Enricher>,
    /// When to retry.
    pub retry: RetryPolicy,
    /// What to retry.
    pub rules: RetryRules,
    /// Whether the config pauses it at start.
    pub paused: bool,
}

/// Why a [`RouteTable`] could not be built. Validation in the server's
/// config loader reports the same problems with file and line first.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A `[[destinations]]` table is not acceptable.
    #[error("destinations[{index}]: {issue}")]
    Destination {
        /// Its position in the config.
        index: usize,
        /// What is wrong.
        issue: ConfigIssue,
    },
    /// A `[[routes]]` table is not acceptable.
    #[error("routes[{index}]: {issue}")]
    Route {
        /// Its position in the config.
        index: usize,
        /// What is wrong.
        issue: ConfigIssue,
    },
    /// The shared HTTP client could not be set up.
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// Every route by name.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<String, Arc<Route>>,
    destinations: Vec<Arc<Destination>>,
}

impl RouteTable {
    /// Builds the routes and their destinations. Destination names and
    /// route names must be unique and every route's destination must exist
    /// (the config loader checks all of it first, with line numbers).
    pub fn build(routes: &[RouteConfig], destinations: &[ResolvedDestination]) -> Result<Self, BuildError> {
        Self::build_with_enrichment(routes, destinations, &HashMap::new())
    }

    /// [`RouteTable::build`], with each enriching route's token and host
    /// allow-list (resolved by the server) by route name.
    pub fn build_with_enrichment(
        routes: &[RouteConfig],
        destinations: &[ResolvedDestination],
        enrichment: &HashMap<String, crate::enrich::EnrichResolved>,
    ) -> Result<Self, BuildError> {
        let client = if destinations.is_empty() {
            None
        } else {
            Some(http::client().map_err(BuildError::Client)?)
        };
        let mut by_name = HashMap::new();
        let mut built = Vec::with_capacity(destinations.len());
        for (index, resolved) in destinations.iter().enumerate() {
            let issue = |issue| BuildError::Destination { index, issue };
            // `client` is Some whenever there is a destination.
            let Some(client) = &client else { break };
            let destination = Arc::new(Destination::build(resolved, client).map_err(issue)?);
            if by_name
                .insert(resolved.config.name.clone(), destination.clone())
                .is_some()
            {
                return Err(issue(ConfigIssue::new(
                    "name",
                    format!("destination {:?} is defined twice", resolved.config.name),
                )));
            }
            built.push(destination);
        }
        let mut table = HashMap::new();
        for (index, config) in routes.iter().enumerate() {
            let issue = |issue| BuildError::Route { index, issue };
            let (filter, transform) = config.check_and_compile().map_err(issue)?;
            let destination = by_name.get(&config.destination).cloned().ok_or_else(|| {
                issue(ConfigIssue::new(
                    "destination",
                    format!("no destination is named {:?}", config.destination),
                ))
            })?;
            let enrich = match (&config.enrich, &client) {
                (Some(enrich), Some(client)) => {
                    let resolved = enrichment.get(&config.name).cloned().unwrap_or_default();
                    Some(crate::enrich::Enricher::build(enrich, &resolved, client.clone()).map_err(issue)?)
                }
                _ => None,
            };
            let route = Route {
                name: Arc::from(config.name.as_str()),
                source: config.source.clone(),
                events: EventTypes::new(&config.events).map_err(|m| issue(ConfigIssue::new("events", m)))?,
                destination,
                filter,
                transform,
                enrich,
                retry: config.retry.policy(),
                rules: config.retry.rules(),
                paused: config.paused,
            };
            if table.insert(config.name.clone(), Arc::new(route)).is_some() {
                return Err(issue(ConfigIssue::new(
                    "name",
                    format!("route {:?} is defined twice", config.name),
                )));
            }
        }
        Ok(Self {
            routes: table,
            destinations: built,
        })
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// Every route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// The longest attempt timeout of any destination (zero without any).
    pub fn max_timeout(&self) -> Duration {
        self.destinations
            .iter()
            .map(|d| d.timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The destination with the longest timeout, for error messages.
    pub fn slowest_destination(&self) -> Option<&Destination> {
        self.destinations.iter().max_by_key(|d| d.timeout).map(|d| &**d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_types_and_star_matches_untyped() {
        let narrow = EventTypes::new(&["payment_intent.*".into(), "charge.refunded".into()]).expect("globs");
        assert!(narrow.matches(Some("payment_intent.succeeded")));
        assert!(narrow.matches(Some("charge.refunded")));
        assert!(!narrow.matches(Some("charge.succeeded")));
        assert!(!narrow.matches(None));
        assert!(EventTypes::new(&["*".into()]).expect("star").matches(None));
        assert!(EventTypes::new(&["a[".into()]).is_err());
    }

    fn resolved(text: &str) -> ResolvedDestination {
        ResolvedDestination {
            config: toml::from_str(text).expect("parses"),
            secret: None,
            headers: Vec::new(),
            ca_client: None,
        }
    }

    #[test]
    fn builds_routes_and_reports_problems_by_position() {
        let destinations = [
            resolved("name = \"d\"\ntype = \"http\"\nurl = \"http://127.0.0.1:9/\"\ntimeout = \"5s\""),
            resolved("name = \"e\"\ntype = \"exec\"\ncommand = [\"/bin/cat\"]\ntimeout = \"45s\""),
        ];
        let routes: Vec<RouteConfig> = vec![
            toml::from_str("name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nfilter = \".ok\"").expect("route"),
            toml::from_str("name = \"x\"\nsource = \"s\"\ndestination = \"e\"\npaused = true").expect("route"),
        ];
        let table = RouteTable::build(&routes, &destinations).expect("builds");
        let route = table.route("r").expect("route r");
        assert!(route.filter.is_some() && route.transform.is_none());
        assert_eq!(&*route.destination.name, "d");
        assert!(table.route("x").expect("route x").paused);
        assert_eq!(table.max_timeout(), Duration::from_secs(45));

        let missing: Vec<RouteConfig> =
            vec![toml::from_str("name = \"r\"\nsource = \"s\"\ndestination = \"nope\"").expect("route")];
        let error = RouteTable::build(&missing, &destinations).expect_err("missing destination");
        assert_eq!(
            error.to_string(),
            "routes[0]: destination: no destination is named \"nope\""
        );
        let twice = [destinations[0].clone(), destinations[0].clone()];
        let error = RouteTable::build(&[], &twice).expect_err("twice");
        assert!(matches!(error, BuildError::Destination { index: 1, .. }), "{error}");
    }
}
