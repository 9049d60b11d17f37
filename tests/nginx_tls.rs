//! A real TLS peer (issue 13): nginx, which we did not write, terminates https with a certificate
//! from the test CA and proxies to the reference server over plain http. Both client stacks
//! (reqwest-middleware, and tower over hyper with rustls) fetch through it in every mode, with no
//! `allowing_http()` anywhere: the reference server checks the proof, nginx is the TLS server the
//! clients talk to. Needs nginx (`apt-get install -y nginx-light`, or `NGINX=/path/to/nginx`):
//! without it the tests fail, they never skip.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{Client, Stack, MODES, STACKS};
use http_body_util::Full;
use secure_media::{MediaKey, NetworkError, NetworkFailure, SecureMedia, SecureMediaMode, StaticToken, TlsFailure};
use secure_media_reqwest::{ReqwestPresigner, SecureMediaMiddleware};
use secure_media_server::{samples, ReferenceServer, RunningServer, ServerConfig, TestCa};
use secure_media_testkit::nginx::Nginx;
use secure_media_tower::{SecureMediaLayer, TowerPresigner};
use tower::{ServiceBuilder, ServiceExt};

const SAMPLE: &str = "sample-640x480.png";

fn sample(name: &str) -> &'static [u8] {
    &samples().iter().find(|s| s.name == name).unwrap().bytes
}

/// The reference server on plain http with nginx in front of it over TLS. The server knows
/// nginx's origin as its own (`public_origins`), so URLs presigned through nginx stay on it.
struct Proxied {
    server: RunningServer,
    nginx: Nginx,
}

impl Proxied {
    async fn start() -> Self {
        // nginx's origin first: the server must know it before it starts.
        let port = Nginx::reserve();
        let config = ServerConfig { public_origins: vec![port.origin()], ..ServerConfig::default() };
        let server = ReferenceServer::start(config).await.unwrap();
        assert!(!server.is_https(), "the upstream is plain http: TLS is nginx's");
        let nginx = port.start_tls_proxy(server.addr());
        Self { server, nginx }
    }

    /// A media URL on nginx's origin.
    fn media_url(&self, name: &str) -> String {
        format!("{}/{}/media/{name}", self.nginx.base_url(), self.server.app_id())
    }

    /// A fresh FAT: the tests look for it in everything the caller can see.
    fn fat(&self, uid: &str) -> String {
        self.server.login(uid).unwrap().fat
    }

    /// nginx's host secure over https only; the presign endpoint (of `stack`'s own presigner)
    /// reached through nginx too.
    fn media(&self, stack: Stack, mode: SecureMediaMode, fat: &str) -> SecureMedia {
        let endpoint = format!("{}/v1/media/presign", self.nginx.base_url());
        let presigner: Arc<dyn secure_media::presigned::Presigner> = match stack {
            Stack::Reqwest => Arc::new(
                ReqwestPresigner::new(secure_media_testkit::reqwest_client(), endpoint.parse().unwrap()).unwrap(),
            ),
            Stack::Tower => {
                Arc::new(TowerPresigner::new(secure_media_testkit::hyper(), endpoint.parse().unwrap()).unwrap())
            }
        };
        SecureMedia::builder(self.server.app_id())
            .secure_host(&self.nginx.host())
            .mode(mode)
            .token_source(Arc::new(StaticToken::parse(fat).unwrap()))
            .presigner(presigner)
            .build()
            .unwrap()
    }
}

/// What the caller can see must hold no proof: not the token, no query credential, no header.
fn assert_hides_proof(shown: &str, fat: &str, context: &str) {
    for secret in [fat, "fat=", "Signature=", "Key-Pair-Id=", "Bearer"] {
        assert!(!shown.contains(secret), "{context}: the caller can see {secret:?} in {shown}");
    }
}

