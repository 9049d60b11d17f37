//! [`LoginCell`]: the token the app's login sets, renewed after a refusal by one relogin for
//! every waiting caller, with a backoff after failed relogins and a quiet period after one.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use retry_policies::policies::ExponentialBackoff;
use retry_policies::{Jitter, RetryDecision, RetryPolicy as _};

use super::listener::Listeners;
use crate::{AccessError, Clock, FileAccessToken, RefreshFailure, SystemClock, TokenListener, TokenRef, TokenSource};

type Relogin = Arc<dyn Fn() -> BoxFuture<'static, Result<FileAccessToken, AccessError>> + Send + Sync>;
type Flight = Shared<BoxFuture<'static, Result<Arc<FileAccessToken>, AccessError>>>;

/// The token as the app's login sets it: the SDK's behaviour. The app calls [`set`](Self::set)
/// after login and re-login and [`clear`](Self::clear) on logout. With a
/// [`relogin`](Self::with_relogin) hook, a refused token is renewed once for all waiting requests.
///
/// ```
/// # futures::executor::block_on(async {
/// use std::sync::Arc;
/// use secure_media_core::{AccessError, FileAccessToken, LoginCell, TokenSource};
///
/// let cell = LoginCell::new().with_relogin(|| async { FileAccessToken::new("fresh") });
/// assert!(cell.current().is_none());
/// let stale = cell.set(FileAccessToken::new("first").unwrap());
/// let fresh = cell.refresh(&stale).await.unwrap();
/// assert_eq!(fresh.expose_secret(), "fresh");
/// assert!(Arc::ptr_eq(&cell.current().unwrap(), &fresh));
/// // After logout a refusal never logs the user back in.
/// cell.clear();
/// assert_eq!(cell.refresh(&fresh).await.unwrap_err(), AccessError::NotLoggedIn);
/// # });
/// ```
///
/// Renewals are bounded by time, not by traffic:
/// - a failed relogin is remembered for a backoff (1 s, doubling with each failure in a row up to
///   60 s, jittered between 0.5 s and that): meanwhile `refresh` answers
///   [`RefreshFailure::BackingOff`] at once, without calling the hook;
/// - a token that a relogin installed less than a quiet period ago (5 s) and that is refused
///   already is not renewed again: `refresh` answers [`RefreshFailure::RenewedTooRecently`].
///
/// A failed relogin answers [`RefreshFailure::Relogin`] with the hook's error as its source
/// (a hook that answers [`AccessError::NotLoggedIn`] is passed on as it is); without a hook,
/// [`RefreshFailure::NoRelogin`]. Each comes as [`AccessError::RefreshFailed`].
///
/// So a media server that refuses every token costs one relogin per quiet period, whatever the
/// number of requests. See [`with_renewal_backoff`](Self::with_renewal_backoff),
/// [`with_quiet_period`](Self::with_quiet_period) and [`with_clock`](Self::with_clock).
pub struct LoginCell {
    state: Arc<CellState>,
    relogin: Option<Relogin>,
    policy: RenewalPolicy,
    clock: Arc<dyn Clock>,
}

/// What a relogin in the air reaches through a `Weak`: the flight lives in the cell, so a strong
/// reference would keep the cell alive through a flight nobody polls.
#[derive(Default)]
struct CellState {
    token: RwLock<Option<Arc<FileAccessToken>>>,
    /// Taken before `token` by every writer, so a refresh sees the token, the flight and the
    /// generation change together.
    renewal: Mutex<Renewal>,
    listeners: Listeners,
}

#[derive(Default)]
struct Renewal {
    /// Bumped by every change of token, so a relogin started before a logout or a login by the
    /// app can tell that its token is no longer wanted.
    generation: u64,
    /// The relogin in the air: the number that tells it apart from a later one, when it started.
    flight: Option<(u64, SystemTime, Flight)>,
    flights_started: u64,
    /// Failed relogins in a row.
    failures: u32,
    last_failure: Option<RenewalFailure>,
    /// The token the last successful relogin installed, and when.
    renewed: Option<(Weak<FileAccessToken>, SystemTime)>,
}

impl Renewal {
    /// A relogin failed (or was abandoned) at `now`: remembered, and backed off from.
    fn failed(&mut self, error: AccessError, now: SystemTime, policy: RenewalPolicy) {
        self.failures = self.failures.saturating_add(1);
        let wait = policy.backoff(self.failures);
        tracing::warn!(
            %error,
            failures = self.failures,
            backoff_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "logging in again failed: backing off"
        );
        self.last_failure = Some(RenewalFailure { at: now, wait, error });
    }
}

