//! The demo: `gatehouse serve` with no config writes a commented example
//! config with one source per provider and fresh random secrets to
//! `gatehouse-data/demo.toml` (once; later runs reuse it), then serves it.

use std::path::{Path, PathBuf};

use base64::Engine;
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;

/// The demo config as written, and the secrets to print for the user.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Where the demo config lives.
    pub path: PathBuf,
    /// Whether this run created it.
    pub created: bool,
}

/// Returns the demo config under `data_dir`, creating it on first use.
pub fn demo_config(data_dir: &Path) -> std::io::Result<DemoConfig> {
    let path = data_dir.join("demo.toml");
    if path.exists() {
        return Ok(DemoConfig { path, created: false });
    }
    std::fs::create_dir_all(data_dir)?;
    let text = render(data_dir);
    // Write then rename so a crash never leaves half a config behind.
    let partial = data_dir.join("demo.toml.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, &path)?;
    Ok(DemoConfig { path, created: true })
}

fn render(data_dir: &Path) -> String {
    let mut rng = rand::thread_rng();
    let stripe = format!("whsec_{}", Alphanumeric.sample_string(&mut rng, 32));
    let github = Alphanumeric.sample_string(&mut rng, 40);
    let mut key = [0u8; 24];
    rng.fill_bytes(&mut key);
    let standard = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    let shopify = Alphanumeric.sample_string(&mut rng, 32);
    let gitlab = Alphanumeric.sample_string(&mut rng, 32);
    let database = data_dir.join("gatehouse.db");
    format!(
        r#"# gatehouse demo configuration, written by `gatehouse serve` on first run.
# Edit it and restart, or copy it to ./gatehouse.toml and run `gatehouse serve`.
# The secrets below were generated for this demo only.

[server]
listen = "127.0.0.1:8080"
body_limit = "1MiB"

[storage]
url = "sqlite://{database}"

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["{stripe}"]
tolerance = "5m"

[[sources]]
name = "github"
provider = "github"
secrets = ["{github}"]

[[sources]]
name = "standard-webhooks"
provider = "standard-webhooks"
secrets = ["{standard}"]

# A generic HMAC source, set up the way Shopify signs.
[[sources]]
name = "shopify"
provider = "hmac"
secrets = ["{shopify}"]
verify = {{ header = "X-Shopify-Hmac-Sha256", algorithm = "sha256", encoding = "base64" }}
event_type = {{ header = "X-Shopify-Topic" }}
dedup = {{ header = "X-Shopify-Webhook-Id" }}

# A shared token compared in constant time, the way GitLab sends it.
[[sources]]
name = "gitlab"
provider = "token"
secrets = ["{gitlab}"]
verify = {{ header = "X-Gitlab-Token" }}
event_type = {{ header = "X-Gitlab-Event" }}
"#,
        database = database.display()
    )
}
