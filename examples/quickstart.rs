//! The main job: start the reference server in-process over https (a certificate from a test CA
//! made at start-up), log in, and load the same real image in all three modes through the reqwest
//! middleware and through a tower/hyper client (hyper-rustls). Both clients trust the test CA and
//! nothing else; no plain http anywhere.
//!
//! ```sh
//! cargo run --example quickstart
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use secure_media::presigned::Presigner;
use secure_media::{FileAccessToken, LoginCell, SecureMedia, SecureMediaMode};
use secure_media_reqwest::{client_builder, ReqwestPresigner, SecureMediaMiddleware};
use secure_media_server::{ReferenceServer, ServerConfig};
use secure_media_tower::{SecureMediaLayer, TowerPresigner};
use tower::{ServiceBuilder, ServiceExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = ReferenceServer::start(ServerConfig::https()).await?;
    secure_media_server::samples(); // generate the sample images before timing anything
    println!("reference server on {}\n", server.base_url());
    let ca = server.ca_pem().ok_or("the server has no test CA")?;

    // reqwest: the crate's client builder (rustls, no redirects below the middleware, no Referer),
    // trusting the test CA only. Against a real host, leave out `tls_certs_only`.
    let reqwest_client = client_builder().tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes())?]).build()?;
    // tower: hyper over hyper-rustls, trusting the test CA only. Against a real host, use
    // `with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())?` instead of
    // `with_tls_config`.
    let tls = secure_media_server::client_config_trusting(ca)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    let hyper = HyperClient::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);

    // The app logs in and hands the FAT to secure-media (and again after every re-login).
    let login: serde_json::Value = reqwest_client
        .post(server.login_url())
        .json(&serde_json::json!({ "uid": "quickstart-user" }))
        .send()
        .await?
        .json()
        .await?;
    let cell = Arc::new(LoginCell::new());
    cell.set(FileAccessToken::new(login["fat"].as_str().unwrap_or_default())?);

    let image_url = server.media_url("sample-640x480.png");
    println!(
        "{:<10} {:<8} {:>6} {:>8} {:>9} {:>9} {:>10}",
        "mode", "stack", "status", "bytes", "decoded", "presigns", "time"
    );
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned] {
        for stack in ["reqwest", "tower"] {
            let presigner: Arc<dyn Presigner> = match stack {
                "reqwest" => Arc::new(ReqwestPresigner::new(reqwest_client.clone(), server.presign_url().parse()?)?),
                _ => Arc::new(TowerPresigner::new(hyper.clone(), server.presign_url().parse()?)?),
            };
            let media = SecureMedia::builder(server.app_id())
                .secure_host(&server.host())
                .mode(mode)
                .token_source(cell.clone())
                .presigner(presigner)
                .build()?;
            let presigns_before = server.stats().presign_calls;
            let started = Instant::now();
            let (status, body) = match stack {
                "reqwest" => {
                    let client = reqwest_middleware::ClientBuilder::new(reqwest_client.clone())
                        .with(SecureMediaMiddleware::new(media.strategy()))
                        .build();
                    let response = client.get(&image_url).send().await?;
                    (response.status().as_u16(), response.bytes().await?)
                }
                _ => {
                    let service =
                        ServiceBuilder::new().layer(SecureMediaLayer::new(media.strategy())).service(hyper.clone());
                    let request = http::Request::get(&image_url).body(Full::default())?;
                    let response = service.oneshot(request).await?;
                    let status = response.status().as_u16();
                    (status, response.into_body().collect().await?.to_bytes())
                }
            };
            let elapsed = started.elapsed();
            let decoded =
                image::load_from_memory(&body).map(|i| format!("{}x{}", i.width(), i.height())).unwrap_or("no".into());
            let presigns = server.stats().presign_calls - presigns_before;
            println!(
                "{:<10} {:<8} {:>6} {:>8} {:>9} {:>9} {:>8.1}ms",
                mode.to_string(),
                stack,
                status,
                body.len(),
                decoded,
                presigns,
                elapsed.as_secs_f64() * 1e3
            );
        }
    }
    let stats = server.stats();
    println!(
        "\nserver: served {} by ?fat=, {} by bearer, {} presigned; {} refusals",
        stats.served.fat_query,
        stats.served.bearer,
        stats.served.presigned,
        stats.refusals.missing + stats.refusals.invalid_fat + stats.refusals.expired_fat
    );
    server.shutdown().await;
    Ok(())
}
