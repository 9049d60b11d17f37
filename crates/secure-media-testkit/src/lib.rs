//! Test helpers shared by the secure-media crates (not published): reference servers over https
//! issued by one test CA per process, clients of both stacks that trust it, a logged-in token
//! source and a [`MediaFetcher`] for the reference server, in any mode; nginx and Redis (one node
//! or a local cluster) as real peers.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use secure_media_core::{FileAccessToken, LoginCell, MediaFetcher, SecureMedia, SecureMediaMode, TokenSource};
use secure_media_reqwest::{ReqwestFetcher, ReqwestPresigner};
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig, TestCa, Tls};

pub mod nginx;
pub mod redis;

/// The CA every https server started through this crate is issued from (one per test process),
/// so one client can trust several servers.
///
/// # Panics
/// If the CA cannot be made (a test bug).
pub fn test_ca() -> &'static Arc<TestCa> {
    static CA: OnceLock<Arc<TestCa>> = OnceLock::new();
    CA.get_or_init(|| Arc::new(TestCa::new().unwrap_or_else(|e| panic!("test CA: {e}"))))
}

/// `config` served over https with a certificate from [`test_ca`].
pub fn https(config: ServerConfig) -> ServerConfig {
    ServerConfig { tls: Tls::TestCa, tls_ca: Some(test_ca().clone()), ..config }
}

/// A reference server over https (default configuration, certificate from [`test_ca`]).
///
/// # Panics
/// If the server cannot start.
pub async fn https_server() -> RunningServer {
    ReferenceServer::start(https(ServerConfig::default())).await.unwrap_or_else(|e| panic!("server: {e}"))
}

/// [`secure_media_reqwest::client_builder`] trusting only [`test_ca`].
///
/// # Panics
/// If the CA's PEM cannot be read (a test bug).
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(test_ca().ca_pem().as_bytes()).unwrap_or_else(|e| panic!("CA: {e}"));
    secure_media_reqwest::client_builder().tls_certs_only([ca])
}

/// A reqwest client from [`reqwest_builder`].
///
/// # Panics
/// If the client cannot be built.
pub fn reqwest_client() -> reqwest::Client {
    reqwest_builder().build().unwrap_or_else(|e| panic!("client: {e}"))
}

/// The hyper client the tower tests run over: https (trusting only [`test_ca`], rustls with
/// aws-lc-rs) and plain http (for other-origin peers and the opt-in tests).
pub type Hyper = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// rustls's client configuration trusting only the PEM certificates in `ca_pem`.
///
/// # Panics
/// If the PEM or the TLS configuration is unusable (a test bug).
fn rustls_config(ca_pem: &str) -> rustls::ClientConfig {
    secure_media_server::client_config_trusting(ca_pem).unwrap_or_else(|e| panic!("TLS: {e}"))
}

/// A [`Hyper`] client trusting the PEM certificates in `ca_pem`.
pub fn hyper_trusting(ca_pem: &str) -> Hyper {
    // TCP_NODELAY, as reqwest sets it: a request's last segment is not held for an ACK.
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(rustls_config(ca_pem))
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A [`Hyper`] client trusting [`test_ca`].
pub fn hyper() -> Hyper {
    hyper_trusting(test_ca().ca_pem())
}

/// A TLS acceptor with a certificate for `127.0.0.1` and `localhost` from [`test_ca`]: for
/// hand-written peers (another origin, a CDN) that clients of this crate trust.
///
/// # Panics
/// If the certificate cannot be made (a test bug).
pub fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let config = test_ca().server_config(&["127.0.0.1", "localhost"], false).unwrap_or_else(|e| panic!("TLS: {e}"));
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A login cell holding a fresh FAT for `uid` from `server`.
///
/// # Panics
/// If the server refuses the uid (a test bug).
pub fn logged_in(server: &RunningServer, uid: &str) -> Arc<dyn TokenSource> {
    let cell = LoginCell::new();
    let answer = server.login(uid).unwrap_or_else(|e| panic!("login {uid}: {e}"));
    cell.set(FileAccessToken::new(answer.fat).unwrap_or_else(|e| panic!("login {uid}: {e}")));
    Arc::new(cell)
}

/// The [`SecureMedia`] handle for `server` (its host secure, presigner configured; clients trust
/// [`test_ca`]). Plain http only for a server that serves it, never silently.
///
/// # Panics
/// On a configuration the server's address cannot make (a test bug).
pub fn media(server: &RunningServer, mode: SecureMediaMode, tokens: Arc<dyn TokenSource>) -> SecureMedia {
    let endpoint = server.presign_url().parse().unwrap_or_else(|e| panic!("presign URL: {e}"));
    let client = reqwest_client();
    let presigner = if server.is_https() {
        ReqwestPresigner::new(client, endpoint)
    } else {
        ReqwestPresigner::new_allowing_http(client, endpoint)
    };
    let builder = SecureMedia::builder(server.app_id()).secure_host(&server.host());
    let builder = if server.is_https() { builder } else { builder.allowing_http() };
    builder
        .mode(mode)
        .token_source(tokens)
        .presigner(Arc::new(presigner.unwrap_or_else(|e| panic!("presigner: {e}"))))
        .build()
        .unwrap_or_else(|e| panic!("secure media config: {e}"))
}

/// A [`MediaFetcher`] for `server` in `mode`, trusting [`test_ca`].
///
/// # Panics
/// If the HTTP client cannot be built.
pub fn fetcher(server: &RunningServer, mode: SecureMediaMode, tokens: Arc<dyn TokenSource>) -> Arc<dyn MediaFetcher> {
    Arc::new(ReqwestFetcher::from_client(reqwest_client(), media(server, mode, tokens).strategy()))
}
