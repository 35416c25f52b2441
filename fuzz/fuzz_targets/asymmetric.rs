//! Public-key schemes: Discord (Ed25519), SendGrid (ECDSA P-256) and PayPal
//! (RSA, certificate cache), each signed with the provider's own `sign`
//! function under a key derived from the input, and verified through the
//! registry-built provider whose secret is the matching public key.
//!
//! Input (lines; see README.md): scheme, timestamp text (signed as written;
//! PayPal: the transmission time), clock skew, flags, key seed (PayPal: the
//! transmission id), then the body. Invariants:
//!
//! - the signed request verifies (index included, also second of two keys)
//!   unless its timestamp is unreadable or out of tolerance;
//! - a changed body byte, a changed signature character or another key is
//!   refused;
//! - the tolerance holds to the second;
//! - nothing panics, `identify` included.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gatehouse_core::{Secret, UnixMillis};
use gatehouse_fuzz::{
    build_provider, check_identity, check_rejection, check_tolerance_edges, note_once, pick, timed, Expect, Lines,
    TOLERANCES,
};
use gatehouse_verify::{InboundRequest, Provider, Rejection, Verified};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

struct Case<'a> {
    timestamp: &'a [u8],
    skew: i64,
    flags: [u8; 4],
    seed: &'a [u8],
    body: &'a [u8],
}

impl Case<'_> {
    fn flag(&self, bit: u8) -> bool {
        self.flags[0] & (1 << bit) != 0
    }

    fn tolerance(&self) -> Option<Duration> {
        TOLERANCES[usize::from((self.flags[0] >> 1) & 7)]
    }

    fn seed32(&self, default: [u8; 32]) -> [u8; 32] {
        if self.seed.is_empty() {
            return default;
        }
        let mut seed = [0u8; 32];
        for (slot, byte) in seed.iter_mut().zip(self.seed) {
            *slot = *byte;
        }
        seed
    }
}

type Scheme = fn(&Case<'_>);

/// The schemes whose provider module exists (see build.rs), one push each.
#[allow(clippy::vec_init_then_push)]
fn schemes() -> &'static [(&'static str, Scheme)] {
    static SCHEMES: OnceLock<Vec<(&'static str, Scheme)>> = OnceLock::new();
    SCHEMES.get_or_init(|| {
        let mut schemes: Vec<(&'static str, Scheme)> = Vec::new();
        #[cfg(gatehouse_provider = "discord")]
        schemes.push(("discord", discord));
        #[cfg(gatehouse_provider = "sendgrid")]
        schemes.push(("sendgrid", sendgrid));
        #[cfg(all(gatehouse_provider = "paypal", gatehouse_paypal_fixtures))]
        schemes.push(("paypal", paypal));
        schemes
    })
}

fuzz_target!(|data: &[u8]| {
    if schemes().is_empty() {
        return;
    }
    let mut lines = Lines::new(data);
    let &(_, scheme) = pick(lines.line(), schemes());
    let timestamp = lines.line();
    let case = Case {
        timestamp,
        skew: lines.i64_or(0),
        flags: lines.bytes(),
        seed: lines.line(),
        body: lines.rest(),
    };
    scheme(&case);
});

/// A request signed with a timestamp header, and how to check it.
struct Signed<'a> {
    name: &'static str,
    /// Public keys: the signer's, after a decoy's when rotating.
    secrets: Vec<Secret>,
    /// Only the decoy's public key.
    decoy: Vec<Secret>,
    index: usize,
    signature_header: &'static str,
    signature: String,
    timestamp_header: &'static str,
    timestamp: &'a str,
    body: &'a [u8],
    tolerance: Option<Duration>,
    default_tolerance: Duration,
    skew: i64,
    flags: [u8; 4],
}

fn build(name: &str, secrets: &[Secret], tolerance: Option<Duration>) -> Option<Arc<dyn Provider>> {
    match build_provider(name, secrets, tolerance, &Default::default()) {
        Ok(provider) => Some(provider),
        Err(e) if e.key == "provider" => {
            note_once("asymmetric-unknown", || {
                format!("asymmetric: {name} is not in the registry: {e}")
            });
            None
        }
        Err(e) => panic!("{name}: its own public key was refused: {e}"),
    }
}

fn request<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> InboundRequest<'a> {
    static POST: Method = Method::POST;
    InboundRequest {
        method: &POST,
        url: gatehouse_fuzz::DEFAULT_URL,
        headers,
        body,
    }
}

fn headers(pairs: &[(&str, &str)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_bytes(value.as_bytes()).ok()?,
        );
    }
    Some(map)
}

