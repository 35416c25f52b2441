//! Reads gatehouse-verify's sources so the fuzz targets follow the providers
//! as they are added, without anyone editing this crate:
//!
//! - `cfg(gatehouse_provider = "<module>")` for every `pub mod <module>;` in
//!   `providers/mod.rs`, so the sign/verify round trips written for a
//!   provider compile only once its module exists;
//! - `$OUT_DIR/scanned_headers.rs`: every header-name-looking string literal
//!   in the providers' non-test code, merged into the fixed header list the
//!   `headers` target draws names from;
//! - `cfg(gatehouse_paypal_fixtures)` when gatehouse-verify's PayPal test
//!   certificate and key are there to sign with.

use std::collections::BTreeSet;
use std::env;
use std::fs;
use std::path::Path;

/// Modules the targets have provider-specific code for.
const KNOWN_MODULES: &[&str] = &[
    "discord",
    "dropbox",
    "github",
    "gitlab",
    "hmac",
    "intercom",
    "linear",
    "mailgun",
    "microsoft_graph",
    "none",
    "paypal",
    "sendgrid",
    "shopify",
    "slack",
    "square",
    "standard_webhooks",
    "stripe",
    "token",
    "twilio",
    "zoom",
];

fn main() {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let providers = Path::new(&manifest_dir).join("../crates/gatehouse-verify/src/providers");
    println!("cargo:rerun-if-changed={}", providers.display());
    println!("cargo:rerun-if-changed=build.rs");

    let values: Vec<String> = KNOWN_MODULES.iter().map(|m| format!("\"{m}\"")).collect();
    println!(
        "cargo:rustc-check-cfg=cfg(gatehouse_provider, values({}))",
        values.join(", ")
    );

    let mod_rs = fs::read_to_string(providers.join("mod.rs")).unwrap_or_default();
    for line in mod_rs.lines() {
        if let Some(name) = line
            .trim()
            .strip_prefix("pub mod ")
            .and_then(|rest| rest.strip_suffix(';'))
        {
            println!("cargo:rustc-cfg=gatehouse_provider=\"{}\"", name.trim());
        }
    }

    println!("cargo:rustc-check-cfg=cfg(gatehouse_paypal_fixtures)");
    let data = Path::new(&manifest_dir).join("../crates/gatehouse-verify/tests/data");
    println!("cargo:rerun-if-changed={}", data.display());
    if data.join("paypal-signer.cert.pem").is_file() && data.join("paypal-signer.key.pem").is_file() {
        println!("cargo:rustc-cfg=gatehouse_paypal_fixtures");
    }

    let mut headers = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(&providers) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "rs") {
                println!("cargo:rerun-if-changed={}", path.display());
                if let Ok(source) = fs::read_to_string(&path) {
                    scan_headers(&source, &mut headers);
                }
            }
        }
    }
    let list: Vec<String> = headers.iter().map(|h| format!("    {h:?},\n")).collect();
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("scanned_headers.rs");
    fs::write(
        out,
        format!(
            "/// Header-name-looking literals found in gatehouse-verify's providers.\n\
             pub const SCANNED_HEADERS: &[&str] = &[\n{}];\n",
            list.concat()
        ),
    )
    .expect("write scanned_headers.rs");
}

/// Adds every string literal of the code before `#[cfg(test)]` that looks
/// like a header name: lowercase ASCII letters, digits and dashes, with at
/// least one dash. Scheme labels (`stripe-v1`) are skipped by ignoring lines
/// that build a `Verified` or name a scheme; a stray extra name only dilutes
/// the fuzzer's choices a little.
fn scan_headers(source: &str, out: &mut BTreeSet<String>) {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    for line in code.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") || line.contains("by_secret") || line.contains("scheme") {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find('"') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('"') else { break };
            let literal = &after[..end];
            if looks_like_header(literal) {
                out.insert(literal.to_owned());
            }
            rest = &after[end + 1..];
        }
    }
}

fn looks_like_header(s: &str) -> bool {
    s.len() >= 3
        && s.contains('-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
