//! What the demo prints at start-up: where things are, the demo secrets
//! (generated for this demo only) and a signed request to try.

use std::net::SocketAddr;

use gatehouse_console::actions;
use gatehouse_console::auth::{secret, Principal};
use gatehouse_core::Role;
use gatehouse_server::config::Config;
use gatehouse_store::Store;

/// The first admin's login name in the demo.
pub const DEMO_ADMIN: &str = "admin";

/// Creates the user `admin` with a random password when the demo database
/// has no user yet, and returns that password (to print once). A restarted
/// demo keeps its users and returns `None`.
pub async fn ensure_admin(store: &dyn Store) -> anyhow::Result<Option<String>> {
    if !store.list_users().await?.is_empty() {
        return Ok(None);
    }
    let password = secret::random_secret();
    actions::create_user(store, &Principal::cli(), DEMO_ADMIN, Role::Admin, &password).await?;
    Ok(Some(password))
}

/// Prints the demo banner to stdout (not the log: it holds demo secrets).
/// `admin_password` is the first admin's, when it was just created.
pub fn print_banner(config: &Config, address: SocketAddr, admin_password: Option<&str>) {
    println!();
    println!("gatehouse demo");
    println!("  config:   {}", config.origin.display());
    println!("  database: {}", config.file.storage.url);
    println!("  console:  http://{address}/console");
    match admin_password {
        Some(password) => println!("  login:    {DEMO_ADMIN} / {password}   (shown once)"),
        None => println!(
            "  login:    your existing users (reset one with `gatehouse users reset-password {DEMO_ADMIN} --config {}`)",
            config.origin.display()
        ),
    }
    println!(
        "  API:      http://{address}/api/v1 (tokens: `gatehouse tokens create <name> --role operator --config {}`)",
        config.origin.display()
    );
    println!("  sources (POST http://{address}/in/<name>) and their demo secrets:");
    for (source, secrets) in config.file.sources.iter().zip(&config.secrets) {
        let secret = secrets.first().and_then(|s| s.expose_str()).unwrap_or("(not text)");
        println!("    {:<18} {:<18} {secret}", source.name, source.provider);
    }
    if let Some(stripe) = config
        .file
        .sources
        .iter()
        .zip(&config.secrets)
        .find(|(s, _)| s.provider == "stripe")
        .and_then(|(_, secrets)| secrets.first())
        .and_then(|s| s.expose_str())
    {
        println!();
        println!("  Send a signed Stripe test event:");
        println!("    body='{{\"id\":\"evt_demo_1\",\"type\":\"payment_intent.succeeded\"}}'; t=$(date +%s)");
        println!("    sig=$(printf '%s.%s' \"$t\" \"$body\" | openssl dgst -sha256 -hmac '{stripe}' | sed 's/^.* //')");
        println!(
            "    curl -i http://{address}/in/stripe -H \"Stripe-Signature: t=$t,v1=$sig\" -H 'Content-Type: application/json' -d \"$body\""
        );
    }
    println!();
}
