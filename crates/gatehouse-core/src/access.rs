//! People and tokens: who may do what in the console, the API and the CLI.

use crate::{TokenId, UnixMillis, UserId};

/// What a person or token may do. Each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads events, deliveries, the audit log and stats.
    Viewer,
    /// Also retries, replays, approves, rejects and resolves.
    Operator,
    /// Also manages users and tokens and pauses routes.
    Admin,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The stable name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role from its stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// Whether this role includes `required`.
    pub fn allows(&self, required: Role) -> bool {
        *self >= required
    }
}

/// A user as stored, password hash included (never serialised).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// The login name (unique).
    pub username: String,
    /// What it may do.
    pub role: Role,
    /// The argon2 PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// A disabled user cannot log in and its sessions end.
    pub disabled: bool,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it last logged in.
    pub last_login_at: Option<UnixMillis>,
}

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Its id.
    pub id: UserId,
    /// The login name.
    pub username: String,
    /// Its role.
    pub role: Role,
    /// The argon2 PHC string.
    pub password_hash: String,
    /// Now.
    pub created_at: UnixMillis,
}

/// A console session: the cookie holds a random secret, the store only its
/// SHA-256, so a database leak does not hand out sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 of the cookie's secret, hex.
    pub token_hash: String,
    /// Whose session it is.
    pub user_id: UserId,
    /// The CSRF token bound to this session, checked on every form post.
    pub csrf_token: String,
    /// When it started.
    pub created_at: UnixMillis,
    /// When it ends.
    pub expires_at: UnixMillis,
    /// Where it was opened from.
    pub remote_addr: Option<String>,
}

/// An API token as stored: the secret itself is shown once and never kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ApiToken {
    /// Its public id.
    pub id: TokenId,
    /// A label saying what it is for.
    pub name: String,
    /// SHA-256 of the secret, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// What it may do.
    pub role: Role,
    /// Who created it (a username, or `cli`).
    pub created_by: String,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it stops working, if ever.
    pub expires_at: Option<UnixMillis>,
    /// When it was revoked; a revoked token never works again.
    pub revoked_at: Option<UnixMillis>,
    /// When it was last used.
    pub last_used_at: Option<UnixMillis>,
}

impl ApiToken {
    /// Whether it may be used at `now`.
    pub fn is_active(&self, now: UnixMillis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| now < expiry)
    }
}
