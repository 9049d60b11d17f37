//! HTTPS for the reference server: [`Tls`] (the mode), [`TestCa`] (a throwaway certificate
//! authority, also for other servers in tests, such as nginx) and the TLS listener axum serves
//! through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::ServerError;

/// Whether the server speaks TLS, and with which certificate. Set
/// [`ServerConfig::tls`](crate::ServerConfig::tls), or start from
/// [`ServerConfig::https`](crate::ServerConfig::https).
///
/// ```
/// use secure_media_server::{ServerConfig, Tls};
///
/// assert_eq!(ServerConfig::default().tls, Tls::Off);
/// assert_eq!(ServerConfig::https().tls, Tls::TestCa);
/// let expired = ServerConfig { tls: Tls::ExpiredCertificate, ..ServerConfig::default() };
/// # drop(expired);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// Plain `http://`.
    #[default]
    Off,
    /// `https://` with a certificate for `localhost`, `127.0.0.1` and `::1`, issued at start-up
    /// by a fresh [`TestCa`]. Clients trust [`RunningServer::ca_pem`](crate::RunningServer::ca_pem).
    TestCa,
    /// As [`Tls::TestCa`], but the certificate's validity ended a day ago: for testing that
    /// clients refuse an expired certificate.
    ExpiredCertificate,
}

/// The names the server's own certificate is issued for.
pub(crate) const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The common name of every [`TestCa`].
const CA_NAME: &str = "secure-media test CA";

/// A handshake that has not finished by then is dropped, so an idle socket holds nothing for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate authority for tests, made fresh in memory: its key never leaves the process,
/// so trusting [`ca_pem`](Self::ca_pem) trusts only what this value issues.
///
/// The reference server makes one per start for [`Tls::TestCa`]. Other tests use it to give a
/// server of their own (nginx in front of the reference server, say) a certificate their clients
/// trust.
///
/// ```
/// use secure_media_server::TestCa;
///
/// let ca = TestCa::new()?;
/// let issued = ca.issue(&["localhost", "127.0.0.1"], false)?;
/// assert!(ca.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
/// // Write cert_pem and key_pem where the server reads them; give clients ca_pem to trust.
/// # Ok::<(), secure_media_server::ServerError>(())
/// ```
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate a [`TestCa`] issued and its private key, both PEM. `Debug` hides the key.
#[derive(Clone)]
pub struct IssuedCertificate {
    /// The certificate (`-----BEGIN CERTIFICATE-----`), without the CA's.
    pub cert_pem: String,
    /// Its private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`), ECDSA P-256.
    pub key_pem: String,
}

/// A leaf as rcgen made it, for the reference server's own use (DER, no PEM round trip).
struct Leaf {
    cert: Certificate,
    key: KeyPair,
}

fn tls_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> ServerError {
    move |error| ServerError::Tls(format!("{what}: {error}"))
}

/// `now` moved by `by` (negative: into the past).
fn shifted(now: OffsetDateTime, by: time::Duration) -> Result<OffsetDateTime, ServerError> {
    now.checked_add(by).ok_or_else(|| ServerError::Tls("the system clock is out of the certificate date range".into()))
}

/// `now` moved by `days` (negative: into the past).
fn days_from(now: OffsetDateTime, days: i64) -> Result<OffsetDateTime, ServerError> {
    shifted(now, time::Duration::days(days))
}

impl TestCa {
    /// A new CA (`CN=secure-media test CA`, ECDSA P-256), valid from a week ago for 30 days.
    pub fn new() -> Result<Self, ServerError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        // From before any certificate it issues (an expired one starts 3 days ago).
        params.not_before = days_from(now, -7)?;
        params.not_after = days_from(now, 30)?;
        let key = KeyPair::generate().map_err(tls_error("cannot make the test CA's key"))?;
        let cert = params.self_signed(&key).map_err(tls_error("cannot sign the test CA's certificate"))?;
        Ok(Self { pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA's certificate, PEM: what clients must trust.
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// A rustls server configuration (aws-lc-rs) with a certificate this CA issues for `names`
    /// ([`issue`](Self::issue)): for a hand-written TLS peer in tests (another origin, a CDN).
    pub fn server_config(&self, names: &[&str], expired: bool) -> Result<rustls::ServerConfig, ServerError> {
        let leaf = self.issue_leaf(names, expired)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.serialize_der()));
        // aws-lc-rs named here, never the process default: the workspace has one provider, chosen.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| ServerError::Tls(format!("no TLS protocol version: {error}")))?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert.der().clone()], key)
            .map_err(|error| ServerError::Tls(format!("rustls refused the server certificate: {error}")))
    }

    /// Issues a server certificate for `names`: DNS names (`localhost`) or IP addresses
    /// (`127.0.0.1`, `::1` or `[::1]`), which become IP address SANs. The first name is also the
    /// common name. Valid from an hour ago for two days; with `expired`, from 3 days ago until
    /// a day ago (for testing that clients refuse it).
    pub fn issue(&self, names: &[&str], expired: bool) -> Result<IssuedCertificate, ServerError> {
        let leaf = self.issue_leaf(names, expired)?;
        Ok(IssuedCertificate { cert_pem: leaf.cert.pem(), key_pem: leaf.key.serialize_pem() })
    }