/// Verifies a signed request and checks the invariants.
fn check(signed: Signed<'_>) -> Option<()> {
    let name = signed.name;
    let provider = build(name, &signed.secrets, signed.tolerance)?;
    let map = headers(&[
        (signed.signature_header, &signed.signature),
        (signed.timestamp_header, signed.timestamp),
    ])?;
    let request = request(&map, signed.body);
    let tolerance = signed.tolerance.unwrap_or(signed.default_tolerance);
    // What verify reads: visible ASCII, as unix seconds after trimming.
    let visible = map[signed.timestamp_header].to_str().is_ok();
    let secs = gatehouse_verify::util::parse_unix_secs("timestamp", signed.timestamp).ok();
    let (now, expect) = match secs.filter(|_| visible) {
        Some(secs) => timed(secs, signed.skew, tolerance)?,
        None => (UnixMillis::from_secs(gatehouse_fuzz::DEFAULT_NOW_SECS), Expect::Refuse),
    };
    let result = provider.verify(&request, now);
    expect_result(name, &result, expect, Some(signed.index));
    check_identity(name, &provider.identify(&request));
    if result.is_err() {
        return Some(());
    }
    let secs = secs?;

    // One body byte.
    if !signed.body.is_empty() {
        let mut body = signed.body.to_vec();
        let at = usize::from(signed.flags[2]) % body.len();
        body[at] ^= signed.flags[3] | 0x01;
        let result = provider.verify(&InboundRequest { body: &body, ..request }, now);
        assert!(result.is_err(), "{name}: still verifies with body byte {at} changed");
    }
    // One signature character.
    let mut signature = signed.signature.clone().into_bytes();
    let at = usize::from(signed.flags[1]) % signature.len();
    // Hex is read in either case, so 'a' -> 'A' would be no change.
    signature[at] = if signature[at].eq_ignore_ascii_case(&b'A') {
        b'B'
    } else {
        b'A'
    };
    if let Ok(value) = HeaderValue::from_bytes(&signature) {
        let mut map = map.clone();
        map.insert(HeaderName::from_static(signed.signature_header), value);
        let result = provider.verify(&request_with(&map, &request), now);
        assert!(
            result.is_err(),
            "{name}: still verifies with signature character {at} changed"
        );
    }
    // Another key.
    if !signed.decoy.is_empty() {
        let other = build(name, &signed.decoy, signed.tolerance)?;
        assert!(
            other.verify(&request, now).is_err(),
            "{name}: verifies with another key"
        );
    }
    check_tolerance_edges(name, secs, tolerance, |now| provider.verify(&request, now));
    Some(())
}

fn request_with<'a>(headers: &'a HeaderMap, like: &InboundRequest<'a>) -> InboundRequest<'a> {
    InboundRequest { headers, ..*like }
}

fn expect_result(name: &str, result: &Result<Verified, Rejection>, expect: Expect, index: Option<usize>) {
    if gatehouse_fuzz::trace() {
        eprintln!("gatehouse-fuzz: TRACE {name}: expected {expect:?}, got {result:?}");
    }
    match (result, expect) {
        (Ok(verified), _) => {
            assert_ne!(
                expect,
                Expect::Refuse,
                "{name}: accepted {verified} though refusal was expected"
            );
            assert_eq!(verified.secret_index(), index, "{name}: matched the wrong key");
        }
        (Err(rejection), Expect::Accept) => panic!("{name}: refused a request signed with its own sign(): {rejection}"),
        (Err(rejection), _) => check_rejection(rejection),
    }
}

/// The secrets for a signer's public key `key`, rotating behind `decoy`
/// when flag bit 0 is set and the keys differ.
fn rotation(case: &Case<'_>, key: String, decoy: String) -> (Vec<Secret>, Vec<Secret>, usize) {
    if key == decoy {
        return (vec![Secret::new(key)], Vec::new(), 0);
    }
    let decoys = vec![Secret::new(decoy.clone())];
    if case.flag(0) {
        (vec![Secret::new(decoy), Secret::new(key)], decoys, 1)
    } else {
        (vec![Secret::new(key)], decoys, 0)
    }
}

