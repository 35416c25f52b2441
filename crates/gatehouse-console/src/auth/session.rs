//! Console sessions: logging in and out, the `gatehouse_session` cookie,
//! the CSRF token bound to each session, and login rate limiting.
//!
//! The cookie holds 32 random bytes; the store keeps only their SHA-256
//! (see [`super::secret`]). Every form the console renders carries the
//! session's CSRF token, and every form post is refused without it, so a
//! page on another site cannot make a logged-in browser act.
//!
//! Failed logins are counted per username and address: after
//! [`FREE_FAILURES`] in a row, each further attempt must wait twice as long
//! as the previous one (2 s, 4 s, 8 s… capped at 15 min), whether its
//! password is right or not, so guessing is slow and a throttled guesser
//! learns nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderValue, COOKIE};

use gatehouse_core::{Session, UnixMillis, User};
use gatehouse_store::{Store, StoreError};

use super::{password, secret, Actor, Principal};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "gatehouse_session";

/// How long a session lasts after logging in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);

/// Failed logins in a row allowed before attempts are slowed down.
pub const FREE_FAILURES: u32 = 5;

/// The wait after the first failure past [`FREE_FAILURES`]; it doubles with
/// each further failure.
const BASE_BACKOFF: Duration = Duration::from_secs(2);

/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Past this many tracked (username, address) pairs, entries that are no
/// longer locked are forgotten, so a flood of made-up names cannot fill
/// memory.
const MAX_TRACKED: usize = 10_000;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user, wrong password or disabled user: the page says the
    /// same thing in each case so it does not reveal which names exist.
    #[error("wrong username or password")]
    Invalid,
    /// Too many failures from this address for this username.
    #[error("too many failed logins; try again in {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long until the next attempt is allowed.
        retry_after: Duration,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A successful login: the cookie secret to hand to the browser (shown
/// once, never stored) and the session as stored.
#[derive(Debug)]
pub struct LoggedIn {
    /// The cookie's value.
    pub cookie_secret: String,
    /// The session.
    pub session: Session,
    /// Who logged in.
    pub user: User,
}

/// The live session behind a request.
#[derive(Clone, Debug)]
pub struct CurrentSession {
    /// The session as stored (its CSRF token included).
    pub session: Session,
    /// Its user.
    pub user: User,
}

impl CurrentSession {
    /// The principal to run actions as, with the request's address.
    pub fn principal(&self, remote_addr: Option<String>) -> Principal {
        Principal {
            actor: Actor::User {
                id: self.user.id,
                username: self.user.username.clone(),
            },
            role: self.user.role,
            remote_addr,
        }
    }

    /// Whether a submitted form's CSRF token is this session's (constant time).
    pub fn csrf_matches(&self, submitted: Option<&str>) -> bool {
        match submitted {
            Some(token) if !token.is_empty() => secret::same(token, &self.session.csrf_token),
            _ => false,
        }
    }
}

/// Logging in and out, and finding the session of a request.
pub struct Sessions {
    store: Arc<dyn Store>,
    /// Whether cookies get `Secure` (the public URL is https).
    secure: bool,
    limiter: LoginLimiter,
}

impl Sessions {
    /// Sessions on `store`; `secure` when the console is served over https.
    pub fn new(store: Arc<dyn Store>, secure: bool) -> Self {
        Self {
            store,
            secure,
            limiter: LoginLimiter::default(),
        }
    }

    /// Checks a username and password and opens a session.
    pub async fn login(
        &self,
        username: &str,
        password_given: &str,
        remote_addr: Option<&str>,
    ) -> Result<LoggedIn, LoginError> {
        let key = LimitKey::new(username, remote_addr);
        if let Some(retry_after) = self.limiter.wait_needed(&key, Instant::now()) {
            tracing::warn!(
                username,
                remote_addr,
                "Console login throttled after repeated failures."
            );
            return Err(LoginError::Throttled { retry_after });
        }
        let user = self.store.user_by_name(username).await?;
        // Verify against a burnt hash for unknown users, so the time taken
        // does not say whether the name exists. argon2 is CPU-heavy: keep it
        // off the async workers.
        let stored_hash = user
            .as_ref()
            .map(|user| user.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let given = password_given.to_owned();
        let matches = tokio::task::spawn_blocking(move || password::verify(&given, &stored_hash))
            .await
            .unwrap_or(false);
        let user = match user {
            Some(user) if matches && !user.disabled => user,
            _ => {
                self.limiter.record_failure(key, Instant::now());
                tracing::info!(username, remote_addr, "Console login failed.");
                return Err(LoginError::Invalid);
            }
        };
        self.limiter.record_success(&key);
        let now = UnixMillis::now();
        let cookie_secret = secret::random_secret();
        let session = Session {
            token_hash: secret::hash(&cookie_secret),
            user_id: user.id,
            csrf_token: secret::random_secret(),
            created_at: now,
            expires_at: UnixMillis(now.0.saturating_add(SESSION_TTL.as_millis() as i64)),
            remote_addr: remote_addr.map(str::to_owned),
        };
        self.store.create_session(session.clone()).await?;
        self.store.record_login(user.id, now).await?;
        tracing::info!(username = %user.username, remote_addr, "Console login.");
        Ok(LoggedIn {
            cookie_secret,
            session,
            user,
        })
    }

    /// The live session whose cookie the request carries, if any.
    pub async fn current(&self, headers: &HeaderMap) -> Result<Option<CurrentSession>, StoreError> {
        let Some(cookie) = session_cookie(headers) else {
            return Ok(None);
        };
        let found = self.store.session(&secret::hash(&cookie), UnixMillis::now()).await?;
        Ok(found.map(|(session, user)| CurrentSession { session, user }))
    }

    /// Ends the session whose cookie the request carries.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), StoreError> {
        if let Some(cookie) = session_cookie(headers) {
            self.store.delete_session(&secret::hash(&cookie)).await?;
        }
        Ok(())
    }

    /// The `Set-Cookie` value that hands a new session to the browser.
    pub fn set_cookie(&self, cookie_secret: &str) -> HeaderValue {
        self.cookie(cookie_secret, SESSION_TTL.as_secs())
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.cookie("", 0)
    }

    fn cookie(&self, value: &str, max_age: u64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!("{COOKIE_NAME}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}");
        // The secret is URL-safe base64, so the value is always a valid header.
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("gatehouse_session=; Max-Age=0"))
    }
}

