//! HTTPS served directly (`[server] tls = { cert = "…", key = "…" }`), for
//! deployments without a TLS-terminating proxy in front.
//!
//! Handshakes run in their own tasks, each bounded by a timeout, at most
//! [`MAX_HANDSHAKES`] at once, and only finished ones are handed to the
//! HTTP server: a client that opens connections and never completes a
//! handshake holds a task for at most [`HANDSHAKE_TIMEOUT`], never the
//! accept loop, and a flood of them is turned away instead of piling up.
//!
//! The certificate files are checked every [`RELOAD_CHECK`]; when either
//! changes (certbot, cert-manager), new handshakes get the new certificate
//! without a restart. A pair that fails to load is logged and the previous
//! certificate stays.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most handshakes in progress at once; connections beyond are closed.
pub const MAX_HANDSHAKES: usize = 1024;

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(60);

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

/// The modification time and size of both files, to notice a change.
type Stamp = [(Option<SystemTime>, u64); 2];

/// The certificate and key being served, from their PEM files.
#[derive(Debug)]
pub struct ServedCertificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' stamp when `current` was loaded.
    loaded: Mutex<Stamp>,
}

impl ServedCertificate {
    /// Reads the PEM certificate chain (leaf first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1), and checks that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, (TlsFile, String)> {
        let stamp = stamp(cert, key);
        let certified = load_pair(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            loaded: Mutex::new(stamp),
        }))
    }

    /// Loads the files again if either changed since the last load. Says
    /// whether the certificate was replaced; on an error the previous one
    /// stays (and the same files are tried again next time).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.cert, &self.key);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if *loaded == now {
            return Ok(false);
        }
        let certified = load_pair(&self.cert, &self.key).map_err(|(_, message)| message)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
        *loaded = now;
        Ok(true)
    }

    /// The server's TLS settings: TLS 1.2 and 1.3, HTTP/1.1 by ALPN, this
    /// certificate (as it is at each handshake).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(PoisonError::into_inner).clone())
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    [cert, key].map(|path| match std::fs::metadata(path) {
        Ok(meta) => (meta.modified().ok(), meta.len()),
        Err(_) => (None, 0),
    })
}

fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, (TlsFile, String)> {
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
    CertifiedKey::from_der(chain, private_key, &rustls::crypto::ring::default_provider()).map_err(|e| {
        (
            TlsFile::Key,
            format!("the key in {} does not fit the certificate: {e}", key.display()),
        )
    })
}

/// A listener that hands the HTTP server TLS connections whose handshake
/// has finished.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    tasks: [JoinHandle<()>; 2],
}

impl TlsListener {
    /// Starts accepting on `listener` with `certificate`, and watching its
    /// files.
    pub fn new(listener: TcpListener, certificate: Arc<ServedCertificate>) -> io::Result<Self> {
        Self::with_limit(listener, certificate, MAX_HANDSHAKES)
    }

