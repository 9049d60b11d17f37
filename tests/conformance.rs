//! One table of exchange scenarios, run unchanged through the reqwest middleware and the tower
//! layer against the reference server (and a recording peer as "another origin"): both stacks
//! drive the core's `Exchange`, and this table is what keeps them from disagreeing again.

mod common;

use std::sync::Arc;

use common::*;
use http::StatusCode;
use secure_media::{SecureMediaMode, TokenSource};
use secure_media_server::Route;

use SecureMediaMode::{Embedded, HeaderBased, Presigned};

const ALL: &[SecureMediaMode] = &[Embedded, HeaderBased, Presigned];
const TOKEN_MODES: &[SecureMediaMode] = &[Embedded, HeaderBased];

/// What the world does to the request.
#[derive(Debug, Clone, Copy)]
enum Setup {
    /// Nothing: the file is served.
    Plain,
    /// The media route refuses the next request with this status.
    RefusedOnce(u16),
    /// The media route refuses every request with this status.
    RefusedForever(u16),
    /// The media host redirects to another origin (the recorder), echoing the query (with any
    /// `fat`, `Signature`, `Expires`, `Key-Pair-Id`) into `Location`.
    ForeignRedirect,
    /// The caller sends its own `Cookie` and `Authorization`, and the media host redirects to
    /// another origin.
    ForeignRedirectWithCallerCredentials,
    /// The media host moved the file: `302 Location: /<app>/media/<other file>`, no query.
    MovedOnTheSameHost,
    /// The media host redirects to itself forever.
    RedirectLoop,
}

/// What the caller must get.
struct Expect {
    status: u16,
    /// attempts, retries, hops
    record: (u32, u32, u32),
    /// Requests the other origin gets (each checked for every credential).
    foreign_requests: usize,
    /// Refusals the media route injected.
    faults_injected: u64,
}

struct Case {
    name: &'static str,
    modes: &'static [SecureMediaMode],
    setup: Setup,
    expect: Expect,
}

const fn expect(status: u16, record: (u32, u32, u32), foreign_requests: usize, faults_injected: u64) -> Expect {
    Expect { status, record, foreign_requests, faults_injected }
}

const CASES: &[Case] = &[
    Case {
        name: "a secure file loads in one attempt",
        modes: ALL,
        setup: Setup::Plain,
        expect: expect(200, (1, 0, 0), 0, 0),
    },
    Case {
        name: "a 401 renews the token and retries once",
        modes: TOKEN_MODES,
        setup: Setup::RefusedOnce(401),
        expect: expect(200, (2, 1, 0), 0, 1),
    },
    Case {
        name: "a 403 on a presigned URL presigns again and retries once",
        modes: &[Presigned],
        setup: Setup::RefusedOnce(403),
        expect: expect(200, (2, 1, 0), 0, 1),
    },
    Case {
        name: "a server that always refuses gets exactly two attempts",
        modes: TOKEN_MODES,
        setup: Setup::RefusedForever(401),
        expect: expect(401, (2, 1, 0), 0, 2),
    },
    Case {
        name: "a presigned URL refused forever gets exactly two attempts",
        modes: &[Presigned],
        setup: Setup::RefusedForever(403),
        expect: expect(403, (2, 1, 0), 0, 2),
    },
    Case {
        name: "a cross-origin redirect carries no token, signature or credential",
        modes: ALL,
        setup: Setup::ForeignRedirect,
        expect: expect(200, (2, 0, 1), 1, 0),
    },
    Case {
        name: "the caller's own Cookie and Authorization stay home on a cross-origin hop",
        modes: ALL,
        setup: Setup::ForeignRedirectWithCallerCredentials,
        expect: expect(200, (2, 0, 1), 1, 0),
    },
    Case {
        name: "a redirect to another path on the secure host loads with no renewal",
        modes: ALL,
        setup: Setup::MovedOnTheSameHost,
        expect: expect(200, (2, 0, 1), 0, 0),
    },
    Case {
        name: "a redirect loop ends after ten hops with the redirect handed back",
        modes: ALL,
        setup: Setup::RedirectLoop,
        expect: expect(302, (11, 0, 10), 0, 0),
    },
];

/// Every way a credential could show in what another origin receives.
const CREDENTIALS: &[&str] =
    &["fat=", "%66at", "signature=", "expires=", "key-pair-id=", "authorization:", "cookie:", "referer:", "session=1"];

