//! Builds a source's [`Provider`] from its config: the provider name, the
//! active secrets, the tolerance and the `verify` options table, plus the
//! state the HTTP layer shares with providers ([`BuildContext`]: PayPal's
//! certificate cache). Errors name the config key at fault so the config
//! loader can point at its line.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Secret;

use crate::providers;
use crate::providers::paypal::CertificateCache;
use crate::Provider;

/// Provider-specific options, the `verify` table of a `[[sources]]` entry.
/// Every key is optional; a key the chosen provider does not use is an error
/// rather than silently ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyOptions {
    /// `hmac`/`token`: the header carrying the signature or token.
    pub header: Option<String>,
    /// `hmac`: `sha1`, `sha256` (default) or `sha512`.
    pub algorithm: Option<String>,
    /// `hmac`: `hex` (default) or `base64`.
    pub encoding: Option<String>,
    /// `hmac`: a prefix before the encoded signature, e.g. `sha256=`.
    pub prefix: Option<String>,
    /// `hmac`: a header holding a unix-seconds timestamp that is signed too
    /// and checked against the tolerance.
    pub timestamp_header: Option<String>,
    /// `hmac`: what is signed, with `{body}` and optionally `{timestamp}`;
    /// default `{body}`, e.g. `{timestamp}.{body}`.
    pub signed_content: Option<String>,
    /// `none`: must be `true` to run a source with no verification.
    #[serde(default)]
    pub insecure: bool,
    /// `square`: the notification URL exactly as registered with Square,
    /// when it differs from the request's public URL (default).
    pub notification_url: Option<String>,
    /// `paypal`: the id PayPal gave the webhook subscription (required; it
    /// is part of what PayPal signs).
    pub webhook_id: Option<String>,
    /// `paypal`: the hosts signer certificates may be fetched from (default
    /// `["api.paypal.com", "api.sandbox.paypal.com"]`; `127.0.0.1` or
    /// `localhost` allow plain http, for tests).
    pub cert_hosts: Option<Vec<String>>,
}

/// Everything needed to build one source's provider.
#[derive(Clone, Copy, Debug)]
pub struct ProviderSpec<'a> {
    /// The provider's name, e.g. `stripe`.
    pub provider: &'a str,
    /// The active secrets, in config order (rotation: any may match).
    pub secrets: &'a [Secret],
    /// The source's timestamp tolerance, if set.
    pub tolerance: Option<Duration>,
    /// The `verify` options table.
    pub options: &'a VerifyOptions,
}

/// State shared between the HTTP layer and the providers it builds, passed
/// to [`build_with`]. Cloning shares the same state.
#[derive(Clone, Debug, Default)]
pub struct BuildContext {
    /// PayPal signer certificates, filled by the HTTP layer when a request
    /// is refused with [`crate::Rejection::CertificateNeeded`].
    pub certificates: CertificateCache,
}

/// A config problem, naming the key (relative to the source table) at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct BuildError {
    /// The key, e.g. `secrets` or `verify.algorithm`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl BuildError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The provider names gatehouse knows, in the order the docs list them.
pub fn provider_names() -> &'static [&'static str] {
    &[
        "stripe",
        "github",
        "standard-webhooks",
        "svix",
        "twilio",
        "slack",
        "shopify",
        "paypal",
        "square",
        "discord",
        "zoom",
        "gitlab",
        "sendgrid",
        "linear",
        "intercom",
        "mailgun",
        "microsoft-graph",
        "dropbox",
        "hmac",
        "token",
        "none",
    ]
}

/// Builds the provider for one source, with a fresh [`BuildContext`]: fine
/// for validating config, but a PayPal source built this way has a
/// certificate cache nobody else can fill. Serving code uses [`build_with`].
pub fn build(spec: ProviderSpec<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    build_with(spec, &BuildContext::default())
}

