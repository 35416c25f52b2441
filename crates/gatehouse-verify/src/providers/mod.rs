//! One module per provider. Each exposes a pure `verify` function over
//! (header values, raw body, prepared secrets, now), a type implementing
//! [`crate::Provider`] for one source, and, where a sender can be imitated,
//! a `sign` function used by `gatehouse send`, tests and benchmarks.

pub mod github;
pub mod hmac;
pub mod none;
pub mod standard_webhooks;
pub mod stripe;
pub mod token;
