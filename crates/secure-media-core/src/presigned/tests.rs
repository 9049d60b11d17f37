use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::UNIX_EPOCH;

use super::*;
use crate::token::tests::jwt;
use crate::{resolve_str, LoginCell, ManualClock, StaticToken};

const DAY: Duration = Duration::from_secs(86_400);

/// An in-process presign endpoint: signs with a counter, answers after yielding once (as any
/// network call would), records every call's size.
struct FakeEndpoint {
    clock: Arc<ManualClock>,
    ttl: Duration,
    calls: Mutex<Vec<usize>>,
    signed: AtomicUsize,
    refuse_tokens: Mutex<Vec<String>>,
    max_batch: usize,
}

impl FakeEndpoint {
    fn new(clock: Arc<ManualClock>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock,
            ttl,
            calls: Mutex::default(),
            signed: AtomicUsize::new(0),
            refuse_tokens: Mutex::default(),
            max_batch: 100,
        })
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl Presigner for FakeEndpoint {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        let mut all = self.presign_batch(&[Arc::from(url)], token).await;
        all.remove(0)
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        tokio::task::yield_now().await;
        self.calls.lock().unwrap().push(urls.len());
        if self.refuse_tokens.lock().unwrap().iter().any(|t| t == token.expose_secret()) {
            return urls
                .iter()
                .map(|_| Err(AccessError::PresignUnauthorized { status: StatusCode::UNAUTHORIZED }))
                .collect();
        }
        let expires = (self.clock.now() + self.ttl).duration_since(UNIX_EPOCH).unwrap().as_secs();
        urls.iter()
            .map(|url| {
                let n = self.signed.fetch_add(1, AtomicOrdering::SeqCst);
                Ok(Presigned {
                    url: format!("{url}?Expires={expires}&Signature=sig{n}&Key-Pair-Id=k"),
                    expires_at: None,
                })
            })
            .collect()
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }
}

fn start() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000)))
}

fn hosts() -> SecureHosts {
    SecureHosts::cometchat("us").unwrap()
}

fn token(sub: &str) -> FileAccessToken {
    FileAccessToken::new(jwt(&format!(r#"{{"sub":"{sub}","exp":4000000000}}"#))).unwrap()
}

fn strategy(
    clock: &Arc<ManualClock>,
    endpoint: &Arc<FakeEndpoint>,
    tokens: Arc<dyn TokenSource>,
    config: PresignConfig,
) -> Arc<PresignedStrategy<Arc<FakeEndpoint>>> {
    Arc::new(PresignedStrategy::with_config(hosts(), tokens, endpoint.clone(), config).with_clock(clock.clone()))
}

fn media(n: usize) -> String {
    format!("https://files-us.cometchat.io/app/media/{n}.png")
}

async fn resolve(s: &PresignedStrategy<Arc<FakeEndpoint>>, url: &str) -> String {
    resolve_str(s, url).await.unwrap().0.into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_cold_resolutions_of_one_url_make_one_call() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { resolve(&s, &media(1)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(endpoint.calls(), 1);
    assert!(answers.iter().all(|a| a == &answers[0] && a.contains("Signature=sig0")));
    assert_eq!(s.flights.waiting(), 0);
}

#[tokio::test]
async fn thousand_distinct_cold_urls_are_batched() {
    for limit in [10usize, 50, 100] {
        let clock = start();
        let endpoint = FakeEndpoint::new(clock.clone(), DAY);
        let config = PresignConfig { batch_limit: limit, ..PresignConfig::default() };
        let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), config);
        // All 1,000 arrive before the first call returns: a screenful of thumbnails at once.
        let urls: Vec<String> = (0..1000).map(media).collect();
        let answers = futures::future::join_all(urls.iter().map(|u| resolve(&s, u))).await;
        for (url, answer) in urls.iter().zip(&answers) {
            assert!(answer.starts_with(&format!("{url}?Expires=")), "{answer}");
        }
        let calls = endpoint.calls.lock().unwrap().clone();
        assert!(calls.len() <= 1000usize.div_ceil(limit) + 1, "limit {limit}: {} calls", calls.len());
        assert!(calls.iter().all(|&size| size <= limit));
        assert_eq!(calls.iter().sum::<usize>(), 1000);
        assert_eq!(s.stats().presign_calls as usize, calls.len());
    }
}

#[tokio::test]
async fn a_hit_is_answered_without_waiting_and_keyed_by_the_clean_url() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let first = resolve(&s, &media(1)).await;
    // The same media with a stale fat, a fragment and an old signature is the same key.
    let messy = format!("{}?fat=old&Signature=x&Expires=1#frag", media(1));
    let view_source = url::Url::parse(&messy).unwrap();
    let view = MediaUrl::from_url(&view_source).unwrap();
    let ready = s.resolve_ready(&view).expect("a hit answers synchronously").unwrap();
    assert_eq!(ready.apply_to_str(&messy), format!("{first}#frag"));
    assert_eq!(endpoint.calls(), 1);
    assert_eq!(s.stats().cache_hits, 1);
}

#[tokio::test]
async fn a_url_one_second_from_expiry_is_not_handed_out() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let first = resolve(&s, &media(1)).await;
    clock.advance(DAY - Duration::from_secs(1));
    let url = url::Url::parse(&media(1)).unwrap();
    assert!(s.resolve_ready(&MediaUrl::from_url(&url).unwrap()).is_none());
    let second = resolve(&s, &media(1)).await;
    assert_ne!(first, second);
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test]
async fn near_expiry_one_caller_renews_while_others_use_the_old_url() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let old = resolve(&s, &media(1)).await;
    // 90% of the way through: inside the refresh-ahead window, still usable.
    clock.advance(DAY * 9 / 10);
    let url = url::Url::parse(&media(1)).unwrap();
    let view = MediaUrl::from_url(&url).unwrap();
    let ticket_holder = s
        .flights
        .enter(s.scope(&s.tokens.current().unwrap()), &view.clean_key(), &s.tokens.current().unwrap())
        .unwrap();
    // Someone else holds the renewal: we keep the old URL and make no call.
    assert_eq!(resolve(&s, &media(1)).await, old);
    assert_eq!(endpoint.calls(), 1);
    drop(ticket_holder);
}

