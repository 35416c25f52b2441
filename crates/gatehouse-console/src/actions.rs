//! Every action a person, token or the CLI can take, once: each function
//! checks the role, does the work through the store, and appends one audit
//! entry when it changed something (a dry run, or a retry of a delivery
//! that is not dead, leaves no entry: nothing happened). The console
//! pages, the JSON API and the CLI all call these, so a retry is checked
//! and audited the same way wherever it was asked for.
//!
//! Roles: viewers only read (no function here); operators retry, replay,
//! approve, reject, resolve and discard; admins also pause and resume
//! routes and manage users and tokens.
//!
//! Functions that need the configured routes take the [`ConsoleState`];
//! the others take only the store, so the CLI can call them without a
//! running server.

use gatehouse_core::{
    ApiToken, Delivery, DeliveryId, DeliveryState, NewAuditEntry, NewUser, Role, TokenId, UnixMillis, User, UserId,
};
use gatehouse_deliver::replay::{self, ReplayError, ReplayReport, Selection};
use gatehouse_store::{ApprovalDecision, DeliveryQuery, Resolution, Store, StoreError};
use http::StatusCode;

use crate::auth::{password, secret, Actor, Principal};
use crate::state::ConsoleState;

/// Most ids one request may name (replay by id, bulk decisions).
pub const MAX_IDS: usize = 1_000;

/// Deliveries read per page when retrying by filter.
const PAGE: u32 = 500;

/// Ids listed in an audit entry's details; the count is always complete.
const AUDITED_IDS: usize = 100;

/// Longest note, reason, username or token name accepted.
const MAX_TEXT: usize = 2_000;

/// Why an action was not done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The principal's role does not allow it.
    #[error("this needs the {} role", required.as_str())]
    Forbidden {
        /// The role it needs.
        required: Role,
    },
    /// What it acts on does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The input is wrong; the message says how.
    #[error("{0}")]
    Invalid(String),
    /// It exists but is not in a state that allows this (a delivery that is
    /// not dead cannot be retried; a username is taken).
    #[error("{0}")]
    Conflict(String),
    /// The storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ActionError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => ActionError::Conflict(message),
            other => ActionError::Store(other),
        }
    }
}

impl ActionError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            ActionError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ActionError::NotFound(_) => StatusCode::NOT_FOUND,
            ActionError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ActionError::Conflict(_) => StatusCode::CONFLICT,
            ActionError::Store(error) if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ActionError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code: `forbidden`, `not_found`, `invalid`,
    /// `conflict`, `unavailable` or `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            ActionError::Forbidden { .. } => "forbidden",
            ActionError::NotFound(_) => "not_found",
            ActionError::Invalid(_) => "invalid",
            ActionError::Conflict(_) => "conflict",
            ActionError::Store(error) if error.is_unavailable() => "unavailable",
            ActionError::Store(_) => "internal",
        }
    }

    /// What may be shown to the person: storage errors are logged, not
    /// shown, since they can name tables, hosts or paths.
    pub fn public_message(&self) -> String {
        match self {
            ActionError::Store(error) if error.is_unavailable() => "the database is unavailable; try again".into(),
            ActionError::Store(_) => "internal error; see the server log".into(),
            other => other.to_string(),
        }
    }
}

impl From<ReplayError> for ActionError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::Store(error) => error.into(),
            ReplayError::UnknownRoute(route) => ActionError::NotFound(format!("route {route:?}")),
            ReplayError::InvalidGlob(message) => ActionError::Invalid(format!("invalid event-type glob: {message}")),
            ReplayError::EmptyRange => ActionError::Invalid("the time range ends before it starts".into()),
        }
    }
}

/// Fails unless `who` has at least `role`.
pub fn require(who: &Principal, role: Role) -> Result<(), ActionError> {
    if who.may(role) {
        Ok(())
    } else {
        tracing::warn!(actor = %who.actor.audit_name(), required = role.as_str(), "Action refused: role too low.");
        Err(ActionError::Forbidden { required: role })
    }
}

