//! The audit log: every action a person or token took, append-only.

use crate::UnixMillis;

/// One audited action, as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Its position in the log (increasing).
    pub seq: i64,
    /// When it happened.
    pub at: UnixMillis,
    /// Who: `user:<name>`, `token:<tok_id>` or `cli:<os user>`.
    pub actor: String,
    /// What, as a stable dotted name: `delivery.retry`, `route.pause`…
    pub action: String,
    /// On what: an id or name (`dlv_…`, `route:orders`), or empty.
    pub object: String,
    /// From which address, when it came over HTTP.
    pub remote_addr: Option<String>,
    /// The note or reason the person gave.
    pub note: Option<String>,
    /// Details as JSON text (counts, filters), or empty.
    pub details: String,
}

/// An action to append to the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When it happened.
    pub at: UnixMillis,
    /// Who (see [`AuditEntry::actor`]).
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub object: String,
    /// From which address.
    pub remote_addr: Option<String>,
    /// The note or reason given.
    pub note: Option<String>,
    /// Details as JSON text, or empty.
    pub details: String,
}
