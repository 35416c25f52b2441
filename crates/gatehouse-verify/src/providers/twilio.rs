//! Twilio: `X-Twilio-Signature` = base64(HMAC(key, data)), where `data` is
//! the full URL Twilio requested followed, for a form POST, by every
//! parameter sorted by name as `name` + `value` (decoded, no delimiters;
//! repeated parameters deduplicated and sorted). A JSON POST instead carries
//! `bodySHA256=<hex SHA-256 of the raw body>` in the URL's query: the
//! signature covers the URL alone and the hash covers the body.
//!
//! The hash is HMAC-SHA1 keyed with the account's Auth Token, or, when the
//! request carries `X-Twilio-Webhooks-Signature-Settings:
//! key=<id>,algorithm=HMAC_SHA256`, HMAC-SHA256 keyed with a shared key's
//! secret. The source's secrets may hold Auth Tokens and shared-key secrets
//! side by side: every one is tried under the algorithm the request names
//! (an HMAC-SHA1 digest can never match an HMAC-SHA256 one, so naming the
//! other algorithm gains a forger nothing).
//!
//! The URL is [`InboundRequest::url`], the public URL as configured. Like
//! Twilio's SDKs, the signature is accepted with and without the scheme's
//! default port (`:443` for https, `:80` for http), since Twilio is not
//! consistent about it.
//!
//! There is no timestamp: replay defence is deduplication. The dedup key is
//! the `I-Twilio-Idempotency-Token` header (stable across Twilio's retries;
//! not in Twilio's primary docs, so unconfirmed) or else the resource's SID
//! and status from the form body, e.g. `SM…:delivered`. The event type is
//! the body's `EventType` when present, else `<resource>.<status>`:
//! `message.delivered`, `call.completed`, `recording.completed`,
//! `message.received` for an inbound SMS. JSON bodies are identified on a
//! best-effort basis from their `id` and `type` (or the first element's, for
//! an array such as Event Streams' CloudEvents).

use std::borrow::Cow;

use base64::Engine as _;
use hmac::Mac;
use sha2::{Digest, Sha256};

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{
    constant_time_eq, decode_base64_into, decode_hex_into, first_matching_key, is_form_urlencoded, keyed_sha1,
    keyed_sha256, query_param, HmacSha1, HmacSha256,
};
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";
/// The header naming a shared key and its algorithm.
pub const SETTINGS_HEADER: &str = "x-twilio-webhooks-signature-settings";
/// The header that stays the same across Twilio's retries of one webhook.
pub const IDEMPOTENCY_HEADER: &str = "i-twilio-idempotency-token";
/// The query parameter carrying the hex SHA-256 of a JSON body.
pub const BODY_HASH_PARAM: &str = "bodySHA256";
/// The most form parameters read from one body. Twilio's callbacks carry a
/// few dozen; sorting an attacker's million would be work for nothing.
const MAX_PARAMS: usize = 1024;
/// The longest settings header parsed.
const MAX_SETTINGS_LEN: usize = 256;

/// The HMAC under a Twilio signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1 with the Auth Token: the default.
    Sha1,
    /// HMAC-SHA256 with a shared key (`algorithm=HMAC_SHA256`).
    Sha256,
}

impl Algorithm {
    fn scheme(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "twilio-sha1",
            Algorithm::Sha256 => "twilio-sha256",
        }
    }
}

/// Twilio's scheme for one source.
#[derive(Debug)]
pub struct Twilio {
    sha1: Vec<HmacSha1>,
    sha256: Vec<HmacSha256>,
}

impl Twilio {
    /// A verifier accepting any of `secrets` (Auth Tokens or shared-key
    /// secrets, used as their raw bytes).
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            sha1: secrets.iter().map(|s| keyed_sha1(s.expose())).collect(),
            sha256: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
        }
    }
}

