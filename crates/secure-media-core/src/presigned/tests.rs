use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crate::token::tests::jwt;
use crate::{resolve_str, LoginCell, ManualClock, StaticToken};

const DAY: Duration = Duration::from_secs(86_400);

type Answer = Box<dyn Fn(&str, usize) -> Presigned + Send + Sync>;

/// An in-process presign endpoint: signs with a counter, answers after yielding once (as any
/// network call would), records every call's size and token. Tests may hold `gate` to keep
/// calls in flight, and replace the answer.
struct FakeEndpoint {
    clock: Arc<ManualClock>,
    ttl: Duration,
    calls: Mutex<Vec<usize>>,
    tokens_seen: Mutex<Vec<String>>,
    signed: AtomicUsize,
    refuse_tokens: Mutex<Vec<String>>,
    max_batch: usize,
    gate: futures::lock::Mutex<()>,
    answer: Mutex<Option<Answer>>,
}

impl FakeEndpoint {
    fn new(clock: Arc<ManualClock>, ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock,
            ttl,
            calls: Mutex::default(),
            tokens_seen: Mutex::default(),
            signed: AtomicUsize::new(0),
            refuse_tokens: Mutex::default(),
            max_batch: 100,
            gate: futures::lock::Mutex::new(()),
            answer: Mutex::default(),
        })
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn refuse(&self, token: &FileAccessToken) {
        self.refuse_tokens.lock().unwrap().push(token.expose_secret().to_owned());
    }
    fn answer_with(&self, answer: impl Fn(&str, usize) -> Presigned + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Some(Box::new(answer));
    }
}

#[async_trait]
impl Presigner for FakeEndpoint {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        let mut all = self.presign_batch(&[Arc::from(url)], token).await;
        all.remove(0)
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let _open = self.gate.lock().await;
        tokio::task::yield_now().await;
        self.calls.lock().unwrap().push(urls.len());
        self.tokens_seen.lock().unwrap().push(token.expose_secret().to_owned());
        if self.refuse_tokens.lock().unwrap().iter().any(|t| t == token.expose_secret()) {
            return urls
                .iter()
                .map(|_| Err(AccessError::PresignUnauthorized { status: StatusCode::UNAUTHORIZED }))
                .collect();
        }
        let expires = (self.clock.now() + self.ttl).duration_since(UNIX_EPOCH).unwrap().as_secs();
        let custom = self.answer.lock().unwrap();
        urls.iter()
            .map(|url| {
                let n = self.signed.fetch_add(1, AtomicOrdering::SeqCst);
                if let Some(answer) = &*custom {
                    return Ok(answer(url, n));
                }
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

/// A token whose payload names `sub` but whose signature is not the issuer's.
fn forged(sub: &str) -> FileAccessToken {
    let real = jwt(&format!(r#"{{"sub":"{sub}","exp":4000000000}}"#));
    let unsigned = real.rsplit_once('.').unwrap().0;
    FileAccessToken::new(format!("{unsigned}.Zm9yZ2Vk")).unwrap()
}

/// Polls once without waiting (the runtime polls it again when it is awaited).
fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    futures::FutureExt::now_or_never(future)
}

fn view_of(url: &url::Url) -> MediaUrl<'_> {
    MediaUrl::from_url(url).unwrap()
}

fn strategy(
    clock: &Arc<ManualClock>,
    endpoint: &Arc<FakeEndpoint>,
    tokens: Arc<dyn TokenSource>,
    config: PresignConfig,
) -> Arc<PresignedStrategy<Arc<FakeEndpoint>>> {
    Arc::new(PresignedStrategy::new(hosts(), tokens, endpoint.clone()).with_config(config).with_clock(clock.clone()))
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
        // The first calls start before the rest arrive (no timers): up to one per call slot.
        let slots = PresignConfig::default().max_concurrent_calls;
        assert!(calls.len() <= 1000usize.div_ceil(limit) + slots, "limit {limit}: {} calls", calls.len());
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
    let token = s.tokens.current().unwrap();
    let ticket_holder = s.flights.enter(s.trusted_scope(&token).unwrap(), &view.clean_key(), false, &token).unwrap();
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
async fn a_renewal_ahead_that_fails_still_serves_the_url_that_works() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let old = resolve(&s, &media(1)).await;
    clock.advance(DAY * 9 / 10);
    // The endpoint now refuses: the renewal fails, the current URL (still in date) serves.
    endpoint.refuse(&token("a"));
    assert_eq!(resolve(&s, &media(1)).await, old);
    assert_eq!(endpoint.calls(), 2, "one renewal was tried");
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
    // Media 1 is also under alice's token scope: it was presigned before her token was accepted.
    assert_eq!(s.cache().len(), 3);
    cell.set(token("alice")); // re-login as the same user keeps the cache
    assert_eq!(s.cache().len(), 3);
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
    let cell = Arc::new(LoginCell::new().with_relogin(|| async { Ok(token("renewed")) }));
    let stale = cell.set(FileAccessToken::new("stale-opaque").unwrap());
    endpoint.refuse_tokens.lock().unwrap().push(stale.expose_secret().to_owned());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    let url = resolve(&s, &media(1)).await;
    assert!(url.contains("Signature="));
    assert_eq!(cell.current().unwrap().subject(), Some("renewed"));
    assert_eq!(endpoint.calls(), 2);
    assert_eq!(s.stats().token_refreshes, 1);

    // A token that stays refused is an error after one renewal, not a loop.
    let always = Arc::new(LoginCell::new().with_relogin(|| async { FileAccessToken::new("still-bad") }));
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
    let s = PresignedStrategy::new(hosts(), Arc::new(StaticToken::new(token("a"))), endpoint.clone())
        .with_cache(Arc::new(MemoryPresignCache::new(100)))
        .with_clock(clock.clone());
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
    let _a = s.flights.enter("x", "1", false, &t).unwrap();
    let _b = s.flights.enter("x", "2", false, &t).unwrap();
    assert!(matches!(s.flights.enter("x", "3", false, &t), Err(AccessError::Busy(2))));
    // Joining an existing flight is always allowed.
    assert!(s.flights.enter("x", "1", false, &t).is_ok());
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

// ---- A principal scope is never taken from an unverified claim ----

#[tokio::test]
async fn a_forged_token_naming_alice_gets_no_hit_on_her_urls_in_a_shared_cache() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let alice = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("alice"))), PresignConfig::default());
    let url = url::Url::parse(&media(1)).unwrap();
    resolve(&alice, &media(1)).await;
    assert!(alice.resolve_ready(&view_of(&url)).is_some(), "alice, accepted by the endpoint, hits");
    let cached = alice.cache().len();