#[tokio::test]
async fn every_mode_on_both_stacks_fetches_through_nginx_over_tls() {
    let proxied = Proxied::start().await;
    let url = proxied.media_url(SAMPLE);
    for stack in STACKS {
        for mode in MODES {
            let context = format!("{stack:?} {mode}");
            let fat = proxied.fat("alice");
            let client = Client::new(stack, proxied.media(stack, mode, &fat));
            proxied.server.reset_stats();
            let fetched = client.get(&url).await.unwrap_or_else(|e| panic!("{context}: {e}\n{}", proxied.nginx.logs()));
            assert_eq!(fetched.status, 200, "{context}");
            assert_eq!(&fetched.bytes[..], sample(SAMPLE), "{context}: the reference server's bytes");
            assert_eq!(fetched.key.as_ref().map(MediaKey::as_str), Some(url.as_str()), "{context}: the clean URL");
            assert!(fetched.record.is_some(), "{context}: the exchange recorded itself");
            if stack == Stack::Reqwest {
                assert!(fetched.shown.starts_with(&format!("{url} ")), "{context}: reqwest's url() is the clean URL");
            }
            assert_hides_proof(&fetched.shown, &fat, &context);
            // The upstream behind nginx checked the proof and served the file, once.
            let stats = proxied.server.stats();
            let served = (stats.served.fat_query, stats.served.bearer, stats.served.presigned);
            let expected = match mode {
                SecureMediaMode::Embedded => (1, 0, 0),
                SecureMediaMode::HeaderBased => (0, 1, 0),
                SecureMediaMode::Presigned => (0, 0, 1),
            };
            assert_eq!(served, expected, "{context}");
            // In presigned mode the presign call went through nginx too (its only URL is nginx's).
            let presigned = u64::from(mode == SecureMediaMode::Presigned);
            assert_eq!((stats.presign_calls, stats.urls_presigned), (presigned, presigned), "{context}");
        }
    }
}

#[tokio::test]
async fn a_range_request_through_nginx_is_partial_on_both_stacks() {
    let proxied = Proxied::start().await;
    let url = proxied.media_url(SAMPLE);
    for stack in STACKS {
        for mode in MODES {
            let context = format!("{stack:?} {mode}");
            let fat = proxied.fat("bob");
            let client = Client::new(stack, proxied.media(stack, mode, &fat));
            let fetched = client
                .get_with(&url, &[("range", "bytes=0-99")])
                .await
                .unwrap_or_else(|e| panic!("{context}: {e}\n{}", proxied.nginx.logs()));
            assert_eq!(fetched.status, 206, "{context}: Range passed through nginx and back");
            assert_eq!(&fetched.bytes[..], &sample(SAMPLE)[..100], "{context}");
            assert_hides_proof(&fetched.shown, &fat, &context);
        }
    }
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_test_ca_fails_with_unknown_issuer_and_no_token() {
    let proxied = Proxied::start().await;
    let url = proxied.media_url(SAMPLE);
    let fat = proxied.fat("carol");
    proxied.server.reset_stats();
    for mode in [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased] {
        // reqwest with the crate's defaults: the platform's roots, which do not hold the test CA.
        let media = proxied.media(Stack::Reqwest, mode, &fat);
        let client = reqwest_middleware::ClientBuilder::new(secure_media_reqwest::client_builder().build().unwrap())
            .with(SecureMediaMiddleware::new(media.strategy()))
            .build();
        let error = client.get(&url).send().await.expect_err("an untrusted certificate");
        let shown = format!("{error} {error:?}");
        assert_hides_proof(&shown, &fat, &format!("reqwest {mode}"));
        let reqwest_middleware::Error::Reqwest(error) = error else {
            panic!("reqwest {mode}: expected a reqwest error, got {shown}");
        };
        let network = secure_media_reqwest::network_error(error);
        assert_eq!(network.failure(), NetworkFailure::Tls(TlsFailure::UnknownIssuer), "reqwest {mode}: {network}");
        assert_hides_proof(&format!("{network} {network:?}"), &fat, &format!("reqwest {mode}"));

        // tower over hyper trusting another test CA only: same issuer name, other key (rustls
        // reports a bad signature: an issuer the client does not trust).
        let other_ca = TestCa::new().unwrap();
        let media = proxied.media(Stack::Tower, mode, &fat);
        let service = ServiceBuilder::new()
            .layer(SecureMediaLayer::new(media.strategy()))
            .service(secure_media_testkit::hyper_trusting(other_ca.ca_pem()));
        let error =
            service.oneshot(http::Request::get(&url).body(Full::<Bytes>::default()).unwrap()).await.unwrap_err();
        let network = NetworkError::from_chain(&*error, NetworkFailure::Other);
        assert_eq!(network.failure(), NetworkFailure::Tls(TlsFailure::UnknownIssuer), "tower {mode}: {network}");
        assert_hides_proof(&format!("{error} {error:?} {network} {network:?}"), &fat, &format!("tower {mode}"));
    }
    assert_eq!(proxied.server.stats().requests, 0, "no request got past the refused handshake");
}
