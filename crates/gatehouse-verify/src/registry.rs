//! Builds a source's [`Provider`] from its config: the provider name, the
//! active secrets, the tolerance and the `verify` options table. Errors name
//! the config key at fault so the config loader can point at its line.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::Secret;

use crate::providers;
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
    &["stripe", "github", "standard-webhooks", "svix", "hmac", "token", "none"]
}

/// Builds the provider for one source.
pub fn build(spec: ProviderSpec<'_>) -> Result<Arc<dyn Provider>, BuildError> {
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
    let set: [(&str, bool); 7] = [
        ("header", o.header.is_some()),
        ("algorithm", o.algorithm.is_some()),
        ("encoding", o.encoding.is_some()),
        ("prefix", o.prefix.is_some()),
        ("timestamp_header", o.timestamp_header.is_some()),
        ("signed_content", o.signed_content.is_some()),
        ("insecure", o.insecure),
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

    #[test]
    fn every_listed_provider_builds_with_suitable_config() {
        let secrets = [Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")];
        for &name in provider_names() {
            let options = match name {
                "none" => VerifyOptions {
                    insecure: true,
                    ..Default::default()
                },
                "hmac" => VerifyOptions {
                    header: Some("X-Signature".into()),
                    ..Default::default()
                },
                _ => VerifyOptions::default(),
            };
            let provider = build(spec(name, &secrets, &options)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected = if name == "svix" { "standard-webhooks" } else { name };
            assert_eq!(provider.name(), expected);
        }
    }

    #[test]
    fn providers_needing_secrets_refuse_none_and_empty_ones() {
        let hmac = VerifyOptions {
            header: Some("X-Signature".into()),
            ..Default::default()
        };
        for name in ["github", "standard-webhooks", "svix", "hmac", "token"] {
            let options = if name == "hmac" {
                hmac.clone()
            } else {
                VerifyOptions::default()
            };
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