    let forged = forged("alice");
    endpoint.refuse(&forged);
    let attacker = PresignedStrategy::new(hosts(), Arc::new(StaticToken::new(forged)), endpoint.clone())
        .with_cache(alice.cache().clone())
        .with_clock(clock.clone());
    assert!(attacker.resolve_ready(&view_of(&url)).is_none());
    let error = resolve_str(&attacker, &media(1)).await.unwrap_err();
    assert!(matches!(error, AccessError::RefreshFailed(_)), "{error:?}");
    assert_eq!(attacker.stats().cache_hits, 0);
    assert_eq!(endpoint.calls(), 2, "the forged token reached the endpoint, which refused it");
    assert_eq!(alice.cache().len(), cached, "nothing cached for the forged token");
}

#[tokio::test]
async fn a_forged_token_set_after_alice_in_the_same_cell_gets_no_hit() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::new());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    cell.set(token("alice"));
    resolve(&s, &media(1)).await;
    let forged = forged("alice");
    endpoint.refuse(&forged);
    cell.set(forged); // same claimed principal: no purge, so only proof keeps the URL away
    let url = url::Url::parse(&media(1)).unwrap();
    assert!(s.resolve_ready(&view_of(&url)).is_none());
    assert!(resolve_str(&*s, &media(1)).await.is_err());
    assert_eq!(s.stats().cache_hits, 0);
}

#[tokio::test]
async fn a_token_uses_its_sub_scope_once_the_endpoint_accepted_it_even_as_another_copy() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::new());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    cell.set(token("alice"));
    let first = resolve(&s, &media(1)).await;
    // The app sets the same token again (a new Arc): proven by its secret, so it hits.
    cell.set(token("alice"));
    assert_eq!(resolve(&s, &media(1)).await, first);
    // A renewed alice token proves itself with one call, then shares alice's URLs.
    cell.set(FileAccessToken::new(jwt(r#"{"sub":"alice","exp":4000000001}"#)).unwrap());
    resolve(&s, &media(2)).await;
    assert_eq!(resolve(&s, &media(1)).await, first);
    assert_eq!(endpoint.calls(), 2);
}

#[tokio::test]
async fn another_holder_of_the_same_token_shares_its_urls_before_proving_it() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let first = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("alice"))), PresignConfig::default());
    let url = resolve(&first, &media(1)).await;
    // Another process on the same shared cache, holding the very same token: its own scope.
    let second = PresignedStrategy::new(hosts(), Arc::new(StaticToken::new(token("alice"))), endpoint.clone())
        .with_cache(first.cache().clone())
        .with_clock(clock.clone());
    assert_eq!(resolve_str(&second, &media(1)).await.unwrap().0, url);
    assert_eq!(endpoint.calls(), 1);
}

#[tokio::test]
async fn a_renewed_token_proves_itself_with_one_url_then_hits_its_principals_urls() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::new());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    cell.set(token("alice"));
    let urls: Vec<String> = (0..20).map(media).collect();
    let before = futures::future::join_all(urls.iter().map(|u| resolve(&s, u))).await;
    let (calls, signed) = (endpoint.calls(), endpoint.signed.load(AtomicOrdering::SeqCst));
    // A renewed token for the same user: unproven, so none of alice's URLs until it is accepted.
    cell.set(FileAccessToken::new(jwt(r#"{"sub":"alice","exp":4000000001}"#)).unwrap());
    let after = futures::future::join_all(urls.iter().map(|u| resolve(&s, u))).await;
    assert_eq!(endpoint.calls(), calls + 1, "one proving call");
    assert_eq!(endpoint.signed.load(AtomicOrdering::SeqCst), signed + 1, "with one URL");
    let same = before.iter().zip(&after).filter(|(b, a)| b == a).count();
    assert_eq!(same, 19, "the other 19 are alice's cached URLs");
}

// ---- Presigned URLs are checked before use ----

#[tokio::test]
async fn a_presigned_url_pointing_elsewhere_is_a_clear_error_naming_only_the_clean_url() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    endpoint.answer_with(|url, _| Presigned {
        url: url.replace("files-us.cometchat.io", "evil.example") + "?Expires=4000000000&Signature=SECRET",
        expires_at: None,
    });
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let error = resolve_str(&*s, &media(1)).await.unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, AccessError::Presign { ref url, .. } if *url == media(1)), "{error:?}");
    assert!(text.contains("evil.example") && !text.contains("SECRET"), "{text}");
    assert_eq!(s.cache().len(), 0);

    // The same answer on a listed CDN host is used.
    endpoint.answer_with(|url, _| Presigned {
        url: url.replace("files-us.cometchat.io", "cdn.example.com") + "?Expires=4000000000&Signature=s",
        expires_at: None,
    });
    let cdn = SecureHosts::new().with_host("cdn.example.com").unwrap();
    let config = PresignConfig { cdn_hosts: cdn, ..PresignConfig::default() };
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), config);
    assert!(resolve(&s, &media(1)).await.starts_with("https://cdn.example.com/app/media/1.png?"));
}