struct RenewalFailure {
    at: SystemTime,
    wait: Duration,
    error: AccessError,
}

#[derive(Debug, Clone, Copy)]
struct RenewalPolicy {
    backoff_first: Duration,
    backoff_max: Duration,
    quiet: Duration,
    relogin_timeout: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            quiet: Duration::from_secs(5),
            relogin_timeout: Duration::from_secs(30),
        }
    }
}

impl RenewalPolicy {
    /// The wait after `failures` failed relogins in a row: `first · 2^(failures - 1)`, at most
    /// `max`, jittered between half of `first` and that (retry-policies' bounded jitter) so that clients
    /// that failed together do not come back together.
    fn backoff(&self, failures: u32) -> Duration {
        // A day is past any sensible backoff, and keeps retry-policies' arithmetic in range.
        let max = self.backoff_max.min(Duration::from_secs(86_400));
        let first = self.backoff_first.min(max);
        let policy = ExponentialBackoff::builder()
            .retry_bounds(first, max)
            .jitter(Jitter::Bounded)
            .build_with_max_retries(u32::MAX);
        let now = SystemTime::now();
        match policy.should_retry(now, failures.saturating_sub(1)) {
            RetryDecision::Retry { execute_after } => execute_after.duration_since(now).unwrap_or_default().min(max),
            RetryDecision::DoNotRetry => max,
        }
    }
}

