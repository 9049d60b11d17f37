//! `secure-media serve`: the reference server.

use std::io::Write;
use std::path::{Path, PathBuf};

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
        let path = write_ca(args.ca_out, server.addr().port(), ca_pem).map_err(|(path, e)| {
            Failure::other(format!("cannot write the CA certificate to {}: {e}", path.display()))
        })?;
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

/// Writes the CA certificate where nobody else can swap it before a client trusts it: by default
/// into a new private directory (`secure-media-tls-<port>-<pid>`, mode 0700, created only if it
/// did not exist); at `--ca-out` through a new file beside it renamed into place, which replaces
/// the path itself and never writes through a link someone planted there.
fn write_ca(ca_out: Option<PathBuf>, port: u16, pem: &str) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let path = match ca_out {
        Some(path) => path,
        None => {
            let dir = std::env::temp_dir().join(format!("secure-media-tls-{port}-{}", std::process::id()));
            private_dir(&dir).map_err(|e| (dir.clone(), e))?;
            dir.join("ca.pem")
        }
    };
    let staged = path.with_file_name(format!(".secure-media-ca-{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .and_then(|()| std::fs::rename(&staged, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written.map(|()| path.clone()).map_err(|e| (path, e))
}

#[cfg(unix)]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dir)
}
