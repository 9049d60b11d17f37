//! A strategy of your own: S3-style presigned URLs signed on the client (AWS Signature Version 4,
//! query-string authentication, as AWS documents it), checked by the reference server, which
//! implements the same documented algorithm. No presign endpoint, no token on the wire; the
//! `X-Amz-*` parameters are credentials every strategy knows, so they never leave the host.
//!
//! ```sh
//! cargo run --example s3_sigv4
//! ```

use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use secure_media::{AccessError, ConfigError, MediaAccessStrategy, MediaUrl, ParamValue, Resolution, SecureHosts};
use sha2::{Digest, Sha256};

/// Presigns GETs for an S3-compatible host with an access key the app holds.
pub struct S3Presign {
    pub hosts: SecureHosts,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    pub lifetime: Duration,
}

impl S3Presign {
    /// The query-string signature for `url` as of `now`.
    pub fn sign_at(&self, url: &MediaUrl<'_>, now: SystemTime) -> Option<Resolution> {
        let at = time::OffsetDateTime::from(now);
        let date = format!("{:04}{:02}{:02}", at.year(), u8::from(at.month()), at.day());
        let amz_date = format!("{date}T{:02}{:02}{:02}Z", at.hour(), at.minute(), at.second());
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let mut params = vec![
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256".to_owned()),
            ("X-Amz-Credential", format!("{}/{scope}", self.access_key_id)),
            ("X-Amz-Date", amz_date.clone()),
            ("X-Amz-Expires", self.lifetime.as_secs().to_string()),
            ("X-Amz-SignedHeaders", "host".to_owned()),
        ];
        // The canonical query: the URL's own parameters (percent-decoded, `+` kept as S3 reads
        // it; any spelling of ours replaced, as `set_params` does) and ours, each name and value
        // AWS-encoded, sorted.
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        let own = url
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .map(|(name, value)| (decode(name), decode(value)))
            .filter(|(name, _)| !params.iter().any(|(ours, _)| name.eq_ignore_ascii_case(ours)))
            .map(|(name, value)| (aws_encode(&name), aws_encode(&value)))
            .collect::<Vec<_>>();
        let mut pairs = own;
        pairs.extend(params.iter().map(|(name, value)| (aws_encode(name), aws_encode(value))));
        pairs.sort();
        let query: Vec<String> = pairs.iter().map(|(name, value)| format!("{name}={value}")).collect();
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host()),
            None => url.host().to_owned(),
        };
        // S3 signs the path as it arrives, not normalised: `path()`.
        let canonical = format!("GET\n{}\n{}\nhost:{host}\n\nhost\nUNSIGNED-PAYLOAD", url.path(), query.join("&"));
        let to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical)));
        let mut key = hmac(format!("AWS4{}", self.secret_access_key).as_bytes(), date.as_bytes())?;
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes())?;
        }
        params.push(("X-Amz-Signature", hex(&hmac(&key, to_sign.as_bytes())?)));
        Some(Resolution::set_params(params.into_iter().map(|(name, value)| (name, ParamValue::new(value)))))
    }
}

impl MediaAccessStrategy for S3Presign {
    fn secure_hosts(&self) -> &SecureHosts {
        &self.hosts
    }
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        Some(self.sign_at(url, SystemTime::now()).ok_or(AccessError::Config(ConfigError::InvalidConfig("cannot sign"))))
    }
}

/// AWS's UriEncode: unreserved characters kept, everything else `%XX` (uppercase).
fn aws_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(data);
    Some(mac.finalize().into_bytes().to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The reference server's S3 key for the demo (and the tests).
pub fn demo_key() -> secure_media_server::S3Key {
    secure_media_server::S3Key {
        access_key_id: "AKIDEXAMPLEDEMO".into(),
        secret_access_key: "the S3 secret the app and the server share".into(),
        region: "eu-west-1".into(),
    }
}

/// The strategy for `server` with [`demo_key`].
pub fn strategy_for(server: &secure_media_server::RunningServer, lifetime: Duration) -> S3Presign {
    let key = demo_key();
    S3Presign {
        hosts: SecureHosts::new().with_host(&server.host()).expect("the server's host"),
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
        region: key.region,
        lifetime,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config =
        secure_media_server::ServerConfig { s3: Some(demo_key()), ..secure_media_server::ServerConfig::https() };
    let server = secure_media_server::ReferenceServer::start(config).await?;
    let strategy = std::sync::Arc::new(strategy_for(&server, Duration::from_secs(300)));
    let ca = reqwest::Certificate::from_pem(server.ca_pem().ok_or("no test CA")?.as_bytes())?;
    let builder = secure_media_reqwest::client_builder().tls_certs_only([ca]);
    let client = secure_media_reqwest::secure_client_from(builder, strategy)?;
    let response = client.get(server.media_url("sample-640x480.png")).send().await?;
    let (status, shown) = (response.status(), response.url().to_string());
    println!("reqwest: {status} {shown} ({} bytes)", response.bytes().await?.len());
    println!("server: {} served by SigV4", server.stats().served.sigv4);
    server.shutdown().await;
    Ok(())
}