#[tokio::test]
async fn a_cached_url_pointing_elsewhere_is_a_miss_and_is_removed() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("alice"))), PresignConfig::default());
    resolve(&s, &media(2)).await; // alice is accepted
    let planted = url::Url::parse("https://evil.example/app/media/1.png?Expires=4000000000&Signature=x").unwrap();
    let now = clock.now();
    let alice: Arc<str> = "sub:alice".into();
    s.cache().put(&CacheKey::new(&alice, &media(1)), SignedUrl::new(&media(1), planted, now, now + DAY)).await;

    let url = url::Url::parse(&media(1)).unwrap();
    assert!(s.resolve_ready(&view_of(&url)).is_none());
    let answer = resolve(&s, &media(1)).await;
    assert!(answer.starts_with(&format!("{}?Expires=", media(1))), "{answer}");
    assert_eq!(endpoint.calls(), 2);
    let cached = s.cache().get_ready(&CacheKey::new(&alice, &media(1))).unwrap();
    assert_eq!(cached.url().host_str(), Some("files-us.cometchat.io"));
}

#[tokio::test]
async fn a_plain_http_presigned_url_is_refused_unless_the_secure_hosts_allow_http() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    endpoint.answer_with(|url, _| Presigned { url: url.replacen("https:", "http:", 1), expires_at: None });
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    assert!(resolve_str(&*s, &media(1)).await.unwrap_err().to_string().contains("plain http"));
    let loose = Arc::new(
        PresignedStrategy::new(hosts().allowing_http(), Arc::new(StaticToken::new(token("a"))), endpoint.clone())
            .with_config(PresignConfig::default())
            .with_clock(clock.clone()),
    );
    assert!(resolve(&loose, &media(1)).await.starts_with("http://files-us.cometchat.io/"));
}

// ---- No panic on what an endpoint or a cache sends ----

#[tokio::test]
async fn absurd_expiries_from_the_endpoint_or_a_cache_are_clamped_not_a_panic() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    endpoint.answer_with(|url, n| Presigned {
        url: format!(
            "{url}?Expires=9223372036854775808&X-Amz-Date=20261128T101500Z&X-Amz-Expires=18446744073709551615&n={n}"
        ),
        expires_at: Some(UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX)) * 60),
    });
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    resolve(&s, &media(1)).await;
    let scope_a: Arc<str> = "sub:a".into();
    let cached = s.cache().get_ready(&CacheKey::new(&scope_a, &media(1))).unwrap();
    assert_eq!(cached.lifetime(), MAX_URL_LIFETIME);
    clock.advance(MAX_URL_LIFETIME);
    assert!(resolve(&s, &media(1)).await.ends_with("n=1"), "renewed at the clamped expiry");

    // A cache may hold anything: times far apart, reversed, at the extremes.
    let url = url::Url::parse(&media(3)).unwrap();
    let far = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    for (fetched, expires) in [(UNIX_EPOCH, far), (far, UNIX_EPOCH), (clock.now(), far), (UNIX_EPOCH, UNIX_EPOCH)] {
        let planted = SignedUrl::new(&media(3), url.clone(), fetched, expires);
        s.cache().put(&CacheKey::new(&scope_a, &media(3)), planted).await;
        let _ = s.resolve_ready(&view_of(&url));
        assert!(resolve(&s, &media(3)).await.starts_with(&media(3)));
    }
}

#[tokio::test]
async fn zero_and_negative_lifetimes_are_clear_errors() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let now = clock.now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    for (n, expires) in [now, now - 60, 0].into_iter().enumerate() {
        endpoint.answer_with(move |url, _| Presigned {
            url: format!("{url}?Expires={expires}&Signature=s"),
            expires_at: None,
        });
        let error = resolve_str(&*s, &media(10 + n)).await.unwrap_err();
        assert!(error.to_string().contains("already expired"), "{error}");
    }
}

// ---- Only the refused URL is dropped ----

#[tokio::test]
async fn a_refusal_drops_only_the_refused_url_not_a_fresher_one() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), PresignConfig::default());
    let url = url::Url::parse(&media(1)).unwrap();
    let view = view_of(&url);
    let old = s.resolve(&view).await.unwrap();
    // Meanwhile the URL was renewed ahead of expiry: a fresher one is cached.
    clock.advance(DAY * 9 / 10);
    let fresh = s.resolve(&view).await.unwrap();
    assert_ne!(fresh.apply_to_str(url.as_str()), old.apply_to_str(url.as_str()));
    // The late refusal of the old URL keeps the fresh one.
    assert_eq!(s.rejected(&view, &old, StatusCode::FORBIDDEN).await, RetryDecision::RetryOnce);
    let hit = s.resolve_ready(&view).expect("the fresh URL is still cached").unwrap();
    assert_eq!(hit.apply_to_str(url.as_str()), fresh.apply_to_str(url.as_str()));
    // Its own refusal drops it.
    s.rejected(&view, &hit, StatusCode::FORBIDDEN).await;
    assert!(s.resolve_ready(&view).is_none());
    assert_eq!(endpoint.calls(), 2);
}

// ---- Dropped callers never block later ones ----

#[tokio::test]
async fn a_dropped_caller_frees_its_place_in_the_waiting_bound() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let config = PresignConfig { max_waiting: 2, ..PresignConfig::default() };
    let s = strategy(&clock, &endpoint, Arc::new(StaticToken::new(token("a"))), config);
    resolve(&s, &media(0)).await;

    let gate = endpoint.gate.lock().await;
    let (one, two, three, four) = (media(1), media(2), media(3), media(4));
    let mut driving = Box::pin(resolve_str(&*s, &one));
    assert!(poll_once(&mut driving).is_none(), "in the endpoint, held by the gate");
    let mut waiting = Box::pin(resolve_str(&*s, &two));
    assert!(poll_once(&mut waiting).is_none());
    assert_eq!(s.flights.waiting(), 2);
    let mut refused = Box::pin(resolve_str(&*s, &three));
    assert!(matches!(poll_once(&mut refused), Some(Err(AccessError::Busy(2)))));

    drop(waiting);
    assert_eq!(s.flights.waiting(), 1, "the dropped caller's flight is closed");
    let mut later = Box::pin(resolve_str(&*s, &four));
    assert!(poll_once(&mut later).is_none(), "room again: not Busy");
    drop(gate);
    assert!(driving.await.is_ok());
    assert!(later.await.unwrap().0.contains("Signature="));
    assert_eq!(s.flights.waiting(), 0);
}