/// Reads the algorithm from an `X-Twilio-Webhooks-Signature-Settings` value
/// (`key=<id>,algorithm=HMAC_SHA256`).
pub fn parse_settings(value: &str) -> Result<Algorithm, Rejection> {
    let malformed = |problem| Rejection::MalformedHeader {
        header: SETTINGS_HEADER.into(),
        problem,
    };
    if value.len() > MAX_SETTINGS_LEN {
        return Err(malformed("too long"));
    }
    let algorithm = value
        .split(',')
        .filter_map(|item| item.trim().split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("algorithm"))
        .map(|(_, value)| value.trim())
        .ok_or(malformed("no algorithm="))?;
    if algorithm.eq_ignore_ascii_case("HMAC_SHA256") {
        Ok(Algorithm::Sha256)
    } else if algorithm.eq_ignore_ascii_case("HMAC_SHA1") {
        Ok(Algorithm::Sha1)
    } else {
        Err(malformed("unsupported algorithm (expected HMAC_SHA256 or HMAC_SHA1)"))
    }
}

/// The URLs a signature may cover: `url` as given and, when its port is
/// absent or the scheme's default, the same URL with that port added or
/// removed. Twilio's SDKs accept both forms.
pub fn url_variants(url: &str) -> Vec<Cow<'_, str>> {
    let mut variants = vec![Cow::Borrowed(url)];
    // Compare bytes, not `str` slices: the URL is attacker-controlled and a
    // multi-byte character there must not split a slice (found by fuzzing).
    let bytes = url.as_bytes();
    let (default_port, rest_at) = if bytes.len() >= 8 && bytes[..8].eq_ignore_ascii_case(b"https://") {
        (":443", 8)
    } else if bytes.len() >= 7 && bytes[..7].eq_ignore_ascii_case(b"http://") {
        (":80", 7)
    } else {
        return variants;
    };
    let rest = &url[rest_at..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    if authority.is_empty() || authority.contains('@') {
        return variants;
    }
    let authority_end = rest_at + authority_len;
    // The port follows the last ':' outside an IPv6 literal's brackets.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    match authority[host_end..].rfind(':') {
        Some(colon) => {
            let port_at = rest_at + host_end + colon;
            if &url[port_at..authority_end] == default_port {
                variants.push(Cow::Owned(format!("{}{}", &url[..port_at], &url[authority_end..])));
            }
        }
        None => {
            variants.push(Cow::Owned(format!(
                "{}{default_port}{}",
                &url[..authority_end],
                &url[authority_end..]
            )));
        }
    }
    variants
}

/// Decoded form parameters, `(name, value)`, borrowed from the body where
/// no decoding was needed.
pub type Params<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// The form parameters in signing order: sorted by name, then value, with
/// repeated identical pairs removed (Twilio signs each distinct value once).
pub fn sorted_params(body: &[u8]) -> Result<Params<'_>, Rejection> {
    let mut params = Vec::new();
    // Same split as `form_urlencoded::parse` (on `&`, empty pieces skipped,
    // name and value at the first `=`), but a piece with nothing to decode
    // is borrowed as is: the common case, and the bulk of the cost otherwise.
    for piece in body.split(|byte| *byte == b'&').filter(|piece| !piece.is_empty()) {
        if params.len() == MAX_PARAMS {
            return Err(Rejection::MalformedBody(
                "more form parameters than a Twilio webhook carries",
            ));
        }
        let plain = !piece.contains(&b'%') && !piece.contains(&b'+');
        match std::str::from_utf8(piece) {
            Ok(text) if plain => {
                let (name, value) = text.split_once('=').unwrap_or((text, ""));
                params.push((Cow::Borrowed(name), Cow::Borrowed(value)));
            }
            _ => params.extend(form_urlencoded::parse(piece)),
        }
    }
    params.sort_unstable();
    params.dedup();
    Ok(params)
}

/// What a request's signature covers.
enum Content<'a> {
    /// A form body: the URL and the sorted parameters.
    Form(Params<'a>),
    /// A JSON body, or none: the URL alone.
    UrlOnly,
}

/// Decides what is signed and checks a `bodySHA256` against the body.
fn content<'a>(url: &str, content_type: Option<&str>, body: &'a [u8]) -> Result<Content<'a>, Rejection> {
    if let Some(expected) = query_param(url, BODY_HASH_PARAM) {
        let mut expected_hash = [0u8; 32];
        if !decode_hex_into(&expected, &mut expected_hash) {
            return Err(Rejection::MalformedBody("bodySHA256 in the URL is not 64 hex digits"));
        }
        let actual: [u8; 32] = Sha256::digest(body).into();
        if !constant_time_eq(&actual, &expected_hash) {
            return Err(Rejection::NoMatchingSignature);
        }
        return Ok(Content::UrlOnly);
    }
    if body.is_empty() {
        return Ok(Content::UrlOnly);
    }
    if !is_form_urlencoded(content_type) {
        // The signature would cover the URL only, leaving the body free to
        // change: refuse rather than accept an unsigned body.
        return Err(Rejection::UnsupportedMediaType(
            "Twilio signs a body only when it is application/x-www-form-urlencoded \
             or covered by a bodySHA256 URL parameter",
        ));
    }
    Ok(Content::Form(sorted_params(body)?))
}

