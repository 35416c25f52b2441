//! Access control: who is asking and what they may do.
//!
//! Secrets handed to people (session cookies, API tokens) are 32 random
//! bytes; the store keeps only their SHA-256, so reading the database does
//! not let anyone log in. Passwords are hashed with argon2id.

pub mod password;
pub mod secret;
pub mod session;

use gatehouse_core::{Role, TokenId, UserId};

/// Who made a request, as established by a session cookie, a bearer token
/// or the local CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The user, token or CLI behind it.
    pub actor: Actor,
    /// What it may do.
    pub role: Role,
    /// Where the request came from (for the audit log), when over HTTP.
    pub remote_addr: Option<String>,
}

/// The identity behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A console user.
    User {
        /// Its id.
        id: UserId,
        /// Its login name.
        username: String,
    },
    /// An API token.
    Token {
        /// Its public id.
        id: TokenId,
        /// Its label.
        name: String,
    },
    /// The `gatehouse` CLI on the server's machine, run by this OS user.
    Cli {
        /// `$USER`, or `unknown`.
        os_user: String,
    },
}

impl Actor {
    /// How the audit log names it: `user:alice`, `token:tok_…`, `cli:root`.
    pub fn audit_name(&self) -> String {
        match self {
            Actor::User { username, .. } => format!("user:{username}"),
            Actor::Token { id, .. } => format!("token:{id}"),
            Actor::Cli { os_user } => format!("cli:{os_user}"),
        }
    }
}

impl Principal {
    /// Whether it may do what needs `required`.
    pub fn may(&self, required: Role) -> bool {
        self.role.allows(required)
    }

    /// The local CLI, with full rights (it can read the database anyway).
    pub fn cli() -> Self {
        Self {
            actor: Actor::Cli {
                os_user: std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
            },
            role: Role::Admin,
            remote_addr: None,
        }
    }
}
