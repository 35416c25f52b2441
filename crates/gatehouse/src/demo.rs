//! What the demo prints at start-up: where things are, the demo secrets
//! (generated for this demo only) and a signed request to try.

use std::net::SocketAddr;

use gatehouse_server::config::Config;

/// Prints the demo banner to stdout (not the log: it holds demo secrets).
pub fn print_banner(config: &Config, address: SocketAddr) {
    println!();
    println!("gatehouse demo");
    println!("  config:   {}", config.origin.display());
    println!("  database: {}", config.file.storage.url);
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
