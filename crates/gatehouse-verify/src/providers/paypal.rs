//! PayPal: `PAYPAL-TRANSMISSION-SIG` = base64 RSA PKCS#1 v1.5 SHA-256
//! signature, by the key of the certificate at `PAYPAL-CERT-URL`, over
//! `<PAYPAL-TRANSMISSION-ID>|<PAYPAL-TRANSMISSION-TIME>|<webhook id>|<crc32>`,
//! where the webhook id is the source's own `verify.webhook_id` (the id
//! PayPal gave the subscription) and crc32 is the unsigned decimal CRC-32
//! (IEEE) of the raw body. `PAYPAL-AUTH-ALGO` must be `SHA256withRSA`.
//!
//! # Certificates: the contract with the HTTP layer
//!
//! The verifier stays pure: it never fetches. It reads signer keys from a
//! [`CertificateCache`] given to the source when it is built (see
//! [`crate::registry::build_with`]); the HTTP layer owns the cache and fills
//! it. For each request:
//!
//! 1. The certificate URL must be on an allow-listed host
//!    (`verify.cert_hosts`, default `api.paypal.com` and
//!    `api.sandbox.paypal.com`) over https, without user info and on the
//!    default port; plain http is allowed only for `127.0.0.1`/`localhost`
//!    (and only if listed), so tests can serve a certificate locally.
//!    Anything else is [`Rejection::NotAccepted`]: never fetched.
//! 2. If the headers are well formed but the URL's certificate is not
//!    cached (or its cached copy has expired), the answer is
//!    [`Rejection::CertificateNeeded`]. The HTTP layer then fetches exactly
//!    that URL (TLS verified, with a timeout and a size limit, ideally
//!    rate-limited and with failures remembered for a while, since the URL
//!    comes from an unauthenticated request), calls
//!    [`CertificateCache::insert_pem`] with it, and verifies again. If the
//!    fetch or the insert fails, it refuses the request; PayPal retries.
//! 3. With the certificate cached, the signature is checked.
//!
//! [`CertificateCache::insert_pem`] takes the first certificate of the PEM
//! (PayPal serves the leaf first, then its chain), checks its validity dates
//! and that it holds an RSA key of 2048 to 4096 bits. It does not validate
//! the chain to a root: trust comes from fetching over TLS from PayPal's
//! own API host, as the allow-list requires.
//!
//! `PAYPAL-TRANSMISSION-TIME` is signed but only checked when the source
//! sets a `tolerance`: PayPal retries for up to three days and whether
//! retries are re-signed with a new time is unconfirmed. Replay defence is
//! deduplication on the body's `id` (`WH-…`); the type is its `event_type`
//! (`PAYMENT.CAPTURE.COMPLETED`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _, Verifier as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::der::{DecodePem as _, Encode as _};
use x509_cert::Certificate;

use gatehouse_core::UnixMillis;

use crate::util::{check_timestamp, json_id_and_type};
use crate::{BuildError, Identity, InboundRequest, Provider, Rejection, Verified};

/// The transmission id header, signed.
pub const TRANSMISSION_ID_HEADER: &str = "paypal-transmission-id";
/// The transmission time header, signed.
pub const TRANSMISSION_TIME_HEADER: &str = "paypal-transmission-time";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "paypal-transmission-sig";
/// The signer certificate URL header.
pub const CERT_URL_HEADER: &str = "paypal-cert-url";
/// The algorithm header.
pub const AUTH_ALGO_HEADER: &str = "paypal-auth-algo";
/// The only algorithm PayPal uses.
pub const AUTH_ALGO: &str = "SHA256withRSA";
/// The certificate hosts allowed when the source lists none.
pub const DEFAULT_CERT_HOSTS: [&str; 2] = ["api.paypal.com", "api.sandbox.paypal.com"];

/// The longest transmission id or time read; PayPal's are a UUID and an
/// RFC 3339 time.
const MAX_FIELD_LEN: usize = 128;
/// The longest certificate URL considered.
const MAX_URL_LEN: usize = 2048;
/// A 4096-bit signature is 512 bytes: 684 base64 characters.
const MAX_SIGNATURE_TEXT: usize = 684;
/// The largest PEM document parsed (PayPal's chain is about 5 KB).
const MAX_PEM_LEN: usize = 64 * 1024;
/// The most certificates one cache holds; a new one evicts the one expiring
/// first. PayPal rotates its signer certificate rarely.
const MAX_CACHED: usize = 64;
/// The smallest RSA key accepted.
const MIN_KEY_BITS: usize = 2048;