/// Appends one audit entry for an action `who` just took.
async fn audit(
    store: &dyn Store,
    who: &Principal,
    action: &str,
    object: String,
    note: Option<&str>,
    details: serde_json::Value,
) -> Result<(), ActionError> {
    let details = if details.is_null() {
        String::new()
    } else {
        details.to_string()
    };
    store
        .append_audit(NewAuditEntry {
            at: UnixMillis::now(),
            actor: who.actor.audit_name(),
            action: action.to_string(),
            object,
            remote_addr: who.remote_addr.clone(),
            note: note.map(str::to_string),
            details,
        })
        .await?;
    tracing::info!(actor = %who.actor.audit_name(), action, "Audited.");
    Ok(())
}

/// The object of an action on `ids`: the id when there is one, else empty
/// (the ids are in the details).
fn object_of(ids: &[DeliveryId]) -> String {
    match ids {
        [one] => one.to_string(),
        _ => String::new(),
    }
}

/// Details listing (at most [`AUDITED_IDS`] of) `ids` and how many there are.
fn ids_details(ids: &[DeliveryId]) -> serde_json::Value {
    serde_json::json!({
        "count": ids.len(),
        "ids": ids.iter().take(AUDITED_IDS).map(ToString::to_string).collect::<Vec<_>>(),
    })
}

fn check_ids(ids: &[DeliveryId]) -> Result<(), ActionError> {
    if ids.is_empty() {
        return Err(ActionError::Invalid("name at least one delivery".into()));
    }
    if ids.len() > MAX_IDS {
        return Err(ActionError::Invalid(format!("at most {MAX_IDS} ids at once")));
    }
    Ok(())
}