    fn with_limit(
        listener: TcpListener,
        certificate: Arc<ServedCertificate>,
        max_handshakes: usize,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let config = certificate.server_config().map_err(io::Error::other)?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        let handshakes = Arc::new(Semaphore::new(max_handshakes));
        let accept = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), handshakes, sender));
        let reload = tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_CHECK);
            every.tick().await;
            loop {
                every.tick().await;
                match certificate.reload_if_changed() {
                    Ok(true) => tracing::info!("Reloaded the TLS certificate; new connections get it."),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(%error, "The TLS certificate files changed but do not load; still serving the previous certificate.")
                    }
                }
            }
        });
        Ok(Self {
            ready,
            local_addr,
            tasks: [accept, reload],
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting and watching; handshakes in progress end with
        // their tasks' failed sends.
        for task in &self.tasks {
            task.abort();
        }
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
    handshakes: Arc<Semaphore>,
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
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            // Dropping the stream closes it.
            tracing::debug!(%peer, "Too many TLS handshakes in progress; connection closed.");
            continue;
        };
        // Small JSON answers must not wait for Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(permit);
            match handshake {
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
    use axum::serve::Listener as _;
    use tokio::io::AsyncReadExt;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
    }

    fn served_der(certificate: &ServedCertificate) -> Vec<u8> {
        certificate.current.read().expect("lock").cert[0].to_vec()
    }

    fn der_of(name: &str) -> Vec<u8> {
        CertificateDer::from_pem_file(fixture(name)).expect("fixture").to_vec()
    }

    #[test]
    fn the_test_certificate_and_key_load() {
        let certificate = ServedCertificate::load(&fixture("localhost.crt"), &fixture("localhost.key")).expect("load");
        assert_eq!(served_der(&certificate), der_of("localhost.crt"));
        let config = certificate.server_config().expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_empty_or_mismatched_files_say_which_and_why() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let (which, message) = ServedCertificate::load(&missing, &fixture("localhost.key")).expect_err("no cert");
        assert_eq!(which, TlsFile::Cert);
        assert!(message.contains("missing.pem"), "{message}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let (which, message) = ServedCertificate::load(&empty, &fixture("localhost.key")).expect_err("no certificate");
        assert_eq!(which, TlsFile::Cert);
        assert!(message.contains("holds no PEM certificate"), "{message}");

        let (which, message) = ServedCertificate::load(&fixture("localhost.crt"), &empty).expect_err("no key");
        assert_eq!(which, TlsFile::Key);
        assert!(message.contains("empty.pem"), "{message}");

        let (which, message) =
            ServedCertificate::load(&fixture("localhost.crt"), &fixture("other.key")).expect_err("wrong key");
        assert_eq!(which, TlsFile::Key);
        assert!(message.contains("does not fit"), "{message}");
    }

    #[test]
    fn changed_files_are_reloaded_and_a_broken_pair_keeps_the_old_one() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let install = |crt: &str, k: &str| {
            std::fs::copy(fixture(crt), &cert).expect("cert");
            std::fs::copy(fixture(k), &key).expect("key");
        };
        install("localhost.crt", "localhost.key");
        let certificate = ServedCertificate::load(&cert, &key).expect("load");
        assert_eq!(certificate.reload_if_changed(), Ok(false), "nothing changed");

        install("renewed.crt", "renewed.key");
        assert_eq!(certificate.reload_if_changed(), Ok(true));
        assert_eq!(served_der(&certificate), der_of("renewed.crt"));

        // Half-way through a renewal: the new certificate, the old key.
        std::fs::copy(fixture("localhost.crt"), &cert).expect("cert");
        let error = certificate.reload_if_changed().expect_err("mismatched pair");
        assert!(error.contains("does not fit"), "{error}");
        assert_eq!(
            served_der(&certificate),
            der_of("renewed.crt"),
            "still serving the last good pair"
        );
        // The key arrives: the next check completes the renewal.
        std::fs::copy(fixture("localhost.key"), &key).expect("key");
        assert_eq!(certificate.reload_if_changed(), Ok(true));
        assert_eq!(served_der(&certificate), der_of("localhost.crt"));
    }

    #[tokio::test]
    async fn connections_beyond_the_handshake_limit_are_closed() {
        let certificate = ServedCertificate::load(&fixture("localhost.crt"), &fixture("localhost.key")).expect("load");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut listener = TlsListener::with_limit(tcp, certificate, 1).expect("listener");
        let address = listener.local_addr().expect("address");

        // Holds the only handshake slot by saying nothing.
        let silent = TcpStream::connect(address).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut turned_away = TcpStream::connect(address).await.expect("connect");
        let mut buffer = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), turned_away.read(&mut buffer))
            .await
            .expect("closed at once, not after the handshake timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // The slot comes free when the silent client goes: a real client
        // then gets through.
        drop(silent);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(fixture("localhost.crt")).expect("root"))
            .expect("add");
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let client = async {
            let tcp = TcpStream::connect(address).await.expect("connect");
            connector.connect(name, tcp).await.expect("handshake")
        };
        let (_client, (_server_side, peer)) = tokio::join!(client, listener.accept());
        assert!(peer.ip().is_loopback());
    }
}
