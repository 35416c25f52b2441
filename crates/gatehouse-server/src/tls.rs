//! HTTPS served directly (`[server] tls = { cert = "…", key = "…" }`), for
//! deployments without a TLS-terminating proxy in front.
//!
//! Handshakes run in their own tasks, each bounded by a timeout, and only
//! finished ones are handed to the HTTP server: a client that opens a
//! connection and never completes its handshake holds a task for at most
//! [`HANDSHAKE_TIMEOUT`], never the accept loop.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 256;

/// Which of the two files a loading error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
}

/// Reads the PEM certificate chain (leaf first) and private key, and builds
/// the server's TLS settings: TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, (TlsFile, String)> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                TlsFile::Cert,
                format!("cannot read certificates from {}: {e}", cert.display()),
            )
        })?;
    if chain.is_empty() {
        return Err((TlsFile::Cert, format!("{} holds no PEM certificate", cert.display())));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            TlsFile::Key,
            format!("cannot read a private key from {}: {e}", key.display()),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (TlsFile::Cert, format!("TLS set-up: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            (
                TlsFile::Key,
                format!("the key in {} does not fit the certificate: {e}", key.display()),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands the HTTP server TLS connections whose handshake
/// has finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        let accept_loop = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), sender));
        Ok(Self {
            ready,
            local_addr,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting; handshakes in progress end with their tasks'
        // failed sends.
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, usually: wait instead of spinning.
                tracing::warn!(%error, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small JSON answers must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed."),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    #[test]
    fn the_test_certificate_and_key_load() {
        let config = load(&fixture("localhost.crt"), &fixture("localhost.key")).expect("load");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_empty_or_mismatched_files_say_which_and_why() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let (which, message) = load(&missing, &fixture("localhost.key")).expect_err("no cert");
        assert_eq!(which, TlsFile::Cert);
        assert!(message.contains("missing.pem"), "{message}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let (which, message) = load(&empty, &fixture("localhost.key")).expect_err("no certificate");
        assert_eq!(which, TlsFile::Cert);
        assert!(message.contains("holds no PEM certificate"), "{message}");

        let (which, message) = load(&fixture("localhost.crt"), &empty).expect_err("no key");
        assert_eq!(which, TlsFile::Key);
        assert!(message.contains("empty.pem"), "{message}");

        let (which, message) = load(&fixture("localhost.crt"), &fixture("other.key")).expect_err("wrong key");
        assert_eq!(which, TlsFile::Key);
        assert!(message.contains("does not fit"), "{message}");
    }
}
