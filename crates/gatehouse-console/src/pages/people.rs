//! Users and API tokens: everyone may see who has access; admins create
//! users, disable them, reset passwords, and create and revoke tokens. A
//! new token's secret is shown once, on the page the creating post
//! returns, and never again.

use std::str::FromStr;

use askama::Template;
use axum::extract::{Path, State};
use http::StatusCode;

use gatehouse_core::{Role, TokenId, UnixMillis};

use super::{back_to, done, render, view, Ctx, PageError, PageResult, Posted, Shared, Viewer};
use crate::actions;

struct UserLine {
    username: String,
    role: &'static str,
    disabled: bool,
    created: String,
    last_login: String,
    segment: String,
    /// The admin looking at the page: no switch to lock themselves out.
    is_me: bool,
}

struct TokenLine {
    id: String,
    name: String,
    role: &'static str,
    created_by: String,
    created: String,
    expires: String,
    last_used: String,
    state: &'static str,
    active: bool,
}

/// A token just created: its secret, shown once.
struct NewSecret {
    name: String,
    secret: String,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    ctx: Ctx,
    users: Vec<UserLine>,
    tokens: Vec<TokenLine>,
    roles: Vec<&'static str>,
    created: Option<NewSecret>,
}

async fn build(pages: &Shared, ctx: Ctx, created: Option<NewSecret>) -> Result<PeoplePage, PageError> {
    let store = &pages.state.store;
    let now = UnixMillis::now();
    let users = store.list_users().await?;
    let tokens = store.list_tokens().await?;
    Ok(PeoplePage {
        users: users
            .into_iter()
            .map(|user| UserLine {
                is_me: user.username == ctx.username,
                segment: view::segment(&user.username),
                username: user.username,
                role: user.role.as_str(),
                disabled: user.disabled,
                created: view::time(user.created_at),
                last_login: view::time_opt(user.last_login_at),
            })
            .collect(),
        tokens: tokens
            .into_iter()
            .map(|token| {
                let active = token.is_active(now);
                TokenLine {
                    id: token.id.to_string(),
                    name: token.name,
                    role: token.role.as_str(),
                    created_by: token.created_by,
                    created: view::time(token.created_at),
                    expires: view::time_opt(token.expires_at),
                    last_used: view::time_opt(token.last_used_at),
                    state: match (token.revoked_at, active) {
                        (Some(_), _) => "revoked",
                        (None, true) => "active",
                        (None, false) => "expired",
                    },
                    active,
                }
            })
            .collect(),
        roles: Role::ALL.iter().map(Role::as_str).collect(),
        created,
        ctx,
    })
}

/// `GET /console/people`.
pub(crate) async fn page(State(pages): State<Shared>, viewer: Viewer) -> PageResult {
    let page = build(&pages, viewer.ctx("people"), None).await?;
    Ok(viewer.render(&page))
}

fn role_of(posted: &Posted) -> Result<Role, PageError> {
    let name = posted.form.get("role").unwrap_or_default();
    Role::parse(name).ok_or_else(|| PageError::Invalid(format!("{name:?} is not a role (viewer, operator, admin)")))
}

/// `POST /console/users`: creates a user.
pub(crate) async fn create_user(State(pages): State<Shared>, posted: Posted) -> PageResult {
    let username = posted.form.text("username").unwrap_or_default();
    let password = posted.form.get("password").unwrap_or_default();
    let role = role_of(&posted)?;
    let user = actions::create_user(&*pages.state.store, &posted.principal(), username, role, password).await?;
    Ok(done(
        &back_to(&posted.form, "/console/people"),
        format!("Created {} ({}).", user.username, user.role.as_str()),
    ))
}

/// `POST /console/users/{name}/disable`.
pub(crate) async fn disable_user(State(pages): State<Shared>, Path(name): Path<String>, posted: Posted) -> PageResult {
    actions::set_user_disabled(&*pages.state.store, &posted.principal(), &name, true).await?;
    Ok(done(
        "/console/people",
        format!("Disabled {name}; their sessions ended."),
    ))
}

/// `POST /console/users/{name}/enable`.
pub(crate) async fn enable_user(State(pages): State<Shared>, Path(name): Path<String>, posted: Posted) -> PageResult {
    actions::set_user_disabled(&*pages.state.store, &posted.principal(), &name, false).await?;
    Ok(done("/console/people", format!("Enabled {name}.")))
}

/// `POST /console/users/{name}/password`: sets a new password.
pub(crate) async fn reset_password(
    State(pages): State<Shared>,
    Path(name): Path<String>,
    posted: Posted,
) -> PageResult {
    let password = posted.form.get("password").unwrap_or_default();
    actions::reset_password(&*pages.state.store, &posted.principal(), &name, password).await?;
    Ok(done(
        "/console/people",
        format!("Set a new password for {name}; their sessions ended."),
    ))
}

/// `POST /console/tokens`: creates a token and shows its secret once.
pub(crate) async fn create_token(State(pages): State<Shared>, posted: Posted) -> PageResult {
    let name = posted.form.get("name").unwrap_or_default();
    let role = role_of(&posted)?;
    let expires_at = match posted.form.text("expires_days") {
        None => None,
        Some(days) => {
            let days: u32 = days
                .parse()
                .ok()
                .filter(|days| (1..=3650).contains(days))
                .ok_or_else(|| PageError::Invalid("Expiry: a number of days from 1 to 3650, or empty.".into()))?;
            Some(UnixMillis(UnixMillis::now().0 + i64::from(days) * 86_400_000))
        }
    };
    let created = actions::create_token(&*pages.state.store, &posted.principal(), name, role, expires_at).await?;
    let ctx = Ctx::new(&posted.current, None, "people");
    let page = build(
        &pages,
        ctx,
        Some(NewSecret {
            name: created.token.name,
            secret: created.secret,
        }),
    )
    .await?;
    Ok(render(StatusCode::OK, &page))
}

/// `POST /console/tokens/{id}/revoke`.
pub(crate) async fn revoke_token(State(pages): State<Shared>, Path(id): Path<String>, posted: Posted) -> PageResult {
    let token_id = TokenId::from_str(&id).map_err(|_| PageError::NotFound(format!("token {id}")))?;
    actions::revoke_token(&*pages.state.store, &posted.principal(), token_id).await?;
    Ok(done(
        "/console/people",
        format!("Revoked {token_id}: it no longer works."),
    ))
}