#[tokio::test]
async fn the_conformance_table_holds_on_both_stacks() {
    let server = server().await;
    for case in CASES {
        for &mode in case.modes {
            for stack in STACKS {
                let at = format!("{} [{stack:?} {mode}]", case.name);
                let recorder = Recorder::start(200).await;
                server.faults().reset();
                let cell = login_cell(&server, "conformance").await;
                let client = Client::new(stack, media(&server, stack, mode, cell.clone()));
                let url = server.media_url(match case.setup {
                    Setup::MovedOnTheSameHost => "old.gif",
                    Setup::RedirectLoop => "loop.gif",
                    _ => "sample-64x64.gif",
                });
                let mut caller_headers: &[(&str, &str)] = &[];
                match case.setup {
                    Setup::Plain => {}
                    Setup::RefusedOnce(status) => {
                        server.faults().fail_next(Route::Media, 1, StatusCode::from_u16(status).unwrap())
                    }
                    Setup::RefusedForever(status) => {
                        server.faults().fail_next(Route::Media, 1000, StatusCode::from_u16(status).unwrap())
                    }
                    Setup::ForeignRedirect => server.faults().redirect_media_to(Some(recorder.base_url.clone()), true),
                    Setup::MovedOnTheSameHost => server.faults().move_media(Some(("old.gif", "sample-64x64.gif"))),
                    Setup::RedirectLoop => server.faults().move_media(Some(("loop.gif", "loop.gif"))),
                    Setup::ForeignRedirectWithCallerCredentials => {
                        server.faults().redirect_media_to(Some(recorder.base_url.clone()), true);
                        caller_headers = &[
                            ("cookie", "session=1"),
                            ("authorization", "Basic c2Vzc2lvbj0x"),
                            ("referer", "https://app.example/chat?fat=session=1"),
                        ];
                    }
                }
                server.reset_stats();
                let fetched = client.get_with(&url, caller_headers).await.unwrap_or_else(|e| panic!("{at}: {e}"));
                let stats = server.stats();
                assert_eq!(fetched.status, case.expect.status, "{at}");
                let renewals = stats.logins;
                if case.expect.record.1 == 0 {
                    assert_eq!(renewals, 0, "{at}: a token was renewed without a refusal");
                }
                let record = fetched.record.unwrap_or_else(|| panic!("{at}: no ExchangeRecord on the response"));
                assert_eq!((record.attempts, record.retries, record.hops), case.expect.record, "{at}: {record:?}");
                assert_eq!(stats.faults_injected, case.expect.faults_injected, "{at}");
                let heads = recorder.heads();
                assert_eq!(heads.len(), case.expect.foreign_requests, "{at}: {heads:?}");
                for head in &heads {
                    for credential in CREDENTIALS {
                        assert!(!head.contains(credential), "{at}: another origin saw {credential:?} in {head}");
                    }
                }
                // What the caller can read of the response names no token and no signature.
                let token = cell.current().unwrap().expose_secret().to_owned();
                let shown = fetched.shown.to_ascii_lowercase();
                for secret in [token.to_ascii_lowercase().as_str(), "fat=", "signature=", "key-pair-id="] {
                    assert!(!shown.contains(secret), "{at}: the response shows {secret:?}: {}", fetched.shown);
                }
                let key = fetched.key.unwrap_or_else(|| panic!("{at}: no media key"));
                assert_eq!(key.url(), url, "{at}");
                if record.attempts == 1 {
                    assert_eq!(stats.requests_with_token, 1, "{at}");
                }
            }
        }
    }
}

/// A presigner whose URLs live on another origin: the recorder, standing for a CDN.
struct CdnPresigner {
    cdn: String,
}

#[async_trait::async_trait]
impl secure_media::presigned::Presigner for CdnPresigner {
    async fn presign(
        &self,
        url: &str,
        _token: &secure_media::FileAccessToken,
    ) -> Result<secure_media::presigned::Presigned, secure_media::AccessError> {
        let path = url::Url::parse(url).unwrap().path().to_owned();
        Ok(secure_media::presigned::Presigned {
            url: format!("{}{path}?Expires=4000000000&Signature=SIG&Key-Pair-Id=K", self.cdn),
            expires_at: None,
        })
    }
}

async fn through_a_cdn(stack: Stack, cdn_status: u16) -> (Fetched, Recorder, u64) {
    through_a_cdn_answering(stack, Recorder::start(cdn_status).await).await
}

async fn through_a_cdn_answering(stack: Stack, recorder: Recorder) -> (Fetched, Recorder, u64) {
    let server = server().await;
    let hosts = secure_media::SecureHosts::new().with_host(&server.host()).unwrap();
    let token = Arc::new(secure_media::StaticToken::parse("T0KEN").unwrap());
    // The CDN is another origin the presigned URLs may point at: configured, or they are refused.
    let cdn = secure_media::SecureHosts::new().with_host(recorder.base_url.trim_start_matches("https://")).unwrap();
    let config =
        secure_media::presigned::PresignConfig { cdn_hosts: cdn, ..secure_media::presigned::PresignConfig::default() };
    let strategy = Arc::new(
        secure_media::presigned::PresignedStrategy::new(hosts, token, CdnPresigner { cdn: recorder.base_url.clone() })
            .with_config(config),
    );
    let client: Client = match stack {
        Stack::Reqwest => {
            Client::Reqwest(secure_media_reqwest::secure_client_from(reqwest_builder(), strategy.clone()).unwrap())
        }
        Stack::Tower => Client::TowerStrategy(strategy.clone()),
    };
    let caller_headers =
        [("cookie", "session=1"), ("authorization", "Basic c2Vzc2lvbj0x"), ("referer", "https://app/x")];
    let fetched = client.get_with(&server.media_url("a.png"), &caller_headers).await.unwrap();
    let calls = secure_media::MediaAccessStrategy::stats(&*strategy).presign_calls;
    (fetched, recorder, calls)
}

