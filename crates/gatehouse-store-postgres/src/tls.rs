//! TLS for the connections to PostgreSQL, asked for in the URL as with
//! libpq: `sslmode` and `sslrootcert`.
//!
//! Unlike libpq, gatehouse never negotiates TLS it does not verify: every
//! event, credential hash and audit entry crosses this connection, and TLS
//! that accepts any certificate stops a passive listener but not someone in
//! the middle. So:
//!
//! | `sslmode` | gatehouse |
//! | --- | --- |
//! | `disable`, `allow`, `prefer`, none | plain TCP (or a Unix socket), as before TLS was supported |
//! | `require`, `verify-full` | TLS; the certificate chains to a trusted root and names the host |
//! | `verify-ca` | TLS; the certificate chains to a trusted root (any host name) |
//!
//! The trusted roots are the PEM certificates in `sslrootcert` (a CA, or
//! the server's own self-signed certificate), or the system's roots when it
//! is absent or `system`, or Mozilla's (webpki-roots) where the system has
//! none. A `sslrootcert` without `sslmode` asks for `verify-full`.
//!
//! tokio-postgres parses everything else in the URL; it knows neither
//! `sslrootcert` nor the `verify-*` modes, so [`split_url`] takes both out
//! first.

use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How connections to the server are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TlsMode {
    /// No TLS.
    Off,
    /// TLS with a certificate that chains to a trusted root.
    VerifyCa,
    /// TLS with a certificate that chains to a trusted root and names the host.
    VerifyFull,
}

/// The TLS parameters of a connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// What `sslmode` (and `sslrootcert`) asked for.
    pub(crate) mode: TlsMode,
    /// `sslrootcert`: a PEM file, or `system`.
    pub(crate) root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of `url` (the URL form or libpq's
/// `key=value` form), returning what is left for tokio-postgres and what the
/// two asked for. Errors name the parameter, never the URL (it may hold a
/// password).
pub(crate) fn split_url(url: &str) -> Result<(String, TlsParams), String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (rest, ssl_mode, root_cert) = if is_url {
        split_query(url)
    } else {
        split_key_values(url)?
    };
    let mode = match (ssl_mode.as_deref(), &root_cert) {
        (None, Some(_)) => TlsMode::VerifyFull,
        (None | Some("disable" | "allow" | "prefer"), _) => TlsMode::Off,
        (Some("require" | "verify-full"), _) => TlsMode::VerifyFull,
        (Some("verify-ca"), _) => TlsMode::VerifyCa,
        (Some(other), _) => {
            return Err(format!(
                "invalid sslmode `{other}` in the PostgreSQL URL \
                 (expected disable, prefer, require, verify-ca or verify-full)"
            ))
        }
    };
    Ok((rest, TlsParams { mode, root_cert }))
}

/// The URL form: `?sslmode=…&sslrootcert=…` among the query parameters,
/// percent-encoded like the rest.
fn split_query(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut ssl_mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = || percent_decode_str(value).decode_utf8_lossy().into_owned();
        match &*percent_decode_str(key).decode_utf8_lossy() {
            "sslmode" => ssl_mode = Some(decoded()),
            "sslrootcert" => root_cert = Some(decoded()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, ssl_mode, root_cert)
}

/// libpq's `key=value` form: pairs separated by whitespace, spaces allowed
/// around `=`, values bare or in single quotes, `\` escaping the next
/// character. The pairs kept are written back quoted.
fn split_key_values(text: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let (mut ssl_mode, mut root_cert) = (None, None);
    let mut kept = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("invalid PostgreSQL connection string: `{key}` has no `=`"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "invalid PostgreSQL connection string: `{key}`'s quote is not closed"
                        ))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        match key.as_str() {
            "sslmode" => ssl_mode = Some(value),
            "sslrootcert" => root_cert = Some(value),
            _ => kept.push(format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))),
        }
    }
    Ok((kept.join(" "), ssl_mode, root_cert))
}

/// The connector for `params`. Plain connections get one that trusts
/// nothing: tokio-postgres is told not to use it (`sslmode=disable`).
pub(crate) fn connector(params: &TlsParams) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match params.mode {
        TlsMode::Off => RootCertStore::empty(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => trusted_roots(params.root_cert.as_deref())?,
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up for PostgreSQL: {e}"))?;
    let config = match params.mode {
        TlsMode::Off | TlsMode::VerifyFull => builder.with_root_certificates(roots),
        TlsMode::VerifyCa => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly {
                roots: Arc::new(roots),
                algorithms: provider.signature_verification_algorithms,
            })),
    };
    Ok(MakeRustlsConnect::new(config.with_no_client_auth()))
}