/// The signature and settings header values of one request.
#[derive(Clone, Copy, Debug, Default)]
pub struct SignatureHeaders<'a> {
    /// `X-Twilio-Signature`.
    pub signature: Option<&'a str>,
    /// `X-Twilio-Webhooks-Signature-Settings`, present for shared keys.
    pub settings: Option<&'a str>,
}

/// Verifies a Twilio request: pure function over the signature headers, the
/// public URL, the content type, the raw body and the prepared keys.
pub fn verify(
    headers: SignatureHeaders<'_>,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    sha1_keys: &[HmacSha1],
    sha256_keys: &[HmacSha256],
) -> Result<Verified, Rejection> {
    let signature = headers
        .signature
        .ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let algorithm = headers
        .settings
        .map(parse_settings)
        .transpose()?
        .unwrap_or(Algorithm::Sha1);
    let mut digest = [0u8; 32];
    let digest = match algorithm {
        Algorithm::Sha1 => &mut digest[..20],
        Algorithm::Sha256 => &mut digest[..],
    };
    if !decode_base64_into(signature, digest) {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: match algorithm {
                Algorithm::Sha1 => "expected base64 of an HMAC-SHA1 digest",
                Algorithm::Sha256 => "expected base64 of an HMAC-SHA256 digest",
            },
        });
    }
    let content = content(url, content_type, body)?;
    for candidate in url_variants(url) {
        let matched = match algorithm {
            Algorithm::Sha1 => first_matching_key(sha1_keys, digest, |mac| feed(mac, &candidate, &content)),
            Algorithm::Sha256 => first_matching_key(sha256_keys, digest, |mac| feed(mac, &candidate, &content)),
        };
        if let Some(index) = matched {
            return Ok(Verified::by_secret(algorithm.scheme(), index));
        }
    }
    Err(Rejection::NoMatchingSignature)
}

fn feed<M: Mac>(mac: &mut M, url: &str, content: &Content<'_>) {
    mac.update(url.as_bytes());
    if let Content::Form(params) = content {
        for (name, value) in params {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
}

/// A resource Twilio calls back about: the form fields naming it and its
/// status, and the prefix of its event type.
struct Resource {
    kind: &'static str,
    sid_fields: &'static [&'static str],
    status_fields: &'static [&'static str],
}

/// Most specific first: a recording callback also carries its `CallSid`.
const RESOURCES: &[Resource] = &[
    Resource {
        kind: "recording",
        sid_fields: &["RecordingSid"],
        status_fields: &["RecordingStatus"],
    },
    Resource {
        kind: "transcription",
        sid_fields: &["TranscriptionSid"],
        status_fields: &["TranscriptionStatus"],
    },
    Resource {
        kind: "message",
        sid_fields: &["MessageSid", "SmsSid"],
        status_fields: &["MessageStatus", "SmsStatus"],
    },
    Resource {
        kind: "call",
        sid_fields: &["CallSid"],
        status_fields: &["CallStatus"],
    },
];

/// Identifies a Twilio request from its idempotency header and its body.
pub fn identify(idempotency_token: Option<&str>, url: &str, content_type: Option<&str>, body: &[u8]) -> Identity {
    let token = idempotency_token.filter(|t| !t.is_empty()).map(str::to_owned);
    if query_param(url, BODY_HASH_PARAM).is_some() || !is_form_urlencoded(content_type) {
        let (id, event_type) = json_identity(body);
        return Identity::event(token.or(id), event_type);
    }
    let params: Params<'_> = form_urlencoded::parse(body).take(MAX_PARAMS).collect();
    let field = |name: &str| {
        params
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_ref())
    };
    let first = |names: &[&str]| names.iter().find_map(|name| field(name));
    let resource = RESOURCES
        .iter()
        .find_map(|r| first(r.sid_fields).map(|sid| (r, sid, first(r.status_fields))));
    let dedup = resource.map(|(_, sid, status)| match status {
        Some(status) => format!("{sid}:{status}"),
        None => sid.to_owned(),
    });
    let event_type = field("EventType").map(str::to_owned).or_else(|| {
        resource.map(|(r, _, status)| match status {
            Some(status) => format!("{}.{}", r.kind, status.to_ascii_lowercase()),
            None => r.kind.to_owned(),
        })
    });
    Identity::event(token.or(dedup), event_type)
}