#[tokio::test]
async fn a_caller_dropped_before_a_token_rotation_never_blocks_the_next_caller() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cell = Arc::new(LoginCell::new());
    let s = strategy(&clock, &endpoint, cell.clone(), PresignConfig::default());
    let (t1, t2) = (
        FileAccessToken::new(jwt(r#"{"sub":"alice","exp":4000000001}"#)).unwrap(),
        FileAccessToken::new(jwt(r#"{"sub":"alice","exp":4000000002}"#)).unwrap(),
    );
    let t2_secret = t2.expose_secret().to_owned();
    // Both tokens are alice's and accepted: they share her scope, and so her flights.
    cell.set(t2);
    resolve(&s, &media(8)).await;
    let t1 = cell.set(t1);
    resolve(&s, &media(9)).await;

    let gate = endpoint.gate.lock().await;
    let (one, two) = (media(1), media(2));
    let mut driving = Box::pin(resolve_str(&*s, &one));
    assert!(poll_once(&mut driving).is_none());
    let mut abandoned = Box::pin(resolve_str(&*s, &two));
    assert!(poll_once(&mut abandoned).is_none());
    drop(abandoned);
    cell.set(FileAccessToken::new(t2_secret.clone()).unwrap());
    drop(gate);
    assert!(driving.await.is_ok());
    endpoint.refuse(&t1); // the old token is revoked after the rotation

    let answer = resolve_str(&*s, &two).await.expect("the next caller is not stuck with the old flight");
    assert!(answer.0.contains("Signature="));
    assert_eq!(endpoint.tokens_seen.lock().unwrap().last(), Some(&t2_secret), "presigned with the current token");
    assert_eq!(s.stats().token_refreshes, 0);
    assert_eq!(s.flights.waiting(), 0);
}

// ---- Every setting applies, however the strategy is built ----

type Built = (&'static str, Arc<dyn MediaAccessStrategy>);

/// The strategy built the three ways an app can: `with_cache(..).with_config(..)`, the other
/// order, and the `SecureMedia` builder, each with its own endpoint and a cache of five.
fn each_way(
    clock: &Arc<ManualClock>,
    tokens: impl Fn() -> Arc<dyn TokenSource>,
    config: &PresignConfig,
) -> Vec<(Built, Arc<FakeEndpoint>)> {
    let mut built = Vec::new();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s: Arc<dyn MediaAccessStrategy> = Arc::new(
        PresignedStrategy::new(hosts(), tokens(), endpoint.clone())
            .with_cache(Arc::new(MemoryPresignCache::new(5)))
            .with_config(config.clone())
            .with_clock(clock.clone()),
    );
    built.push((("cache then config", s), endpoint));
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let s: Arc<dyn MediaAccessStrategy> = Arc::new(
        PresignedStrategy::new(hosts(), tokens(), endpoint.clone())
            .with_clock(clock.clone())
            .with_config(config.clone())
            .with_cache(Arc::new(MemoryPresignCache::new(5))),
    );
    built.push((("config then cache", s), endpoint));
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let media = crate::SecureMedia::builder("app")
        .region("us")
        .mode(crate::SecureMediaMode::Presigned)
        .token_source(tokens())
        .presigner(endpoint.clone())
        .presign_config(config.clone())
        .presign_cache_capacity(5)
        .clock(clock.clone())
        .build()
        .unwrap();
    built.push((("builder", media.strategy()), endpoint));
    built
}

fn ready(s: &dyn MediaAccessStrategy, url: &str) -> bool {
    let url = url::Url::parse(url).unwrap();
    s.resolve_ready(&view_of(&url)).is_some()
}

#[tokio::test]
async fn the_safety_margin_setting_applies() {
    let config = PresignConfig { safety_margin: Duration::from_secs(3600), ..PresignConfig::default() };
    let clock = start();
    for ((way, s), _) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        clock.set(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        resolve_str(&*s, &media(1)).await.unwrap();
        clock.advance(DAY - Duration::from_secs(3600) + Duration::from_secs(1));
        assert!(!ready(&*s, &media(1)), "{way}: within the hour-long margin");
    }
}

#[tokio::test]
async fn the_default_ttl_setting_applies() {
    let config = PresignConfig { default_ttl: Duration::from_secs(3600), ..PresignConfig::default() };
    let clock = start();
    for ((way, s), endpoint) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        clock.set(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        endpoint.answer_with(|url, _| Presigned { url: format!("{url}?Signature=no-expiry"), expires_at: None });
        resolve_str(&*s, &media(1)).await.unwrap();
        clock.advance(Duration::from_secs(30 * 60));
        assert!(ready(&*s, &media(1)), "{way}: the default 15 min would have expired it");
        clock.advance(Duration::from_secs(31 * 60));
        assert!(!ready(&*s, &media(1)), "{way}");
    }
}

#[tokio::test]
async fn the_refresh_ahead_percent_setting_applies() {
    let config = PresignConfig { refresh_ahead_percent: 0, ..PresignConfig::default() };
    let clock = start();
    for ((way, s), endpoint) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        clock.set(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let first = resolve_str(&*s, &media(1)).await.unwrap().0.into_owned();
        clock.advance(DAY * 9 / 10);
        assert_eq!(resolve_str(&*s, &media(1)).await.unwrap().0, first, "{way}: no renewal ahead");
        assert_eq!(endpoint.calls(), 1, "{way}");
    }
}

#[tokio::test]
async fn the_batch_limit_setting_applies() {
    let config = PresignConfig { batch_limit: 3, ..PresignConfig::default() };
    let clock = start();
    for ((way, s), endpoint) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        let urls: Vec<String> = (0..20).map(media).collect();
        futures::future::join_all(urls.iter().map(|u| resolve_str(&*s, u))).await;
        let calls = endpoint.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|&size| size <= 3) && calls.iter().sum::<usize>() == 20, "{way}: {calls:?}");
    }
}

#[tokio::test]
async fn the_max_waiting_setting_applies() {
    let config = PresignConfig { max_waiting: 1, ..PresignConfig::default() };
    let clock = start();
    for ((way, s), endpoint) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        let gate = endpoint.gate.lock().await;
        let (one, two) = (media(1), media(2));
        let mut first = Box::pin(resolve_str(&*s, &one));
        assert!(poll_once(&mut first).is_none());
        assert!(matches!(resolve_str(&*s, &two).await, Err(AccessError::Busy(1))), "{way}");
        drop(gate);
        assert!(first.await.is_ok());
    }
}

