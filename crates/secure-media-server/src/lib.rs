//! # secure-media-server
//!
//! A reference secure-media server with the vendor's semantics, for tests, examples and local
//! development. Start it in-process on 127.0.0.1 port 0, or run `secure-media serve` (`--tls`
//! for https).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), secure_media_server::ServerError> {
//! use secure_media_server::{ReferenceServer, ServerConfig};
//!
//! let server = ReferenceServer::start(ServerConfig::default()).await?;
//! let login = server.login("alice").expect("a valid uid");
//! let url = server.media_url("sample-640x480.png");
//! assert!(url.starts_with("http://127.0.0.1:"));
//! assert!(!login.fat.is_empty());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Routes
//! - `POST /v1/auth/login {"uid"}` -> `{"uid","fat","expires_at"}`: the FAT is an HS256 JWT
//!   (`sub`, `exp`, `iat`, `app_id`, `jti`, and `gen`: the server's FAT generation, which
//!   [`Faults::expire_fats_now`] raises to expire every FAT issued before).
//! - `GET /{app_id}/media/{*path}`: the file ([built in](#built-in-media) or from
//!   [`ServerConfig::media_dir`]; `Content-Type`, `Content-Length`, `ETag`, `Range`)
//!   when one of four proofs grants access: `?fat=`, `Authorization: Bearer`, the server's own
//!   presigned signature ([below](#presigned-urls)), or an AWS SigV4 presigned URL
//!   ([below](#aws-sigv4-presigned-urls), only with [`ServerConfig::s3`]). 401 for a missing or
//!   invalid FAT, 403 for an expired, tampered or unparsable presigned or SigV4 URL, 400 for a
//!   path that leaves the media directory. A refusal never carries any part of the file.
//! - `POST /v1/media/presign` (`Authorization: Bearer <fat>`) `{"urls":[...]}` ->
//!   `{"urls":[{"url","presigned_url","expires_at"} | {"url","error"}]}`, at most
//!   [`MAX_PRESIGN_BATCH`] URLs a call.
//!   A URL is this server's when it has the server's scheme, port and address (or `localhost`
//!   for a loopback address), or is on one of [`ServerConfig::public_origins`] (a proxy in
//!   front); the presigned URL keeps the origin asked for. Others get `{"url","error"}`.
//! - `POST /_control` ([`Control`]): the [`Faults`] knobs, only when [`ServerConfig::control`] is
//!   on (404 otherwise). `GET /_stats`: the [`Stats`], among them the leak count
//!   ([`Stats::requests_with_credentials`]: requests of any route that carried a token or a
//!   presign signature).
//!
//! ## Built-in media
//! Without [`ServerConfig::media_dir`] the server serves files made in code, the same bytes in
//! every process: the named samples [`SAMPLE_NAMES`] (`sample-640x480.png`, a JPEG, a WebP, a GIF,
//! `sample-clip.mp4`, and `bomb.png`, a tiny PNG claiming [`BOMB_SIDE`] pixels a side), and a
//! gallery of [`GALLERY_LEN`] (1000) distinct PNG thumbnails, [`GALLERY_SIDE`] (64) pixels a
//! side, at `gallery/0000.png` to `gallery/0999.png` ([`gallery_path`],
//! [`RunningServer::gallery_url`], bytes from [`gallery_image`]), about 3 KB each. Each
//! thumbnail is made on its first request (about 25 µs optimised, 0.6 ms unoptimised) and kept
//! for the process, so starting a server costs nothing.
//!
//! ## TLS
//! [`ServerConfig::https`] (or [`ServerConfig::tls`] = [`Tls::TestCa`]) serves `https://`: at
//! start a fresh [`TestCa`] issues a certificate for `localhost`, `127.0.0.1` and `::1`, and
//! [`RunningServer::ca_pem`] is what clients must trust. [`Tls::ExpiredCertificate`] serves a
//! certificate that expired yesterday, to test that clients refuse it. [`RunningServer::base_url`]
//! and every URL built from it follow the scheme. The server speaks HTTP/1.1 (ALPN `http/1.1`),
//! with rustls on aws-lc-rs. Each handshake runs in its own task with a 10 s limit, so a client
//! that connects and stays silent holds up no other; a failed handshake is logged at debug level.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use secure_media_server::{ReferenceServer, ServerConfig};
//!
//! let server = ReferenceServer::start(ServerConfig::https()).await?;
//! assert!(server.base_url().starts_with("https://127.0.0.1:"));
//! let ca = server.ca_pem().expect("an https server has a CA");
//!
//! // A client that trusts the test CA, and only it.
//! let client = reqwest::Client::builder()
//!     .tls_backend_rustls()
//!     .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes())?])
//!     .build()?;
//! let login = client.post(server.login_url()).json(&serde_json::json!({"uid": "alice"})).send().await?;
//! assert!(login.status().is_success());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Presigned URLs
//! `Signature` is base64url (no padding) HMAC-SHA256 over `GET\n{path}\n{Expires}` with the URL
//! key, CloudFront-style. `{path}` is the URL's path **exactly as it appears on the wire**,
//! percent-encoded: the presign endpoint signs the path of the URL it returns
//! (`/demo/media/a%20b.png`, `/demo/media/%C3%BC.png`) and the media route checks the request's
//! undecoded path, so a client that sends the presigned URL unchanged is served, and a signer
//! outside the server signs the path it sends. Another spelling of the same file (`%c3%bc`) is
//! another path and needs its own signature.
//!
//! Lifetimes are at most [`MAX_TTL`] (30 days): a longer configured or injected lifetime is
//! clamped, and an `Expires` that is not a `u64` (negative, too large, garbage) is a 403.
//!
//! ## AWS SigV4 presigned URLs
//! With [`ServerConfig::s3`] set to an [`S3Key`], the media route also accepts S3's query-string
//! authentication, checked as AWS documents it
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>); the unit tests
//! hold the verifier to AWS's own worked example. The server signs nothing: clients sign with
//! any SigV4 signer (an AWS SDK's presigner, or a few lines by these rules).
//!
//! - A query with any of `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
//!   `X-Amz-SignedHeaders`, `X-Amz-Signature` is judged as SigV4 and as nothing else. Each must
//!   appear exactly once: `X-Amz-Algorithm=AWS4-HMAC-SHA256`;
//!   `X-Amz-Credential=<access key id>/<yyyymmdd>/<region>/s3/aws4_request`, with the key id and
//!   region of the [`S3Key`] and the day of `X-Amz-Date`; `X-Amz-Date=yyyymmddThhmmssZ` (UTC);
//!   `X-Amz-Expires` whole seconds, 1 to 604800; `X-Amz-SignedHeaders`, lowercase header names,
//!   sorted, `;`-separated, including `host` (every one must be in the request);
//!   `X-Amz-Signature`, 64 lowercase hex digits.
//! - UriEncode: every byte but `A-Z a-z 0-9 - _ . ~` becomes `%XX`, upper-case hex; a space is
//!   `%20`; UTF-8 bytes are encoded one by one.
//! - CanonicalRequest = `<METHOD>\n<CanonicalURI>\n<CanonicalQueryString>\n<CanonicalHeaders>\n<SignedHeaders>\nUNSIGNED-PAYLOAD`,
//!   with the request's method (`GET`; a `HEAD` needs its own signature, as on S3).
//! - CanonicalURI: the path exactly as sent on the wire, which the signer must have UriEncoded
//!   segment by segment, keeping `/` (`/demo/media/a%20b.png`, `/demo/media/%C3%BC.png`); like
//!   S3 the server neither decodes nor normalises it, so `%c3%bc` is another path.
//! - CanonicalQueryString: every `name=value` pair of the query but `X-Amz-Signature`, each name
//!   and value percent-decoded as sent (`+` stays `+`) then UriEncoded, sorted by name then value
//!   (byte order of the encoded text, so `X-Amz-*` sorts before lowercase names), joined with
//!   `&`; a pair without `=` has the empty value. Their order on the wire does not matter.
//! - CanonicalHeaders: for each signed header, `name:value\n`, the value with its ends trimmed
//!   and inner runs of whitespace made one space, several values joined by `,` (hence the empty
//!   line before SignedHeaders). `host` is the `Host` the client sends: `127.0.0.1:PORT`, as
//!   [`RunningServer::host`] gives it.
//! - StringToSign = `AWS4-HMAC-SHA256\n<X-Amz-Date>\n<yyyymmdd>/<region>/s3/aws4_request\n<hex(SHA-256(CanonicalRequest))>`.
//! - Signing key = HMAC-SHA256 chain from `"AWS4" + secret` over the date, the region, `s3`,
//!   `aws4_request`; the signature is lowercase hex of HMAC-SHA256(signing key, StringToSign),
//!   compared in constant time.
//! - Time, checked only once the signature matches: 403 when now is past `X-Amz-Date +
//!   X-Amz-Expires` ([`Refusals::expired_url`]) or `X-Amz-Date` is more than 15 minutes ahead
//!   ([`Refusals::not_yet_valid`]). Anything else wrong is a 403 saying which piece
//!   ([`Refusals::bad_signature`]), never echoing the signature; served requests count in
//!   [`Served::sigv4`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod config;
mod faults;
mod media;
mod routes;
mod samples;
mod sigv4;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use auth::MAX_TTL;
pub use config::ServerConfig;
pub use faults::{Control, Faults, Route};
pub use routes::{LoginAnswer, MAX_PRESIGN_BATCH};
pub use samples::{gallery_image, gallery_path, samples, Sample, BOMB_SIDE, GALLERY_LEN, GALLERY_SIDE, SAMPLE_NAMES};
pub use sigv4::S3Key;
pub use stats::{Refusals, Served, Stats};
pub use tls::{client_config_trusting, IssuedCertificate, TestCa, Tls};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The media directory does not exist or cannot be read.
    #[error("media directory {0}: not a readable directory")]
    MediaDir(String),
    /// No randomness for the signing secrets.
    #[error("the system has no randomness for signing secrets")]
    Entropy,
    /// A signing key was rejected.
    #[error("the signing key is unusable")]
    Key,
    /// A test certificate could not be made, or rustls refused it.
    #[error("TLS: {0}")]
    Tls(String),
    /// An entry of [`ServerConfig::public_origins`] is not an origin.
    #[error("public origin {0:?}: expected http(s)://host[:port] with nothing after it, like https://127.0.0.1:8443")]
    PublicOrigin(String),
}