/// A trimmed note or reason that must not be empty.
fn required_text<'a>(what: &str, text: &'a str) -> Result<&'a str, ActionError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ActionError::Invalid(format!("a {what} is required")));
    }
    if text.len() > MAX_TEXT {
        return Err(ActionError::Invalid(format!(
            "the {what} is longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(text)
}

/// Why a single-delivery action changed nothing: the delivery does not
/// exist (404) or is in another state (409).
async fn unchanged(store: &dyn Store, id: DeliveryId, expected: DeliveryState) -> ActionError {
    match store.delivery(id).await {
        Ok(Some(delivery)) => ActionError::Conflict(format!(
            "delivery {id} is {}, not {}",
            delivery.state.as_str(),
            expected.as_str()
        )),
        Ok(None) => ActionError::NotFound(format!("delivery {id}")),
        Err(error) => error.into(),
    }
}

/// The delivery after an action changed it.
async fn reread(store: &dyn Store, id: DeliveryId) -> Result<Delivery, ActionError> {
    store
        .delivery(id)
        .await?
        .ok_or_else(|| ActionError::NotFound(format!("delivery {id}")))
}

// --- Deliveries (operator) ---------------------------------------------------

/// Makes dead deliveries due again; others are left alone. Returns the
/// number retried. Audited as `delivery.retry`.
pub async fn retry_deliveries(store: &dyn Store, who: &Principal, ids: &[DeliveryId]) -> Result<u64, ActionError> {
    require(who, Role::Operator)?;
    check_ids(ids)?;
    let changed = replay::retry(store, ids).await?;
    if changed > 0 {
        let mut details = ids_details(ids);
        details["retried"] = changed.into();
        audit(store, who, "delivery.retry", object_of(ids), None, details).await?;
    }
    Ok(changed)
}

/// Retries one dead delivery; 404 when it does not exist, 409 when it is
/// not dead. Returns it as it is now.
pub async fn retry_delivery(store: &dyn Store, who: &Principal, id: DeliveryId) -> Result<Delivery, ActionError> {
    if retry_deliveries(store, who, &[id]).await? == 0 {
        return Err(unchanged(store, id, DeliveryState::Dead).await);
    }
    reread(store, id).await
}

/// Retries every dead delivery of `route` (only those whose last error is
/// exactly `last_error`, when given: one line of the exception queue). A
/// dry run counts without changing or auditing anything. Audited as
/// `delivery.retry_bulk` on `route:<name>`.
pub async fn retry_dead(
    state: &ConsoleState,
    who: &Principal,
    route: &str,
    last_error: Option<&str>,
    dry_run: bool,
) -> Result<u64, ActionError> {
    retry_dead_with_progress(state, who, route, last_error, dry_run, |_| {}).await
}

/// [`retry_dead`], calling `progress` with the running count after each
/// page (the CLI shows it on long runs).
pub async fn retry_dead_with_progress(
    state: &ConsoleState,
    who: &Principal,
    route: &str,
    last_error: Option<&str>,
    dry_run: bool,
    mut progress: impl FnMut(u64),
) -> Result<u64, ActionError> {
    require(who, Role::Operator)?;
    if state.catalog.route(route).is_none() {
        return Err(ActionError::NotFound(format!("route {route:?}")));
    }
    let store = &*state.store;
    let mut count = 0;
    let mut before = None;
    loop {
        let page = store
            .list_deliveries(&DeliveryQuery {
                route: Some(route.to_string()),
                state: Some(DeliveryState::Dead),
                last_error: last_error.map(str::to_string),
                before,
                limit: PAGE,
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let ids: Vec<DeliveryId> = page.iter().map(|d| d.id).collect();
        count += if dry_run {
            ids.len() as u64
        } else {
            store.retry_deliveries(&ids, UnixMillis::now()).await?
        };
        progress(count);
        if page.len() < PAGE as usize {
            break;
        }
    }
    if !dry_run && count > 0 {
        let details = serde_json::json!({ "route": route, "last_error": last_error, "retried": count });
        audit(
            store,
            who,
            "delivery.retry_bulk",
            format!("route:{route}"),
            None,
            details,
        )
        .await?;
    }
    Ok(count)
}

/// Approves deliveries awaiting approval: they become pending, due now.
/// Returns the ids that changed. Audited as `delivery.approve`.
pub async fn approve(store: &dyn Store, who: &Principal, ids: &[DeliveryId]) -> Result<Vec<DeliveryId>, ActionError> {
    require(who, Role::Operator)?;
    check_ids(ids)?;
    let changed = store
        .decide_approval(ids, &ApprovalDecision::Approve, UnixMillis::now())
        .await?;
    if !changed.is_empty() {
        let mut details = ids_details(ids);
        details["changed"] = changed.len().into();
        audit(store, who, "delivery.approve", object_of(ids), None, details).await?;
    }
    Ok(changed)
}

/// Rejects deliveries awaiting approval with a reason (required); they are
/// never delivered. Returns the ids that changed. Audited as
/// `delivery.reject`.
pub async fn reject(
    store: &dyn Store,
    who: &Principal,
    ids: &[DeliveryId],
    reason: &str,
) -> Result<Vec<DeliveryId>, ActionError> {
    require(who, Role::Operator)?;
    check_ids(ids)?;
    let reason = required_text("reason", reason)?;
    let decision = ApprovalDecision::Reject {
        reason: reason.to_string(),
    };
    let changed = store.decide_approval(ids, &decision, UnixMillis::now()).await?;
    if !changed.is_empty() {
        let mut details = ids_details(ids);
        details["changed"] = changed.len().into();
        audit(store, who, "delivery.reject", object_of(ids), Some(reason), details).await?;
    }
    Ok(changed)
}

/// Approves one delivery; 404 or 409 when it is unknown or not awaiting
/// approval. Returns it as it is now.
pub async fn approve_delivery(store: &dyn Store, who: &Principal, id: DeliveryId) -> Result<Delivery, ActionError> {
    if approve(store, who, &[id]).await?.is_empty() {
        return Err(unchanged(store, id, DeliveryState::AwaitingApproval).await);
    }
    reread(store, id).await
}

/// Rejects one delivery; 404 or 409 when it is unknown or not awaiting
/// approval. Returns it as it is now.
pub async fn reject_delivery(
    store: &dyn Store,
    who: &Principal,
    id: DeliveryId,
    reason: &str,
) -> Result<Delivery, ActionError> {
    if reject(store, who, &[id], reason).await?.is_empty() {
        return Err(unchanged(store, id, DeliveryState::AwaitingApproval).await);
    }
    reread(store, id).await
}

/// Takes dead deliveries out of the exception queue (resolved by hand, or
/// discarded) with a note (required). Returns the ids that changed.
/// Audited as `delivery.resolve` or `delivery.discard`.
pub async fn resolve(
    store: &dyn Store,
    who: &Principal,
    ids: &[DeliveryId],
    resolution: Resolution,
    note: &str,
) -> Result<Vec<DeliveryId>, ActionError> {
    require(who, Role::Operator)?;
    check_ids(ids)?;
    let note = required_text("note", note)?;
    let changed = store
        .resolve_deliveries(ids, resolution, note, UnixMillis::now())
        .await?;
    let action = match resolution {
        Resolution::Resolved => "delivery.resolve",
        Resolution::Discarded => "delivery.discard",
    };
    if !changed.is_empty() {
        let mut details = ids_details(ids);
        details["changed"] = changed.len().into();
        audit(store, who, action, object_of(ids), Some(note), details).await?;
    }
    Ok(changed)
}

/// Resolves or discards one dead delivery; 404 or 409 when it is unknown or
/// not dead. Returns it as it is now.
pub async fn resolve_delivery(
    store: &dyn Store,
    who: &Principal,
    id: DeliveryId,
    resolution: Resolution,
    note: &str,
) -> Result<Delivery, ActionError> {
    if resolve(store, who, &[id], resolution, note).await?.is_empty() {
        return Err(unchanged(store, id, DeliveryState::Dead).await);
    }
    reread(store, id).await
}

/// Replays stored events: a new pending delivery on every route that takes
/// each (only `route`, when given). A dry run counts without changing or
/// auditing anything. Audited as `event.replay`.
pub async fn replay(
    state: &ConsoleState,
    who: &Principal,
    selection: &Selection,
    route: Option<&str>,
    dry_run: bool,
) -> Result<ReplayReport, ActionError> {
    replay_with_progress(state, who, selection, route, dry_run, |_| {}).await
}

/// [`replay`], calling `progress` after each page of events (the CLI shows
/// it on long runs).
pub async fn replay_with_progress(
    state: &ConsoleState,
    who: &Principal,
    selection: &Selection,
    route: Option<&str>,
    dry_run: bool,
    progress: impl FnMut(&ReplayReport),
) -> Result<ReplayReport, ActionError> {
    require(who, Role::Operator)?;
    match selection {
        Selection::Events(ids) if ids.is_empty() => {
            return Err(ActionError::Invalid("name at least one event".into()));
        }
        Selection::Events(ids) if ids.len() > MAX_IDS => {
            return Err(ActionError::Invalid(format!("at most {MAX_IDS} events at once")));
        }
        Selection::Range { source, .. } if state.catalog.source(source).is_none() => {
            return Err(ActionError::NotFound(format!("source {source:?}")));
        }
        _ => {}
    }
    let narrowed;
    let routes = match route {
        Some(route) => {
            narrowed = state.replay_routes.only(route)?;
            &narrowed
        }
        None => &*state.replay_routes,
    };
    let report = replay::replay(&*state.store, routes, selection, dry_run, progress).await?;
    if !dry_run && report.deliveries > 0 {
        let (object, selected) = match selection {
            Selection::Events(ids) => (
                match ids.as_slice() {
                    [one] => one.to_string(),
                    _ => String::new(),
                },
                serde_json::json!({
                    "count": ids.len(),
                    "ids": ids.iter().take(AUDITED_IDS).map(ToString::to_string).collect::<Vec<_>>(),
                }),
            ),
            Selection::Range {
                source,
                event_type,
                from,
                to,
            } => (
                format!("source:{source}"),
                serde_json::json!({ "source": source, "event_type": event_type, "from": from.0, "to": to.0 }),
            ),
        };
        let details = serde_json::json!({
            "selection": selected,
            "route": route,
            "events": report.events,
            "unrouted": report.unrouted,
            "pruned": report.pruned,
            "deliveries": report.deliveries,
        });
        audit(&*state.store, who, "event.replay", object, None, details).await?;
    }
    Ok(report)
}

// --- Routes (admin) ----------------------------------------------------------

/// Pauses or resumes a configured route. Audited as `route.pause` or
/// `route.resume` on `route:<name>`.
pub async fn set_route_paused(
    state: &ConsoleState,
    who: &Principal,
    route: &str,
    paused: bool,
) -> Result<(), ActionError> {
    require(who, Role::Admin)?;
    if state.catalog.route(route).is_none() {
        return Err(ActionError::NotFound(format!("route {route:?}")));
    }
    state.store.set_route_paused(route, paused).await?;
    let action = if paused { "route.pause" } else { "route.resume" };
    audit(
        &*state.store,
        who,
        action,
        format!("route:{route}"),
        None,
        serde_json::Value::Null,
    )
    .await
}

// --- Users and tokens (admin) ------------------------------------------------

/// Checks a login name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
pub fn check_username(username: &str) -> Result<(), ActionError> {
    let valid = !username.is_empty()
        && username.len() <= 64
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(ActionError::Invalid(format!(
            "{username:?} is not a valid username (1 to 64 letters, digits, '.', '_', '-' or '@')"
        )))
    }
}

fn hash_password(password: &str) -> Result<String, ActionError> {
    password::check_policy(password).map_err(ActionError::Invalid)?;
    password::hash(password).map_err(|e| ActionError::Store(StoreError::Internal(e.to_string())))
}

/// Creates a user with a password (checked against the policy, stored as
/// argon2id). A taken name is a conflict. Audited as `user.create`.
pub async fn create_user(
    store: &dyn Store,
    who: &Principal,
    username: &str,
    role: Role,
    password: &str,
) -> Result<User, ActionError> {
    require(who, Role::Admin)?;
    check_username(username)?;
    let password_hash = hash_password(password)?;
    let user = store
        .create_user(NewUser {
            id: UserId::new(),
            username: username.to_string(),
            role,
            password_hash,
            created_at: UnixMillis::now(),
        })
        .await
        .map_err(|error| match error {
            StoreError::Conflict(_) => ActionError::Conflict(format!("a user named {username:?} already exists")),
            other => other.into(),
        })?;
    audit(
        store,
        who,
        "user.create",
        format!("user:{username}"),
        None,
        serde_json::json!({ "role": role.as_str() }),
    )
    .await?;
    Ok(user)
}

/// Disables a user (its sessions end at once) or enables it again. Nobody
/// can disable themselves, so an admin cannot lock out the last admin by
/// accident. Audited as `user.disable` or `user.enable`.
pub async fn set_user_disabled(
    store: &dyn Store,
    who: &Principal,
    username: &str,
    disabled: bool,
) -> Result<User, ActionError> {
    require(who, Role::Admin)?;
    if disabled && matches!(&who.actor, Actor::User { username: me, .. } if me == username) {
        return Err(ActionError::Invalid("you cannot disable yourself".into()));
    }
    if !store.set_user_disabled(username, disabled).await? {
        return Err(ActionError::NotFound(format!("user {username:?}")));
    }
    let action = if disabled { "user.disable" } else { "user.enable" };
    audit(
        store,
        who,
        action,
        format!("user:{username}"),
        None,
        serde_json::Value::Null,
    )
    .await?;
    store
        .user_by_name(username)
        .await?
        .ok_or_else(|| ActionError::NotFound(format!("user {username:?}")))
}

/// Sets a new password (checked against the policy); the user's sessions
/// end. Audited as `user.reset_password` (the password is never logged).
pub async fn reset_password(
    store: &dyn Store,
    who: &Principal,
    username: &str,
    password: &str,
) -> Result<(), ActionError> {
    require(who, Role::Admin)?;
    let password_hash = hash_password(password)?;
    if !store.set_user_password(username, &password_hash).await? {
        return Err(ActionError::NotFound(format!("user {username:?}")));
    }
    audit(
        store,
        who,
        "user.reset_password",
        format!("user:{username}"),
        None,
        serde_json::Value::Null,
    )
    .await
}

/// A new API token and its secret, which is shown once and never stored.
#[derive(Clone, Debug)]
pub struct CreatedToken {
    /// The token as stored.
    pub token: ApiToken,
    /// `ghk_…`: give it to whoever needs it now; it cannot be shown again.
    pub secret: String,
}

/// Creates an API token with a role and an optional expiry. Audited as
/// `token.create`.
pub async fn create_token(
    store: &dyn Store,
    who: &Principal,
    name: &str,
    role: Role,
    expires_at: Option<UnixMillis>,
) -> Result<CreatedToken, ActionError> {
    require(who, Role::Admin)?;
    let name = required_text("token name", name)?;
    let now = UnixMillis::now();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ActionError::Invalid("the expiry is in the past".into()));
    }
    let secret = secret::new_api_token();
    let token = ApiToken {
        id: TokenId::new(),
        name: name.to_string(),
        token_hash: secret::hash(&secret),
        role,
        created_by: who.actor.audit_name(),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    store.create_token(token.clone()).await?;
    audit(
        store,
        who,
        "token.create",
        token.id.to_string(),
        None,
        serde_json::json!({ "name": name, "role": role.as_str(), "expires_at": expires_at.map(|at| at.0) }),
    )
    .await?;
    Ok(CreatedToken { token, secret })
}

/// Revokes a token: it stops working at once. 404 when it does not exist
/// or was already revoked. Audited as `token.revoke`.
pub async fn revoke_token(store: &dyn Store, who: &Principal, id: TokenId) -> Result<(), ActionError> {
    require(who, Role::Admin)?;
    if !store.revoke_token(id, UnixMillis::now()).await? {
        return Err(ActionError::NotFound(format!("active token {id}")));
    }
    audit(
        store,
        who,
        "token.revoke",
        id.to_string(),
        None,
        serde_json::Value::Null,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_statuses_and_codes() {
        let forbidden = ActionError::Forbidden { required: Role::Admin };
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(forbidden.to_string(), "this needs the admin role");
        assert_eq!(
            ActionError::Invalid("x".into()).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let conflict: ActionError = StoreError::Conflict("taken".into()).into();
        assert_eq!(conflict.code(), "conflict");
        let down: ActionError = StoreError::Unavailable("host db1 refused".into()).into();
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            !down.public_message().contains("db1"),
            "storage details stay in the log"
        );
        let internal: ActionError = StoreError::Internal("no such table: users".into()).into();
        assert!(!internal.public_message().contains("users"));
    }

    #[test]
    fn usernames_and_texts_are_checked() {
        assert!(check_username("alice.b-c_d@x").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("has space").is_err());
        assert!(check_username(&"a".repeat(65)).is_err());
        assert!(required_text("note", "  ").is_err());
        assert_eq!(required_text("note", " fixed by hand ").ok(), Some("fixed by hand"));
    }

    #[test]
    fn roles_are_required() {
        let viewer = Principal {
            actor: Actor::Cli { os_user: "t".into() },
            role: Role::Viewer,
            remote_addr: None,
        };
        assert!(require(&viewer, Role::Viewer).is_ok());
        assert!(matches!(
            require(&viewer, Role::Operator),
            Err(ActionError::Forbidden {
                required: Role::Operator
            })
        ));
        assert!(require(&Principal::cli(), Role::Admin).is_ok());
    }
}
