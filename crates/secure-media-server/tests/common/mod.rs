//! What the server's test files share: clients (plain, or trusting a test CA), samples, the
//! presign call, a temporary media directory.

#![allow(dead_code)] // each test binary uses part of it

use std::time::Duration;

use reqwest::{redirect, Certificate, Client, StatusCode};
use secure_media_server::{samples, ReferenceServer, RunningServer, ServerConfig};
use serde_json::Value;

pub async fn start(config: ServerConfig) -> RunningServer {
    ReferenceServer::start(config).await.unwrap()
}

/// A client that follows no redirect (plain http).
pub fn client() -> Client {
    Client::builder().redirect(redirect::Policy::none()).build().unwrap()
}

/// A rustls client that trusts `ca` and nothing else, following no redirect.
pub fn trusting(ca: &str) -> reqwest::ClientBuilder {
    Client::builder()
        .tls_backend_rustls()
        .tls_certs_only([Certificate::from_pem(ca.as_bytes()).unwrap()])
        .redirect(redirect::Policy::none())
        .timeout(Duration::from_secs(5))
}

/// A client trusting `server`'s test CA.
pub fn client_of(server: &RunningServer) -> Client {
    trusting(server.ca_pem().expect("an https server")).build().unwrap()
}

pub fn sample(name: &str) -> &'static [u8] {
    &samples().iter().find(|s| s.name == name).unwrap().bytes
}

/// `POST /v1/auth/login` for `uid`: the answer's JSON.
pub async fn login(client: &Client, server: &RunningServer, uid: &str) -> Value {
    let answer = client.post(server.login_url()).json(&serde_json::json!({ "uid": uid })).send().await.unwrap();
    answer.json().await.unwrap()
}

/// `POST /v1/media/presign` for `urls` with `fat`, answered 200.
pub async fn presign(client: &Client, server: &RunningServer, fat: &str, urls: &[String]) -> Value {
    let response = client
        .post(server.presign_url())
        .bearer_auth(fat)
        .json(&serde_json::json!({ "urls": urls }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("secure-media-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