/// Builds the provider for one source, sharing `context` with it.
pub fn build_with(spec: ProviderSpec<'_>, context: &BuildContext) -> Result<Arc<dyn Provider>, BuildError> {
    match spec.provider {
        "stripe" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::stripe::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::stripe::Stripe::new(spec.secrets, tolerance)))
        }
        "github" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::github::GitHub::new(spec.secrets)))
        }
        // Svix is the origin of the Standard Webhooks scheme; its header
        // names are accepted whichever name the source uses.
        "standard-webhooks" | "svix" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec
                .tolerance
                .unwrap_or(providers::standard_webhooks::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::standard_webhooks::StandardWebhooks::new(
                spec.secrets,
                tolerance,
            )?))
        }
        "twilio" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::twilio::Twilio::new(spec.secrets)))
        }
        "slack" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::slack::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::slack::Slack::new(spec.secrets, tolerance)))
        }
        "shopify" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::shopify::Shopify::new(spec.secrets)))
        }
        // PayPal signs with its certificate's key: no secret is involved.
        "paypal" => {
            if !spec.secrets.is_empty() {
                return Err(BuildError::new(
                    "secrets",
                    "provider \"paypal\" verifies with PayPal's signer certificate and uses no secret; \
                     remove secrets and set verify.webhook_id",
                ));
            }
            reject_options(&spec, &["webhook_id", "cert_hosts"])?;
            let hosts = providers::paypal::cert_hosts_from_options(spec.options.cert_hosts.as_deref())?;
            Ok(Arc::new(providers::paypal::PayPal::new(
                spec.options.webhook_id.as_deref(),
                hosts,
                context.certificates.clone(),
                spec.tolerance,
            )?))
        }
        "square" => {
            require_secrets(&spec)?;
            reject_options(&spec, &["notification_url"])?;
            Ok(Arc::new(providers::square::Square::new(
                spec.secrets,
                spec.options.notification_url.as_deref(),
            )?))
        }
        "discord" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::discord::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::discord::Discord::new(spec.secrets, tolerance)?))
        }
        "zoom" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::zoom::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::zoom::Zoom::new(spec.secrets, tolerance)))
        }
        "gitlab" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::gitlab::GitLab::new(spec.secrets)))
        }
        "sendgrid" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::sendgrid::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::sendgrid::SendGrid::new(spec.secrets, tolerance)?))
        }
        "linear" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::linear::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::linear::Linear::new(spec.secrets, tolerance)))
        }
        "intercom" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::intercom::Intercom::new(spec.secrets)))
        }
        "mailgun" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            let tolerance = spec.tolerance.unwrap_or(providers::mailgun::DEFAULT_TOLERANCE);
            Ok(Arc::new(providers::mailgun::Mailgun::new(spec.secrets, tolerance)))
        }
        "microsoft-graph" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::microsoft_graph::MicrosoftGraph::new(spec.secrets)))
        }
        "dropbox" => {
            require_secrets(&spec)?;
            reject_options(&spec, &[])?;
            Ok(Arc::new(providers::dropbox::Dropbox::new(spec.secrets)))
        }
        "hmac" => {
            require_secrets(&spec)?;
            reject_options(
                &spec,
                &[
                    "header",
                    "algorithm",
                    "encoding",
                    "prefix",
                    "timestamp_header",
                    "signed_content",
                ],
            )?;
            let config = providers::hmac::HmacConfig::from_options(spec.options, spec.tolerance)?;
            Ok(Arc::new(providers::hmac::GenericHmac::new(config, spec.secrets)))
        }
        "token" => {
            require_secrets(&spec)?;
            reject_options(&spec, &["header"])?;
            Ok(Arc::new(providers::token::Token::new(
                spec.options.header.as_deref(),
                spec.secrets,
            )?))
        }
        "none" => {
            if !spec.options.insecure {
                return Err(BuildError::new(
                    "verify.insecure",
                    "provider \"none\" accepts unsigned requests; set verify = { insecure = true } to allow it",
                ));
            }
            reject_options(&spec, &["insecure"])?;
            Ok(Arc::new(providers::none::NoVerification))
        }
        other => Err(BuildError::new(
            "provider",
            format!(
                "unknown provider {other:?} (expected one of: {})",
                provider_names().join(", ")
            ),
        )),
    }
}

/// Fails unless at least one secret is configured and none is empty (an
/// HMAC with an empty key is one anyone can compute).
pub fn require_secrets(spec: &ProviderSpec<'_>) -> Result<(), BuildError> {
    if spec.secrets.is_empty() {
        return Err(BuildError::new(
            "secrets",
            format!("provider {:?} needs at least one secret", spec.provider),
        ));
    }
    match spec.secrets.iter().position(|s| s.expose().is_empty()) {
        Some(index) => Err(BuildError::new(
            "secrets",
            format!(
                "secret #{} is empty (provider {:?} needs a non-empty key)",
                index + 1,
                spec.provider
            ),
        )),
        None => Ok(()),
    }
}

