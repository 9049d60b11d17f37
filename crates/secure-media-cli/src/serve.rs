//! `secure-media serve`: the reference server.

use secure_media_server::{ReferenceServer, ServerConfig, Tls};

use crate::args::ServeArgs;
use crate::Failure;

pub(crate) async fn run(args: ServeArgs) -> Result<(), Failure> {
    let config = ServerConfig {
        addr: args.addr,
        app_id: args.app_id,
        media_dir: args.dir,
        fat_ttl: args.fat_ttl,
        url_ttl: args.url_ttl,
        tls: if args.tls { Tls::TestCa } else { Tls::Off },
        ..ServerConfig::default()
    };
    let server = ReferenceServer::start(config).await.map_err(|e| Failure::other(e.to_string()))?;
    println!("listening on {}", server.base_url());
    if let Some(ca_pem) = server.ca_pem() {
        // The port is known only now (`--addr 127.0.0.1:0` picks one).
        let path = args
            .ca_out
            .unwrap_or_else(|| std::env::temp_dir().join(format!("secure-media-ca-{}.pem", server.addr().port())));
        tokio::fs::write(&path, ca_pem)
            .await
            .map_err(|e| Failure::other(format!("cannot write the CA certificate to {}: {e}", path.display())))?;
        let path = path.display();
        println!(
            "  CA certificate: {path}  (trust it: secure-media fetch --ca-cert {path} <url>, or SSL_CERT_FILE={path})"
        );
    }
    println!("  login:   POST {}  {{\"uid\": \"alice\"}}", server.login_url());
    println!("  presign: POST {}  (Authorization: Bearer <fat>)", server.presign_url());
    println!("  media:   {}", server.media_url("sample-640x480.png"));
    tokio::signal::ctrl_c().await.map_err(|e| Failure::other(e.to_string()))?;
    server.shutdown().await;
    Ok(())
}
