//! Custom strategies through both stacks: nginx's `secure_link` (the README's example,
//! examples/secure_link.rs) against a real nginx, and S3 presigned URLs (query-string SigV4,
//! examples/s3_sigv4.rs) against the reference server's implementation of AWS's documented
//! algorithm. Their signing parameters (`md5`, `expires` declared as credentials; `X-Amz-*`
//! shared) never reach another origin, the caller's response, a media key or an error; an
//! expired signature costs one retry.

mod common;

#[path = "../examples/secure_link.rs"]
#[allow(dead_code)]
mod secure_link;

#[path = "../examples/s3_sigv4.rs"]
#[allow(dead_code)]
mod s3_sigv4;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use secure_link::SecureLink;
use secure_media::{
    AccessError, ConfigError, Credentials, MediaAccessStrategy, MediaFetcher, MediaUrl, ParamValue, Resolution,
    SecureHosts,
};

const SECRET: &str = "nginx and the app share this";

fn strategy(nginx: &secure_media_testkit::nginx::Nginx, secret: &str) -> SecureLink {
    SecureLink::new(SecureHosts::new().with_host(&nginx.host()).unwrap(), secret, Duration::from_secs(300))
}

fn sample(name: &str) -> &'static [u8] {
    &secure_media_server::samples().iter().find(|s| s.name == name).unwrap().bytes
}

/// Nothing of the signature in what the caller can read.
fn assert_clean(shown: &str, what: &str) {
    let lower = shown.to_ascii_lowercase();
    assert!(!lower.contains("md5=") && !lower.contains("expires="), "{what}: {shown}");
}

#[tokio::test]
async fn secure_link_loads_through_both_stacks_hashing_the_decoded_path() {
    let nginx = secure_link::nginx(SECRET, "https://elsewhere.example");
    let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(strategy(&nginx, SECRET));
    for stack in STACKS {
        let client = Client::with_strategy(stack, strategy.clone());
        for (path, expected) in [
            ("sample-640x480.png", sample("sample-640x480.png")),
            // nginx hashes `$uri`, the decoded path: "/demo/media/a b ü.png".
            ("a%20b%20%C3%BC.png", &secure_media_server::samples()[0].bytes[..]),
            // The caller's URL echoes a stale signature in other spellings: replaced, and never
            // in what comes back.
            ("sample-64x64.gif?w=1&MD5=OLD&Expires=1", sample("sample-64x64.gif")),
        ] {
            let fetched = client.get(&format!("{}/demo/media/{path}", nginx.base_url())).await.unwrap();
            assert_eq!(fetched.status, 200, "{stack:?} {path}: {}", nginx.logs());
            assert_eq!(&fetched.bytes[..], expected, "{stack:?} {path}");
            assert_eq!(fetched.record.unwrap().attempts, 1, "{stack:?} {path}");
            assert_clean(&fetched.shown, &format!("{stack:?} {path}"));
            let key = fetched.key.unwrap();
            assert_clean(key.url(), &format!("{stack:?} {path} key"));
            assert!(!key.url().contains("OLD") && !fetched.shown.contains("OLD"), "{stack:?} {path}");
        }
    }
}

/// Signs its first request with an expiry a minute ago (nginx's scheme, written out again here
/// as a cross-check), then as `SecureLink` does.
struct ExpiredFirst {
    inner: SecureLink,
    secret: &'static str,
    first: AtomicBool,
}

impl MediaAccessStrategy for ExpiredFirst {
    fn secure_hosts(&self) -> &SecureHosts {
        self.inner.secure_hosts()
    }
    fn credentials(&self) -> &Credentials {
        self.inner.credentials()
    }
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        if !self.first.swap(false, Ordering::SeqCst) {
            return self.inner.resolve_ready(url);
        }
        use base64::Engine;
        use md5::Digest;
        let expired = (SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() - 60).to_string();
        let md5 = md5::Md5::digest(format!("{expired}{} {}", url.decoded_path(), self.secret));
        let md5 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(md5);
        Some(Ok(Resolution::set_params([("md5", ParamValue::new(md5)), ("expires", ParamValue::new(expired))])))
    }
}