#[cfg(gatehouse_provider = "discord")]
fn discord(case: &Case<'_>) {
    use gatehouse_verify::providers::discord::{public_key_hex, sign, DEFAULT_TOLERANCE};
    let seed = case.seed32(std::array::from_fn(|i| i as u8));
    let Ok(timestamp) = std::str::from_utf8(case.timestamp) else {
        return;
    };
    let timestamp = if timestamp.is_empty() { "1700000000" } else { timestamp };
    let mut key = public_key_hex(&seed);
    if case.flag(4) {
        key = format!(" {key}\n");
    }
    let decoy_seed = if seed == [7u8; 32] { [8u8; 32] } else { [7u8; 32] };
    let (secrets, decoy, index) = rotation(case, key, public_key_hex(&decoy_seed));
    check(Signed {
        name: "discord",
        secrets,
        decoy,
        index,
        signature_header: "x-signature-ed25519",
        signature: sign(&seed, timestamp, case.body),
        timestamp_header: "x-signature-timestamp",
        timestamp,
        body: case.body,
        tolerance: case.tolerance(),
        default_tolerance: DEFAULT_TOLERANCE,
        skew: case.skew,
        flags: case.flags,
    });
}

/// The base64 SubjectPublicKeyInfo DER of a P-256 key, as SendGrid shows it.
#[cfg(gatehouse_provider = "sendgrid")]
fn p256_spki_base64(key: &p256::ecdsa::SigningKey) -> String {
    use base64::Engine as _;
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 04 x y } }
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let point = key.verifying_key().to_encoded_point(false);
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(point.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[cfg(gatehouse_provider = "sendgrid")]
fn sendgrid(case: &Case<'_>) {
    use gatehouse_verify::providers::sendgrid::{sign, DEFAULT_TOLERANCE};
    use p256::ecdsa::SigningKey;
    let key = SigningKey::from_slice(&case.seed32([1u8; 32]))
        .unwrap_or_else(|_| SigningKey::from_slice(&[1u8; 32]).expect("a valid scalar"));
    let decoy_scalar = if key.to_bytes().as_slice() == [2u8; 32] {
        [3u8; 32]
    } else {
        [2u8; 32]
    };
    let decoy = SigningKey::from_slice(&decoy_scalar).expect("a valid scalar");
    let Ok(timestamp) = std::str::from_utf8(case.timestamp) else {
        return;
    };
    let timestamp = if timestamp.is_empty() { "1588788367" } else { timestamp };
    let mut public = p256_spki_base64(&key);
    if case.flag(4) {
        public = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &public[..64],
            &public[64..]
        );
    }
    let (secrets, decoy, index) = rotation(case, public, p256_spki_base64(&decoy));
    check(Signed {
        name: "sendgrid",
        secrets,
        decoy,
        index,
        signature_header: "x-twilio-email-event-webhook-signature",
        signature: sign(&key, timestamp, case.body),
        timestamp_header: "x-twilio-email-event-webhook-timestamp",
        timestamp,
        body: case.body,
        tolerance: case.tolerance(),
        default_tolerance: DEFAULT_TOLERANCE,
        skew: case.skew,
        flags: case.flags,
    });
}

