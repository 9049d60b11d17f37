//! `secure-media-server [ADDR]`: the reference server on ADDR (default 127.0.0.1:8787).
//! The `secure-media serve` command has every option; this binary is the minimal one.

use secure_media_server::{ReferenceServer, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8787".into());
    let config = ServerConfig { addr: addr.parse()?, ..ServerConfig::default() };
    let server = ReferenceServer::start(config).await?;
    println!("listening on {}", server.base_url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