#[tokio::test]
async fn an_expired_signature_costs_one_retry_on_both_stacks() {
    let nginx = secure_link::nginx(SECRET, "https://elsewhere.example");
    for stack in STACKS {
        let expired_first =
            ExpiredFirst { inner: strategy(&nginx, SECRET), secret: SECRET, first: AtomicBool::new(true) };
        let client = Client::with_strategy(stack, Arc::new(expired_first));
        let fetched = client.get(&format!("{}/demo/media/sample-64x64.gif", nginx.base_url())).await.unwrap();
        assert_eq!(fetched.status, 200, "{stack:?}");
        let record = fetched.record.unwrap();
        assert_eq!((record.attempts, record.retries), (2, 1), "{stack:?}: the 403 earned one retry, signed afresh");
        assert_eq!(&fetched.bytes[..], sample("sample-64x64.gif"));
    }
}

#[tokio::test]
async fn the_signature_never_reaches_another_origin() {
    let elsewhere = Recorder::start(200).await;
    let nginx = secure_link::nginx(SECRET, &elsewhere.base_url);
    let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(strategy(&nginx, SECRET));
    for stack in STACKS {
        let client = Client::with_strategy(stack, strategy.clone());
        // nginx checks the signature, then sends the client elsewhere with the query echoed.
        let fetched = client.get(&format!("{}/demo/moved/a.png?w=64", nginx.base_url())).await.unwrap();
        assert_eq!((fetched.status, &fetched.bytes[..]), (200, &b"ok"[..]), "{stack:?}");
        assert_eq!(fetched.record.unwrap().hops, 1, "{stack:?}");
        assert_clean(&fetched.shown, &format!("{stack:?}"));
    }
    let heads = elsewhere.heads();
    assert_eq!(heads.len(), 2, "one hop per stack");
    for head in &heads {
        assert!(head.starts_with("get /landing?w=64 "), "{head}");
        assert_clean(head, "what the other origin saw");
    }
}

/// `SecureLink` plus a header of its own (`x-sig`), declared: it goes to nginx, never elsewhere.
struct WithHeader {
    inner: SecureLink,
    credentials: Credentials,
}

impl MediaAccessStrategy for WithHeader {
    fn secure_hosts(&self) -> &SecureHosts {
        self.inner.secure_hosts()
    }
    fn credentials(&self) -> &Credentials {
        &self.credentials
    }
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let signed = self.inner.resolve_ready(url)?;
        Some(signed.map(|r| r.with_header(http::HeaderName::from_static("x-sig"), "HEADER-SECRET".parse().unwrap())))
    }
}

#[tokio::test]
async fn a_declared_header_never_reaches_another_origin() {
    let elsewhere = Recorder::start(200).await;
    let nginx = secure_link::nginx(SECRET, &elsewhere.base_url);
    let credentials = Credentials::new().param("md5").param("expires").header(http::HeaderName::from_static("x-sig"));
    let strategy: Arc<dyn MediaAccessStrategy> = Arc::new(WithHeader { inner: strategy(&nginx, SECRET), credentials });
    for stack in STACKS {
        let client = Client::with_strategy(stack, strategy.clone());
        let fetched = client.get(&format!("{}/demo/moved/a.png?md5=OLD", nginx.base_url())).await.unwrap();
        assert_eq!((fetched.status, fetched.record.unwrap().hops), (200, 1), "{stack:?}");
        assert!(!fetched.shown.contains("HEADER-SECRET"), "{stack:?}");
    }
    let heads = elsewhere.heads();
    assert_eq!(heads.len(), 2);
    for head in heads {
        assert!(!head.contains("x-sig") && !head.contains("header-secret"), "{head}");
        assert_clean(&head, "what the other origin saw");
    }
}

#[tokio::test]
async fn a_wrong_secret_is_refused_after_one_retry_and_no_error_names_the_signature() {
    let nginx = secure_link::nginx(SECRET, "https://elsewhere.example");
    let wrong: Arc<dyn MediaAccessStrategy> = Arc::new(strategy(&nginx, "not the secret"));
    let url = format!("{}/demo/media/sample-64x64.gif?w=1", nginx.base_url());
    for stack in STACKS {
        let fetched = Client::with_strategy(stack, wrong.clone()).get(&url).await.unwrap();
        assert_eq!(fetched.status, 403, "{stack:?}");
        assert_eq!(fetched.record.unwrap().attempts, 2, "{stack:?}");
        assert_clean(&fetched.shown, &format!("{stack:?}"));
    }
    // The fetcher's error names the clean URL, even when the caller's URL echoes a signature.
    let fetcher = secure_media_reqwest::ReqwestFetcher::from_client(reqwest_client(), wrong);
    let error = fetcher.fetch(&format!("{url}&md5=LEAK&expires=1")).await.unwrap_err();
    assert!(matches!(error, AccessError::Refused { .. }), "{error:?}");
    assert_clean(&format!("{error} {error:?}"), "the fetcher's error");
    assert!(!format!("{error:?}").contains("LEAK"));
}