#[tokio::test]
async fn near_expiry_the_first_caller_renews() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let old = resolve(&s, &media(1)).await;
    clock.advance(DAY * 9 / 10);
    let renewed = resolve(&s, &media(1)).await;
    assert_ne!(old, renewed);
    assert_eq!(endpoint.calls(), 2);
    // Renewed: fresh again, so the next resolution is a synchronous hit.
    let url = url::Url::parse(&media(1)).unwrap();
    assert!(s.resolve_ready(&MediaUrl::from_url(&url).unwrap()).is_some());
}

#[tokio::test]
async fn principals_never_share_presigned_urls() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::new());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    cell.set(token("alice"));
    let alice = resolve(&s, &media(1)).await;
    cell.set(token("bob"));
    let bob = resolve(&s, &media(1)).await;
    assert_ne!(alice, bob);
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test]
async fn logout_and_user_switch_purge_the_old_principal() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::new());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    cell.set(token("alice"));
    resolve(&s, &media(1)).await;
    resolve(&s, &media(2)).await;
    assert_eq!(s.cache().len(), 2);
    cell.set(token("alice")); // re-login as the same user keeps the cache
    assert_eq!(s.cache().len(), 2);
    cell.set(token("bob"));
    assert_eq!(s.cache().len(), 0);
    resolve(&s, &media(1)).await;
    cell.clear();
    assert_eq!(s.cache().len(), 0);
}

#[tokio::test]
async fn a_refused_url_is_dropped_and_retried_once() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let url = url::Url::parse(&media(1)).unwrap();
    let view = MediaUrl::from_url(&url).unwrap();
    let used = s.resolve(&view).await.unwrap();
    assert_eq!(s.rejected(&view, &used, StatusCode::FORBIDDEN).await, RetryDecision::RetryOnce);
    assert!(s.resolve_ready(&view).is_none());
    let again = s.resolve(&view).await.unwrap();
    assert_ne!(again.apply_to_str(url.as_str()), used.apply_to_str(url.as_str()));
    assert_eq!(s.rejected(&view, &used, StatusCode::NOT_FOUND).await, RetryDecision::GiveUp);
}

#[tokio::test]
async fn a_refused_token_at_the_endpoint_is_renewed_once() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::with_relogin(|| async { Ok(token("renewed")) }));
    let stale = cell.set(FileAccessToken::new("stale-opaque").unwrap());
    endpoint.refuse_tokens.lock().unwrap().push(stale.expose_secret().to_owned());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    let url = resolve(&s, &media(1)).await;
    assert!(url.contains("Signature="));
    assert_eq!(cell.current().unwrap().subject(), Some("renewed"));
    assert_eq!(endpoint.calls(), 2);
    assert_eq!(s.stats().token_refreshes, 1);

    // A token that stays refused is an error after one renewal, not a loop.
    let always = Arc::new(LoginCell::with_relogin(|| async { FileAccessToken::new("still-bad") }));
    always.set(FileAccessToken::new("bad").unwrap());
    endpoint.refuse_tokens.lock().unwrap().extend(["bad".to_owned(), "still-bad".to_owned()]);
    let s = strategy(&clock, &endpoint, always, PresignConfig::default());
    let err = resolve_str(&*s, &media(2)).await.unwrap_err();
    assert!(matches!(err, AccessError::PresignUnauthorized { .. }));
}

#[tokio::test]
async fn the_cache_bound_holds_under_many_urls() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let config = PresignConfig { cache_capacity: 100, ..PresignConfig::default() };
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), config);
    for n in 0..500 {
        resolve(&s, &media(n)).await;
        assert!(s.cache().len() <= 100);
    }
}

#[tokio::test]
async fn too_many_waiting_keys_is_busy_not_unbounded() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let config = PresignConfig { max_waiting: 2, ..PresignConfig::default() };
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), config);
    let t = s.tokens.current().unwrap();
    let _a = s.flights.enter("x", "1", &t).unwrap();
    let _b = s.flights.enter("x", "2", &t).unwrap();
    assert!(matches!(s.flights.enter("x", "3", &t), Err(AccessError::Busy(2))));
    // Joining an existing flight is always allowed.
    assert!(s.flights.enter("x", "1", &t).is_ok());
}

#[tokio::test]
async fn a_cancelled_driver_does_not_strand_its_waiters() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    // Start a resolution and drop it mid-call (the fake yields once inside the call).
    {
        let url = media(7);
        let fut = resolve(&s, &url);
        futures::pin_mut!(fut);
        assert!(futures::FutureExt::now_or_never(fut.as_mut()).is_none());
    }
    assert_eq!(s.flights.waiting(), 0);
    assert!(resolve(&s, &media(7)).await.contains("Signature="));
}

#[tokio::test]
async fn non_secure_and_invalid_urls_pass_through_untouched() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    for input in ["https://example.com/a.png", "not a url", "https://files-us.cometchat.io.evil.com/a.png"] {
        assert_eq!(resolve(&s, input).await, input);
    }
    assert_eq!(endpoint.calls(), 0);
}