/// Why a certificate was not added to the cache.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The document is larger than any certificate chain.
    #[error("certificate document is larger than {MAX_PEM_LEN} bytes")]
    TooLarge,
    /// No `-----BEGIN CERTIFICATE-----` block, or one that does not parse.
    #[error("not a PEM X.509 certificate")]
    NotACertificate,
    /// The certificate's validity starts after now.
    #[error("certificate is not valid yet")]
    NotYetValid,
    /// The certificate's validity ended before now.
    #[error("certificate has expired")]
    Expired,
    /// The certificate's key is not an RSA key.
    #[error("certificate key is not an RSA key")]
    NotRsa,
    /// The RSA key is too small to trust.
    #[error("certificate RSA key has {bits} bits, fewer than {MIN_KEY_BITS}")]
    WeakKey {
        /// The key's size.
        bits: usize,
    },
}

/// One cached signer key.
#[derive(Clone)]
struct CachedKey {
    key: Arc<VerifyingKey<Sha256>>,
    not_after: UnixMillis,
}

/// Signer certificates by URL, shared by every PayPal source built with it
/// and filled by the HTTP layer (see the module docs). Cloning shares the
/// same cache.
#[derive(Clone, Default)]
pub struct CertificateCache {
    entries: Arc<RwLock<HashMap<String, CachedKey>>>,
}

impl fmt::Debug for CertificateCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCache").field("len", &self.len()).finish()
    }
}

impl CertificateCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the first certificate of `pem` (as served at `url`), checks it
    /// is valid at `now` and holds an RSA key of at least 2048 bits, and
    /// caches its key under `url`, replacing any earlier entry.
    pub fn insert_pem(&self, url: &str, pem: &[u8], now: UnixMillis) -> Result<(), CertificateError> {
        let (key, not_after) = parse_certificate(pem, now)?;
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, entry| entry.not_after >= now);
        if entries.len() >= MAX_CACHED && !entries.contains_key(url) {
            let soonest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.not_after)
                .map(|(url, _)| url.clone());
            if let Some(soonest) = soonest {
                entries.remove(&soonest);
            }
        }
        entries.insert(
            url.to_owned(),
            CachedKey {
                key: Arc::new(key),
                not_after,
            },
        );
        Ok(())
    }

    /// The key cached for `url`, unless its certificate has expired by `now`.
    fn lookup(&self, url: &str, now: UnixMillis) -> Option<Arc<VerifyingKey<Sha256>>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(url)
            .filter(|entry| entry.not_after >= now)
            .map(|entry| Arc::clone(&entry.key))
    }

    /// Whether a key for `url` is cached and valid at `now`.
    pub fn contains(&self, url: &str, now: UnixMillis) -> bool {
        self.lookup(url, now).is_some()
    }

    /// How many certificates are cached, expired ones included.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The signer key of the first certificate in `pem` and its expiry.
fn parse_certificate(pem: &[u8], now: UnixMillis) -> Result<(VerifyingKey<Sha256>, UnixMillis), CertificateError> {
    if pem.len() > MAX_PEM_LEN {
        return Err(CertificateError::TooLarge);
    }
    let text = std::str::from_utf8(pem).map_err(|_| CertificateError::NotACertificate)?;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = text.find(BEGIN).ok_or(CertificateError::NotACertificate)?;
    let end = text[start..]
        .find(END)
        .map(|end| start + end + END.len())
        .ok_or(CertificateError::NotACertificate)?;
    let certificate = Certificate::from_pem(&text[start..end]).map_err(|_| CertificateError::NotACertificate)?;
    let validity = &certificate.tbs_certificate.validity;
    let millis = |d: Duration| UnixMillis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let not_before = millis(validity.not_before.to_unix_duration());
    let not_after = millis(validity.not_after.to_unix_duration());
    if now < not_before {
        return Err(CertificateError::NotYetValid);
    }
    if now > not_after {
        return Err(CertificateError::Expired);
    }
    let spki = certificate
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| CertificateError::NotACertificate)?;
    let key = RsaPublicKey::from_public_key_der(&spki).map_err(|_| CertificateError::NotRsa)?;
    let bits = key.size() * 8;
    if bits < MIN_KEY_BITS {
        return Err(CertificateError::WeakKey { bits });
    }
    Ok((VerifyingKey::new(key), not_after))
}