/// PayPal: the test signer's certificate is cached for its URL; the
/// transmission id and time come from the input; the time is checked only
/// when the source sets a tolerance.
#[cfg(all(gatehouse_provider = "paypal", gatehouse_paypal_fixtures))]
fn paypal(case: &Case<'_>) {
    use gatehouse_fuzz::paypal_fixture::{CERT_URL, SIGNER_CERT, SIGNER_KEY, WEBHOOK_ID};
    use gatehouse_verify::providers::paypal::{parse_rfc3339, sign, CertificateCache};
    use gatehouse_verify::{build_with, BuildContext, ProviderSpec};
    use rsa::pkcs8::DecodePrivateKey as _;
    use rsa::RsaPrivateKey;

    /// The test certificate's notAfter, 2040-01-01T00:00:00Z.
    const NOT_AFTER_SECS: i64 = 2_208_988_800;
    static SIGNER: OnceLock<(RsaPrivateKey, CertificateCache)> = OnceLock::new();
    let (key, cache) = SIGNER.get_or_init(|| {
        let key = RsaPrivateKey::from_pkcs8_pem(SIGNER_KEY).expect("the test signer key parses");
        let cache = CertificateCache::new();
        cache
            .insert_pem(
                CERT_URL,
                SIGNER_CERT.as_bytes(),
                UnixMillis::from_secs(gatehouse_fuzz::DEFAULT_NOW_SECS),
            )
            .expect("the test certificate is cached");
        (key, cache)
    });
    let name = "paypal";
    let id = std::str::from_utf8(case.seed).ok().filter(|s| !s.is_empty());
    let id = id.unwrap_or("69cd13f0-d67a-11e5-baa3-778b53f4ae55");
    let time = std::str::from_utf8(case.timestamp).ok().filter(|s| !s.is_empty());
    let time = time.unwrap_or("2016-02-18T20:01:35Z");
    let tolerance = case.tolerance();
    let options = gatehouse_verify::VerifyOptions {
        webhook_id: Some(WEBHOOK_ID.to_owned()),
        ..Default::default()
    };
    // `..Default::default()` keeps this compiling if the context grows.
    #[allow(clippy::needless_update)]
    let context = BuildContext {
        certificates: cache.clone(),
        ..Default::default()
    };
    let spec = ProviderSpec {
        provider: name,
        secrets: &[],
        tolerance,
        options: &options,
    };
    let provider = build_with(spec, &context).unwrap_or_else(|e| panic!("paypal: refused: {e}"));
    // RSA signing under coverage instrumentation takes ~30 ms; mutations
    // that keep the signed string (flags, skew) reuse the signature.
    static SIGNATURES: OnceLock<std::sync::Mutex<std::collections::HashMap<String, String>>> = OnceLock::new();
    let signed_string = gatehouse_verify::providers::paypal::signed_string(id, time, WEBHOOK_ID, case.body);
    let mut signatures = SIGNATURES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if signatures.len() >= 4096 {
        signatures.clear();
    }
    let signature = signatures
        .entry(signed_string)
        .or_insert_with(|| sign(key, id, time, WEBHOOK_ID, case.body))
        .clone();
    drop(signatures);
    let algo = if case.flag(4) { "sha256withrsa" } else { "SHA256withRSA" };
    let Some(map) = headers(&[
        ("paypal-transmission-id", id),
        ("paypal-transmission-time", time),
        ("paypal-transmission-sig", &signature),
        ("paypal-cert-url", CERT_URL),
        ("paypal-auth-algo", algo),
    ]) else {
        return;
    };
    let request = request(&map, case.body);

    // What verify reads: visible ASCII fields, 1 to 128 bytes, no '|'.
    let field_ok = |name: &str, value: &str| {
        map[name].to_str().is_ok() && !value.is_empty() && value.len() <= 128 && !value.contains('|')
    };
    let fields_ok = field_ok("paypal-transmission-id", id) && field_ok("paypal-transmission-time", time);
    let signed_secs = parse_rfc3339(time);
    let (now, expect, edges) = match tolerance {
        None => {
            let Some(now_secs) = gatehouse_fuzz::DEFAULT_NOW_SECS.checked_add(case.skew) else {
                return;
            };
            let now = UnixMillis::from_secs(now_secs);
            let cached = now.as_secs() == now_secs && now_secs <= NOT_AFTER_SECS;
            let expect = match (fields_ok, cached) {
                (false, _) => Expect::Refuse,
                (true, true) => Expect::Accept,
                (true, false) if now.as_secs() == now_secs => Expect::Refuse,
                (true, false) => Expect::Unknown,
            };
            (now, expect, None)
        }
        Some(tolerance) => match signed_secs {
            None => (
                UnixMillis::from_secs(gatehouse_fuzz::DEFAULT_NOW_SECS),
                Expect::Refuse,
                None,
            ),
            Some(secs) => {
                let Some(now_secs) = secs.checked_add(case.skew) else {
                    return;
                };
                let now = UnixMillis::from_secs(now_secs);
                let exact = now.as_secs() == now_secs;
                let tol = tolerance.as_secs() as i64;
                let expect = if !exact {
                    Expect::Unknown
                } else if !fields_ok || case.skew.unsigned_abs() > tol as u64 || now_secs > NOT_AFTER_SECS {
                    Expect::Refuse
                } else {
                    Expect::Accept
                };
                let edges = secs
                    .checked_add(tol + 1)
                    .filter(|&late| late <= NOT_AFTER_SECS)
                    .map(|_| (secs, tolerance));
                (now, expect, edges)
            }
        },
    };
    let result = provider.verify(&request, now);
    expect_result(name, &result, expect, None);
    check_identity(name, &provider.identify(&request));
    if result.is_err() {
        return;
    }
    if !case.body.is_empty() {
        let mut body = case.body.to_vec();
        let at = usize::from(case.flags[2]) % body.len();
        body[at] ^= case.flags[3] | 0x01;
        let result = provider.verify(&InboundRequest { body: &body, ..request }, now);
        assert!(result.is_err(), "{name}: still verifies with body byte {at} changed");
    }
    // Another transmission id: the signature covers it.
    let mut other_id = id.to_owned();
    other_id.push('x');
    if let Some(mut map) = headers(&[("paypal-transmission-id", &other_id)]) {
        for (name, value) in request.headers {
            map.entry(name).or_insert(value.clone());
        }
        let result = provider.verify(&request_with(&map, &request), now);
        assert!(result.is_err(), "{name}: verifies with another transmission id");
    }
    if let Some((secs, tolerance)) = edges {
        check_tolerance_edges(name, secs, tolerance, |now| provider.verify(&request, now));
    }
}
