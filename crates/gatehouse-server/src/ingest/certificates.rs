//! Fetches signer certificates that a provider's verifier asks for (PayPal's
//! `PAYPAL-CERT-URL`). The verifier stays pure: it checks the URL against the
//! source's allow-list and answers `CertificateNeeded`; this module does the
//! I/O (timeout, size cap) and fills the verifier's cache, then ingest
//! verifies again.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use gatehouse_core::UnixMillis;
use gatehouse_deliver::destination::http::{client, HttpClient};
use gatehouse_verify::providers::paypal::CertificateCache;

/// Largest certificate accepted (a PEM chain is a few KiB).
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;
/// How long one fetch may take; the provider's request waits meanwhile.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Fetches certificates over HTTPS (or HTTP to loopback, which only the
/// allow-list can permit).
#[derive(Clone)]
pub struct CertificateFetcher {
    client: HttpClient,
}

impl std::fmt::Debug for CertificateFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertificateFetcher")
    }
}

impl CertificateFetcher {
    /// A fetcher with its own HTTPS client.
    pub fn new() -> Result<Self, String> {
        Ok(Self { client: client()? })
    }

    /// Fetches `url` (already allow-listed by the verifier) into `cache`.
    pub async fn fetch_into(&self, cache: &CertificateCache, url: &str) -> Result<(), String> {
        let uri: http::Uri = url.parse().map_err(|_| "invalid certificate URL".to_string())?;
        let request = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "certificate fetch timed out".to_string())?
            .map_err(|e| format!("certificate fetch failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "certificate fetch answered HTTP {}",
                response.status().as_u16()
            ));
        }
        let body = tokio::time::timeout(
            FETCH_TIMEOUT,
            Limited::new(response.into_body(), MAX_CERTIFICATE_BYTES).collect(),
        )
        .await
        .map_err(|_| "certificate download timed out".to_string())?
        .map_err(|e| format!("certificate download failed: {e}"))?
        .to_bytes();
        cache
            .insert_pem(url, &body, UnixMillis::now())
            .map_err(|e| format!("certificate rejected: {e}"))
    }
}