#[tokio::test]
async fn the_fixed_scope_setting_applies() {
    let config = PresignConfig { scope: Some("team".into()), ..PresignConfig::default() };
    let clock = start();
    let cells: Mutex<Vec<Arc<LoginCell>>> = Mutex::default();
    let tokens = || -> Arc<dyn TokenSource> {
        let cell = Arc::new(LoginCell::new());
        cells.lock().unwrap().push(cell.clone());
        cell
    };
    let built = each_way(&clock, tokens, &config);
    let cells = cells.into_inner().unwrap();
    for (((way, s), endpoint), cell) in built.into_iter().zip(cells) {
        cell.set(token("alice"));
        let alice = resolve_str(&*s, &media(1)).await.unwrap().0.into_owned();
        // A user switch purges nothing and shares the team's URLs.
        cell.set(token("bob"));
        assert_eq!(resolve_str(&*s, &media(1)).await.unwrap().0, alice, "{way}");
        assert_eq!(endpoint.calls(), 1, "{way}");
    }
}

#[tokio::test]
async fn a_cache_of_five_holds_at_most_five() {
    let config = PresignConfig::default();
    let clock = start();
    for ((way, s), _) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        for n in 0..40 {
            resolve_str(&*s, &media(n)).await.unwrap();
        }
        let held = (0..40).filter(|&n| ready(&*s, &media(n))).count();
        assert!((1..=5).contains(&held), "{way}: {held} cached");
    }
}

#[tokio::test]
async fn the_cdn_hosts_setting_applies() {
    let cdn = SecureHosts::new().with_host("cdn.example.com").unwrap();
    let config = PresignConfig { cdn_hosts: cdn, ..PresignConfig::default() };
    let clock = start();
    for ((way, s), endpoint) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &config) {
        endpoint.answer_with(|url, _| Presigned {
            url: url.replace("files-us.cometchat.io", "cdn.example.com") + "?Expires=4000000000&Signature=s",
            expires_at: None,
        });
        let answer = resolve_str(&*s, &media(1)).await.unwrap().0.into_owned();
        assert!(answer.starts_with("https://cdn.example.com/"), "{way}");
    }
    for ((way, s), endpoint) in each_way(&clock, || Arc::new(StaticToken::new(token("a"))), &PresignConfig::default()) {
        endpoint.answer_with(|url, _| Presigned {
            url: url.replace("files-us.cometchat.io", "cdn.example.com") + "?Expires=4000000000&Signature=s",
            expires_at: None,
        });
        assert!(resolve_str(&*s, &media(1)).await.is_err(), "{way}: not listed, not used");
    }
}

// ---- Overlapping calls and asking ahead ----

/// A presigner that counts the calls in flight and holds each until `open` is unlocked.
#[derive(Default)]
struct Overlap {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    calls: Mutex<Vec<usize>>,
    open: futures::lock::Mutex<()>,
}

#[async_trait]
impl Presigner for Overlap {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        self.presign_batch(&[Arc::from(url)], token).await.remove(0)
    }

    async fn presign_batch(&self, urls: &[Arc<str>], _: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        let now = self.in_flight.fetch_add(1, AtomicOrdering::SeqCst) + 1;
        self.most.fetch_max(now, AtomicOrdering::SeqCst);
        self.calls.lock().unwrap().push(urls.len());
        drop(self.open.lock().await);
        self.in_flight.fetch_sub(1, AtomicOrdering::SeqCst);
        urls.iter()
            .map(|url| Ok(Presigned { url: format!("{url}?Expires=4000000000&Signature=s"), expires_at: None }))
            .collect()
    }

    fn max_batch(&self) -> usize {
        100
    }
}

fn overlapping(config: PresignConfig) -> (Arc<Overlap>, Arc<PresignedStrategy<Arc<Overlap>>>) {
    let presigner = Arc::new(Overlap::default());
    // No claims to prove: the strategy's scope is the token's from the start.
    let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::parse("opaque-token").unwrap());
    let s = PresignedStrategy::new(hosts(), tokens, presigner.clone()).with_config(config).with_clock(start());
    (presigner, Arc::new(s))
}

#[tokio::test]
async fn misses_arriving_during_a_call_start_calls_of_their_own_up_to_the_limit() {
    let (presigner, s) = overlapping(PresignConfig { max_concurrent_calls: 3, ..PresignConfig::default() });
    let held = presigner.open.lock().await;
    let settle = || async {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
    };
    let load = |n: usize| {
        let s = s.clone();
        tokio::spawn(async move {
            let url = media(n);
            resolve_str(&*s, &url).await.map(|(signed, _)| signed.into_owned())
        })
    };
    // One miss at a time, each while the calls before it are still out: a call each, up to three.
    let mut tasks = Vec::new();
    for n in 0..3 {
        tasks.push(load(n));
        settle().await;
        assert_eq!(presigner.in_flight.load(AtomicOrdering::SeqCst), n + 1);
    }
    // Five more: no slot is free, so they wait, together.
    tasks.extend((3..8).map(load));
    settle().await;
    assert_eq!(presigner.in_flight.load(AtomicOrdering::SeqCst), 3, "three calls in flight at once, no more");
    drop(held);
    for (n, task) in tasks.into_iter().enumerate() {
        assert!(task.await.unwrap().unwrap().starts_with(&media(n)));
    }
    assert_eq!(presigner.most.load(AtomicOrdering::SeqCst), 3);
    assert_eq!(*presigner.calls.lock().unwrap(), vec![1, 1, 1, 5], "the five waiting rode in one call");
}