/// How long since `mark`; a clock that went back ends a wait rather than stretching it.
fn elapsed_since(now: SystemTime, mark: SystemTime) -> Duration {
    now.duration_since(mark).unwrap_or(Duration::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

enum NextStep {
    Wait(Flight),
    Answer(Result<Arc<FileAccessToken>, AccessError>),
}

type Change = (Option<Arc<FileAccessToken>>, Option<Arc<FileAccessToken>>);

impl CellState {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        self.token.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Puts `new` in place under the renewal lock the caller holds; answers the change for
    /// [`notify`](Self::notify), to be called once that lock is released.
    fn swap(&self, renewal: &mut Renewal, new: Option<Arc<FileAccessToken>>) -> Option<Change> {
        let mut slot = self.token.write().unwrap_or_else(PoisonError::into_inner);
        let same = match (&*slot, &new) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return None;
        }
        renewal.generation = renewal.generation.wrapping_add(1);
        let old = std::mem::replace(&mut *slot, new.clone());
        Some((old, new))
    }

    /// Tells the listeners, outside every lock: they may read the cell.
    fn notify(&self, (old, new): Change) {
        tracing::debug!(
            changed_principal = old.as_ref().map(|t| t.principal()) != new.as_ref().map(|t| t.principal()),
            "file access token replaced"
        );
        self.listeners.notify(old.as_deref(), new.as_deref());
    }

    /// The end of relogin `id`, inside its flight: taking the flight down and installing its token
    /// are one step under the renewal lock, so no caller can start a second relogin in between.
    fn finish(
        &self,
        id: u64,
        generation: u64,
        outcome: Result<FileAccessToken, AccessError>,
        now: SystemTime,
        policy: RenewalPolicy,
    ) -> Result<Arc<FileAccessToken>, AccessError> {
        let (answer, change) = {
            let mut renewal = lock(&self.renewal);
            if renewal.flight.as_ref().is_some_and(|(flight, _, _)| *flight == id) {
                renewal.flight = None;
            }
            if renewal.generation != generation {
                // The app logged out (or in) while this relogin was in the air: its choice stands.
                tracing::info!("the user logged out or in during a relogin: its token is dropped");
                return self.current().ok_or(AccessError::NotLoggedIn);
            }
            match outcome {
                Ok(token) => {
                    let fresh = Arc::new(token);
                    let change = self.swap(&mut renewal, Some(fresh.clone()));
                    renewal.failures = 0;
                    renewal.last_failure = None;
                    renewal.renewed = Some((Arc::downgrade(&fresh), now));
                    (Ok(fresh), change)
                }
                Err(error) => {
                    renewal.failed(error.clone(), now, policy);
                    let answer = match error {
                        AccessError::NotLoggedIn => error,
                        other => RefreshFailure::Relogin(Box::new(other)).into(),
                    };
                    (Err(answer), None)
                }
            }
        };
        if let Some(change) = change {
            self.notify(change);
        }
        answer
    }
}

impl Default for LoginCell {
    fn default() -> Self {
        Self { state: Arc::default(), relogin: None, policy: RenewalPolicy::default(), clock: Arc::new(SystemClock) }
    }
}

impl LoginCell {
    /// An empty cell without a relogin hook: a refused token stays refused until the app sets a new one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Renews a refused token by calling `relogin` (single-flight):
    /// `LoginCell::new().with_relogin(|| async { ... })`. Let the hook answer the error that says
    /// what failed ([`AccessError::Network`] for a login request that did not complete,
    /// [`AccessError::Status`] for an answer that is not a success, ...): refreshes answer it as
    /// the source of [`RefreshFailure::Relogin`], and later ones during the backoff as the source
    /// of [`RefreshFailure::BackingOff`].
    pub fn with_relogin<F, Fut>(mut self, relogin: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<FileAccessToken, AccessError>> + Send + 'static,
    {
        self.relogin = Some(Arc::new(move || relogin().boxed()));
        self
    }

    /// Uses another clock for the renewal backoff and quiet period (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// How long a failed relogin is remembered: `first` after one failure, twice as long after
    /// each further failure in a row, never more than `max`; each wait is jittered between
    /// half of `first` and that. Default: 1 s up to 60 s. `Duration::ZERO` turns the backoff off.
    pub fn with_renewal_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.policy.backoff_first = first.min(max);
        self.policy.backoff_max = max;
        self
    }

    /// How long after a relogin a refusal of the token it installed is answered with an error
    /// instead of another relogin (a server that refuses every token would otherwise be asked
    /// for a new one by every request). Default: 5 s. `Duration::ZERO` turns it off.
    pub fn with_quiet_period(mut self, quiet: Duration) -> Self {
        self.policy.quiet = quiet;
        self
    }

    /// How long a relogin may take before later refusals stop waiting for it: it counts as a
    /// failed one (backed off from) and the next renewal may start. Default: 30 s. Give the hook
    /// its own timeout too: callers already waiting for it wait as long as it does.
    pub fn with_relogin_timeout(mut self, timeout: Duration) -> Self {
        self.policy.relogin_timeout = timeout;
        self
    }

    /// Sets the token after a login or re-login; answers it as shared.
    pub fn set(&self, token: FileAccessToken) -> Arc<FileAccessToken> {
        let token = Arc::new(token);
        self.replace(Some(token.clone()));
        token
    }

    /// Forgets the token (logout). Caches scoped by its principal are purged, and a relogin in
    /// the air when this is called installs nothing.
    pub fn clear(&self) {
        self.replace(None);
    }

    /// A login or logout by the app.
    fn replace(&self, new: Option<Arc<FileAccessToken>>) {
        let change = {
            let mut renewal = lock(&self.state.renewal);
            let change = self.state.swap(&mut renewal, new);
            if change.is_some() {
                // A relogin in the air renews a token that is gone (its waiters get this one),
                // and what failed relogins taught does not apply to the app's own login.
                renewal.flight = None;
                renewal.failures = 0;
                renewal.last_failure = None;
            }
            change
        };
        if let Some(change) = change {
            self.state.notify(change);
        }
    }

    /// The relogin to wait for (joined or started), or the answer when none may start.
    fn next_step(&self, stale: &Arc<FileAccessToken>) -> NextStep {
        let mut renewal = lock(&self.state.renewal);
        match self.state.current() {
            None => return NextStep::Answer(Err(AccessError::NotLoggedIn)),
            Some(current) if !Arc::ptr_eq(&current, stale) => return NextStep::Answer(Ok(current)),
            Some(_) => {}
        }
        let now = self.clock.now();
        if let Some((_, started, flight)) = &renewal.flight {
            if elapsed_since(now, *started) < self.policy.relogin_timeout {
                return NextStep::Wait(flight.clone());
            }
            // A relogin that never ends must not hold every later renewal: it counts as failed
            // (and is backed off from); should it end after all, its token is still installed.
            renewal.flight = None;
            let error = AccessError::from(RefreshFailure::TimedOut { after: self.policy.relogin_timeout });
            renewal.failed(error.clone(), now, self.policy);
            return NextStep::Answer(Err(error));
        }
        let Some(relogin) = self.relogin.clone() else {
            return NextStep::Answer(Err(RefreshFailure::NoRelogin.into()));
        };
        if let Some((renewed, at)) = &renewal.renewed {
            let since = elapsed_since(now, *at);
            if std::ptr::eq(renewed.as_ptr(), Arc::as_ptr(stale)) && since < self.policy.quiet {
                let retry_in = self.policy.quiet - since;
                return NextStep::Answer(Err(
                    RefreshFailure::RenewedTooRecently { renewed_ago: since, retry_in }.into()
                ));
            }
        }
        if let Some(failure) = &renewal.last_failure {
            let since = elapsed_since(now, failure.at);
            if since < failure.wait {
                return NextStep::Answer(Err(RefreshFailure::BackingOff {
                    failures: renewal.failures,
                    retry_in: failure.wait - since,
                    last: Box::new(failure.error.clone()),
                }
                .into()));
            }
        }
        tracing::info!("file access token refused: logging in again");
        renewal.flights_started = renewal.flights_started.wrapping_add(1);
        let (id, generation) = (renewal.flights_started, renewal.generation);
        let state = Arc::downgrade(&self.state);
        let (clock, policy) = (self.clock.clone(), self.policy);
        let flight = async move {
            let outcome = relogin().await;
            match state.upgrade() {
                Some(state) => state.finish(id, generation, outcome, clock.now(), policy),
                None => Err(AccessError::NotLoggedIn),
            }
        }
        .boxed()
        .shared();
        renewal.flight = Some((id, now, flight.clone()));
        NextStep::Wait(flight)
    }
}

#[async_trait]
impl TokenSource for LoginCell {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        self.state.current()
    }

    fn peek(&self) -> Option<TokenRef<'_>> {
        TokenRef::locked(self.state.token.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Answers the current token when `stale` is no longer it; otherwise joins or starts the one
    /// relogin.
    ///
    /// # Errors
    ///
    /// [`AccessError::NotLoggedIn`] after a logout (never logging back in);
    /// [`AccessError::RefreshFailed`] with [`RefreshFailure::NoRelogin`] without a relogin hook,
    /// [`RefreshFailure::Relogin`] when the relogin failed, [`RefreshFailure::TimedOut`] when it
    /// outlived its timeout, and, at once without calling the hook,
    /// [`RefreshFailure::BackingOff`] after recent failures or
    /// [`RefreshFailure::RenewedTooRecently`] when a relogin installed `stale` within the quiet
    /// period.
    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        match self.next_step(stale) {
            NextStep::Wait(flight) => flight.await,
            NextStep::Answer(answer) => answer,
        }
    }

    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        self.state.listeners.add(listener);
    }
}

