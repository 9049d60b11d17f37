//! Shared fixture: the reference server on 127.0.0.1 over https (a certificate from the test
//! process's CA), a login cell fed by its login endpoint, and the two client stacks
//! (reqwest-middleware, and tower over hyper-util with hyper-rustls) in any mode. Plain http only
//! where a test asks for it (`http_server`), to cover the opt-in.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use secure_media::presigned::{PresignConfig, Presigner};
use secure_media::{ExchangeRecord, FileAccessToken, LoginCell, MediaKey, SecureMedia, SecureMediaMode, TokenSource};
use secure_media_reqwest::ReqwestPresigner;
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig};
use secure_media_tower::{SecureMediaLayer, TowerPresigner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{ServiceBuilder, ServiceExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Reqwest,
    Tower,
}

pub const STACKS: [Stack; 2] = [Stack::Reqwest, Stack::Tower];
pub const MODES: [SecureMediaMode; 3] =
    [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned];

pub type HyperBody = Full<Bytes>;
pub use secure_media_testkit::{hyper, reqwest_builder, reqwest_client};

/// The reference server over https, its certificate from the test CA every client here trusts.
pub async fn server() -> RunningServer {
    secure_media_testkit::https_server().await
}

/// `config` over https (the test CA).
pub async fn server_with(config: ServerConfig) -> RunningServer {
    ReferenceServer::start(secure_media_testkit::https(config)).await.unwrap()
}

/// The reference server on plain http: only for tests of the `allowing_http` opt-in.
pub async fn http_server() -> RunningServer {
    ReferenceServer::start(ServerConfig::default()).await.unwrap()
}

/// A login cell whose relogin hook calls the server's login endpoint over HTTP.
pub async fn login_cell(server: &RunningServer, uid: &str) -> Arc<LoginCell> {
    let login_url = server.login_url();
    let uid = uid.to_owned();
    let relogin = move || {
        let (login_url, uid) = (login_url.clone(), uid.clone());
        async move { http_login(&login_url, &uid).await }
    };
    let cell = Arc::new(LoginCell::new().with_relogin(relogin));
    cell.set(http_login(&server.login_url(), "first").await.unwrap());
    cell
}

/// Logs in at `login_url`, failing as an app's relogin hook should: with the error that says why.
pub async fn http_login(login_url: &str, uid: &str) -> Result<FileAccessToken, secure_media::AccessError> {
    use secure_media::AccessError;
    let url = || login_url.to_owned();
    let unreachable = |error| AccessError::Network { url: url(), error: secure_media_reqwest::network_error(error) };
    let response =
        reqwest_client().post(login_url).json(&serde_json::json!({ "uid": uid })).send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        return Err(AccessError::Status { url: url(), status: response.status() });
    }
    let answer: serde_json::Value =
        response.json().await.map_err(|_| AccessError::MalformedToken("the login answer is not JSON"))?;
    FileAccessToken::new(answer["fat"].as_str().unwrap_or_default())
}

/// The presigner of `stack` for `server`; plain http only for a plain-http server.
pub fn presigner(stack: Stack, server: &RunningServer) -> Arc<dyn Presigner> {
    let http = !server.is_https();
    match stack {
        Stack::Reqwest => {
            let endpoint = server.presign_url().parse().unwrap();
            Arc::new(match http {
                true => ReqwestPresigner::new_allowing_http(reqwest_client(), endpoint).unwrap(),
                false => ReqwestPresigner::new(reqwest_client(), endpoint).unwrap(),
            })
        }
        Stack::Tower => {
            let endpoint = server.presign_url().parse().unwrap();
            Arc::new(match http {
                true => TowerPresigner::new_allowing_http(hyper(), endpoint).unwrap(),
                false => TowerPresigner::new(hyper(), endpoint).unwrap(),
            })
        }
    }
}

/// `server`'s host secure in `mode`; `allowing_http` only for a plain-http server.
pub fn media(server: &RunningServer, stack: Stack, mode: SecureMediaMode, tokens: Arc<dyn TokenSource>) -> SecureMedia {
    let builder = SecureMedia::builder(server.app_id()).secure_host(&server.host());
    let builder = if server.is_https() { builder } else { builder.allowing_http() };
    builder
        .mode(mode)
        .token_source(tokens)
        .presigner(presigner(stack, server))
        .presign_config(PresignConfig::default())
        .build()
        .unwrap()
}

/// What a fetch saw.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub bytes: Bytes,
    pub key: Option<MediaKey>,
    pub record: Option<ExchangeRecord>,
    /// What the caller can read of the response besides its body: reqwest's `url()` and
    /// `Debug`; tower's `Debug` and every URI in its extensions.
    pub shown: String,
}

