//! Shared fixture: the reference server on 127.0.0.1, a login cell fed by its login endpoint,
//! and the two client stacks (reqwest-middleware and tower over hyper-util) in any mode.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client as HyperClient};
use hyper_util::rt::TokioExecutor;
use secure_media::presigned::{PresignConfig, Presigner};
use secure_media::{FileAccessToken, LoginCell, MediaKey, SecureMedia, SecureMediaMode, TokenSource};
use secure_media_reqwest::{redirect_policy, ReqwestPresigner, SecureMediaMiddleware};
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig};
use secure_media_tower::{BoxError, KeepTokensHome, SecureMediaLayer, TowerPresigner};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::follow_redirect::policy::{PolicyExt, Standard};
use tower_http::follow_redirect::FollowRedirectLayer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Reqwest,
    Tower,
}

pub const STACKS: [Stack; 2] = [Stack::Reqwest, Stack::Tower];
pub const MODES: [SecureMediaMode; 3] =
    [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned];

pub type HyperBody = Full<Bytes>;
pub type Hyper = HyperClient<HttpConnector, HyperBody>;

pub fn hyper() -> Hyper {
    HyperClient::builder(TokioExecutor::new()).build_http()
}

pub async fn server() -> RunningServer {
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
    let cell = Arc::new(LoginCell::with_relogin(relogin));
    cell.set(http_login(&server.login_url(), "first").await.unwrap());
    cell
}

pub async fn http_login(login_url: &str, uid: &str) -> Result<FileAccessToken, secure_media::AccessError> {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(login_url)
        .json(&serde_json::json!({ "uid": uid }))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|_| secure_media::AccessError::RefreshFailed("login failed".into()))?
        .json()
        .await
        .map_err(|_| secure_media::AccessError::RefreshFailed("bad login answer".into()))?;
    FileAccessToken::new(answer["fat"].as_str().unwrap_or_default())
}

pub fn presigner(stack: Stack, server: &RunningServer) -> Arc<dyn Presigner> {
    match stack {
        Stack::Reqwest => {
            Arc::new(ReqwestPresigner::new(reqwest::Client::new(), server.presign_url().parse().unwrap()))
        }
        Stack::Tower => Arc::new(TowerPresigner::new(hyper(), server.presign_url().parse().unwrap())),
    }
}

pub fn media(server: &RunningServer, stack: Stack, mode: SecureMediaMode, tokens: Arc<dyn TokenSource>) -> SecureMedia {
    SecureMedia::builder(server.app_id())
        .secure_host(&server.host())
        .allowing_http()
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
}

/// A client on one stack, with the middleware and the redirect rules in the recommended order.
#[derive(Clone)]
pub enum Client {
    Reqwest(reqwest_middleware::ClientWithMiddleware),
    Tower(Arc<SecureMedia>),
}

impl Client {
    pub fn new(stack: Stack, media: SecureMedia) -> Self {
        match stack {
            Stack::Reqwest => {
                let client = reqwest::Client::builder().redirect(redirect_policy()).build().unwrap();
                Client::Reqwest(
                    reqwest_middleware::ClientBuilder::new(client)
                        .with(SecureMediaMiddleware::new(media.strategy()))
                        .build(),
                )
            }
            Stack::Tower => Client::Tower(Arc::new(media)),
        }
    }

    pub fn get(&self, url: &str) -> futures::future::BoxFuture<'static, Result<Fetched, String>> {
        use futures::FutureExt;
        match self.clone() {
            Client::Reqwest(client) => fetch_reqwest(client, url.to_owned()).boxed(),
            Client::Tower(media) => fetch_tower(media, url.to_owned()).boxed(),
        }
    }
}

async fn fetch_reqwest(client: reqwest_middleware::ClientWithMiddleware, url: String) -> Result<Fetched, String> {
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let key = response.extensions().get::<MediaKey>().cloned();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    Ok(Fetched { status, bytes, key })
}

async fn fetch_tower(media: Arc<SecureMedia>, url: String) -> Result<Fetched, String> {
    let policy = Standard::default().and::<_, HyperBody, BoxError>(KeepTokensHome::new(media.secure_hosts().clone()));
    let service = ServiceBuilder::new()
        .layer(FollowRedirectLayer::with_policy(policy))
        .layer(SecureMediaLayer::new(media.strategy()))
        .service(hyper());
    let request = http::Request::get(&url).body(HyperBody::default()).map_err(|e| e.to_string())?;
    let response = service.oneshot(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let key = response.extensions().get::<MediaKey>().cloned();
    let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Fetched { status, bytes, key })
}
