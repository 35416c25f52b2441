//! Command-line interface: `serve` and `check-config`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use gatehouse_server::config::Config;
use gatehouse_server::Gateway;

/// Self-hosted inbound webhook gateway: verify, store, route, deliver.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); GATEHOUSE_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive webhooks. Without --config and without ./gatehouse.toml,
    /// starts the demo (config and SQLite under ./gatehouse-data/).
    Serve {
        /// The config file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file without serving; exits non-zero on the first error.
    CheckConfig {
        /// The config file.
        #[arg(default_value = "gatehouse.toml")]
        config: PathBuf,
    },
}

/// Runs the chosen subcommand.
pub async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::CheckConfig { config } => check_config(&config),
    }
}

fn check_config(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    println!(
        "{}: ok ({} source{}, storage {})",
        path.display(),
        config.file.sources.len(),
        if config.file.sources.len() == 1 { "" } else { "s" },
        redact_url(&config.file.storage.url)
    );
    Ok(())
}

async fn serve(config_path: Option<PathBuf>) -> Result<()> {
    let default = PathBuf::from("gatehouse.toml");
    let (config, demo) = match config_path {
        Some(path) => (Config::load(&path)?, false),
        None if default.exists() => (Config::load(&default)?, false),
        None => {
            let demo = gatehouse_server::config::demo_config(Path::new("gatehouse-data"))
                .context("cannot write the demo config under ./gatehouse-data")?;
            (Config::load(&demo.path)?, true)
        }
    };
    let gateway = Gateway::start(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.file.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.file.server.listen))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to find the port when listen uses port 0.
    println!("gatehouse listening on http://{address}");
    if demo {
        crate::demo::print_banner(&config, address);
    }
    tracing::info!(%address, storage = %redact_url(&config.file.storage.url), sources = config.file.sources.len(), "Serving.");
    gateway.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the server.");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("Shutting down: no new connections; finishing commits.");
}

/// A storage URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/g.db"), "sqlite://data/g.db");
    }
}