/// A client on one stack, built the way the README recommends.
#[derive(Clone)]
pub enum Client {
    Reqwest(reqwest_middleware::ClientWithMiddleware),
    Tower(Arc<SecureMedia>),
    TowerStrategy(Arc<dyn secure_media::MediaAccessStrategy>),
}

impl Client {
    pub fn new(stack: Stack, media: SecureMedia) -> Self {
        match stack {
            Stack::Reqwest => {
                Client::Reqwest(secure_media_reqwest::secure_client_from(reqwest_builder(), media.strategy()).unwrap())
            }
            Stack::Tower => Client::Tower(Arc::new(media)),
        }
    }

    /// A client on `stack` over any strategy (a custom one).
    pub fn with_strategy(stack: Stack, strategy: Arc<dyn secure_media::MediaAccessStrategy>) -> Self {
        match stack {
            Stack::Reqwest => {
                Client::Reqwest(secure_media_reqwest::secure_client_from(reqwest_builder(), strategy).unwrap())
            }
            Stack::Tower => Client::TowerStrategy(strategy),
        }
    }

    pub fn get(&self, url: &str) -> futures::future::BoxFuture<'static, Result<Fetched, String>> {
        self.get_with(url, &[])
    }

    /// A GET with the caller's own headers.
    pub fn get_with(
        &self,
        url: &str,
        headers: &[(&'static str, &'static str)],
    ) -> futures::future::BoxFuture<'static, Result<Fetched, String>> {
        use futures::FutureExt;
        let headers = headers.to_vec();
        match self.clone() {
            Client::Reqwest(client) => fetch_reqwest(client, url.to_owned(), headers).boxed(),
            Client::Tower(media) => fetch_tower(media.strategy(), url.to_owned(), headers).boxed(),
            Client::TowerStrategy(strategy) => fetch_tower(strategy, url.to_owned(), headers).boxed(),
        }
    }
}

async fn fetch_reqwest(
    client: reqwest_middleware::ClientWithMiddleware,
    url: String,
    headers: Vec<(&'static str, &'static str)>,
) -> Result<Fetched, String> {
    let mut request = client.get(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let key = response.extensions().get::<MediaKey>().cloned();
    let record = response.extensions().get::<ExchangeRecord>().copied();
    // reqwest keeps tower-http 0.6's record of the URI it sent in the response.
    let request_uri =
        response.extensions().get::<tower_http_06::follow_redirect::RequestUri>().map(|u| u.0.to_string());
    let shown = format!("{} {request_uri:?} {response:?}", response.url());
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    Ok(Fetched { status, bytes, key, record, shown })
}

async fn fetch_tower(
    strategy: Arc<dyn secure_media::MediaAccessStrategy>,
    url: String,
    headers: Vec<(&'static str, &'static str)>,
) -> Result<Fetched, String> {
    // tower-http's FollowRedirect below our layer records the URI it sent (with the token) in the
    // response, even when its policy follows nothing: the layer must scrub it.
    let record_uri = tower_http::follow_redirect::policy::Limited::new(0);
    let service = ServiceBuilder::new()
        .layer(SecureMediaLayer::new(strategy))
        .layer(tower_http::follow_redirect::FollowRedirectLayer::with_policy(record_uri))
        .service(hyper());
    let mut request = http::Request::get(&url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request.body(HyperBody::default()).map_err(|e| e.to_string())?;
    let response = service.oneshot(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let key = response.extensions().get::<MediaKey>().cloned();
    let record = response.extensions().get::<ExchangeRecord>().copied();
    let request_uri = response.extensions().get::<tower_http::follow_redirect::RequestUri>().map(|u| u.0.to_string());
    let shown = format!("{request_uri:?} {response:?}");
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Fetched { status, bytes, key, record, shown })
}

/// An HTTP/1.1 peer on 127.0.0.1 over https (a certificate from the test CA) that records the head
/// of every request it gets and answers `200 ok` (or the status given): what "another origin" or
/// "a CDN" sees.
pub struct Recorder {
    pub base_url: String,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Recorder {
    pub async fn start(status: u16) -> Self {
        Self::start_with(status, None).await
    }

    /// The same, answering with `Location: <location>` too.
    pub async fn start_with(status: u16, location: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("https://{}", listener.local_addr().unwrap());
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = heads.clone();
        let tls = secure_media_testkit::tls_acceptor();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (seen, location, tls) = (seen.clone(), location.clone(), tls.clone());
                tokio::spawn(async move {
                    let Ok(mut socket) = tls.accept(socket).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                    let location = location.as_deref().map(|l| format!("location: {l}\r\n")).unwrap_or_default();
                    let answer =
                        format!("HTTP/1.1 {status} X\r\n{location}content-length: 2\r\nconnection: close\r\n\r\nok");
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { base_url, heads }
    }

    /// Every request head seen so far, lowercased.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().iter().map(|h| h.to_ascii_lowercase()).collect()
    }
}