/// Signs its first request two hours ago (expired: X-Amz-Expires is 300 s), then now.
struct S3ExpiredFirst {
    inner: s3_sigv4::S3Presign,
    first: AtomicBool,
}

impl MediaAccessStrategy for S3ExpiredFirst {
    fn secure_hosts(&self) -> &SecureHosts {
        self.inner.secure_hosts()
    }
    fn resolve_ready(&self, url: &MediaUrl<'_>) -> Option<Result<Resolution, AccessError>> {
        let when = match self.first.swap(false, Ordering::SeqCst) {
            true => SystemTime::now() - Duration::from_secs(7200),
            false => SystemTime::now(),
        };
        Some(self.inner.sign_at(url, when).ok_or(AccessError::Config(ConfigError::InvalidConfig("cannot sign"))))
    }
}

async fn s3_server() -> secure_media_server::RunningServer {
    server_with(secure_media_server::ServerConfig { s3: Some(s3_sigv4::demo_key()), ..Default::default() }).await
}

#[tokio::test]
async fn s3_presigned_urls_load_through_both_stacks_and_an_expired_one_costs_one_retry() {
    let server = s3_server().await;
    for stack in STACKS {
        let client = Client::with_strategy(stack, Arc::new(s3_sigv4::strategy_for(&server, Duration::from_secs(300))));
        for name in ["sample-640x480.png", "sample-64x64.gif"] {
            // `+` is a plus to S3, not a space: signed as the server reads it.
            let fetched = client.get(&format!("{}?w=64&x=a%20b&q=a+b", server.media_url(name))).await.unwrap();
            assert_eq!(fetched.status, 200, "{stack:?} {name}");
            assert_eq!(&fetched.bytes[..], sample(name), "{stack:?} {name}");
            assert_eq!(fetched.record.unwrap().attempts, 1, "{stack:?} {name}");
            assert!(!fetched.shown.to_ascii_lowercase().contains("x-amz-"), "{stack:?}: {}", fetched.shown);
            assert!(!fetched.key.unwrap().url().to_ascii_lowercase().contains("x-amz-"), "{stack:?}");
        }
        let expired_first = S3ExpiredFirst {
            inner: s3_sigv4::strategy_for(&server, Duration::from_secs(300)),
            first: AtomicBool::new(true),
        };
        let fetched = Client::with_strategy(stack, Arc::new(expired_first))
            .get(&server.media_url("sample-64x64.gif"))
            .await
            .unwrap();
        assert_eq!(fetched.status, 200, "{stack:?}");
        let record = fetched.record.unwrap();
        assert_eq!((record.attempts, record.retries), (2, 1), "{stack:?}: the 403 earned one fresh signature");
    }
    assert_eq!(server.stats().served.sigv4, 6);
}

#[tokio::test]
async fn s3_signatures_never_reach_another_origin() {
    let server = s3_server().await;
    let elsewhere = Recorder::start(200).await;
    // The media host sends clients elsewhere and echoes the query, signature and all.
    server.faults().redirect_media_to(Some(elsewhere.base_url.clone()), true);
    for stack in STACKS {
        let client = Client::with_strategy(stack, Arc::new(s3_sigv4::strategy_for(&server, Duration::from_secs(300))));
        let fetched = client.get(&format!("{}?w=64", server.media_url("sample-64x64.gif"))).await.unwrap();
        assert_eq!((fetched.status, fetched.record.unwrap().hops), (200, 1), "{stack:?}");
        assert!(!fetched.shown.to_ascii_lowercase().contains("x-amz-"), "{stack:?}: {}", fetched.shown);
    }
    let heads = elsewhere.heads();
    assert_eq!(heads.len(), 2);
    for head in heads {
        assert!(head.contains("?w=64 ") && !head.contains("x-amz-"), "{head}");
    }
}