#[tokio::test]
async fn misses_started_together_ride_in_one_call() {
    let (presigner, s) = overlapping(PresignConfig::default());
    let urls: Vec<String> = (0..16).map(media).collect();
    // A window of 16 loads, as a gallery starts them: all before any call.
    let answers = futures::future::join_all(urls.iter().map(|url| resolve_str(&*s, url))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(*presigner.calls.lock().unwrap(), vec![16], "one call for the window, not one per miss");
}

#[tokio::test]
async fn asking_ahead_presigns_a_screenful_in_full_concurrent_batches() {
    let (presigner, s) = overlapping(PresignConfig { batch_limit: 50, ..PresignConfig::default() });
    let mut urls: Vec<String> = (0..200).map(media).collect();
    urls.push("https://elsewhere.example/a.png".into()); // not ours: left alone
    urls.push(media(7)); // twice: once
    let held = presigner.open.lock().await;
    let ahead = {
        let (s, urls) = (s.clone(), urls.clone());
        tokio::spawn(async move { s.prefetch(&urls.iter().map(String::as_str).collect::<Vec<_>>()).await })
    };
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert_eq!(presigner.in_flight.load(AtomicOrdering::SeqCst), 4, "four batches at once, a slot left to loads");
    drop(held);
    ahead.await.unwrap();
    assert_eq!(*presigner.calls.lock().unwrap(), vec![50, 50, 50, 50]);
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    for url in &urls[..200] {
        assert!(ready(&*s, url), "{url} is a hit, answered without waiting");
    }
    s.prefetch(&refs).await;
    assert_eq!(presigner.calls.lock().unwrap().len(), 4, "what the cache holds needs nothing");
    assert_eq!(s.stats().presign_calls, 4);
}

#[tokio::test]
async fn asking_ahead_is_nothing_to_do_for_the_token_modes() {
    let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::new(token("a")));
    let embedded = crate::EmbeddedStrategy::new(hosts(), tokens.clone());
    let header = crate::HeaderBasedStrategy::new(hosts(), tokens);
    let urls = [media(1)];
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    embedded.prefetch(&refs).await;
    header.prefetch(&refs).await;
    assert_eq!(embedded.stats(), StrategyStats::default());
    assert_eq!(header.stats(), StrategyStats::default());
}

