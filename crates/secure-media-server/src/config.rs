//! [`ServerConfig`]: what the reference server is started with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::Tls;

/// How to start a [`ReferenceServer`](crate::ReferenceServer). Start from
/// `ServerConfig::default()` (app `demo`, 127.0.0.1 port 0, random secrets, FAT 1 h, URLs 1 day,
/// built-in sample media, `POST /_control` off, plain http, no SigV4) or [`ServerConfig::https`]
/// and set fields.
///
/// ```
/// use secure_media_server::ServerConfig;
///
/// // A server whose fault knobs can also be set over HTTP, by another process.
/// let config = ServerConfig { control: true, ..ServerConfig::default() };
/// assert!(!ServerConfig::default().control);
/// # drop(config);
/// ```
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen. Port 0 picks a free port.
    pub addr: SocketAddr,
    /// The app id in media paths (`/{app_id}/media/...`) and in FAT claims.
    pub app_id: String,
    /// The key FATs are signed with; random per start when `None`.
    pub fat_secret: Option<Vec<u8>>,
    /// The key presigned URLs are signed with; random per start when `None`.
    pub url_secret: Option<Vec<u8>>,
    /// The `Key-Pair-Id` presigned URLs carry.
    pub key_pair_id: String,
    /// How long a FAT lives; clamped to [`MAX_TTL`](crate::MAX_TTL).
    pub fat_ttl: Duration,
    /// How long a presigned URL lives; clamped to [`MAX_TTL`](crate::MAX_TTL).
    pub url_ttl: Duration,
    /// Serve files from this directory instead of the built-in samples. Files are kept in memory
    /// once read (up to 16 MiB each, 512 MiB in all) and the disk is asked again after a second,
    /// so a change shows within a second and a gallery under load is not disk-bound.
    pub media_dir: Option<PathBuf>,
    /// Origins the redirect fault may send clients to (`http://127.0.0.1:1234`); empty allows any.
    pub allowed_redirect_origins: Vec<String>,
    /// Serve `POST /_control` (the [`Faults`](crate::Faults) knobs over HTTP). Off by default, and
    /// then `/_control` answers 404: anyone who reaches the server could break it for everyone.
    /// [`RunningServer::faults`](crate::RunningServer::faults) works either way.
    pub control: bool,
    /// Serve `https://` with a certificate from a fresh test CA ([`Tls`]); plain `http://` by default.
    pub tls: Tls,
    /// The CA that issues the certificate when [`tls`](Self::tls) is on; a fresh one per start when
    /// `None`. Share one between servers so one client trusts them all.
    pub tls_ca: Option<std::sync::Arc<crate::TestCa>>,
    /// Other origins (`https://127.0.0.1:8443`: scheme, host, port) through which clients reach this
    /// server, such as a TLS proxy in front of it. The presign endpoint signs URLs on them as
    /// its own, and keeps the origin the client asked for. Empty by default; checked at start.
    pub public_origins: Vec<String>,
    /// Accept AWS SigV4 presigned URLs (S3 query-string authentication) signed with this key, as
    /// the media route's fourth proof (see the [crate docs](crate#aws-sigv4-presigned-urls)). Off
    /// (`None`) by default, and then a SigV4 URL is a 403.
    pub s3: Option<crate::S3Key>,
}

impl ServerConfig {
    /// The default configuration over HTTPS ([`Tls::TestCa`]): clients trust
    /// [`RunningServer::ca_pem`](crate::RunningServer::ca_pem).
    ///
    /// ```
    /// use secure_media_server::{ServerConfig, Tls};
    ///
    /// assert_eq!(ServerConfig::https().tls, Tls::TestCa);
    /// ```
    pub fn https() -> Self {
        Self { tls: Tls::TestCa, ..Self::default() }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            app_id: "demo".into(),
            fat_secret: None,
            url_secret: None,
            key_pair_id: "K2REFERENCE".into(),
            fat_ttl: Duration::from_secs(3600),
            url_ttl: Duration::from_secs(86_400),
            media_dir: None,
            allowed_redirect_origins: Vec::new(),
            control: false,
            tls: Tls::Off,
            tls_ca: None,
            public_origins: Vec::new(),
            s3: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("app_id", &self.app_id)
            .field("fat_secret", &self.fat_secret.as_ref().map(|_| "<redacted>"))
            .field("url_secret", &self.url_secret.as_ref().map(|_| "<redacted>"))
            .field("key_pair_id", &self.key_pair_id)
            .field("fat_ttl", &self.fat_ttl)
            .field("url_ttl", &self.url_ttl)
            .field("media_dir", &self.media_dir)
            .field("control", &self.control)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca.as_ref().map(|_| "<given>"))
            .field("public_origins", &self.public_origins)
            .field("s3", &self.s3)
            .finish_non_exhaustive()
    }
}

/// One of [`ServerConfig::public_origins`], checked: `http` or `https`, a host, an optional port,
/// nothing else (a path would suggest a prefix the server does not strip).
pub(crate) fn parse_public_origin(text: &str) -> Result<url::Origin, crate::ServerError> {
    let refused = || crate::ServerError::PublicOrigin(text.to_owned());
    let url = url::Url::parse(text).map_err(|_| refused())?;
    let bare = matches!(url.scheme(), "http" | "https")
        && url.has_host()
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if bare {
        Ok(url.origin())
    } else {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_s3_key_id_but_not_its_secret() {
        let s3 = crate::S3Key {
            access_key_id: "AKIDSHOWN".into(),
            secret_access_key: "hidden-secret".into(),
            region: "eu-central-1".into(),
        };
        let shown = format!("{:?}", ServerConfig { s3: Some(s3), ..ServerConfig::default() });
        assert!(shown.contains("AKIDSHOWN") && shown.contains("eu-central-1"), "{shown}");
        assert!(!shown.contains("hidden-secret"), "{shown}");
        assert!(ServerConfig::default().s3.is_none());
    }

    #[test]
    fn public_origins_are_scheme_host_and_port_only() {
        let origin = parse_public_origin("https://127.0.0.1:8443").unwrap();
        assert_eq!(origin, parse_public_origin("HTTPS://127.0.0.1:8443/").unwrap());
        assert_eq!(
            parse_public_origin("https://localhost").unwrap(),
            parse_public_origin("https://localhost:443").unwrap()
        );
        for bad in ["127.0.0.1:8443", "ftp://host", "https://host/prefix", "https://u:p@host", "https://host?q", ""] {
            assert!(parse_public_origin(bad).is_err(), "{bad}");
        }
    }
}