/// `id` and `type` of a JSON object, or of the first element of an array.
fn json_identity(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct IdAndType<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default, rename = "type")]
        kind: Option<Cow<'a, str>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<'a> {
        #[serde(borrow)]
        One(IdAndType<'a>),
        #[serde(borrow)]
        Many(Vec<IdAndType<'a>>),
    }
    let first = match serde_json::from_slice::<OneOrMany<'_>>(body) {
        Ok(OneOrMany::One(one)) => one,
        Ok(OneOrMany::Many(many)) => match many.into_iter().next() {
            Some(first) => first,
            None => return (None, None),
        },
        Err(_) => return (None, None),
    };
    let owned = |value: Option<Cow<'_, str>>| value.filter(|v| !v.is_empty()).map(Cow::into_owned);
    (owned(first.id), owned(first.kind))
}

impl Provider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        let headers = SignatureHeaders {
            signature: request.header(SIGNATURE_HEADER),
            settings: request.header(SETTINGS_HEADER),
        };
        verify(
            headers,
            request.url,
            request.header(http::header::CONTENT_TYPE.as_str()),
            request.body,
            &self.sha1,
            &self.sha256,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(
            request.header(IDEMPOTENCY_HEADER),
            request.url,
            request.header(http::header::CONTENT_TYPE.as_str()),
            request.body,
        )
    }
}