#[tokio::test]
async fn asking_ahead_with_a_renewed_token_proves_it_once_and_finds_its_principals_urls() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let login = Arc::new(LoginCell::new());
    login.set(token("alice"));
    let s = strategy(&clock, &endpoint, login.clone(), PresignConfig::default());
    let urls: Vec<String> = (0..100).map(media).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    s.prefetch(&refs).await;
    // Cold: nothing to find under the claimed principal, so the batches prove the token.
    assert_eq!(*endpoint.calls.lock().unwrap(), vec![50, 50]);
    // A renewal: a new token for the same user.
    login.set(FileAccessToken::new(jwt(r#"{"sub":"alice","exp":4000000001}"#)).unwrap());
    s.prefetch(&refs).await;
    assert_eq!(endpoint.calls(), 3, "one call proves the new token; the rest are its principal's");
    for url in &urls {
        assert!(ready(&*s, url), "{url}");
    }
}

#[tokio::test]
async fn asking_ahead_leaves_room_and_a_call_slot_to_the_loads_under_way() {
    let config = PresignConfig { max_waiting: 20, batch_limit: 5, max_concurrent_calls: 3, ..PresignConfig::default() };
    let (presigner, s) = overlapping(config);
    let held = presigner.open.lock().await;
    let ahead = {
        let s = s.clone();
        tokio::spawn(async move {
            let urls: Vec<String> = (0..100).map(media).collect();
            s.prefetch(&urls.iter().map(String::as_str).collect::<Vec<_>>()).await
        })
    };
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert_eq!(presigner.in_flight.load(AtomicOrdering::SeqCst), 2, "asking ahead uses all slots but one");
    let load = {
        let s = s.clone();
        tokio::spawn(async move { resolve_str(&*s, &media(500)).await.map(|(url, _)| url.into_owned()) })
    };
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert_eq!(presigner.in_flight.load(AtomicOrdering::SeqCst), 3, "the load got the slot left");
    drop(held);
    assert!(load.await.unwrap().unwrap().starts_with(&media(500)), "not Busy, not queued behind the list");
    ahead.await.unwrap();
    for n in 0..100 {
        assert!(ready(&*s, &media(n)));
    }
}

/// A shared cache as another process sees it: leases on some URLs held elsewhere, and what their
/// holder left (its URL, a URL pointing elsewhere, or nothing: it gave up). Records what this
/// process gave up.
struct FleetCache {
    memory: MemoryPresignCache,
    theirs: Mutex<HashMap<String, Option<SignedUrl>>>,
    released: Mutex<Vec<String>>,
    refused: Mutex<Vec<String>>,
}

use std::collections::HashMap;

#[async_trait]
impl PresignCache for FleetCache {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        self.memory.get_ready(key)
    }
    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl) {
        self.memory.put(key, url).await
    }
    async fn remove(&self, key: &CacheKey<'_>) {
        self.memory.remove(key).await
    }
    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        self.refused.lock().unwrap().push(refused.as_str().to_owned());
        self.memory.remove_refused(key, refused).await
    }
    fn purge_scope(&self, scope: &str) {
        self.memory.purge_scope(scope)
    }
    async fn lease(&self, keys: &[CacheKey<'_>]) -> Vec<Lease> {
        let theirs = self.theirs.lock().unwrap();
        keys.iter().map(|key| if theirs.contains_key(key.url()) { Lease::Theirs } else { Lease::Mine }).collect()
    }
    async fn wait_for(&self, keys: &[CacheKey<'_>]) -> Vec<Option<SignedUrl>> {
        let found: Vec<Option<SignedUrl>> = {
            let theirs = self.theirs.lock().unwrap();
            keys.iter().map(|key| theirs.get(key.url()).cloned().flatten()).collect()
        };
        // Kept locally, as a cache with a local tier does.
        for (key, url) in keys.iter().zip(&found) {
            if let Some(url) = url {
                self.memory.put(key, url.clone()).await;
            }
        }
        found
    }
    async fn release(&self, keys: &[CacheKey<'_>]) {
        self.released.lock().unwrap().extend(keys.iter().map(|key| key.url().to_owned()));
    }
}

#[tokio::test]
async fn urls_leased_by_another_process_are_awaited_and_checked_and_the_rest_presigned_here() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let now = clock.now();
    let signed = |n: usize, host: &str| {
        let url = url::Url::parse(&format!("https://{host}/app/media/{n}.png?Expires=4000000000&Signature=fleet{n}"));
        SignedUrl::new(&media(n), url.unwrap(), now, now + DAY)
    };
    // 1: its holder published; 2: its holder published a URL on another origin; 3: its holder
    // gave up; 4 and 5: this process's to presign.
    let theirs = HashMap::from([
        (media(1), Some(signed(1, "files-us.cometchat.io"))),
        (media(2), Some(signed(2, "evil.example"))),
        (media(3), None),
    ]);
    let cache = Arc::new(FleetCache {
        memory: MemoryPresignCache::new(100),
        theirs: Mutex::new(theirs),
        released: Mutex::default(),
        refused: Mutex::default(),
    });
    // Vouched for by the app (a backend's own login), as in a fleet: one scope from the start.
    let vouched = token("a");
    vouched.mark_verified();
    let tokens = Arc::new(StaticToken::new(vouched));
    let s =
        PresignedStrategy::new(hosts(), tokens, endpoint.clone()).with_cache(cache.clone()).with_clock(clock.clone());
    let urls: Vec<String> = (1..=5).map(media).collect();
    s.prefetch(&urls.iter().map(String::as_str).collect::<Vec<_>>()).await;

    let answers = futures::future::join_all(urls.iter().map(|url| resolve_str(&s, url))).await;
    let answers: Vec<String> = answers.into_iter().map(|answer| answer.unwrap().0.into_owned()).collect();
    assert!(answers[0].ends_with("Signature=fleet1"), "the holder's URL: {}", answers[0]);
    for answer in &answers[1..] {
        assert!(answer.starts_with("https://files-us.cometchat.io/") && answer.contains("Signature=sig"), "{answer}");
    }
    // One call for this process's own, one for what the fleet could not give.
    assert_eq!(*endpoint.calls.lock().unwrap(), [2, 2]);
    let stats = s.stats();
    assert_eq!((stats.presign_calls, stats.urls_presigned, stats.urls_from_fleet), (2, 4, 1));
    assert!(cache.released.lock().unwrap().is_empty(), "nothing failed: no lease given up");
    let refused = cache.refused.lock().unwrap().clone();
    assert_eq!(refused.len(), 1, "the URL on another origin was dropped from the cache: {refused:?}");
    assert!(refused[0].starts_with("https://evil.example/"), "{refused:?}");
    assert_eq!(s.stats().cache_hits, 5, "every load found its URL cached after asking ahead");
}

#[tokio::test]
async fn a_url_from_the_fleet_does_not_prove_an_unproven_token_and_a_failed_call_gives_its_leases_up() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let now = clock.now();
    let url = url::Url::parse(&format!("{}?Expires=4000000000&Signature=fleet", media(1))).unwrap();
    let theirs = HashMap::from([(media(1), Some(SignedUrl::new(&media(1), url, now, now + DAY)))]);
    let cache = Arc::new(FleetCache {
        memory: MemoryPresignCache::new(100),
        theirs: Mutex::new(theirs),
        released: Mutex::default(),
        refused: Mutex::default(),
    });
    let tokens = Arc::new(StaticToken::new(token("alice")));
    let s = PresignedStrategy::new(hosts(), tokens.clone(), endpoint.clone())
        .with_cache(cache.clone())
        .with_clock(clock.clone());
    let first = media(1);
    let answer = resolve_str(&s, &first).await.unwrap().0.into_owned();
    assert!(answer.ends_with("Signature=fleet"), "{answer}");
    assert_eq!(endpoint.calls(), 0);
    assert!(s.proven_scope(&tokens.current().unwrap()).is_none(), "only the endpoint's acceptance proves a token");

    // The endpoint refuses: the leases this process took go back at once.
    endpoint.refuse(&tokens.current().unwrap());
    assert!(resolve_str(&s, &media(7)).await.is_err());
    assert_eq!(*cache.released.lock().unwrap(), [media(7)]);
}

/// A presigner that answers nothing at all, whatever it is asked.
struct Mute;

#[async_trait]
impl Presigner for Mute {
    async fn presign(&self, url: &str, _token: &FileAccessToken) -> Result<Presigned, AccessError> {
        Err(AccessError::Presign { url: url.to_owned(), reason: crate::PresignFailure::Missing })
    }
    async fn presign_batch(&self, _urls: &[Arc<str>], _token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        Vec::new()
    }
}

#[tokio::test]
async fn a_presigner_that_answers_too_few_urls_fails_each_unanswered_one_and_gives_its_lease_up() {
    let cache = Arc::new(FleetCache {
        memory: MemoryPresignCache::new(100),
        theirs: Mutex::default(),
        released: Mutex::default(),
        refused: Mutex::default(),
    });
    let s = PresignedStrategy::new(hosts(), Arc::new(StaticToken::new(token("a"))), Mute).with_cache(cache.clone());
    let urls: Vec<String> = (1..=3).map(media).collect();
    let answers = futures::future::join_all(urls.iter().map(|url| resolve_str(&s, url))).await;
    for answer in answers {
        assert!(
            matches!(answer, Err(AccessError::Presign { reason: crate::PresignFailure::Missing, .. })),
            "{answer:?}"
        );
    }
    let mut released = cache.released.lock().unwrap().clone();
    released.sort();
    assert_eq!(released, urls, "every lease taken for an unanswered URL is given up");
}

