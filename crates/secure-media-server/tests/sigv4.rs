//! AWS SigV4 presigned URLs against the reference server over https on 127.0.0.1. The URLs come
//! from a minimal signer written here from AWS's documentation alone: the server exports none, so
//! a pass means both sides implement the published algorithm, not a shared private one.

mod common;

use common::*;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use reqwest::{header, StatusCode};
use secure_media_server::{RunningServer, S3Key, ServerConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

const AKID: &str = "AKIDREFERENCE";
const SECRET: &str = "s3cr3t/with+odd=chars";
const REGION: &str = "eu-central-1";
const GIF: &str = "/demo/media/sample-64x64.gif";

fn s3_key() -> S3Key {
    S3Key { access_key_id: AKID.into(), secret_access_key: SECRET.into(), region: REGION.into() }
}

async fn s3_server() -> RunningServer {
    start(ServerConfig { s3: Some(s3_key()), ..ServerConfig::https() }).await
}

fn unix_now() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

// ---- A minimal SigV4 query signer, from the AWS documentation only. ----

/// AWS UriEncode: unreserved bytes as they are, every other byte `%XX` in upper case.
fn uri_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// `yyyymmddThhmmssZ`.
fn amz_date(unix: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Everything a signer chooses; `url` signs it.
#[derive(Clone)]
struct Presign {
    method: &'static str,
    host: String,
    /// As it goes on the wire: already UriEncoded by segment.
    path: String,
    access_key_id: String,
    secret: String,
    region: String,
    signed_at: i64,
    expires: String,
    /// `None` leaves `X-Amz-SignedHeaders` out (and signs `host`).
    signed_headers: Option<String>,
    /// Signed headers other than `host`: (lowercase name, value).
    headers: Vec<(String, String)>,
}

impl Presign {
    fn new(server: &RunningServer, path: &str) -> Self {
        Self {
            method: "GET",
            host: server.host(),
            path: path.to_owned(),
            access_key_id: AKID.into(),
            secret: SECRET.into(),
            region: REGION.into(),
            signed_at: unix_now(),
            expires: "300".into(),
            signed_headers: Some("host".into()),
            headers: Vec::new(),
        }
    }

    /// The query parameters, unencoded, without the signature.
    fn params(&self) -> Vec<(String, String)> {
        let date = amz_date(self.signed_at);
        let scope = format!("{}/{}/s3/aws4_request", &date[..8], self.region);
        let mut params = vec![
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            ("X-Amz-Credential".into(), format!("{}/{scope}", self.access_key_id)),
            ("X-Amz-Date".into(), date),
            ("X-Amz-Expires".into(), self.expires.clone()),
        ];
        if let Some(signed) = &self.signed_headers {
            params.push(("X-Amz-SignedHeaders".into(), signed.clone()));
        }
        params
    }

    fn signature(&self) -> String {
        let date = amz_date(self.signed_at);
        let mut query: Vec<(String, String)> =
            self.params().iter().map(|(k, v)| (uri_encode(k), uri_encode(v))).collect();
        query.sort();
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut headers = vec![("host".to_owned(), self.host.clone())];
        headers.extend(self.headers.iter().cloned());
        headers.sort();
        let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
        let signed = self.signed_headers.clone().unwrap_or_else(|| "host".into());
        let request = format!(
            "{}\n{}\n{}\n{canonical_headers}\n{signed}\nUNSIGNED-PAYLOAD",
            self.method,
            self.path,
            query.join("&")
        );
        let scope = format!("{}/{}/s3/aws4_request", &date[..8], self.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex(&Sha256::digest(request.as_bytes())));
        let mut key = format!("AWS4{}", self.secret).into_bytes();
        for part in [&date[..8], &self.region, "s3", "aws4_request"] {
            key = hmac(&key, part);
        }
        hex(&hmac(&key, &to_sign))
    }

    /// The presigned URL on `server`.
    fn url(&self, server: &RunningServer) -> String {
        let query: Vec<String> =
            self.params().iter().map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v))).collect();
        format!("{}{}?{}&X-Amz-Signature={}", server.base_url(), self.path, query.join("&"), self.signature())
    }
}

// ---- The behaviour. ----

/// A 403 whose body is a JSON error and holds no byte run of the file.
async fn assert_refused(response: reqwest::Response, file: &[u8], case: &str) -> String {
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{case}");
    let body = response.bytes().await.unwrap();
    let probe = &file[..file.len().min(16)];
    assert!(!body.windows(probe.len()).any(|w| w == probe), "{case}: the file leaked");
    let error: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{case}: not JSON"));
    let message = error["error"].as_str().unwrap_or_else(|| panic!("{case}: no error")).to_owned();
    assert!(!message.contains("X-Amz-Signature="), "{case}: {message}");
    message
}

