//! One module per provider. Each exposes a pure `verify` function over
//! (header values, raw body, prepared secrets, now), a type implementing
//! [`crate::Provider`] for one source, and, where a sender can be imitated,
//! a `sign` function used by `gatehouse send`, tests and benchmarks.

pub mod none;
pub mod stripe;