/// A cache with a remote tier (as Redis behind an empty L1): `get_ready` sees nothing, `get` the
/// remote entries. Records what it was asked to drop.
struct TwoTier {
    remote: Mutex<HashMap<String, SignedUrl>>,
    refused: Mutex<Vec<String>>,
}

#[async_trait]
impl PresignCache for TwoTier {
    fn get_ready(&self, _key: &CacheKey<'_>) -> Option<SignedUrl> {
        None
    }
    async fn get(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        self.remote.lock().unwrap().get(key.url()).cloned()
    }
    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl) {
        self.remote.lock().unwrap().insert(key.url().to_owned(), url);
    }
    async fn remove(&self, key: &CacheKey<'_>) {
        self.remote.lock().unwrap().remove(key.url());
    }
    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        self.refused.lock().unwrap().push(refused.as_str().to_owned());
        self.remove(key).await
    }
    fn purge_scope(&self, _scope: &str) {}
}

/// The remote tier holds 1 fresh, 2 near its expiry, 3 expired; 4 is nowhere.
fn two_tier(clock: &Arc<ManualClock>) -> Arc<TwoTier> {
    let now = clock.now();
    let stored = |n: usize, fetched: SystemTime, expires: SystemTime| {
        let url = url::Url::parse(&format!("{}?Expires=4000000000&Signature=remote{n}", media(n))).unwrap();
        (media(n), SignedUrl::new(&media(n), url, fetched, expires))
    };
    Arc::new(TwoTier {
        remote: Mutex::new(HashMap::from([
            stored(1, now, now + DAY),
            stored(2, now - DAY * 9 / 10, now + DAY / 10),
            stored(3, now - DAY, now - Duration::from_secs(1)),
        ])),
        refused: Mutex::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_shared_cache_holds_is_answered_before_the_call_for_the_rest_and_checked() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let cache = two_tier(&clock);
    let vouched = token("a");
    vouched.mark_verified();
    let s = Arc::new(
        PresignedStrategy::new(hosts(), Arc::new(StaticToken::new(vouched)), endpoint.clone())
            .with_cache(cache.clone())
            .with_clock(clock.clone()),
    );
    // The endpoint is slow: its calls wait at the gate. One task loads all four, 4 first: 4's
    // caller drives the batch's call (and waits for it); the others wait on their flights.
    let gate = endpoint.gate.lock().await;
    let (sent, mut done) = tokio::sync::mpsc::unbounded_channel();
    let loads = tokio::spawn({
        let s = s.clone();
        async move {
            let load = |n: usize| {
                let (s, sent) = (s.clone(), sent.clone());
                async move {
                    let answer = resolve_str(&*s, &media(n)).await.map(|(url, _)| url.into_owned());
                    sent.send((n, answer)).unwrap();
                }
            };
            futures::future::join_all([4, 1, 2, 3].map(load)).await;
        }
    });
    let first = tokio::time::timeout(Duration::from_secs(5), done.recv()).await;
    let (n, first) = first.expect("the stored URL is answered while the call for the rest waits").unwrap();
    assert_eq!(n, 1);
    assert!(first.unwrap().ends_with("Signature=remote1"));
    drop(gate);
    loads.await.unwrap();
    let mut rest = Vec::new();
    while let Ok((_, answer)) = done.try_recv() {
        rest.push(answer.unwrap());
    }
    assert_eq!(rest.len(), 3);
    for answer in &rest {
        assert!(answer.contains("Signature=sig"), "renewed or presigned: {answer}");
    }
    assert_eq!(*endpoint.calls.lock().unwrap(), [3], "2 renewed, 3 and 4 presigned, in one call");
    assert_eq!(*cache.refused.lock().unwrap(), [format!("{}?Expires=4000000000&Signature=remote3", media(3))]);
}

#[tokio::test]
async fn a_stored_url_near_its_expiry_serves_when_its_renewal_is_refused() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let vouched = token("a");
    vouched.mark_verified();
    let tokens = Arc::new(StaticToken::new(vouched));
    endpoint.refuse(&tokens.current().unwrap());
    let s = PresignedStrategy::new(hosts(), tokens, endpoint.clone())
        .with_cache(two_tier(&clock))
        .with_clock(clock.clone());
    let near = media(2);
    let (answer, _) = resolve_str(&s, &near).await.unwrap();
    assert!(answer.ends_with("Signature=remote2"), "{answer}");
    assert_eq!(endpoint.calls(), 1, "it tried to renew");
}

#[tokio::test]
async fn a_stored_url_fetched_in_the_future_is_not_used_whatever_cache_holds_it() {
    let clock = start();
    let endpoint = FakeEndpoint::new(clock.clone(), DAY);
    let vouched = token("a");
    vouched.mark_verified();
    let tokens = Arc::new(StaticToken::new(vouched));
    let s = strategy(&clock, &endpoint, tokens.clone(), PresignConfig::default());
    // Another process's clock an hour ahead (or a planted entry): its trust window is unbounded.
    let later = clock.now() + Duration::from_secs(3600);
    let url = url::Url::parse(&format!("{}?Expires=4000000000&Signature=ahead", media(1))).unwrap();
    let scope = tokens.current().unwrap().principal_shared().clone();
    s.cache().put(&CacheKey::new(&scope, &media(1)), SignedUrl::new(&media(1), url, later, later + DAY)).await;
    let answer = resolve(&s, &media(1)).await;
    assert!(answer.contains("Signature=sig"), "presigned again: {answer}");
    assert_eq!(endpoint.calls(), 1);
}
