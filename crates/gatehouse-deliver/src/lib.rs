//! The delivery engine: takes committed deliveries from the store, applies
//! each route's filter and transform, sends to the destination, and records
//! the attempt with what happens next (success, retry with backoff, dead).
//!
//! A map of the crate, in the order a delivery meets it:
//!
//! - [`config`]: `[[destinations]]`, `[[routes]]` and `[delivery]` as plain
//!   data, with the checks the server's config loader runs.
//! - [`route`]: the [`RouteTable`] built once from config; event-type globs.
//! - [`approval`]: the gate that holds a route's deliveries for a person.
//! - [`jq`]: filters and transforms, compiled with the `jaq` crates.
//! - [`enrich`]: fresh data fetched from the provider's API before an
//!   attempt and sent with the event.
//! - [`destination`]: `http` (signed with Standard Webhooks) and `exec`,
//!   behind a per-destination concurrency and rate limit ([`ratelimit`]).
//! - [`outcome`]: whether an attempt succeeded, should be retried or is
//!   dead, and when the retry is due.
//! - [`engine`]: the claim loop, one task per attempt, the batching
//!   recorder, and graceful shutdown.
//! - [`replay`]: new deliveries for stored events, retry of dead ones.
//!
//! The boundary with the server: the server parses and validates the
//! config, resolves every `env:`/`file:` reference, and hands this crate
//! [`ResolvedDestination`]s; nothing here reads secrets from the
//! environment or the file system.
#![deny(missing_docs)]

pub mod approval;
mod attempt;
pub mod config;
pub mod destination;
pub mod engine;
pub mod enrich;
mod finisher;
pub mod jq;
pub mod outcome;
pub mod ratelimit;
pub mod replay;
pub mod route;

pub use destination::ResolvedDestination;
pub use engine::{Engine, EngineError, EngineHandle};
pub use route::{BuildError, RouteTable};