/// The roots `sslrootcert` names: the certificates of a PEM file, or the
/// system's (Mozilla's where the system has none).
fn trusted_roots(root_cert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let unreadable = |e: &dyn std::fmt::Display| format!("cannot read sslrootcert {path}: {e}");
            for certificate in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
                let certificate = certificate.map_err(|e| unreadable(&e))?;
                roots
                    .add(certificate)
                    .map_err(|e| format!("sslrootcert {path} holds a certificate rustls cannot use: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert {path} holds no PEM certificate"));
            }
        }
        _ => {
            let (added, _) = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if added == 0 {
                tracing::debug!("No system root certificates; trusting the webpki-roots set for PostgreSQL.");
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
        }
    }
    Ok(roots)
}

/// `verify-ca`: the chain to a trusted root, the validity dates and the
/// handshake signatures are checked exactly as for `verify-full`; only the
/// host name is not.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Whether `error` (from connecting) is a certificate the verifier refused,
/// for a hint on what to set.
pub(crate) fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        if let Some(tls) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return matches!(tls, rustls::Error::InvalidCertificate(_));
        }
        cause = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsMode, Option<String>) {
        let (rest, params) = split_url(url).expect("valid");
        (rest, params.mode, params.root_cert)
    }

    #[test]
    fn urls_without_tls_parameters_pass_through_unchanged() {
        for url in [
            "postgres://u:p@db:5432/gatehouse",
            "postgresql://u@db/gatehouse?application_name=gh&options=-c%20search_path%3Dx",
        ] {
            assert_eq!(split(url), (url.to_string(), TlsMode::Off, None));
        }
    }

    #[test]
    fn url_tls_parameters_are_taken_out_and_decoded() {
        assert_eq!(
            split("postgres://u@db/g?sslmode=verify-ca&application_name=gh&sslrootcert=%2Fetc%2Fca%20one.pem"),
            (
                "postgres://u@db/g?application_name=gh".to_string(),
                TlsMode::VerifyCa,
                Some("/etc/ca one.pem".to_string())
            )
        );
        assert_eq!(
            split("postgres://u@db/g?sslmode=require"),
            ("postgres://u@db/g".to_string(), TlsMode::VerifyFull, None)
        );
        assert_eq!(
            split("postgres://u@db/g?sslrootcert=system").1,
            TlsMode::VerifyFull,
            "a root certificate alone asks for verification"
        );
        for off in ["disable", "allow", "prefer"] {
            assert_eq!(split(&format!("postgres://db/g?sslmode={off}")).1, TlsMode::Off);
        }
        assert_eq!(
            split("postgres://db/g?sslmode=disable&sslrootcert=/ca.pem").1,
            TlsMode::Off,
            "an explicit disable wins"
        );
    }

    #[test]
    fn key_value_tls_parameters_are_taken_out_and_the_rest_quoted() {
        let (rest, mode, root) =
            split(r"host=db user = gh dbname=g sslmode = verify-full sslrootcert='/etc/my ca.pem'");
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(root.as_deref(), Some("/etc/my ca.pem"));
        assert_eq!(rest, "host='db' user='gh' dbname='g'");
        let (rest, _, _) = split(r"host=db password='a \'quoted\' \\ secret'");
        assert_eq!(rest, r"host='db' password='a \'quoted\' \\ secret'");
        let parsed: tokio_postgres::Config = rest.parse().expect("tokio-postgres reads it back");
        assert_eq!(parsed.get_password(), Some(&br"a 'quoted' \ secret"[..]));
    }

    #[test]
    fn bad_parameters_are_named_without_quoting_the_url() {
        let error = split_url("postgres://u:hunter2@db/g?sslmode=verify").expect_err("unknown mode");
        assert!(error.contains("sslmode `verify`"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        let error = split_url("host=db password='hunter2").expect_err("open quote");
        assert!(error.contains("password") && !error.contains("hunter2"), "{error}");
        let error = split_url("host=db sslmode").expect_err("no =");
        assert!(error.contains("sslmode"), "{error}");
    }

    #[test]
    fn an_unreadable_or_empty_root_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let params = |path: &std::path::Path| TlsParams {
            mode: TlsMode::VerifyFull,
            root_cert: Some(path.display().to_string()),
        };
        let error = connector(&params(&missing)).err().expect("missing file");
        assert!(error.contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = connector(&params(&empty)).err().expect("no certificate");
        assert!(error.contains("holds no PEM certificate"), "{error}");
    }

    #[test]
    fn system_roots_and_plain_connections_build() {
        for mode in [TlsMode::Off, TlsMode::VerifyCa, TlsMode::VerifyFull] {
            connector(&TlsParams { mode, root_cert: None }).expect("connector");
        }
    }
}
