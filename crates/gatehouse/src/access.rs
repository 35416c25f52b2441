//! `gatehouse users …` and `gatehouse tokens …`: manage console users and
//! API tokens from the server's machine. Each command goes through the
//! same audited actions as the console and the API, as `cli:<os user>`.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use gatehouse_console::actions;
use gatehouse_console::auth::{secret, Principal};
use gatehouse_core::{Role, TokenId, UnixMillis};
use gatehouse_server::config::Config;
use gatehouse_store::Store;

/// `gatehouse users`: console users.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The config file (for its storage).
    #[arg(
        long,
        short,
        env = "GATEHOUSE_CONFIG",
        default_value = "gatehouse.toml",
        global = true
    )]
    config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    action: UsersAction,
}

/// The `users` subcommands.
#[derive(Debug, Subcommand)]
enum UsersAction {
    /// Create a user. Without --password-stdin a random password is
    /// generated and printed once.
    Add {
        /// The login name.
        username: String,
        /// What the user may do.
        #[arg(long, value_enum, default_value = "viewer")]
        role: RoleArg,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Disable a user: it cannot log in and its sessions end.
    Disable {
        /// The login name.
        username: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// The login name.
        username: String,
    },
    /// Set a new password (its sessions end). Without --password-stdin a
    /// random password is generated and printed once.
    ResetPassword {
        /// The login name.
        username: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// `gatehouse tokens`: API tokens.
#[derive(Debug, Args)]
pub struct TokensArgs {
    /// The config file (for its storage).
    #[arg(
        long,
        short,
        env = "GATEHOUSE_CONFIG",
        default_value = "gatehouse.toml",
        global = true
    )]
    config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    action: TokensAction,
}

/// The `tokens` subcommands.
#[derive(Debug, Subcommand)]
enum TokensAction {
    /// Create a token; its secret is printed once.
    Create {
        /// A label saying what it is for.
        name: String,
        /// What the token may do.
        #[arg(long, value_enum, default_value = "viewer")]
        role: RoleArg,
        /// Let it expire after this long, e.g. 90days (default: never).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token id (tok_…).
        id: String,
    },
}

/// A role on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    /// Reads everything.
    Viewer,
    /// Also retries, replays, approves, rejects and resolves.
    Operator,
    /// Also pauses routes and manages users and tokens.
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Viewer => Role::Viewer,
            RoleArg::Operator => Role::Operator,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Opens the storage named by the config.
async fn open(config_path: &Path) -> Result<Arc<dyn Store>> {
    let config = Config::load(config_path)?;
    gatehouse_server::storage::open(&config.file.storage)
        .await
        .with_context(|| {
            format!(
                "cannot open storage {}",
                crate::cli::redact_url(&config.file.storage.url)
            )
        })
}

/// The password from stdin's first line, or a new random one (which the
/// caller prints once).
fn password(from_stdin: bool) -> Result<(String, bool)> {
    if !from_stdin {
        return Ok((secret::random_secret(), true));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password (one line, echoed):");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password on stdin");
    }
    Ok((password, false))
}

/// Runs `gatehouse users …`.
pub async fn users(args: UsersArgs) -> Result<()> {
    let store = open(&args.config).await?;
    let who = Principal::cli();
    match args.action {
        UsersAction::Add {
            username,
            role,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            let user = actions::create_user(&*store, &who, &username, role.into(), &password).await?;
            println!("created user {} ({})", user.username, user.role.as_str());
            if generated {
                println!("password: {password}");
                println!("(shown once; change it with `gatehouse users reset-password {username}`)");
            }
        }
        UsersAction::List => {
            let users = store.list_users().await?;
            if users.is_empty() {
                println!("no users; add one with `gatehouse users add <name> --role admin`");
            }
            println!(
                "{:<24} {:<9} {:<9} {:<21} LAST LOGIN",
                "USERNAME", "ROLE", "STATE", "CREATED"
            );
            for user in users {
                println!(
                    "{:<24} {:<9} {:<9} {:<21} {}",
                    user.username,
                    user.role.as_str(),
                    if user.disabled { "disabled" } else { "active" },
                    time(user.created_at),
                    user.last_login_at.map_or_else(|| "never".into(), time),
                );
            }
        }
        UsersAction::Disable { username } => {
            actions::set_user_disabled(&*store, &who, &username, true).await?;
            println!("user {username} disabled; its sessions ended");
        }
        UsersAction::Enable { username } => {
            actions::set_user_disabled(&*store, &who, &username, false).await?;
            println!("user {username} enabled");
        }
        UsersAction::ResetPassword {
            username,
            password_stdin,
        } => {
            let (password, generated) = password(password_stdin)?;
            actions::reset_password(&*store, &who, &username, &password).await?;
            println!("password of {username} changed; its sessions ended");
            if generated {
                println!("password: {password}");
            }
        }
    }
    Ok(())
}

/// Runs `gatehouse tokens …`.
pub async fn tokens(args: TokensArgs) -> Result<()> {
    let store = open(&args.config).await?;
    let who = Principal::cli();
    match args.action {
        TokensAction::Create { name, role, expires_in } => {
            let expires_at = match expires_in {
                Some(text) => {
                    let after = humantime::parse_duration(&text)
                        .with_context(|| format!("--expires-in {text:?} is not a duration (e.g. 30days, 12h)"))?;
                    Some(UnixMillis(
                        UnixMillis::now()
                            .0
                            .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
                    ))
                }
                None => None,
            };
            let created = actions::create_token(&*store, &who, &name, role.into(), expires_at).await?;
            println!(
                "created token {} ({}, {})",
                created.token.id,
                created.token.name,
                created.token.role.as_str()
            );
            println!("secret: {}", created.secret);
            println!("(shown once; send it as `Authorization: Bearer <secret>`)");
        }
        TokensAction::List => {
            let tokens = store.list_tokens().await?;
            let now = UnixMillis::now();
            println!(
                "{:<30} {:<20} {:<9} {:<8} {:<21} {:<21} LAST USED",
                "ID", "NAME", "ROLE", "STATE", "CREATED", "EXPIRES"
            );
            for token in tokens {
                let state = if token.revoked_at.is_some() {
                    "revoked"
                } else if token.is_active(now) {
                    "active"
                } else {
                    "expired"
                };
                println!(
                    "{:<30} {:<20} {:<9} {:<8} {:<21} {:<21} {}",
                    token.id.to_string(),
                    token.name,
                    token.role.as_str(),
                    state,
                    time(token.created_at),
                    token.expires_at.map_or_else(|| "never".into(), time),
                    token.last_used_at.map_or_else(|| "never".into(), time),
                );
            }
        }
        TokensAction::Revoke { id } => {
            let id: TokenId = id
                .trim()
                .parse()
                .with_context(|| format!("{id:?} is not a token id (tok_…)"))?;
            actions::revoke_token(&*store, &who, id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// A time as RFC 3339 in UTC, to the second.
fn time(at: UnixMillis) -> String {
    let millis = u64::try_from(at.0).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_times() {
        assert_eq!(Role::from(RoleArg::Operator), Role::Operator);
        assert_eq!(time(UnixMillis(1_714_521_600_000)), "2024-05-01T00:00:00Z");
    }
}
