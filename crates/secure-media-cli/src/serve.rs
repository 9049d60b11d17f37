//! `secure-media serve`: the reference server.

use secure_media_server::{ReferenceServer, ServerConfig};

use crate::args::ServeArgs;
use crate::Failure;

pub(crate) async fn run(args: ServeArgs) -> Result<(), Failure> {
    let config = ServerConfig {
        addr: args.addr,
        app_id: args.app_id,
        media_dir: args.dir,
        fat_ttl: args.fat_ttl,
        url_ttl: args.url_ttl,
        ..ServerConfig::default()
    };
    let server = ReferenceServer::start(config).await.map_err(|e| Failure::other(e.to_string()))?;
    println!("listening on {}", server.base_url());
    println!("  login:   POST {}  {{\"uid\": \"alice\"}}", server.login_url());
    println!("  presign: POST {}  (Authorization: Bearer <fat>)", server.presign_url());
    println!("  media:   {}", server.media_url("sample-640x480.png"));
    tokio::signal::ctrl_c().await.map_err(|e| Failure::other(e.to_string()))?;
    server.shutdown().await;
    Ok(())
}