/// Signs a request as Twilio would: the `X-Twilio-Signature` value for `url`
/// and the form `params` (empty for a JSON body, whose hash goes in the URL:
/// see [`url_with_body_hash`]). Used by `gatehouse send`, tests and
/// benchmarks.
pub fn sign(algorithm: Algorithm, key: &[u8], url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted: Params<'_> = params
        .iter()
        .map(|(name, value)| (Cow::Borrowed(*name), Cow::Borrowed(*value)))
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let content = Content::Form(sorted);
    let digest = match algorithm {
        Algorithm::Sha1 => {
            let mut mac = keyed_sha1(key);
            feed(&mut mac, url, &content);
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::Sha256 => {
            let mut mac = keyed_sha256(key);
            feed(&mut mac, url, &content);
            mac.finalize().into_bytes().to_vec()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// `url` with `bodySHA256=<hex SHA-256 of body>` appended to its query, as
/// Twilio requests a URL when it posts a JSON body.
pub fn url_with_body_hash(url: &str, body: &[u8]) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}{BODY_HASH_PARAM}={}",
        hex::encode(Sha256::digest(body))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_form_split_matches_form_urlencoded() {
        let bodies: [&[u8]; 7] = [
            b"a=1&b=2",
            b"&&a=1&&b&=x&c==d&",
            b"Body=hello+world%21&From=%2B1555",
            b"k=%FF%FE&v=\xff",
            b"x=\xc3\xa9t\xc3\xa9&y=plain",
            b"=&=v&n=",
            b"",
        ];
        for body in bodies {
            let mut expected: Vec<_> = form_urlencoded::parse(body).collect();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(
                sorted_params(body).unwrap(),
                expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn non_ascii_urls_do_not_panic() {
        // Regression: fuzzing found `url[..8]` splitting a multi-byte character.
        assert_eq!(url_variants("https:/é"), vec![Cow::Borrowed("https:/é")]);
        assert_eq!(url_variants("http:/é"), vec![Cow::Borrowed("http:/é")]);
        assert_eq!(url_variants("https://hé.example/x").len(), 2);
    }
    use crate::test_support::headers;

    const TOKEN: &str = "12345";
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const FORM: &str = "application/x-www-form-urlencoded";
    /// Twilio's security docs.
    const DOCS_PARAMS: &str =
        "CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212";
    const DOCS_VECTOR: &str = "0/KCTR6DLpKmkAf8muzZqo1nDgQ=";
    /// twilio-python's tests.
    const PYTHON_PARAMS: &str =
        "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212";
    const PYTHON_VECTOR: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
    const JSON_BODY: &[u8] = br#"{"property": "value", "boolean": true}"#;
    const JSON_HASH: &str = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    const JSON_VECTOR: &str = "a9nBmqA0ju/hNViExpshrM61xv4=";
    /// HMAC-SHA256 over the docs vector's data with key `12345`, computed
    /// with Python's `hmac` module.
    const SHA256_VECTOR: &str = "Rmm4Vzj+Ky7JGoWXMCsZDZuHDszLr9xvdbvitrDr4/M=";

    fn provider(secrets: &[&str]) -> Twilio {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Twilio::new(&secrets)
    }

    fn check(
        p: &Twilio,
        signature: Option<&str>,
        settings: Option<&str>,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Verified, Rejection> {
        verify(
            SignatureHeaders { signature, settings },
            url,
            content_type,
            body,
            &p.sha1,
            &p.sha256,
        )
    }

    fn form(p: &Twilio, signature: &str, url: &str, body: &str) -> Result<Verified, Rejection> {
        check(p, Some(signature), None, url, Some(FORM), body.as_bytes())
    }

    #[test]
    fn published_form_vectors_verify() {
        let p = provider(&[TOKEN]);
        let verified = form(&p, DOCS_VECTOR, URL, DOCS_PARAMS).unwrap();
        assert_eq!(verified.scheme(), "twilio-sha1");
        assert_eq!(verified.secret_index(), Some(0));
        assert!(form(&p, PYTHON_VECTOR, URL, PYTHON_PARAMS).is_ok());
        let params = [
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("From", "+12349013030"),
            ("Digits", "1234"),
        ];
        assert_eq!(sign(Algorithm::Sha1, TOKEN.as_bytes(), URL, &params), DOCS_VECTOR);
    }

    #[test]
    fn published_json_vector_verifies() {
        let url = format!("{URL}&bodySHA256={JSON_HASH}");
        assert_eq!(url_with_body_hash(URL, JSON_BODY), url);
        let p = provider(&[TOKEN]);
        assert!(check(&p, Some(JSON_VECTOR), None, &url, Some("application/json"), JSON_BODY).is_ok());
        assert_eq!(sign(Algorithm::Sha1, TOKEN.as_bytes(), &url, &[]), JSON_VECTOR);
    }

    #[test]
    fn json_body_must_match_its_hash() {
        let url = format!("{URL}&bodySHA256={JSON_HASH}");
        let p = provider(&[TOKEN]);
        let mut body = JSON_BODY.to_vec();
        body[5] ^= 1;
        assert_eq!(
            check(&p, Some(JSON_VECTOR), None, &url, Some("application/json"), &body),
            Err(Rejection::NoMatchingSignature)
        );
        let bad_hash = format!("{URL}&bodySHA256=xyz");
        assert!(matches!(
            check(
                &p,
                Some(JSON_VECTOR),
                None,
                &bad_hash,
                Some("application/json"),
                JSON_BODY
            ),
            Err(Rejection::MalformedBody(_))
        ));
    }

    #[test]
    fn unsigned_body_is_an_unsupported_media_type() {
        // A body that is neither form parameters nor hashed into the URL is
        // not covered by the signature, whatever the signature says (415).
        let p = provider(&[TOKEN]);
        let signature = sign(Algorithm::Sha1, TOKEN.as_bytes(), URL, &[]);
        for content_type in [Some("application/json"), Some("text/plain"), None] {
            assert!(matches!(
                check(&p, Some(&signature), None, URL, content_type, JSON_BODY),
                Err(Rejection::UnsupportedMediaType(_))
            ));
        }
        assert!(check(&p, Some(&signature), None, URL, None, b"").is_ok());
    }

    #[test]
    fn default_port_is_accepted_either_way() {
        let p = provider(&[TOKEN]);
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert!(form(&p, DOCS_VECTOR, with_port, DOCS_PARAMS).is_ok());
        let signed_with_port = sign(
            Algorithm::Sha1,
            TOKEN.as_bytes(),
            with_port,
            &[("CallSid", "CA1234567890ABCDE")],
        );
        assert!(form(&p, &signed_with_port, URL, "CallSid=CA1234567890ABCDE").is_ok());
        // A port that is not the scheme's default is part of the URL.
        assert_eq!(
            form(
                &p,
                DOCS_VECTOR,
                "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
                DOCS_PARAMS
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn url_variants_add_or_remove_only_the_default_port() {
        let variants = |url| url_variants(url).into_iter().map(Cow::into_owned).collect::<Vec<_>>();
        assert_eq!(
            variants("https://a.test/p?q"),
            ["https://a.test/p?q", "https://a.test:443/p?q"]
        );
        assert_eq!(
            variants("https://a.test:443/p"),
            ["https://a.test:443/p", "https://a.test/p"]
        );
        assert_eq!(variants("http://a.test"), ["http://a.test", "http://a.test:80"]);
        assert_eq!(
            variants("http://a.test:80?x"),
            ["http://a.test:80?x", "http://a.test?x"]
        );
        assert_eq!(variants("http://[::1]:80/p"), ["http://[::1]:80/p", "http://[::1]/p"]);
        assert_eq!(variants("https://[::1]/p"), ["https://[::1]/p", "https://[::1]:443/p"]);
        assert_eq!(variants("https://a.test:8443/p"), ["https://a.test:8443/p"]);
        assert_eq!(variants("https://u@a.test/p"), ["https://u@a.test/p"]);
        assert_eq!(variants("ftp://a.test/p"), ["ftp://a.test/p"]);
        assert_eq!(variants("https://"), ["https://"]);
    }

    #[test]
    fn shared_key_variant_uses_hmac_sha256() {
        let p = provider(&["auth-token", TOKEN]);
        let settings = Some("key=KS0123456789abcdef0123456789abcdef,algorithm=HMAC_SHA256");
        let verified = check(
            &p,
            Some(SHA256_VECTOR),
            settings,
            URL,
            Some(FORM),
            DOCS_PARAMS.as_bytes(),
        )
        .unwrap();
        assert_eq!(verified.scheme(), "twilio-sha256");
        assert_eq!(verified.secret_index(), Some(1));
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ];
        assert_eq!(sign(Algorithm::Sha256, TOKEN.as_bytes(), URL, &params), SHA256_VECTOR);
        // The SHA-1 signature is not valid once the header names SHA-256, and
        // the SHA-256 one is not valid without the header.
        assert!(matches!(
            check(&p, Some(DOCS_VECTOR), settings, URL, Some(FORM), DOCS_PARAMS.as_bytes()),
            Err(Rejection::MalformedHeader { .. })
        ));
        assert!(matches!(
            form(&p, SHA256_VECTOR, URL, DOCS_PARAMS),
            Err(Rejection::MalformedHeader { .. })
        ));
    }

    #[test]
    fn settings_header_is_parsed_strictly() {
        assert_eq!(parse_settings("key=K1,algorithm=HMAC_SHA256"), Ok(Algorithm::Sha256));
        assert_eq!(parse_settings("algorithm=hmac_sha1, key=K1"), Ok(Algorithm::Sha1));
        for bad in [
            "key=K1",
            "",
            "algorithm=HMAC_MD5",
            &format!("algorithm=HMAC_SHA256,{}", "x".repeat(300)),
        ] {
            assert!(
                matches!(parse_settings(bad), Err(Rejection::MalformedHeader { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn wrong_token_is_rejected() {
        assert_eq!(
            form(&provider(&["54321"]), DOCS_VECTOR, URL, DOCS_PARAMS),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let p = provider(&[TOKEN]);
        let tampered = DOCS_PARAMS.replace("Digits=1234", "Digits=1235");
        assert_eq!(
            form(&p, DOCS_VECTOR, URL, &tampered),
            Err(Rejection::NoMatchingSignature)
        );
        assert_eq!(
            form(
                &p,
                DOCS_VECTOR,
                "https://mycompany.com/myapp.php?foo=1&bar=3",
                DOCS_PARAMS
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn parameter_order_and_repeats_do_not_matter() {
        let p = provider(&[TOKEN]);
        let reordered = "To=%2B18005551212&Digits=1234&From=%2B12349013030&Caller=%2B12349013030&CallSid=CA1234567890ABCDE&To=%2B18005551212";
        assert!(form(&p, DOCS_VECTOR, URL, reordered).is_ok());
        let params = [("Media", "b"), ("Media", "a"), ("Media", "b")];
        let signature = sign(Algorithm::Sha1, TOKEN.as_bytes(), URL, &params);
        assert!(form(&p, &signature, URL, "Media=b&Media=a").is_ok());
    }

    #[test]
    fn missing_and_malformed_signatures_are_rejected() {
        let p = provider(&[TOKEN]);
        assert_eq!(
            check(&p, None, None, URL, Some(FORM), DOCS_PARAMS.as_bytes()),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        for signature in [
            "",
            "garbage",
            "0/KCTR6DLpKmkAf8muzZqo1nDg",
            &format!("{DOCS_VECTOR}AAAA"),
        ] {
            assert!(
                matches!(
                    form(&p, signature, URL, DOCS_PARAMS),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn too_many_parameters_are_refused() {
        let body = (0..=MAX_PARAMS)
            .map(|i| format!("p{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(matches!(
            form(&provider(&[TOKEN]), DOCS_VECTOR, URL, &body),
            Err(Rejection::MalformedBody(_))
        ));
    }

    #[test]
    fn second_token_during_rotation() {
        let verified = form(&provider(&["old-token", TOKEN]), DOCS_VECTOR, URL, DOCS_PARAMS).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn verifies_through_the_provider_trait() {
        let headers = headers(&[(SIGNATURE_HEADER, DOCS_VECTOR), ("Content-Type", FORM)]);
        let request = InboundRequest {
            method: &http::Method::POST,
            url: URL,
            headers: &headers,
            body: DOCS_PARAMS.as_bytes(),
        };
        assert!(provider(&[TOKEN]).verify(&request, UnixMillis::from_secs(0)).is_ok());
    }

    #[test]
    fn identifies_status_callbacks() {
        let body = b"MessageSid=SM0123&SmsSid=SM0123&MessageStatus=delivered&SmsStatus=delivered&AccountSid=AC1";
        assert_eq!(
            identify(None, URL, Some(FORM), body),
            Identity::event(Some("SM0123:delivered".into()), Some("message.delivered".into()))
        );
        let inbound = b"MessageSid=SM9&SmsStatus=received&Body=hi";
        assert_eq!(
            identify(None, URL, Some(FORM), inbound),
            Identity::event(Some("SM9:received".into()), Some("message.received".into()))
        );
        let call = b"CallSid=CA1&CallStatus=completed";
        assert_eq!(
            identify(None, URL, Some(FORM), call),
            Identity::event(Some("CA1:completed".into()), Some("call.completed".into()))
        );
        let recording = b"CallSid=CA1&CallStatus=completed&RecordingSid=RE1&RecordingStatus=completed";
        assert_eq!(
            identify(None, URL, Some(FORM), recording),
            Identity::event(Some("RE1:completed".into()), Some("recording.completed".into()))
        );
        assert_eq!(
            identify(None, URL, Some(FORM), DOCS_PARAMS.as_bytes()),
            Identity::event(Some("CA1234567890ABCDE".into()), Some("call".into()))
        );
    }

    #[test]
    fn idempotency_token_and_event_type_field_win() {
        let body = b"EventType=onMessageAdded&MessageSid=IM1&ConversationSid=CH1";
        assert_eq!(
            identify(Some("idem-1"), URL, Some(FORM), body),
            Identity::event(Some("idem-1".into()), Some("onMessageAdded".into()))
        );
        assert_eq!(
            identify(Some(""), URL, Some(FORM), b"Foo=bar"),
            Identity::event(None, None)
        );
    }

    #[test]
    fn identifies_json_bodies_on_a_best_effort_basis() {
        let url = format!("{URL}&bodySHA256={JSON_HASH}");
        let events = br#"[{"specversion":"1.0","type":"com.twilio.messaging.message.delivered","id":"EZ1"}]"#;
        assert_eq!(
            identify(None, &url, Some("application/json"), events),
            Identity::event(
                Some("EZ1".into()),
                Some("com.twilio.messaging.message.delivered".into())
            )
        );
        assert_eq!(
            identify(Some("idem-2"), &url, Some("application/json"), JSON_BODY),
            Identity::event(Some("idem-2".into()), None)
        );
        assert_eq!(identify(None, &url, None, b"[]"), Identity::event(None, None));
    }
}