/// Checks a certificate URL against the allow-list (lowercase host names).
pub fn check_cert_url(url: &str, hosts: &[String]) -> Result<(), Rejection> {
    let refuse = |why| Err(Rejection::NotAccepted(why));
    if url.len() > MAX_URL_LEN || !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains(['#', '\\']) {
        return refuse("certificate URL is not a plain URL");
    }
    let (secure, rest) = if url.len() > 8 && url[..8].eq_ignore_ascii_case("https://") {
        (true, &url[8..])
    } else if url.len() > 7 && url[..7].eq_ignore_ascii_case("http://") {
        (false, &url[7..])
    } else {
        return refuse("certificate URL is not http(s)");
    };
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return refuse("certificate URL carries user info");
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return refuse("certificate URL host is not a host name");
    }
    if !hosts.iter().any(|allowed| allowed.eq_ignore_ascii_case(host)) {
        return refuse("certificate URL host is not in verify.cert_hosts");
    }
    let loopback = host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1";
    if !loopback {
        if !secure {
            return refuse("certificate URL must use https");
        }
        if port.is_some_and(|port| port != "443") {
            return refuse("certificate URL must use the default https port");
        }
    } else if port.is_some_and(|port| port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit())) {
        return refuse("certificate URL port is not a number");
    }
    Ok(())
}

/// Validates `verify.cert_hosts` (or supplies the default): host names
/// only, lowercase, at least one.
pub fn cert_hosts_from_options(hosts: Option<&[String]>) -> Result<Vec<String>, BuildError> {
    let Some(hosts) = hosts else {
        return Ok(DEFAULT_CERT_HOSTS.iter().map(|h| (*h).to_owned()).collect());
    };
    if hosts.is_empty() {
        return Err(BuildError::new(
            "verify.cert_hosts",
            "is empty, so no certificate could ever be fetched (expected e.g. [\"api.paypal.com\"])",
        ));
    }
    hosts
        .iter()
        .map(|host| {
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if valid {
                Ok(host.to_ascii_lowercase())
            } else {
                Err(BuildError::new(
                    "verify.cert_hosts",
                    format!("{host:?} is not a host name (expected a bare name such as \"api.paypal.com\", no scheme, port or path)"),
                ))
            }
        })
        .collect()
}

/// PayPal's scheme for one source.
#[derive(Debug)]
pub struct PayPal {
    webhook_id: String,
    cert_hosts: Vec<String>,
    certificates: CertificateCache,
    tolerance: Option<Duration>,
}

impl PayPal {
    /// A verifier for the subscription `webhook_id`, trusting signer
    /// certificates from `cert_hosts` (see [`cert_hosts_from_options`]) found
    /// in `certificates`, checking the transmission time only if `tolerance`
    /// is set.
    pub fn new(
        webhook_id: Option<&str>,
        cert_hosts: Vec<String>,
        certificates: CertificateCache,
        tolerance: Option<Duration>,
    ) -> Result<Self, BuildError> {
        let webhook_id = webhook_id.map(str::trim).unwrap_or_default();
        if webhook_id.is_empty() || !webhook_id.bytes().all(|b| b.is_ascii_graphic() && b != b'|') {
            return Err(BuildError::new(
                "verify.webhook_id",
                "provider \"paypal\" needs the id PayPal gave the webhook subscription, e.g. \
                 verify = { webhook_id = \"1JE4291016473214C\" }",
            ));
        }
        Ok(Self {
            webhook_id: webhook_id.to_owned(),
            cert_hosts,
            certificates,
            tolerance,
        })
    }
}

/// The signed headers of one PayPal request.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignedHeaders<'a> {
    /// `PAYPAL-TRANSMISSION-ID`.
    pub transmission_id: Option<&'a str>,
    /// `PAYPAL-TRANSMISSION-TIME`.
    pub transmission_time: Option<&'a str>,
    /// `PAYPAL-TRANSMISSION-SIG`.
    pub signature: Option<&'a str>,
    /// `PAYPAL-CERT-URL`.
    pub cert_url: Option<&'a str>,
    /// `PAYPAL-AUTH-ALGO`.
    pub auth_algo: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    /// Reads the headers of `request`.
    pub fn from_request(request: &InboundRequest<'a>) -> Self {
        Self {
            transmission_id: request.header(TRANSMISSION_ID_HEADER),
            transmission_time: request.header(TRANSMISSION_TIME_HEADER),
            signature: request.header(SIGNATURE_HEADER),
            cert_url: request.header(CERT_URL_HEADER),
            auth_algo: request.header(AUTH_ALGO_HEADER),
        }
    }
}

