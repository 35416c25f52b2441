//! Fixtures shared by the providers' unit tests: requests built from a few
//! header pairs and a body, the way the HTTP layer would hand them over.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::InboundRequest;

static POST: Method = Method::POST;

/// A header map from `(name, value)` pairs; panics on invalid input, which
/// in a test is a bug in the test.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// A POST with `headers` and `body`.
pub(crate) fn post<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> InboundRequest<'a> {
    InboundRequest {
        method: &POST,
        url: "https://gatehouse.test/in/source",
        headers,
        body,
    }
}