    fn issue_leaf(&self, names: &[&str], expired: bool) -> Result<Leaf, ServerError> {
        let Some(first) = names.first() else {
            return Err(ServerError::Tls("a certificate needs at least one name".into()));
        };
        let unbracketed =
            |name: &&str| name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name).to_owned();
        // `CertificateParams::new` makes IP address SANs of the names that parse as addresses.
        let mut params = CertificateParams::new(names.iter().map(unbracketed).collect::<Vec<_>>())
            .map_err(tls_error("a certificate name is not a DNS name or an IP address"))?;
        params.distinguished_name.push(DnType::CommonName, unbracketed(first));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        if expired {
            params.not_before = days_from(now, -3)?;
            params.not_after = days_from(now, -1)?;
        } else {
            params.not_before = shifted(now, time::Duration::hours(-1))?;
            params.not_after = days_from(now, 2)?;
        }
        let key = KeyPair::generate().map_err(tls_error("cannot make a certificate key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error("cannot sign the certificate"))?;
        Ok(Leaf { cert, key })
    }
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("subject", &CA_NAME).field("key", &"<redacted>").finish()
    }
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

/// A rustls client configuration (aws-lc-rs) trusting only the PEM certificates in `ca_pem`:
/// for a hyper-rustls client of [`RunningServer`](crate::RunningServer)'s
/// [`ca_pem`](crate::RunningServer::ca_pem).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use secure_media_server::{client_config_trusting, ReferenceServer, ServerConfig};
///
/// let server = ReferenceServer::start(ServerConfig::https()).await?;
/// let tls = client_config_trusting(server.ca_pem().unwrap_or_default())?;
/// let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
/// # let _ = https;
/// # Ok(()) }
/// ```
pub fn client_config_trusting(ca_pem: &str) -> Result<rustls::ClientConfig, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|error| ServerError::Tls(format!("unreadable CA certificate: {error}")))?;
        roots.add(cert).map_err(|error| ServerError::Tls(format!("unusable CA certificate: {error}")))?;
    }
    if roots.is_empty() {
        return Err(ServerError::Tls("no CA certificate in the PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ServerError::Tls(format!("no TLS protocol version: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The server's TLS: the CA clients must trust and the rustls configuration. `None` for
/// [`Tls::Off`].
pub(crate) fn server_tls(
    mode: Tls,
    issuer: Option<&Arc<TestCa>>,
) -> Result<Option<(String, Arc<rustls::ServerConfig>)>, ServerError> {
    let expired = match mode {
        Tls::Off => return Ok(None),
        Tls::TestCa => false,
        Tls::ExpiredCertificate => true,
    };
    let fresh;
    let ca = match issuer {
        Some(ca) => ca.as_ref(),
        None => {
            fresh = TestCa::new()?;
            &fresh
        }
    };
    let mut config = ca.server_config(&SERVER_NAMES, expired)?;
    // The server speaks HTTP/1.1 only (axum's `http1` feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some((ca.pem.clone(), Arc::new(config))))
}

/// Handshakes the listener runs at once; more connections wait to be accepted.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// A TLS listener for `axum::serve`. A background loop accepts TCP connections and runs each
/// handshake in its own task (at most [`HANDSHAKE_TIMEOUT`], at most [`MAX_PENDING_HANDSHAKES`] at
/// once), so a slow or broken client never holds up another; finished handshakes arrive here through a channel. Dropping the listener
/// (when axum stops serving) ends the loop and the handshakes still running.
pub(crate) struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`. The task ends once the listener is dropped.
    pub(crate) fn start(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let local_addr = tcp.local_addr()?;
        let (sender, handshaken) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), sender));
        Ok((Self { handshaken, local_addr }, accepting))
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Handshakes in progress are bounded: a flood of silent connections waits in the kernel's
    // backlog instead of taking every file descriptor (each lasts at most HANDSHAKE_TIMEOUT).
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            () = handshaken.closed() => return,
            accepted = async {
                // The semaphore is never closed, so acquiring fails never; stop if it somehow did.
                let permit = pending.clone().acquire_owned().await.ok()?;
                Some((permit, tcp.accept().await))
            } => accepted,
        };
        let Some((permit, accepted)) = accepted else { return };
        match accepted {
            Ok((stream, peer)) => {
                // As nginx and CDNs do: an answer's last TLS record is not held back by Nagle's
                // algorithm until the client's delayed ACK (up to tens of ms on loopback).
                let _ = stream.set_nodelay(true);
                let handshaken = handshaken.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    handshake(acceptor, stream, peer, handshaken).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let outcome = tokio::select! {
        // The server stopped: drop the connection now, not at the timeout.
        () = handshaken.closed() => return,
        outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => outcome,
    };
    match outcome {
        Ok(Ok(tls)) => {
            // Fails only when the server stopped meanwhile; the connection is then dropped.
            let _ = handshaken.send((tls, peer)).await;
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accept loop only ends once this listener is dropped; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_refuses_no_names_and_bad_names_without_panicking() {
        let ca = TestCa::new().unwrap();
        assert!(matches!(ca.issue(&[], false), Err(ServerError::Tls(_))));
        assert!(matches!(ca.issue(&["ünïcode.example"], false), Err(ServerError::Tls(_))));
        assert!(ca.issue(&["[::1]", "127.0.0.1", "localhost"], true).is_ok());
    }

    #[test]
    fn debug_hides_the_keys() {
        let ca = TestCa::new().unwrap();
        let issued = ca.issue(&["localhost"], false).unwrap();
        let shown = format!("{ca:?} {issued:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