/// The string PayPal signs.
pub fn signed_string(transmission_id: &str, transmission_time: &str, webhook_id: &str, body: &[u8]) -> String {
    format!(
        "{transmission_id}|{transmission_time}|{webhook_id}|{}",
        crc32fast::hash(body)
    )
}

/// Verifies a PayPal request: pure function over the signed headers, the raw
/// body, the source's settings, the certificate cache and now.
pub fn verify(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    paypal: &PayPal,
    now: UnixMillis,
) -> Result<Verified, Rejection> {
    let transmission_id = headers
        .transmission_id
        .ok_or(Rejection::MissingHeader(TRANSMISSION_ID_HEADER.into()))?;
    let transmission_time = headers
        .transmission_time
        .ok_or(Rejection::MissingHeader(TRANSMISSION_TIME_HEADER.into()))?;
    let signature = headers
        .signature
        .ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let cert_url = headers
        .cert_url
        .ok_or(Rejection::MissingHeader(CERT_URL_HEADER.into()))?;
    let auth_algo = headers
        .auth_algo
        .ok_or(Rejection::MissingHeader(AUTH_ALGO_HEADER.into()))?;
    if !auth_algo.trim().eq_ignore_ascii_case(AUTH_ALGO) {
        return Err(Rejection::MalformedHeader {
            header: AUTH_ALGO_HEADER.into(),
            problem: "expected SHA256withRSA",
        });
    }
    // A '|' inside a field would shift the fields of the signed string.
    for (name, value) in [
        (TRANSMISSION_ID_HEADER, transmission_id),
        (TRANSMISSION_TIME_HEADER, transmission_time),
    ] {
        if value.is_empty() || value.len() > MAX_FIELD_LEN || value.contains('|') {
            return Err(Rejection::MalformedHeader {
                header: name.into(),
                problem: "empty, too long or containing '|'",
            });
        }
    }
    check_cert_url(cert_url, &paypal.cert_hosts)?;
    let signature = decode_signature(signature)?;
    if let Some(tolerance) = paypal.tolerance {
        let secs = parse_rfc3339(transmission_time).ok_or(Rejection::MalformedHeader {
            header: TRANSMISSION_TIME_HEADER.into(),
            problem: "expected an RFC 3339 time such as 2024-01-31T12:00:00Z",
        })?;
        check_timestamp(secs, now, tolerance)?;
    }
    let key = paypal
        .certificates
        .lookup(cert_url, now)
        .ok_or_else(|| Rejection::CertificateNeeded {
            url: cert_url.to_owned(),
        })?;
    let message = signed_string(transmission_id, transmission_time, &paypal.webhook_id, body);
    key.verify(message.as_bytes(), &signature)
        .map(|()| Verified::by_certificate("paypal-sha256-rsa"))
        .map_err(|_| Rejection::NoMatchingSignature)
}

/// Decodes the base64 signature, refusing anything longer than a 4096-bit one.
fn decode_signature(text: &str) -> Result<Signature, Rejection> {
    let malformed = || Rejection::MalformedHeader {
        header: SIGNATURE_HEADER.into(),
        problem: "expected a base64 RSA signature",
    };
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_SIGNATURE_TEXT {
        return Err(malformed());
    }
    let mut bytes = [0u8; MAX_SIGNATURE_TEXT / 4 * 3];
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(text, &mut bytes)
        .map_err(|_| malformed())?;
    Signature::try_from(&bytes[..len]).map_err(|_| malformed())
}

/// Unix seconds of an RFC 3339 UTC-offset time (`2016-02-18T20:01:35Z`,
/// fractions and `±hh:mm` offsets allowed); `None` if it is not one.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        rest = &fraction[len..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let minutes = two(*h1, *h2)? * 60 + two(*m1, *m2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl Provider for PayPal {
    fn name(&self) -> &'static str {
        "paypal"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        verify(&SignedHeaders::from_request(request), request.body, self, now)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let (id, event_type) = json_id_and_type(request.body, "id", "event_type");
        Identity::event(id, event_type)
    }
}