/// The session cookie's value from the request's `Cookie` headers.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE_NAME && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

/// Whom failures are counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LimitKey {
    username: String,
    address: String,
}

impl LimitKey {
    fn new(username: &str, remote_addr: Option<&str>) -> Self {
        Self {
            // Case does not make a different target for a guesser.
            username: username.to_lowercase(),
            address: remote_addr.unwrap_or("unknown").to_owned(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
}

/// Failed-login counts with exponential backoff, in memory (a restart
/// forgives, which is fine: the attacker still pays a restart's worth of
/// waiting per few guesses).
#[derive(Default)]
struct LoginLimiter {
    entries: Mutex<HashMap<LimitKey, Failures>>,
}

impl LoginLimiter {
    fn wait_needed(&self, key: &LimitKey, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let until = entries.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn record_failure(&self, key: LimitKey, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&key) {
            entries.retain(|_, failures| failures.locked_until.is_some_and(|until| until > now));
        }
        let failures = entries.entry(key).or_insert(Failures {
            count: 0,
            locked_until: None,
        });
        failures.count = failures.count.saturating_add(1);
        if failures.count >= FREE_FAILURES {
            failures.locked_until = Some(now + backoff(failures.count - FREE_FAILURES));
        }
    }

    fn record_success(&self, key: &LimitKey) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.remove(key);
    }
}

/// The wait after the `past`-th failure beyond the free ones (0-based).
fn backoff(past: u32) -> Duration {
    BASE_BACKOFF.saturating_mul(1u32 << past.min(16)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("theme=dark; gatehouse_session=abc123; other=1"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc123"));
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("gatehouse_session_x=nope; gatehouse_session="),
        );
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn backs_off_after_the_free_failures() {
        let limiter = LoginLimiter::default();
        let key = LimitKey::new("Alice", Some("10.0.0.1"));
        let start = Instant::now();
        for _ in 1..FREE_FAILURES {
            limiter.record_failure(key.clone(), start);
            assert_eq!(limiter.wait_needed(&key, start), None);
        }
        limiter.record_failure(key.clone(), start);
        assert_eq!(limiter.wait_needed(&key, start), Some(BASE_BACKOFF));
        // Same name in another case, same address: same counter.
        assert!(limiter
            .wait_needed(&LimitKey::new("alice", Some("10.0.0.1")), start)
            .is_some());
        // Another address is not punished for this one's guesses.
        assert_eq!(
            limiter.wait_needed(&LimitKey::new("alice", Some("10.0.0.2")), start),
            None
        );
        let later = start + BASE_BACKOFF;
        assert_eq!(limiter.wait_needed(&key, later), None);
        limiter.record_failure(key.clone(), later);
        assert_eq!(limiter.wait_needed(&key, later), Some(BASE_BACKOFF * 2));
        limiter.record_success(&key);
        assert_eq!(limiter.wait_needed(&key, later), None);
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(0), BASE_BACKOFF);
        assert_eq!(backoff(3), BASE_BACKOFF * 8);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
