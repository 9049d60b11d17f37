//! A small egui window showing a grid of secure images from the reference server.
//!
//! ```sh
//! cargo run --example egui_gallery --features egui-gallery -- presigned   # embedded | header | presigned
//! ```
//!
//! Public URLs would go to egui_extras' own loaders; secure ones go through
//! `SecureBytesLoader`, which fetches them on the tokio runtime below.

use std::sync::Arc;

use secure_media::{FileAccessToken, LoginCell, SecureMedia, SecureMediaMode};
use secure_media_egui::{install, SecureBytesLoader};
use secure_media_reqwest::{ReqwestFetcher, ReqwestPresigner};
use secure_media_server::{ReferenceServer, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode: SecureMediaMode = std::env::args().nth(1).as_deref().unwrap_or("presigned").parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let server = runtime.block_on(ReferenceServer::start(ServerConfig::https()))?;
    // The reference server's certificate comes from a test CA: trust it, and only it.
    let ca = reqwest::Certificate::from_pem(server.ca_pem().ok_or("no test CA")?.as_bytes())?;
    let client = secure_media_reqwest::client_builder().tls_certs_only([ca]).build()?;
    secure_media_server::samples();
    let login = Arc::new(LoginCell::new());
    login.set(FileAccessToken::new(server.login("gallery").map_err(|e| e.to_string())?.fat)?);
    let media = SecureMedia::builder(server.app_id())
        .secure_host(&server.host())
        .mode(mode)
        .token_source(login)
        .presigner(Arc::new(ReqwestPresigner::new(client.clone(), server.presign_url().parse()?)?))
        .build()?;
    let fetcher = Arc::new(ReqwestFetcher::from_client(client, media.strategy()));
    let urls: Vec<String> = ["sample-640x480.png", "sample-1920x1080.jpg", "sample-256x256.webp", "sample-64x64.gif"]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
        .map(|(i, name)| format!("{}?tile={i}", server.media_url(name)))
        .collect();
    let handle = runtime.handle().clone();
    eframe::run_ui_native(&format!("secure-media gallery ({mode} mode)"), eframe::NativeOptions::default(), {
        let mut installed = false;
        move |ui, _frame| {
            if !installed {
                egui_extras::install_image_loaders(ui.ctx());
                install(ui.ctx(), SecureBytesLoader::new(fetcher.clone(), handle.clone()));
                installed = true;
            }
            egui::CentralPanel::default().show(ui, |ui| {
                ui.heading(format!("{} secure images, {mode} mode", urls.len()));
                egui::Grid::new("gallery").show(ui, |ui| {
                    for (i, url) in urls.iter().enumerate() {
                        ui.add(egui::Image::new(url.as_str()).fit_to_exact_size(egui::vec2(160.0, 120.0)));
                        if i % 4 == 3 {
                            ui.end_row();
                        }
                    }
                });
            });
        }
    })?;
    Ok(())
}