/// Signs a delivery as PayPal would with `key`: the
/// `PAYPAL-TRANSMISSION-SIG` value (PKCS#1 v1.5 is deterministic). Used by
/// `gatehouse send`, tests and benchmarks, with a certificate for `key`
/// served from an allow-listed host.
pub fn sign(
    key: &RsaPrivateKey,
    transmission_id: &str,
    transmission_time: &str,
    webhook_id: &str,
    body: &[u8],
) -> String {
    let message = signed_string(transmission_id, transmission_time, webhook_id, body);
    let signature = SigningKey::<Sha256>::new(key.clone()).sign(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(signature.to_bytes())
}

#[cfg(test)]
mod tests {
    use rsa::pkcs8::DecodePrivateKey as _;

    use super::*;
    use crate::test_support::{headers, post};

    const SIGNER_KEY: &str = include_str!("../../tests/data/paypal-signer.key.pem");
    const SIGNER_CERT: &str = include_str!("../../tests/data/paypal-signer.cert.pem");
    const OTHER_CERT: &str = include_str!("../../tests/data/paypal-other.cert.pem");
    const WEAK_CERT: &str = include_str!("../../tests/data/paypal-weak.cert.pem");
    const EC_CERT: &str = include_str!("../../tests/data/paypal-ec.cert.pem");

    const CERT_URL: &str = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270";
    const TRANSMISSION_ID: &str = "69cd13f0-d67a-11e5-baa3-778b53f4ae55";
    const TRANSMISSION_TIME: &str = "2016-02-18T20:01:35Z";
    const WEBHOOK_ID: &str = "1JE4291016473214C";
    const BODY: &[u8] = br#"{"id":"WH-2WR32451HC0233532-67976317FL4543714","event_type":"PAYMENT.SALE.COMPLETED","resource":{"id":"4RR959492F879224U"}}"#;
    /// Python's `zlib.crc32(BODY)`.
    const CRC: u32 = 163_093_426;
    /// The signature of the signed string by the test signer, made with
    /// Python's `cryptography` package (RSA PKCS#1 v1.5, SHA-256).
    const VECTOR: &str = "ByN4TiTIyaIH/EpkSyJH+cSIXFVNMGGy/Bcygd4nGKz0dyxZJNaQPGTPFEXrL6wjkV/s5r4tDguC01B8+mcmpunRd8si3aeeHFwZWyRzGLUwkqsBfbJgBsaxYlt7fF8SMGqWdWasMCx3PW4TCUZ+9CstXZrwp3cEpq4kGla7dd+EtGAETlu1HuZhh+oQSZRjVnDKo6qgnFsGVYhIwba24ZSPBUbQe+3LzrMa9ZUajAc/92h8W0V2qRLhNiWqzudr2MQG/S2Ht08ipfiSpDuWQP6myjPBA64UQrdkYDgHmKJ9uLuIKtYuQ0VpJ+hI8X0SG7MxqBRXM+PTUNGnnnj3Eg==";
    /// Inside the test certificates' validity (2020-01-01 to 2040-01-01).
    const NOW: i64 = 1_700_000_000;

    fn now() -> UnixMillis {
        UnixMillis::from_secs(NOW)
    }

    fn paypal_with(cache: &CertificateCache, hosts: Option<&[&str]>, tolerance: Option<Duration>) -> PayPal {
        let hosts: Option<Vec<String>> = hosts.map(|h| h.iter().map(|s| (*s).to_owned()).collect());
        let hosts = cert_hosts_from_options(hosts.as_deref()).unwrap();
        PayPal::new(Some(WEBHOOK_ID), hosts, cache.clone(), tolerance).unwrap()
    }

    fn cache_with(url: &str, pem: &str) -> CertificateCache {
        let cache = CertificateCache::new();
        cache.insert_pem(url, pem.as_bytes(), now()).unwrap();
        cache
    }

    fn signed<'a>(signature: &'a str, cert_url: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            transmission_id: Some(TRANSMISSION_ID),
            transmission_time: Some(TRANSMISSION_TIME),
            signature: Some(signature),
            cert_url: Some(cert_url),
            auth_algo: Some(AUTH_ALGO),
        }
    }

    fn signer() -> RsaPrivateKey {
        RsaPrivateKey::from_pkcs8_pem(SIGNER_KEY).unwrap()
    }

    #[test]
    fn python_made_signature_verifies_with_the_cached_certificate() {
        assert_eq!(crc32fast::hash(BODY), CRC);
        let p = paypal_with(&cache_with(CERT_URL, SIGNER_CERT), None, None);
        let verified = verify(&signed(VECTOR, CERT_URL), BODY, &p, now()).unwrap();
        assert_eq!(verified.scheme(), "paypal-sha256-rsa");
        assert_eq!(verified.secret_index(), None);
        assert_eq!(
            sign(&signer(), TRANSMISSION_ID, TRANSMISSION_TIME, WEBHOOK_ID, BODY),
            VECTOR
        );
    }

    #[test]
    fn uncached_certificate_asks_for_a_fetch_then_verifies() {
        let cache = CertificateCache::new();
        let p = paypal_with(&cache, None, None);
        assert_eq!(
            verify(&signed(VECTOR, CERT_URL), BODY, &p, now()),
            Err(Rejection::CertificateNeeded { url: CERT_URL.into() })
        );
        assert_eq!(
            Rejection::CertificateNeeded { url: CERT_URL.into() }.code(),
            "certificate_needed"
        );
        // What the HTTP layer does: fetch the URL, insert, verify again.
        cache.insert_pem(CERT_URL, SIGNER_CERT.as_bytes(), now()).unwrap();
        assert!(cache.contains(CERT_URL, now()));
        assert!(verify(&signed(VECTOR, CERT_URL), BODY, &p, now()).is_ok());
    }

    #[test]
    fn wrong_crc_is_rejected() {
        let p = paypal_with(&cache_with(CERT_URL, SIGNER_CERT), None, None);
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(
            verify(&signed(VECTOR, CERT_URL), &body, &p, now()),
            Err(Rejection::NoMatchingSignature)
        );
        let other_id = SignedHeaders {
            transmission_id: Some("69cd13f0-d67a-11e5-baa3-778b53f4ae56"),
            ..signed(VECTOR, CERT_URL)
        };
        assert_eq!(verify(&other_id, BODY, &p, now()), Err(Rejection::NoMatchingSignature));
    }

    #[test]
    fn wrong_webhook_id_is_rejected() {
        let hosts = cert_hosts_from_options(None).unwrap();
        let p = PayPal::new(
            Some("9XL90610J3647323C"),
            hosts,
            cache_with(CERT_URL, SIGNER_CERT),
            None,
        )
        .unwrap();
        assert_eq!(
            verify(&signed(VECTOR, CERT_URL), BODY, &p, now()),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn certificate_of_another_key_is_rejected() {
        let p = paypal_with(&cache_with(CERT_URL, OTHER_CERT), None, None);
        assert_eq!(
            verify(&signed(VECTOR, CERT_URL), BODY, &p, now()),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn host_outside_the_allow_list_is_never_fetched() {
        let cache = CertificateCache::new();
        let p = paypal_with(&cache, None, None);
        for url in [
            "https://evil.example/certs/CERT-1",
            "https://api.paypal.com.evil.example/certs/CERT-1",
            "https://api.paypal.com@evil.example/certs/CERT-1",
            "https://evil.example\\@api.paypal.com/",
            "http://api.paypal.com/v1/notifications/certs/CERT-1",
            "https://api.paypal.com:8443/v1/notifications/certs/CERT-1",
            "http://127.0.0.1:8080/cert.pem",
            "ftp://api.paypal.com/cert",
            "https://api.paypal.com/cert#x",
            "https://",
            "api.paypal.com/cert",
        ] {
            assert!(
                matches!(
                    verify(&signed(VECTOR, url), BODY, &p, now()),
                    Err(Rejection::NotAccepted(_))
                ),
                "{url}"
            );
        }
        assert!(matches!(
            verify(&signed(VECTOR, "https://API.PayPal.com/v1/c"), BODY, &p, now()),
            Err(Rejection::CertificateNeeded { .. })
        ));
        assert!(matches!(
            verify(
                &signed(VECTOR, "https://api.sandbox.paypal.com:443/v1/c"),
                BODY,
                &p,
                now()
            ),
            Err(Rejection::CertificateNeeded { .. })
        ));
    }

    #[test]
    fn loopback_http_is_allowed_only_when_listed() {
        let url = "http://127.0.0.1:18080/certs/CERT-1";
        let cache = cache_with(url, SIGNER_CERT);
        let listed = paypal_with(&cache, Some(&["127.0.0.1"]), None);
        assert!(verify(&signed(VECTOR, url), BODY, &listed, now()).is_ok());
        let localhost = paypal_with(&cache, Some(&["localhost"]), None);
        assert!(matches!(
            verify(&signed(VECTOR, "http://localhost/c"), BODY, &localhost, now()),
            Err(Rejection::CertificateNeeded { .. })
        ));
        assert!(matches!(
            verify(&signed(VECTOR, "http://127.0.0.1:x/c"), BODY, &listed, now()),
            Err(Rejection::NotAccepted(_))
        ));
        let default = paypal_with(&cache, None, None);
        assert!(matches!(
            verify(&signed(VECTOR, url), BODY, &default, now()),
            Err(Rejection::NotAccepted(_))
        ));
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        let cache = CertificateCache::new();
        let after = UnixMillis::from_secs(2_209_075_200); // 2040-01-02
        let before = UnixMillis::from_secs(1_546_300_800); // 2019-01-01
        assert_eq!(
            cache.insert_pem(CERT_URL, SIGNER_CERT.as_bytes(), after),
            Err(CertificateError::Expired)
        );
        assert_eq!(
            cache.insert_pem(CERT_URL, SIGNER_CERT.as_bytes(), before),
            Err(CertificateError::NotYetValid)
        );
        assert!(cache.is_empty());
        // A cached certificate that expires later is no longer used.
        cache.insert_pem(CERT_URL, SIGNER_CERT.as_bytes(), now()).unwrap();
        let p = paypal_with(&cache, None, None);
        assert!(matches!(
            verify(&signed(VECTOR, CERT_URL), BODY, &p, after),
            Err(Rejection::CertificateNeeded { .. })
        ));
    }

    #[test]
    fn unusable_certificates_are_refused() {
        let cache = CertificateCache::new();
        assert_eq!(
            cache.insert_pem(CERT_URL, WEAK_CERT.as_bytes(), now()),
            Err(CertificateError::WeakKey { bits: 1024 })
        );
        assert_eq!(
            cache.insert_pem(CERT_URL, EC_CERT.as_bytes(), now()),
            Err(CertificateError::NotRsa)
        );
        assert_eq!(
            cache.insert_pem(CERT_URL, SIGNER_KEY.as_bytes(), now()),
            Err(CertificateError::NotACertificate)
        );
        let truncated = &SIGNER_CERT[..SIGNER_CERT.len() / 2];
        assert_eq!(
            cache.insert_pem(CERT_URL, truncated.as_bytes(), now()),
            Err(CertificateError::NotACertificate)
        );
        let garbled = SIGNER_CERT.replacen("MII", "MIJ", 1);
        assert_eq!(
            cache.insert_pem(CERT_URL, garbled.as_bytes(), now()),
            Err(CertificateError::NotACertificate)
        );
        assert_eq!(
            cache.insert_pem(CERT_URL, &vec![b'A'; MAX_PEM_LEN + 1], now()),
            Err(CertificateError::TooLarge)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn chain_uses_its_first_certificate() {
        let chain = format!("{SIGNER_CERT}{OTHER_CERT}");
        let p = paypal_with(&cache_with(CERT_URL, &chain), None, None);
        assert!(verify(&signed(VECTOR, CERT_URL), BODY, &p, now()).is_ok());
    }

    #[test]
    fn cache_is_bounded() {
        let cache = CertificateCache::new();
        for i in 0..MAX_CACHED + 10 {
            cache
                .insert_pem(&format!("{CERT_URL}-{i}"), SIGNER_CERT.as_bytes(), now())
                .unwrap();
        }
        assert_eq!(cache.len(), MAX_CACHED);
    }

    #[test]
    fn transmission_time_is_checked_only_with_a_tolerance() {
        let cache = cache_with(CERT_URL, SIGNER_CERT);
        // The vector's time is 2016, years before NOW: fine without a tolerance.
        assert!(verify(&signed(VECTOR, CERT_URL), BODY, &paypal_with(&cache, None, None), now()).is_ok());
        let strict = paypal_with(&cache, None, Some(Duration::from_secs(300)));
        let t = parse_rfc3339(TRANSMISSION_TIME).unwrap();
        assert_eq!(t, 1_455_825_695);
        let at = |secs| UnixMillis::from_secs(secs);
        assert!(verify(&signed(VECTOR, CERT_URL), BODY, &strict, at(t + 300)).is_ok());
        assert!(matches!(
            verify(&signed(VECTOR, CERT_URL), BODY, &strict, at(t + 301)),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            verify(&signed(VECTOR, CERT_URL), BODY, &strict, at(t - 301)),
            Err(Rejection::TimestampInFuture { .. })
        ));
    }

    #[test]
    fn rfc3339_times_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2016-02-18T20:01:35Z"), Some(1_455_825_695));
        assert_eq!(parse_rfc3339("2016-02-18T20:01:35.123Z"), Some(1_455_825_695));
        assert_eq!(parse_rfc3339("2016-02-18T21:01:35+01:00"), Some(1_455_825_695));
        assert_eq!(parse_rfc3339("2016-02-18T19:01:35-01:00"), Some(1_455_825_695));
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "2016-02-18",
            "2016-02-18T20:01:35",
            "2016-13-18T20:01:35Z",
            "2016-02-18T20:01:35.Z",
            "yesterday at noon!!",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let p = paypal_with(&cache_with(CERT_URL, SIGNER_CERT), None, None);
        let full = signed(VECTOR, CERT_URL);
        for (headers, missing) in [
            (
                SignedHeaders {
                    transmission_id: None,
                    ..full
                },
                TRANSMISSION_ID_HEADER,
            ),
            (
                SignedHeaders {
                    transmission_time: None,
                    ..full
                },
                TRANSMISSION_TIME_HEADER,
            ),
            (
                SignedHeaders {
                    signature: None,
                    ..full
                },
                SIGNATURE_HEADER,
            ),
            (SignedHeaders { cert_url: None, ..full }, CERT_URL_HEADER),
            (
                SignedHeaders {
                    auth_algo: None,
                    ..full
                },
                AUTH_ALGO_HEADER,
            ),
        ] {
            assert_eq!(
                verify(&headers, BODY, &p, now()),
                Err(Rejection::MissingHeader(missing.into()))
            );
        }
        let too_long = "A".repeat(MAX_SIGNATURE_TEXT + 4);
        for headers in [
            SignedHeaders {
                auth_algo: Some("SHA1withRSA"),
                ..full
            },
            SignedHeaders {
                transmission_id: Some(""),
                ..full
            },
            SignedHeaders {
                transmission_id: Some("a|b"),
                ..full
            },
            SignedHeaders {
                transmission_time: Some("2016|02"),
                ..full
            },
            SignedHeaders {
                signature: Some("not base64!"),
                ..full
            },
            SignedHeaders {
                signature: Some(""),
                ..full
            },
            SignedHeaders {
                signature: Some(&too_long),
                ..full
            },
        ] {
            assert!(
                matches!(
                    verify(&headers, BODY, &p, now()),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{headers:?}"
            );
        }
        // A well-formed signature of the wrong length cannot match.
        let short = SignedHeaders {
            signature: Some("AAAA"),
            ..full
        };
        assert_eq!(verify(&short, BODY, &p, now()), Err(Rejection::NoMatchingSignature));
    }

    #[test]
    fn options_are_validated_at_build_time() {
        let hosts = cert_hosts_from_options(None).unwrap();
        assert_eq!(hosts, ["api.paypal.com", "api.sandbox.paypal.com"]);
        for webhook_id in [None, Some(""), Some("  "), Some("a|b"), Some("a b")] {
            let err = PayPal::new(webhook_id, hosts.clone(), CertificateCache::new(), None).unwrap_err();
            assert_eq!(err.key, "verify.webhook_id", "{webhook_id:?}");
        }
        for bad in [
            &[][..],
            &["https://api.paypal.com".to_owned()][..],
            &["api.paypal.com:443".to_owned()][..],
            &["".to_owned()][..],
        ] {
            assert_eq!(
                cert_hosts_from_options(Some(bad)).unwrap_err().key,
                "verify.cert_hosts",
                "{bad:?}"
            );
        }
        assert_eq!(
            cert_hosts_from_options(Some(&["API.PayPal.com".to_owned()])).unwrap(),
            ["api.paypal.com"]
        );
    }

    #[test]
    fn verifies_and_identifies_through_the_provider_trait() {
        let p = paypal_with(&cache_with(CERT_URL, SIGNER_CERT), None, None);
        let headers = headers(&[
            ("PAYPAL-TRANSMISSION-ID", TRANSMISSION_ID),
            ("PAYPAL-TRANSMISSION-TIME", TRANSMISSION_TIME),
            ("PAYPAL-TRANSMISSION-SIG", VECTOR),
            ("PAYPAL-CERT-URL", CERT_URL),
            ("PAYPAL-AUTH-ALGO", AUTH_ALGO),
        ]);
        let request = post(&headers, BODY);
        assert!(p.verify(&request, now()).is_ok());
        assert_eq!(
            p.identify(&request),
            Identity::event(
                Some("WH-2WR32451HC0233532-67976317FL4543714".into()),
                Some("PAYMENT.SALE.COMPLETED".into())
            )
        );
    }
}