impl fmt::Debug for LoginCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginCell")
            .field("token", &self.current())
            .field("relogin", &self.relogin.is_some())
            .field("renewal_failures", &lock(&self.state.renewal).failures)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::token::listener::tests::Recorder;
    use crate::ManualClock;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_concurrent_refusals_make_one_refresh() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = Arc::new(LoginCell::new().with_relogin(move || {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                FileAccessToken::new(format!("fresh-{n}"))
            }
        }));
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (cell, stale) = (cell.clone(), stale.clone());
                tokio::spawn(async move { cell.refresh(&stale).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().expose_secret(), "fresh-0");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A late caller that saw the stale token gets the fresh one without another login.
        assert_eq!(cell.refresh(&stale).await.unwrap().expose_secret(), "fresh-0");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refresh_is_skipped_when_the_stale_token_is_no_longer_current() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = LoginCell::new().with_relogin(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { FileAccessToken::new("relogin") }
        });
        let stale = cell.set(FileAccessToken::new("one").unwrap());
        cell.set(FileAccessToken::new("two").unwrap());
        assert_eq!(cell.refresh(&stale).await.unwrap().expose_secret(), "two");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn without_relogin_a_refusal_asks_to_log_in() {
        let cell = LoginCell::new();
        let stale = cell.set(FileAccessToken::new("one").unwrap());
        let error = cell.refresh(&stale).await.unwrap_err();
        assert_eq!(error, AccessError::RefreshFailed(RefreshFailure::NoRelogin));
        assert!(error.to_string().contains("log in again"), "{error}");
    }

    pub(crate) fn start() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000_000)))
    }

    /// A relogin hook that counts its calls and answers `fresh-<n>`, or a 503 while `failing`.
    #[derive(Default)]
    pub(crate) struct Hook {
        calls: AtomicUsize,
        failing: AtomicBool,
    }

    impl Hook {
        pub(crate) fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }

        pub(crate) fn fail(&self, failing: bool) {
            self.failing.store(failing, Ordering::SeqCst);
        }
    }

    pub(crate) fn cell_with_hook(clock: &Arc<ManualClock>) -> (LoginCell, Arc<Hook>) {
        let hook = Arc::new(Hook::default());
        let counter = hook.clone();
        let cell = LoginCell::new()
            .with_relogin(move || {
                let n = counter.calls.fetch_add(1, Ordering::SeqCst);
                let failing = counter.failing.load(Ordering::SeqCst);
                async move {
                    if failing {
                        Err(login_down())
                    } else {
                        FileAccessToken::new(format!("fresh-{n}"))
                    }
                }
            })
            .with_clock(clock.clone());
        (cell, hook)
    }

    /// A relogin hook that counts its calls, says when it started and waits to be released.
    #[derive(Default)]
    struct Paused {
        calls: AtomicUsize,
        started: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    fn paused_cell() -> (Arc<LoginCell>, Arc<Paused>) {
        let hook = Arc::new(Paused::default());
        let paused = hook.clone();
        let cell = LoginCell::new().with_relogin(move || {
            let paused = paused.clone();
            async move {
                let n = paused.calls.fetch_add(1, Ordering::SeqCst);
                paused.started.notify_one();
                paused.release.notified().await;
                FileAccessToken::new(format!("fresh-{n}"))
            }
        });
        (Arc::new(cell), hook)
    }

    /// What the failing hook answers.
    fn login_down() -> AccessError {
        AccessError::Status { url: "https://login.example.com/".into(), status: http::StatusCode::SERVICE_UNAVAILABLE }
    }

    fn is_refresh_failed_saying(answer: &Result<Arc<FileAccessToken>, AccessError>, words: &str) -> bool {
        matches!(answer, Err(error @ AccessError::RefreshFailed(_)) if error.to_string().contains(words))
    }

    #[tokio::test]
    async fn a_failed_relogin_answers_the_hooks_error_as_its_source() {
        use std::error::Error as _;
        let (cell, hook) = cell_with_hook(&start());
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale-secret").unwrap());
        let error = cell.refresh(&stale).await.unwrap_err();
        assert_eq!(error, AccessError::RefreshFailed(RefreshFailure::Relogin(Box::new(login_down()))));
        assert_eq!(error.source().and_then(|e| e.downcast_ref::<AccessError>()), Some(&login_down()));
        assert_eq!(
            error.to_string(),
            "the file access token was refused and could not be refreshed: logging in again failed: \
             https://login.example.com/ answered 503 Service Unavailable"
        );
        // During the backoff: typed, the last failure as the source, and no token anywhere.
        let backing_off = cell.refresh(&stale).await.unwrap_err();
        let AccessError::RefreshFailed(RefreshFailure::BackingOff { failures, retry_in, last }) = &backing_off else {
            panic!("{backing_off:?}");
        };
        assert_eq!((*failures, **last == login_down()), (1, true));
        assert!(*retry_in <= Duration::from_secs(1), "{retry_in:?}");
        assert_eq!(backing_off.source().and_then(|e| e.downcast_ref::<AccessError>()), Some(&login_down()));
        for shown in [format!("{error} {error:?}"), format!("{backing_off} {backing_off:?}")] {
            assert!(!shown.contains("stale-secret") && !shown.contains("fresh-"), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_relogin_that_answers_not_logged_in_is_passed_on_as_it_is() {
        let cell = LoginCell::new().with_relogin(|| async { Err(AccessError::NotLoggedIn) });
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        assert_eq!(cell.refresh(&stale).await.unwrap_err(), AccessError::NotLoggedIn);
    }

    #[tokio::test]
    async fn refresh_after_logout_answers_not_logged_in_and_never_logs_in() {
        let (cell, hook) = cell_with_hook(&start());
        let stale = cell.set(FileAccessToken::new("before-logout").unwrap());
        cell.clear();
        assert_eq!(cell.refresh(&stale).await.unwrap_err(), AccessError::NotLoggedIn);
        assert_eq!(hook.calls(), 0);
        assert!(cell.current().is_none());
    }

    #[tokio::test]
    async fn a_relogin_that_finishes_after_logout_installs_nothing() {
        let (cell, hook) = paused_cell();
        let recorder = Recorder::attach(&cell);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let waiter = tokio::spawn({
            let (cell, stale) = (cell.clone(), stale.clone());
            async move { cell.refresh(&stale).await }
        });
        hook.started.notified().await;
        cell.clear();
        hook.release.notify_one();
        assert_eq!(waiter.await.unwrap().unwrap_err(), AccessError::NotLoggedIn);
        assert!(cell.current().is_none());
        let principal = Some(stale.principal().to_owned());
        assert_eq!(recorder.seen(), vec![(None, principal.clone()), (principal, None)], "only login and logout");
        // Nor does a later refusal of the old token log in.
        assert_eq!(cell.refresh(&stale).await.unwrap_err(), AccessError::NotLoggedIn);
        assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_relogin_that_finishes_after_the_app_logged_in_keeps_the_apps_token() {
        let (cell, hook) = paused_cell();
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let waiter = tokio::spawn({
            let (cell, stale) = (cell.clone(), stale.clone());
            async move { cell.refresh(&stale).await }
        });
        hook.started.notified().await;
        let app = cell.set(FileAccessToken::new("app-login").unwrap());
        hook.release.notify_one();
        assert!(Arc::ptr_eq(&waiter.await.unwrap().unwrap(), &app));
        assert!(Arc::ptr_eq(&cell.current().unwrap(), &app));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_relogin_never_starts_while_one_is_being_installed() {
        // Callers that joined the relogin and latecomers that still saw the stale token race with
        // its install on two threads: every round makes exactly one relogin.
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = Arc::new(
            LoginCell::new()
                .with_relogin(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        tokio::task::yield_now().await;
                        FileAccessToken::new(format!("fresh-{n}"))
                    }
                })
                .with_quiet_period(Duration::ZERO),
        );
        cell.set(FileAccessToken::new("first").unwrap());
        for round in 1..=1_000 {
            let stale = cell.current().unwrap();
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let tasks: Vec<_> = (0..8)
                .map(|_| {
                    let (cell, stale, start) = (cell.clone(), stale.clone(), start.clone());
                    tokio::spawn(async move {
                        start.wait().await;
                        cell.refresh(&stale).await
                    })
                })
                .collect();
            let mut fresh = Vec::new();
            for task in tasks {
                fresh.push(task.await.unwrap().unwrap());
            }
            assert_eq!(calls.load(Ordering::SeqCst), round, "round {round}: a second relogin started");
            assert!(fresh.iter().all(|t| Arc::ptr_eq(t, &fresh[0]) && !Arc::ptr_eq(t, &stale)));
            assert!(Arc::ptr_eq(&cell.current().unwrap(), &fresh[0]));
        }
    }

    #[tokio::test]
    async fn a_failed_relogin_is_not_retried_until_its_backoff_has_passed() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale-secret").unwrap());
        assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "503"));
        assert_eq!(hook.calls(), 1);
        for _ in 0..100 {
            let answer = cell.refresh(&stale).await;
            assert!(is_refresh_failed_saying(&answer, "backing off"), "{answer:?}");
            assert!(!format!("{answer:?}").contains("stale-secret"));
        }
        assert_eq!(hook.calls(), 1, "answered at once, without the hook");
        // The first wait is at most 1 s.
        clock.advance(Duration::from_secs(1));
        assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "503"));
        assert_eq!(hook.calls(), 2);
    }

    #[tokio::test]
    async fn a_relogin_that_never_ends_holds_renewals_only_until_its_timeout() {
        let clock = start();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let cell = LoginCell::new()
            .with_relogin(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<FileAccessToken, AccessError>>()
            })
            .with_clock(clock.clone());
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        // The first refusal starts the relogin and waits for it; a caller that gives up leaves it.
        assert!(futures::FutureExt::now_or_never(cell.refresh(&stale)).is_none());
        assert!(futures::FutureExt::now_or_never(cell.refresh(&stale)).is_none(), "joined, not a second one");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        clock.advance(Duration::from_secs(30));
        let answer = cell.refresh(&stale).await;
        assert!(is_refresh_failed_saying(&answer, "did not finish within 30 s"), "{answer:?}");
        let after = Duration::from_secs(30);
        assert_eq!(answer.unwrap_err(), AccessError::RefreshFailed(RefreshFailure::TimedOut { after }));
        assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "backing off"));
        clock.advance(Duration::from_secs(1));
        assert!(futures::FutureExt::now_or_never(cell.refresh(&stale)).is_none(), "a new relogin starts");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_backoff_doubles_with_each_failure_in_a_row_up_to_its_cap() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        cell.refresh(&stale).await.unwrap_err();
        // Each wait lies between half the first (0.5 s) and its target: 1 s, 2 s, 4 s, ... capped
        // at 60 s.
        let (first, mut target) = (Duration::from_millis(500), Duration::from_secs(1));
        for failures in 1..=10 {
            clock.advance(first - Duration::from_millis(1));
            assert!(is_refresh_failed_saying(&cell.refresh(&stale).await, "backing off"), "after {failures}");
            assert_eq!(hook.calls(), failures);
            clock.advance(target - first + Duration::from_millis(2));
            cell.refresh(&stale).await.unwrap_err();
            assert_eq!(hook.calls(), failures + 1);
            target = (target * 2).min(Duration::from_secs(60));
        }
    }

    #[tokio::test]
    async fn a_successful_relogin_resets_the_backoff() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        for wait in [1, 2, 4] {
            cell.refresh(&stale).await.unwrap_err();
            clock.advance(Duration::from_secs(wait));
        }
        hook.fail(false);
        let fresh = cell.refresh(&stale).await.unwrap();
        assert_eq!((fresh.expose_secret(), hook.calls()), ("fresh-3", 4));
        // The renewed token is refused later and the login endpoint fails again: a new streak,
        // whose first wait is 1 s at most (the old streak's next would be 4 s at least).
        clock.advance(Duration::from_secs(5));
        hook.fail(true);
        cell.refresh(&fresh).await.unwrap_err();
        assert_eq!(hook.calls(), 5);
        clock.advance(Duration::from_secs(1));
        cell.refresh(&fresh).await.unwrap_err();
        assert_eq!(hook.calls(), 6);
    }

    #[tokio::test]
    async fn a_login_by_the_app_ends_the_backoff() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        hook.fail(true);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        cell.refresh(&stale).await.unwrap_err();
        hook.fail(false);
        let app = cell.set(FileAccessToken::new("app-login").unwrap());
        assert_eq!(cell.refresh(&app).await.unwrap().expose_secret(), "fresh-1");
    }

    #[tokio::test]
    async fn a_token_refused_right_after_its_relogin_is_not_renewed_again() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        let stale = cell.set(FileAccessToken::new("stale").unwrap());
        let fresh = cell.refresh(&stale).await.unwrap();
        for _ in 0..100 {
            assert!(is_refresh_failed_saying(&cell.refresh(&fresh).await, "not logging in again"));
        }
        let quiet = cell.refresh(&fresh).await.unwrap_err();
        let expected =
            RefreshFailure::RenewedTooRecently { renewed_ago: Duration::ZERO, retry_in: Duration::from_secs(5) };
        assert_eq!(quiet, AccessError::RefreshFailed(expected));
        clock.advance(Duration::from_millis(4_999));
        assert!(is_refresh_failed_saying(&cell.refresh(&fresh).await, "not logging in again"));
        assert_eq!(hook.calls(), 1);
        // Once the quiet period (5 s) has passed, the refused token is renewed.
        clock.advance(Duration::from_millis(1));
        assert_eq!(cell.refresh(&fresh).await.unwrap().expose_secret(), "fresh-1");
        // A token the app set itself is renewed at once.
        let app = cell.set(FileAccessToken::new("app-login").unwrap());
        assert_eq!(cell.refresh(&app).await.unwrap().expose_secret(), "fresh-2");
    }

    #[tokio::test]
    async fn the_quiet_period_and_the_backoff_are_configurable() {
        let clock = start();
        let (cell, hook) = cell_with_hook(&clock);
        let cell = cell.with_quiet_period(Duration::ZERO).with_renewal_backoff(Duration::ZERO, Duration::ZERO);
        let first = cell.set(FileAccessToken::new("first").unwrap());
        let second = cell.refresh(&first).await.unwrap();
        cell.refresh(&second).await.unwrap();
        hook.fail(true);
        let current = cell.current().unwrap();
        cell.refresh(&current).await.unwrap_err();
        cell.refresh(&current).await.unwrap_err();
        assert_eq!(hook.calls(), 4);
    }
}
