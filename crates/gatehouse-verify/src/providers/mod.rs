//! One module per provider. Each exposes a pure `verify` function over
//! (header values, raw body, prepared secrets, now), a type implementing
//! [`crate::Provider`] for one source, and, where a sender can be imitated,
//! a `sign` function used by `gatehouse send`, tests and benchmarks.

pub mod discord;
pub mod dropbox;
pub mod github;
pub mod gitlab;
pub mod hmac;
pub mod intercom;
pub mod linear;
pub mod mailgun;
pub mod microsoft_graph;
pub mod none;
pub mod paypal;
pub mod sendgrid;
pub mod shopify;
pub mod slack;
pub mod square;
pub mod standard_webhooks;
pub mod stripe;
pub mod token;
pub mod twilio;
pub mod zoom;