/// Fails if the `verify` table sets a key this provider does not use.
pub fn reject_options(spec: &ProviderSpec<'_>, allowed: &[&str]) -> Result<(), BuildError> {
    let o = spec.options;
    let set: [(&str, bool); 10] = [
        ("header", o.header.is_some()),
        ("algorithm", o.algorithm.is_some()),
        ("encoding", o.encoding.is_some()),
        ("prefix", o.prefix.is_some()),
        ("timestamp_header", o.timestamp_header.is_some()),
        ("signed_content", o.signed_content.is_some()),
        ("insecure", o.insecure),
        ("notification_url", o.notification_url.is_some()),
        ("webhook_id", o.webhook_id.is_some()),
        ("cert_hosts", o.cert_hosts.is_some()),
    ];
    for (key, is_set) in set {
        if is_set && !allowed.contains(&key) {
            return Err(BuildError::new(
                format!("verify.{key}"),
                format!("not used by provider {:?}", spec.provider),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(provider: &'a str, secrets: &'a [Secret], options: &'a VerifyOptions) -> ProviderSpec<'a> {
        ProviderSpec {
            provider,
            secrets,
            tolerance: None,
            options,
        }
    }

    #[test]
    fn unknown_provider_lists_the_known_ones() {
        let err = build(spec("strype", &[], &VerifyOptions::default())).unwrap_err();
        assert_eq!(err.key, "provider");
        assert!(err.message.contains("stripe"), "{}", err.message);
    }

    #[test]
    fn none_requires_insecure() {
        let err = build(spec("none", &[], &VerifyOptions::default())).unwrap_err();
        assert_eq!(err.key, "verify.insecure");
        let insecure = VerifyOptions {
            insecure: true,
            ..Default::default()
        };
        assert!(build(spec("none", &[], &insecure)).is_ok());
    }

    #[test]
    fn stripe_requires_a_secret_and_no_foreign_options() {
        assert_eq!(
            build(spec("stripe", &[], &VerifyOptions::default())).unwrap_err().key,
            "secrets"
        );
        let with_header = VerifyOptions {
            header: Some("x".into()),
            ..Default::default()
        };
        let secrets = [Secret::new("whsec_x")];
        assert_eq!(
            build(spec("stripe", &secrets, &with_header)).unwrap_err().key,
            "verify.header"
        );
    }

    /// A secret each provider accepts: most take any bytes, the asymmetric
    /// ones a public key, PayPal none.
    fn suitable_secrets(name: &str) -> Vec<Secret> {
        match name {
            "discord" => vec![Secret::new(providers::discord::public_key_hex(&[1u8; 32]))],
            "sendgrid" => vec![Secret::new(
                "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==",
            )],
            "paypal" => vec![],
            _ => vec![Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        }
    }

    fn suitable_options(name: &str) -> VerifyOptions {
        match name {
            "none" => VerifyOptions {
                insecure: true,
                ..Default::default()
            },
            "hmac" => VerifyOptions {
                header: Some("X-Signature".into()),
                ..Default::default()
            },
            "paypal" => VerifyOptions {
                webhook_id: Some("1JE4291016473214C".into()),
                ..Default::default()
            },
            _ => VerifyOptions::default(),
        }
    }

    #[test]
    fn every_listed_provider_builds_with_suitable_config() {
        for &name in provider_names() {
            let secrets = suitable_secrets(name);
            let options = suitable_options(name);
            let provider = build(spec(name, &secrets, &options)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = if name == "svix" { "standard-webhooks" } else { name };
            assert_eq!(provider.name(), expected);
        }
    }

    #[test]
    fn providers_needing_secrets_refuse_none_and_empty_ones() {
        for &name in provider_names() {
            if matches!(name, "none" | "paypal") {
                continue;
            }
            let options = suitable_options(name);
            assert_eq!(build(spec(name, &[], &options)).unwrap_err().key, "secrets", "{name}");
            let empty = [Secret::new("")];
            assert_eq!(
                build(spec(name, &empty, &options)).unwrap_err().key,
                "secrets",
                "{name}"
            );
        }
    }

    #[test]
    fn unused_verify_options_are_errors() {
        let secrets = [Secret::new("whsec_AQID")];
        let with_prefix = VerifyOptions {
            prefix: Some("sha256=".into()),
            ..Default::default()
        };
        for name in ["github", "standard-webhooks", "token"] {
            assert_eq!(
                build(spec(name, &secrets, &with_prefix)).unwrap_err().key,
                "verify.prefix",
                "{name}"
            );
        }
        let insecure_hmac = VerifyOptions {
            header: Some("X-Signature".into()),
            insecure: true,
            ..Default::default()
        };
        assert_eq!(
            build(spec("hmac", &secrets, &insecure_hmac)).unwrap_err().key,
            "verify.insecure"
        );
        let token_header = VerifyOptions {
            header: Some("X-My-Token".into()),
            ..Default::default()
        };
        assert!(build(spec("token", &secrets, &token_header)).is_ok());
    }

    #[test]
    fn new_verify_options_are_errors_where_unused() {
        let options = [
            (
                "notification_url",
                VerifyOptions {
                    notification_url: Some("https://example.test/in/square".into()),
                    ..Default::default()
                },
            ),
            (
                "webhook_id",
                VerifyOptions {
                    webhook_id: Some("1JE4291016473214C".into()),
                    ..Default::default()
                },
            ),
            (
                "cert_hosts",
                VerifyOptions {
                    cert_hosts: Some(vec!["api.paypal.com".into()]),
                    ..Default::default()
                },
            ),
        ];
        for &name in provider_names() {
            let secrets = suitable_secrets(name);
            for (key, option) in &options {
                let used = matches!(
                    (name, *key),
                    ("square", "notification_url") | ("paypal", "webhook_id" | "cert_hosts")
                );
                let mut option = option.clone();
                if name == "none" {
                    option.insecure = true;
                }
                if name == "hmac" {
                    option.header = Some("X-Signature".into());
                }
                if name == "paypal" && option.webhook_id.is_none() {
                    option.webhook_id = Some("1JE4291016473214C".into());
                }
                let result = build(spec(name, &secrets, &option));
                if used {
                    assert!(result.is_ok(), "{name} {key}: {:?}", result.err());
                } else {
                    assert_eq!(
                        result.err().map(|e| e.key),
                        Some(format!("verify.{key}")),
                        "{name} {key}"
                    );
                }
            }
        }
    }

    #[test]
    fn paypal_needs_a_webhook_id_and_no_secret() {
        assert_eq!(
            build(spec("paypal", &[], &VerifyOptions::default())).unwrap_err().key,
            "verify.webhook_id"
        );
        let secrets = [Secret::new("client-secret")];
        assert_eq!(
            build(spec("paypal", &secrets, &suitable_options("paypal")))
                .unwrap_err()
                .key,
            "secrets"
        );
        let bad_hosts = VerifyOptions {
            cert_hosts: Some(vec!["https://api.paypal.com/".into()]),
            ..suitable_options("paypal")
        };
        assert_eq!(
            build(spec("paypal", &[], &bad_hosts)).unwrap_err().key,
            "verify.cert_hosts"
        );
    }

    #[test]
    fn paypal_shares_the_context_certificate_cache() {
        use crate::test_support::{headers, post};
        let context = BuildContext::default();
        let provider = build_with(spec("paypal", &[], &suitable_options("paypal")), &context).unwrap();
        let url = "https://api.paypal.com/v1/notifications/certs/CERT-1";
        let headers = headers(&[
            ("paypal-transmission-id", "id-1"),
            ("paypal-transmission-time", "2016-02-18T20:01:35Z"),
            ("paypal-transmission-sig", "AAAA"),
            ("paypal-cert-url", url),
            ("paypal-auth-algo", "SHA256withRSA"),
        ]);
        let now = gatehouse_core::UnixMillis::from_secs(1_700_000_000);
        let request = post(&headers, b"{}");
        assert_eq!(
            provider.verify(&request, now),
            Err(crate::Rejection::CertificateNeeded { url: url.into() })
        );
        let pem = include_str!("../tests/data/paypal-signer.cert.pem");
        context.certificates.insert_pem(url, pem.as_bytes(), now).unwrap();
        // Now cached: the (bogus) signature itself is judged.
        assert_eq!(
            provider.verify(&request, now),
            Err(crate::Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn key_material_errors_surface_from_build() {
        let not_a_key = [Secret::new("hunter2-not-a-key")];
        for name in ["discord", "sendgrid"] {
            let err = build(spec(name, &not_a_key, &VerifyOptions::default())).unwrap_err();
            assert_eq!(err.key, "secrets", "{name}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let relative = VerifyOptions {
            notification_url: Some("/in/square".into()),
            ..Default::default()
        };
        assert_eq!(
            build(spec("square", &[Secret::new("k")], &relative)).unwrap_err().key,
            "verify.notification_url"
        );
    }

    #[test]
    fn hmac_option_errors_surface_from_build() {
        let secrets = [Secret::new("k")];
        assert_eq!(
            build(spec("hmac", &secrets, &VerifyOptions::default()))
                .unwrap_err()
                .key,
            "verify.header"
        );
    }

    #[test]
    fn standard_webhooks_secret_must_be_base64_and_is_not_echoed() {
        let secrets = [Secret::new("whsec_%%%hunter2%%%")];
        let err = build(spec("svix", &secrets, &VerifyOptions::default())).unwrap_err();
        assert_eq!(err.key, "secrets");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