#[tokio::test]
async fn the_callers_credentials_never_go_to_the_cdn_a_presigned_url_points_at() {
    for stack in STACKS {
        let (fetched, recorder, _) = through_a_cdn(stack, 200).await;
        assert_eq!(fetched.status, 200, "{stack:?}");
        let heads = recorder.heads();
        assert_eq!(heads.len(), 1, "{stack:?}");
        assert!(heads[0].contains("signature=sig"), "{stack:?}: the CDN gets its signed URL");
        for credential in ["cookie:", "authorization:", "referer:", "t0ken"] {
            assert!(!heads[0].contains(credential), "{stack:?}: the CDN saw {credential:?}: {}", heads[0]);
        }
        assert!(!fetched.shown.to_ascii_lowercase().contains("signature"), "{stack:?}: {}", fetched.shown);
    }
}

#[tokio::test]
async fn a_refusal_from_the_cdn_counts_drops_the_url_and_retries_once() {
    for stack in STACKS {
        let (fetched, recorder, presign_calls) = through_a_cdn(stack, 403).await;
        assert_eq!(fetched.status, 403, "{stack:?}");
        assert_eq!(recorder.heads().len(), 2, "{stack:?}: one try and one retry");
        assert_eq!(presign_calls, 2, "{stack:?}: the refused URL was dropped and presigned again");
        let record = fetched.record.unwrap();
        assert_eq!((record.attempts, record.retries, record.presigned_again), (2, 1, true), "{stack:?}");
    }
}

/// A redirect the exchange does not follow goes back to the caller with a `Location` that names no
/// credential, although the media host echoed the token into it.
#[tokio::test]
async fn a_redirect_handed_back_names_no_token() {
    let server = server().await;
    server.faults().redirect_media_to(Some("https://elsewhere.example".into()), true);
    for stack in STACKS {
        for mode in ALL.iter().copied() {
            let cell = login_cell(&server, "hand-back").await;
            let strategy = media(&server, stack, mode, cell.clone()).strategy();
            let url = server.media_url("sample-64x64.gif");
            let location = match stack {
                Stack::Reqwest => {
                    let middleware = secure_media_reqwest::SecureMediaMiddleware::new(strategy).without_redirects();
                    let client = reqwest_middleware::ClientBuilder::new(reqwest_builder().build().unwrap())
                        .with(middleware)
                        .build();
                    let response = client.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 302, "{stack:?} {mode}");
                    response.headers()["location"].to_str().unwrap().to_owned()
                }
                Stack::Tower => {
                    use tower::ServiceExt;
                    let service = tower::ServiceBuilder::new()
                        .layer(secure_media_tower::SecureMediaLayer::new(strategy).without_redirects())
                        .service(hyper());
                    let request = http::Request::get(&url).body(HyperBody::default()).unwrap();
                    let response = service.oneshot(request).await.unwrap();
                    assert_eq!(response.status(), 302, "{stack:?} {mode}");
                    response.headers()["location"].to_str().unwrap().to_owned()
                }
            };
            let token = cell.current().unwrap().expose_secret().to_owned();
            let lower = location.to_ascii_lowercase();
            assert!(location.starts_with("https://elsewhere.example/"), "{stack:?} {mode}: {location}");
            assert!(
                !location.contains(&token) && !lower.contains("fat=") && !lower.contains("signature="),
                "{stack:?} {mode}: {location}"
            );
        }
    }
}

/// A CDN that redirects a presigned URL elsewhere, echoing its signature into `Location`: the
/// other origin gets no signature and none of the caller's credentials, on both stacks (reqwest
/// must not follow such a hop below the middleware).
#[tokio::test]
async fn a_cdn_redirect_carries_no_signature_to_another_origin() {
    for stack in STACKS {
        let elsewhere = Recorder::start(200).await;
        let location = format!("{}/moved.png?Expires=4000000000&Signature=SIG&Key-Pair-Id=K", elsewhere.base_url);
        let cdn = Recorder::start_with(302, Some(location)).await;
        let (fetched, cdn, _) = through_a_cdn_answering(stack, cdn).await;
        assert_eq!(fetched.status, 200, "{stack:?}");
        assert_eq!(cdn.heads().len(), 1, "{stack:?}");
        let heads = elsewhere.heads();
        assert_eq!(heads.len(), 1, "{stack:?}: the hop was followed");
        for credential in ["signature=", "expires=", "key-pair-id=", "cookie:", "authorization:", "referer:"] {
            assert!(!heads[0].contains(credential), "{stack:?}: another origin saw {credential:?}: {}", heads[0]);
        }
        assert_eq!(fetched.record.unwrap().hops, 1, "{stack:?}");
    }
}
