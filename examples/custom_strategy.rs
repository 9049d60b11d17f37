//! Write your own strategy: sign CDN URLs locally with a shared HMAC key (no presign endpoint,
//! no token on the wire), and plug it into both the reqwest middleware and the tower layer.
//!
//! ```sh
//! cargo run --example custom_strategy
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use secure_media::{AccessError, MediaAccessStrategy, MediaUrl, ParamValue, Resolution, SecureHosts};
use secure_media_server::{ReferenceServer, ServerConfig};
use sha2::Sha256;
use tower::ServiceExt;

/// Signs `GET\n<path>\n<expires>` with HMAC-SHA256: the CloudFront-style URL the reference
/// server (and many CDNs) accept, made on the client with a key the app holds.
struct HmacSignedUrls {
    hosts: SecureHosts,
    key: Hmac<Sha256>,
    key_pair_id: String,
    lifetime: Duration,
}

impl MediaAccessStrategy for HmacSignedUrls {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }

    /// Signing needs no I/O: always ready (the trait's default `resolve` answers the same, and its
    /// default `rejected` signs afresh once after a refusal, a clock skew say).
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let expires = (SystemTime::now().duration_since(UNIX_EPOCH).ok()? + self.lifetime).as_secs().to_string();
        let mut mac = self.key.clone();
        // The server signs the path as sent (`path()`, still percent-encoded).
        mac.update(format!("GET\n{}\n{expires}", url.path()).as_bytes());
        let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let params = [
            ("Expires", ParamValue::new(expires)),
            ("Signature", ParamValue::new(signature)),
            ("Key-Pair-Id", ParamValue::new(self.key_pair_id.as_str())),
        ];
        Some(Ok(Resolution::set_params(params)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let shared_key = b"the CDN key the app and the server share".to_vec();
    let server = ReferenceServer::start(ServerConfig {
        url_secret: Some(shared_key.clone()),
        key_pair_id: "APPKEY".into(),
        ..ServerConfig::https()
    })
    .await?;
    // The reference server's certificate comes from a test CA: both clients trust it, and only it.
    let ca = server.ca_pem().ok_or("no test CA")?;
    let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(HmacSignedUrls {
        hosts: SecureHosts::new().with_host(&server.host())?,
        key: Hmac::new_from_slice(&shared_key)?,
        key_pair_id: "APPKEY".into(),
        lifetime: Duration::from_secs(300),
    });
    let url = server.media_url("sample-256x256.webp");

    let reqwest_client = reqwest_middleware::ClientBuilder::new(
        secure_media_reqwest::client_builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes())?])
            .build()?,
    )
    .with(secure_media_reqwest::SecureMediaMiddleware::new(strategy.clone()))
    .build();
    let via_reqwest = reqwest_client.get(&url).send().await?;
    println!("reqwest: {} ({} bytes)", via_reqwest.status(), via_reqwest.bytes().await?.len());

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(secure_media_server::client_config_trusting(ca)?)
        .https_only()
        .enable_http1()
        .build();
    let hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(https);
    let service =
        tower::ServiceBuilder::new().layer(secure_media_tower::SecureMediaLayer::new(strategy)).service(hyper);
    let via_tower = service.oneshot(http::Request::get(&url).body(Full::default())?).await?;
    let status = via_tower.status();
    println!("tower:   {status} ({} bytes)", via_tower.into_body().collect().await?.to_bytes().len());

    let stats = server.stats();
    println!("server: {} served by signature, {} presign calls", stats.served.presigned, stats.presign_calls);
    server.shutdown().await;
    Ok(())
}
