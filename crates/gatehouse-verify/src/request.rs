//! The request as received, before anything about it is trusted.

use http::{HeaderMap, Method};

/// An inbound webhook request, borrowed from the HTTP layer. Verifiers read
/// it and never change it; the body is the raw bytes exactly as received.
#[derive(Clone, Copy, Debug)]
pub struct InboundRequest<'a> {
    /// The HTTP method.
    pub method: &'a Method,
    /// The public URL the provider requested (scheme, host, optional port,
    /// path, query verbatim): what Twilio and Square sign.
    pub url: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The raw body.
    pub body: &'a [u8],
}

impl<'a> InboundRequest<'a> {
    /// The value of a header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query string of the URL, without the `?`.
    pub fn query(&self) -> Option<&'a str> {
        self.url.split_once('?').map(|(_, q)| q)
    }
}
