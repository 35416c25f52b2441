//! Why a request was refused. Each variant has a stable code that is stored
//! with the failure record and returned to the caller; none carries anything
//! derived from a secret.

use std::borrow::Cow;

/// A verification failure. The HTTP layer answers 401 for all of them but
/// [`Rejection::CertificateNeeded`], which asks it to fetch a certificate
/// and verify again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(Cow<'static, str>),
    /// A header is present but not in the scheme's format.
    #[error("malformed header {header}: {problem}")]
    MalformedHeader {
        /// The header's name.
        header: Cow<'static, str>,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The signed timestamp is older than the tolerance allows (a replay?).
    #[error("timestamp is {age_secs} s old, tolerance is {tolerance_secs} s")]
    TimestampTooOld {
        /// How old the timestamp is.
        age_secs: i64,
        /// The source's tolerance.
        tolerance_secs: i64,
    },
    /// The signed timestamp is further in the future than the tolerance allows.
    #[error("timestamp is {ahead_secs} s in the future, tolerance is {tolerance_secs} s")]
    TimestampInFuture {
        /// How far ahead the timestamp is.
        ahead_secs: i64,
        /// The source's tolerance.
        tolerance_secs: i64,
    },
    /// Signatures were present but none matched any active secret.
    #[error("no signature matches any active secret")]
    NoMatchingSignature,
    /// The body is not what the scheme requires (e.g. the signed field is absent).
    #[error("malformed body: {0}")]
    MalformedBody(&'static str),
    /// The request is not one this source accepts (e.g. a GET where only POST is signed).
    #[error("request not accepted by this provider: {0}")]
    NotAccepted(&'static str),
    /// The body's content type is not one the provider's scheme can verify
    /// (HTTP 415): what the signature covers depends on it.
    #[error("unsupported content type: {0}")]
    UnsupportedMediaType(&'static str),
    /// The request names a signer certificate (PayPal's `PAYPAL-CERT-URL`)
    /// on an allow-listed host that is not in the source's certificate cache
    /// yet, or whose cached copy has expired. Nothing was verified.
    ///
    /// The contract with the HTTP layer: fetch `url` (it passed the source's
    /// allow-list: https, or http only for a loopback host), with a timeout
    /// and a size limit, hand the PEM to
    /// [`CertificateCache::insert_pem`](crate::providers::paypal::CertificateCache::insert_pem)
    /// under exactly this `url`, then call `verify` again. If the fetch or
    /// the insert fails, refuse the request (PayPal retries it later). The
    /// verifier itself never does I/O.
    #[error("signer certificate {url} is not cached yet")]
    CertificateNeeded {
        /// The certificate URL to fetch, verbatim from the request.
        url: String,
    },
}

impl Rejection {
    /// The stable, machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::MalformedHeader { .. } => "malformed_header",
            Rejection::TimestampTooOld { .. } => "timestamp_too_old",
            Rejection::TimestampInFuture { .. } => "timestamp_in_future",
            Rejection::NoMatchingSignature => "no_matching_signature",
            Rejection::MalformedBody(_) => "malformed_body",
            Rejection::NotAccepted(_) => "not_accepted",
            Rejection::UnsupportedMediaType(_) => "unsupported_media_type",
            Rejection::CertificateNeeded { .. } => "certificate_needed",
        }
    }
}
