//! Provider signature verification, as pure functions over (headers, raw
//! body, secrets, now). Nothing here does I/O: every verifier is unit-tested
//! against the providers' published vectors, fuzzed and benchmarked alone.
//!
//! - [`request`]: [`InboundRequest`], the untrusted request as received.
//! - [`provider`]: the [`Provider`] trait every scheme implements, and what
//!   verification proves ([`Verified`]) and extracts ([`Identity`]).
//! - [`rejection`]: why a request was refused, as stable reason codes.
//! - [`registry`]: builds a provider from its name and source options, with
//!   the state it shares with the HTTP layer (PayPal's certificate cache).
//! - [`providers`]: one file per provider.
//! - [`signing`]: [`sign_request`], a request signed as a provider would
//!   send it, for `gatehouse send`, fixtures and benchmarks.
//! - [`util`]: constant-time comparison, HMAC, header and timestamp helpers.
#![deny(missing_docs)]

pub mod provider;
pub mod providers;
pub mod registry;
pub mod rejection;
pub mod request;
pub mod signing;
#[cfg(test)]
mod test_support;
pub mod util;

pub use provider::{HandshakeReply, Identity, Kind, Provider, Verified};
pub use registry::{build, build_with, provider_names, BuildContext, BuildError, ProviderSpec, VerifyOptions};
pub use rejection::Rejection;
pub use request::InboundRequest;
pub use signing::{sign_request, SignError, SignedRequest, SigningKey, Unsigned};