/// What the handlers share.
pub(crate) struct Shared {
    config: ServerConfig,
    addr: SocketAddr,
    keys: auth::Keys,
    faults: Faults,
    counters: stats::Counters,
    media: media::MediaStore,
    /// [`ServerConfig::public_origins`], parsed.
    public_origins: Vec<url::Origin>,
    /// The CA clients must trust, when serving https.
    ca_pem: Option<String>,
}

impl Shared {
    fn scheme(&self) -> &'static str {
        if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Starts reference servers.
#[derive(Debug)]
pub struct ReferenceServer;

impl ReferenceServer {
    /// Binds `config.addr` and serves until [`RunningServer::shutdown`] or drop.
    pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
        let media = match &config.media_dir {
            None => media::MediaStore::Samples,
            Some(dir) => {
                let root =
                    tokio::fs::canonicalize(dir).await.map_err(|_| ServerError::MediaDir(dir.display().to_string()))?;
                if !root.is_dir() {
                    return Err(ServerError::MediaDir(dir.display().to_string()));
                }
                media::MediaStore::Dir(media::DirStore::new(root))
            }
        };
        let fat_secret = match &config.fat_secret {
            Some(secret) => secret.clone(),
            None => auth::random_secret()?,
        };
        let url_secret = match &config.url_secret {
            Some(secret) => secret.clone(),
            None => auth::random_secret()?,
        };
        let keys = auth::Keys::new(fat_secret, url_secret, config.key_pair_id.clone(), config.app_id.clone())?;
        let public_origins =
            config.public_origins.iter().map(|o| config::parse_public_origin(o)).collect::<Result<Vec<_>, _>>()?;
        let tls = tls::server_tls(config.tls, config.tls_ca.as_ref())?;
        let listener =
            TcpListener::bind(config.addr).await.map_err(|source| ServerError::Bind { addr: config.addr, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.addr, source })?;
        let (ca_pem, tls_config) = tls.unzip();
        let shared = Arc::new(Shared {
            config,
            addr,
            keys,
            faults: Faults::default(),
            counters: stats::Counters::default(),
            media,
            public_origins,
            ca_pem,
        });
        let app = routes::router(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = match tls_config {
            None => {
                // TCP_NODELAY, as on the TLS listener (see there).
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                tokio::spawn(serve(listener, app, stopped))
            }
            Some(tls_config) => {
                let (listener, accepting) = tls::TlsListener::start(listener, tls_config)
                    .map_err(|source| ServerError::Bind { addr, source })?;
                tokio::spawn(async move {
                    serve(listener, app, stopped).await;
                    // Ends as soon as `serve` dropped the listener.
                    let _ = accepting.await;
                })
            }
        };
        tracing::info!(base_url = %format_args!("{}://{addr}", shared.scheme()), "reference server listening");
        Ok(RunningServer { shared, stop: Some(stop), task: Some(task) })
    }
}

/// Serves `app` on `listener` until `stopped` fires, then waits for open connections.
async fn serve<L>(listener: L, app: axum::Router, stopped: oneshot::Receiver<()>)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    if let Err(error) = serve.await {
        tracing::error!(%error, "reference server stopped");
    }
}