#[tokio::test]
async fn a_sigv4_url_from_an_independent_signer_is_served_over_https() {
    let server = s3_server().await;
    let client = client_of(&server);
    let gif = sample("sample-64x64.gif");
    let presign = Presign::new(&server, GIF);
    let url = presign.url(&server);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "image/gif");
    assert_eq!(&response.bytes().await.unwrap()[..], gif);

    // The order of the parameters on the wire does not matter: the canonical query is sorted.
    let (base, query) = url.split_once('?').unwrap();
    let mut pairs: Vec<&str> = query.split('&').collect();
    pairs.reverse();
    let response = client.get(format!("{base}?{}", pairs.join("&"))).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Further signed headers are canonicalised from the request: a signed Range gets its 206.
    let ranged = Presign {
        signed_headers: Some("host;range".into()),
        headers: vec![("range".into(), "bytes=0-9".into())],
        ..presign.clone()
    };
    let response = client.get(ranged.url(&server)).header(header::RANGE, "bytes=0-9").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(&response.bytes().await.unwrap()[..], &gif[..10]);

    // A HEAD is signed as a HEAD, as on S3.
    let head = Presign { method: "HEAD", ..presign.clone() };
    let response = client.head(head.url(&server)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_LENGTH], gif.len().to_string().as_str());

    // Longest lifetime AWS allows, and a date a little ahead (clock skew within 15 minutes).
    for fine in [
        Presign { expires: "604800".into(), ..presign.clone() },
        Presign { signed_at: unix_now() + 600, ..presign.clone() },
    ] {
        assert_eq!(client.get(fine.url(&server)).send().await.unwrap().status(), StatusCode::OK);
    }

    let stats = server.stats();
    assert_eq!(stats.served.sigv4, 6);
    assert_eq!((stats.served.presigned, stats.served.fat_query, stats.served.bearer), (0, 0, 0));
    assert_eq!(stats.refusals.bad_signature, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn tampered_expired_early_and_garbage_sigv4_urls_are_403_without_the_file() {
    let server = s3_server().await;
    let client = client_of(&server);
    let gif = sample("sample-64x64.gif");
    let good = Presign::new(&server, GIF);
    let url = good.url(&server);
    let now = unix_now();
    let replaced = |from: &str, to: &str| {
        assert!(url.contains(from), "{from}");
        url.replacen(from, to, 1)
    };
    let signature = good.signature();
    let fat = server.login("mallory").unwrap().fat;

    let bad_signatures: Vec<(&str, String)> = vec![
        ("tampered path", replaced("sample-64x64.gif", "sample-640x480.png")),
        ("tampered expiry", replaced("X-Amz-Expires=300", "X-Amz-Expires=3000")),
        ("wrong secret", Presign { secret: "not the secret".into(), ..good.clone() }.url(&server)),
        ("wrong access key id", Presign { access_key_id: "AKIDOTHER".into(), ..good.clone() }.url(&server)),
        ("wrong region", Presign { region: "us-east-1".into(), ..good.clone() }.url(&server)),
        ("signed for another host", Presign { host: "localhost:1".into(), ..good.clone() }.url(&server)),
        ("an added parameter", format!("{url}&download=1")),
        ("SignedHeaders removed", replaced("&X-Amz-SignedHeaders=host", "")),
        ("signed without SignedHeaders", Presign { signed_headers: None, ..good.clone() }.url(&server)),
        ("SignedHeaders without host", Presign { signed_headers: Some("range".into()), ..good.clone() }.url(&server)),
        (
            "a signed header the request lacks",
            Presign {
                signed_headers: Some("host;range".into()),
                headers: vec![("range".into(), "bytes=0-9".into())],
                ..good.clone()
            }
            .url(&server),
        ),
        ("expires too long, signed", Presign { expires: "604801".into(), ..good.clone() }.url(&server)),
        ("expires zero, signed", Presign { expires: "0".into(), ..good.clone() }.url(&server)),
        ("expires huge", replaced("X-Amz-Expires=300", "X-Amz-Expires=99999999999999999999999")),
        ("expires negative", replaced("X-Amz-Expires=300", "X-Amz-Expires=-300")),
        ("date garbage", replaced("X-Amz-Date=", "X-Amz-Date=garbage")),
        ("date absurd", replaced("X-Amz-Date=", "X-Amz-Date=99999999T999999Z&x=")),
        ("algorithm", replaced("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")),
        ("credential not UTF-8", replaced("X-Amz-Credential=", "X-Amz-Credential=%FF%FE")),
        ("signature not hex", replaced(&signature, &"zz".repeat(32))),
        ("signature short", replaced(&signature, &signature[..62])),
        ("signature upper case", replaced(&signature, &signature.to_uppercase())),
        ("signature twice", format!("{url}&X-Amz-Signature={signature}")),
        ("signature missing", replaced(&format!("&X-Amz-Signature={signature}"), "")),
        ("only a signature", format!("{}{GIF}?X-Amz-Signature={signature}", server.base_url())),
        ("SigV4 and a valid FAT", format!("{url}&fat={fat}").replacen("X-Amz-Expires=300", "X-Amz-Expires=301", 1)),
    ];
    for (case, bad) in &bad_signatures {
        let message = assert_refused(client.get(bad).send().await.unwrap(), gif, case).await;
        assert!(message.starts_with("the SigV4 presigned URL is not valid: "), "{case}: {message}");
    }
    // A GET signature does not cover a HEAD.
    let head = client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::FORBIDDEN);
    assert_ne!(head.headers()[header::CONTENT_TYPE], "image/gif");

    let expired = Presign { signed_at: now - 3600, expires: "60".into(), ..good.clone() };
    let message = assert_refused(client.get(expired.url(&server)).send().await.unwrap(), gif, "expired").await;
    assert!(message.contains("expired"), "{message}");
    let early = Presign { signed_at: now + 3600, ..good.clone() };
    let message = assert_refused(client.get(early.url(&server)).send().await.unwrap(), gif, "future").await;
    assert!(message.contains("not valid yet"), "{message}");
    let last_second = Presign { signed_at: 253_402_300_799, expires: "604800".into(), ..good.clone() };
    assert_refused(client.get(last_second.url(&server)).send().await.unwrap(), gif, "year 9999").await;

    let stats = server.stats();
    assert_eq!(stats.served.sigv4, 0);
    assert_eq!(stats.refusals.bad_signature, u64::try_from(bad_signatures.len()).unwrap() + 1);
    assert_eq!(stats.refusals.expired_url, 1);
    assert_eq!(stats.refusals.not_yet_valid, 2);
    // Still serving after all that.
    assert_eq!(client.get(&url).send().await.unwrap().status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn sigv4_is_refused_when_the_server_has_no_s3_key() {
    let server = start(ServerConfig::https()).await;
    let url = Presign::new(&server, GIF).url(&server);
    let response = client_of(&server).get(&url).send().await.unwrap();
    let message = assert_refused(response, sample("sample-64x64.gif"), "no S3 key").await;
    assert!(message.contains("ServerConfig::s3"), "{message}");
    assert_eq!(server.stats().refusals.bad_signature, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn file_names_are_signed_as_aws_uri_encodes_them() {
    let dir = TempDir::new("sigv4-names");
    std::fs::write(dir.0.join("a b.png"), b"space").unwrap();
    std::fs::write(dir.0.join("ü.png"), b"umlaut").unwrap();
    std::fs::write(dir.0.join("x+y=(1)!.png"), b"reserved").unwrap();
    let server =
        start(ServerConfig { media_dir: Some(dir.0.clone()), s3: Some(s3_key()), ..ServerConfig::https() }).await;
    let client = client_of(&server);
    for (name, bytes) in [("a b.png", &b"space"[..]), ("ü.png", b"umlaut"), ("x+y=(1)!.png", b"reserved")] {
        let path = format!("/demo/media/{}", uri_encode(name));
        let url = Presign::new(&server, &path).url(&server);
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}: {url}");
        assert_eq!(&response.bytes().await.unwrap()[..], bytes, "{name}");
    }
    assert_eq!(uri_encode("ü.png"), "%C3%BC.png");
    assert_eq!(uri_encode("x+y=(1)!.png"), "x%2By%3D%281%29%21.png");
    // S3 does not normalise the path: another spelling of the same file is another request.
    let url = Presign::new(&server, "/demo/media/%C3%BC.png").url(&server);
    let respelled = client.get(url.replace("%C3%BC", "%c3%bc")).send().await.unwrap();
    assert_refused(respelled, b"umlaut", "lower-case escapes").await;
    let unencoded = Presign::new(&server, "/demo/media/x+y=(1)!.png").url(&server);
    let response = client.get(&unencoded).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "signed as sent, it verifies: {unencoded}");
    assert_eq!(server.stats().served.sigv4, 4);
    server.shutdown().await;
}