/// A server that is running. Dropping it stops it.
pub struct RunningServer {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://ADDR`, or `https://ADDR` when serving TLS ([`ServerConfig::tls`]). Every URL below
    /// starts with it.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.shared.scheme(), self.shared.addr)
    }

    /// Whether it serves `https://` ([`ServerConfig::tls`] is not [`Tls::Off`]).
    pub fn is_https(&self) -> bool {
        self.shared.ca_pem.is_some()
    }

    /// The PEM certificate of the CA that issued the server's certificate: what a client must
    /// trust to reach it. `None` for plain http.
    pub fn ca_pem(&self) -> Option<&str> {
        self.shared.ca_pem.as_deref()
    }

    /// The secure host as `host:port`, for a client's secure-host list.
    pub fn host(&self) -> String {
        self.shared.addr.to_string()
    }

    /// The app id.
    pub fn app_id(&self) -> &str {
        &self.shared.config.app_id
    }

    /// The clean URL of a media file: `http(s)://ADDR/{app_id}/media/{name}`.
    pub fn media_url(&self, name: &str) -> String {
        format!("{}/{}/media/{name}", self.base_url(), self.shared.config.app_id)
    }

    /// The clean URL of gallery thumbnail `index` ([`gallery_path`]), served when the server
    /// serves the built-in samples (no [`ServerConfig::media_dir`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), secure_media_server::ServerError> {
    /// use secure_media_server::{ReferenceServer, ServerConfig};
    ///
    /// let server = ReferenceServer::start(ServerConfig::default()).await?;
    /// assert_eq!(server.gallery_url(499), format!("{}/demo/media/gallery/0499.png", server.base_url()));
    /// # Ok(())
    /// # }
    /// ```
    pub fn gallery_url(&self, index: usize) -> String {
        self.media_url(&gallery_path(index))
    }

    /// The login endpoint's URL.
    pub fn login_url(&self) -> String {
        format!("{}/v1/auth/login", self.base_url())
    }

    /// The presign endpoint's URL.
    pub fn presign_url(&self) -> String {
        format!("{}/v1/media/presign", self.base_url())
    }

    /// Issues a FAT as `POST /v1/auth/login` would (counted as a login).
    pub fn login(&self, uid: &str) -> Result<LoginAnswer, &'static str> {
        self.shared.issue_fat(uid)
    }

    /// The fault knobs.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
    }

    /// Stops serving and waits for open connections to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer").field("addr", &self.shared.addr).field("config", &self.shared.config).finish()
    }
}
