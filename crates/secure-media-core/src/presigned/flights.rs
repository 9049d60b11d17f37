//! Presign flights with group commit: concurrent misses for one key share one call, and misses
//! that arrive while calls are in flight ride together in the next call (up to the batch limit).
//! Up to a set number of calls run at once, each taking what is waiting when it starts. No
//! timers and no runtime: whoever is waiting drives the next call.
//!
//! A flight lives as long as someone waits for it: each caller holds a [`Ticket`], and the last
//! ticket dropped before the flight is put into a call closes it. So a caller that goes away
//! (a dropped future, a cancelled task) never leaves a flight behind for later callers to join,
//! and the waiting bound counts only flights someone still waits for.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt, Shared};

use super::SignedUrl;
use crate::{AccessError, FileAccessToken};

pub(crate) type Outcome = Result<SignedUrl, AccessError>;
type Waiter = Shared<oneshot::Receiver<Outcome>>;

/// A flight's identity: the principal scope and the clean URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FlightKey {
    pub(crate) scope: Arc<str>,
    pub(crate) url: Arc<str>,
    /// The scope is a digest of a token whose claims are not yet proven: the call proves them.
    pub(crate) proving: bool,
}

struct Flight {
    id: u64,
    /// The opener's token: later keys ride in a call only with the same token.
    token: Arc<FileAccessToken>,
    /// Taken by the caller that puts this flight into a presign call.
    sender: Option<oneshot::Sender<Outcome>>,
    waiter: Waiter,
    /// Tickets not yet dropped.
    live: usize,
}

#[derive(Default)]
struct State {
    flights: HashMap<FlightKey, Flight>,
    /// Keys waiting for a call, oldest first (closed ones are skipped, and swept now and then).
    queue: VecDeque<FlightKey>,
    next_id: u64,
}

impl State {
    /// Drops queue entries of closed flights once they outnumber the open ones.
    fn sweep_queue(&mut self) {
        if self.queue.len() > 2 * self.flights.len() + 16 {
            let flights = &self.flights;
            self.queue.retain(|key| flights.get(key).is_some_and(|f| f.sender.is_some()));
        }
    }
}

/// A place in a flight, new or joined. Dropping it gives the place up.
pub(crate) struct Ticket<'f> {
    flights: &'f Flights,
    key: FlightKey,
    id: u64,
    /// The caller's own token: a call this caller drives is made with it.
    token: Arc<FileAccessToken>,
    waiter: Waiter,
    /// This caller opened the flight (nobody was fetching the key).
    pub(crate) opened: bool,
    /// The flight is asked with another token than this caller's (a rotation under way): a
    /// refusal of that token is not this caller's to act on.
    foreign_token: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut state = self.flights.state();
        let Some(flight) = state.flights.get_mut(&self.key).filter(|f| f.id == self.id) else {
            return;
        };
        flight.live = flight.live.saturating_sub(1);
        // Nobody waits and no call has it: close it, so nobody joins a flight nobody drives.
        if flight.live == 0 && flight.sender.is_some() {
            state.flights.remove(&self.key);
            state.sweep_queue();
        }
    }
}

/// One batch taken for a presign call: the keys in order and their senders.
struct Batch {
    token: Arc<FileAccessToken>,
    keys: Vec<FlightKey>,
    senders: Vec<(u64, oneshot::Sender<Outcome>)>,
}

/// Answers some of a batch's flights before its call ends (what the cache already held), so
/// their waiters do not wait for the presign call of the rest.
#[derive(Clone)]
pub(crate) struct Early<'f> {
    flights: &'f Flights,
    /// The batch's keys and senders, by index; a sender is taken when its flight is answered.
    senders: Arc<Mutex<Vec<Unanswered>>>,
}

/// A batch's key, its flight's id, and the sender of its answer until it is sent.
type Unanswered = (FlightKey, u64, Option<oneshot::Sender<Outcome>>);

impl Early<'_> {
    /// Answers the batch's key at `index` now (later answers for it are dropped).
    pub(crate) fn deliver(&self, index: usize, outcome: Outcome) {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        let Some((key, id, sender)) = senders.get_mut(index) else { return };
        let Some(sender) = sender.take() else { return };
        let mut state = self.flights.state();
        if state.flights.get(key).is_some_and(|f| f.id == *id) {
            state.flights.remove(key);
        }
        let _ = sender.send(outcome);
    }

    /// Answers every flight not answered early, with the call's outcome for it (`Missing` where
    /// the call gave none), and closes them.
    fn finish(&self, outcomes: Vec<Outcome>) {
        let mut outcomes = outcomes.into_iter();
        let count = self.senders.lock().unwrap_or_else(PoisonError::into_inner).len();
        for index in 0..count {
            let outcome = outcomes.next().unwrap_or_else(|| {
                let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
                Err(super::missing(senders.get(index).map_or("", |(key, ..)| &*key.url)))
            });
            self.deliver(index, outcome);
        }
    }
}

pub(crate) struct Flights {
    state: Mutex<State>,
    /// One lock per presign call that may run at once; the misses behind them gather into the
    /// next batch. (Each freed slot wakes its own waiter: a semaphore's release may coalesce
    /// wakeups, leaving slots free while misses wait.)
    call_slots: Box<[futures::lock::Mutex<()>]>,
    batch_limit: usize,
    max_waiting: usize,
}

fn same_token(a: &FileAccessToken, b: &FileAccessToken) -> bool {
    std::ptr::eq(a, b) || a.expose_secret() == b.expose_secret()
}

impl Flights {
    pub(crate) fn new(batch_limit: usize, max_waiting: usize, max_calls: usize) -> Self {
        Self {
            state: Mutex::default(),
            call_slots: (0..max_calls.max(1)).map(|_| futures::lock::Mutex::new(())).collect(),
            batch_limit: batch_limit.max(1),
            max_waiting: max_waiting.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the flight for `key`, or opens one. Errors when too many flights are waiting.
    pub(crate) fn enter(
        &self,
        scope: &str,
        url: &str,
        proving: bool,
        token: &Arc<FileAccessToken>,
    ) -> Result<Ticket<'_>, AccessError> {
        let key = FlightKey { scope: scope.into(), url: url.into(), proving };
        let mut state = self.state();
        if let Some(flight) = state.flights.get_mut(&key) {
            flight.live += 1;
            let (id, waiter) = (flight.id, flight.waiter.clone());
            let foreign_token = !same_token(&flight.token, token);
            return Ok(Ticket { flights: self, key, id, token: token.clone(), waiter, opened: false, foreign_token });
        }
        if state.flights.len() >= self.max_waiting {
            return Err(AccessError::Busy(state.flights.len()));
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = receiver.shared();
        state.next_id += 1;
        let id = state.next_id;
        let flight = Flight { id, token: token.clone(), sender: Some(sender), waiter: waiter.clone(), live: 1 };
        state.flights.insert(key.clone(), flight);
        state.queue.push_back(key.clone());
        Ok(Ticket { flights: self, key, id, token: token.clone(), waiter, opened: true, foreign_token: false })
    }

    /// Waits for the ticket's outcome. Whenever a call slot is free, the waiter takes it and, if
    /// its key has not been taken yet, presigns it with the other waiting keys via `run`, with its
    /// own token.
    pub(crate) async fn wait<'f, R, F>(&'f self, ticket: Ticket<'_>, run: R) -> Outcome
    where
        R: FnOnce(Arc<FileAccessToken>, Vec<FlightKey>, Early<'f>) -> F,
        F: Future<Output = Vec<Outcome>>,
    {
        let cancelled = || AccessError::Cancelled(ticket.key.url.to_string());
        // Another token's refusal: the caller asks again with its own (as after a cancellation).
        let own = |outcome: Outcome| match outcome {
            Err(AccessError::PresignUnauthorized { .. }) if ticket.foreign_token => Err(cancelled()),
            outcome => outcome,
        };
        // Any free slot: the first of their locks granted (the others' wakeups pass on when dropped).
        let slot = future::select_all(self.call_slots.iter().map(futures::lock::Mutex::lock));
        let waiter = match future::select(ticket.waiter.clone(), slot).await {
            Either::Left((outcome, _)) => return own(outcome.unwrap_or_else(|_| Err(cancelled()))),
            Either::Right(((guard, _, others), waiter)) => {
                // The other slots' lock futures go now: a wakeup one of them got passes on.
                drop(others);
                // Nothing to do if another call took this key: the slot goes to the next waiter.
                if self.taken(&ticket) {
                    drop(guard);
                    return own(waiter.await.unwrap_or_else(|_| Err(cancelled())));
                }
                // Let the tasks that are ready run first: misses started together (a window of
                // loads) then ride in this call rather than the next. A yield, not a timer.
                YieldNow(false).await;
                if let Some(batch) = self.take_batch(&ticket.key, ticket.id, &ticket.token) {
                    let Batch { token, keys, senders } = batch;
                    let flights = keys.iter().cloned().zip(senders.iter().map(|(id, _)| *id)).collect();
                    let senders = keys.iter().cloned().zip(senders).map(|(key, (id, s))| (key, id, Some(s))).collect();
                    let early = Early { flights: self, senders: Arc::new(Mutex::new(senders)) };
                    // Declared after `early`, so dropped before it: a dropped caller's flights are
                    // closed before their senders go, and no waiter retries into a dead flight.
                    let mut cleanup = Cleanup { flights: self, batch: flights, armed: true };
                    let outcomes = run(token, keys, early.clone()).await;
                    early.finish(outcomes);
                    cleanup.armed = false;
                }
                drop(guard);
                waiter
            }
        };
        own(waiter.await.unwrap_or_else(|_| Err(cancelled())))
    }

    /// Has a call already taken this ticket's key (or its flight closed)?
    fn taken(&self, ticket: &Ticket<'_>) -> bool {
        let state = self.state();
        !state.flights.get(&ticket.key).is_some_and(|flight| flight.id == ticket.id && flight.sender.is_some())
    }

    /// Takes `first` (if still waiting) and up to `batch_limit - 1` more waiting keys opened with
    /// the same token, oldest first.
    fn take_batch(&self, first: &FlightKey, id: u64, token: &Arc<FileAccessToken>) -> Option<Batch> {
        let mut state = self.state();
        let State { flights, queue, .. } = &mut *state;
        // This caller's own flight only: another may have answered it and a new one opened.
        let head = flights.get_mut(first).filter(|flight| flight.id == id)?;
        let sender = head.sender.take()?;
        let mut batch = Batch { token: token.clone(), keys: vec![first.clone()], senders: vec![(head.id, sender)] };
        for key in queue.iter() {
            if batch.keys.len() >= self.batch_limit {
                break;
            }
            if let Some(flight) = flights.get_mut(key) {
                if same_token(&flight.token, token) {
                    if let Some(sender) = flight.sender.take() {
                        batch.keys.push(key.clone());
                        batch.senders.push((flight.id, sender));
                    }
                }
            }
        }
        queue.retain(|key| flights.get(key).is_some_and(|f| f.sender.is_some()));
        Some(batch)
    }

    /// The most keys one call takes.
    pub(crate) fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    /// How many flights are waiting (for a call, or for their call to end).
    pub(crate) fn waiting(&self) -> usize {
        self.state().flights.len()
    }
}

/// Pending once, having asked to be polled again: whatever else is ready runs first.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// Closes the flights of a batch whose caller was dropped mid-call, so their waiters see
/// `Cancelled` (and retry) instead of joining a flight nobody drives.
struct Cleanup<'a> {
    flights: &'a Flights,
    /// The batch's keys and their flights' ids: a flight answered early and opened again since
    /// is another batch's.
    batch: Vec<(FlightKey, u64)>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.flights.state();
            for (key, id) in &self.batch {
                if state.flights.get(key).is_some_and(|f| f.id == *id && f.sender.is_none()) {
                    state.flights.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(secret: &str) -> Arc<FileAccessToken> {
        Arc::new(FileAccessToken::new(secret).unwrap())
    }

    #[test]
    fn a_flight_whose_callers_all_left_is_closed_and_frees_its_place() {
        let flights = Flights::new(10, 2, 1);
        let t = token("one");
        let a = flights.enter("s", "a", false, &t).unwrap();
        let b = flights.enter("s", "b", false, &t).unwrap();
        assert!(matches!(flights.enter("s", "c", false, &t), Err(AccessError::Busy(2))));
        let joined = flights.enter("s", "a", false, &t).unwrap();
        drop(a);
        assert_eq!(flights.waiting(), 2, "a is still awaited by the caller that joined it");
        drop(joined);
        drop(b);
        assert_eq!(flights.waiting(), 0);
        assert!(flights.enter("s", "c", false, &t).is_ok());
    }

    #[test]
    fn after_a_rotation_a_later_caller_opens_its_own_flight_and_drives_it_with_its_token() {
        let flights = Flights::new(10, 10, 1);
        let (old, new) = (token("old"), token("new"));
        drop(flights.enter("sub:alice", "a", false, &old).unwrap());
        let ticket = flights.enter("sub:alice", "a", false, &new).unwrap();
        assert!(ticket.opened, "the abandoned flight was closed, not joined");
        let used = Mutex::new(None);
        let outcome = futures::executor::block_on(flights.wait(ticket, |token, keys, _| {
            *used.lock().unwrap() = Some(token.expose_secret().to_owned());
            async move {
                keys.iter()
                    .map(|k| {
                        Err(AccessError::Presign { url: k.url.to_string(), reason: crate::PresignFailure::TimedOut })
                    })
                    .collect()
            }
        }));
        assert!(outcome.is_err());
        assert_eq!(used.lock().unwrap().as_deref(), Some("new"));
        assert_eq!(flights.waiting(), 0);
    }

    #[test]
    fn a_refusal_of_another_callers_token_is_a_retry_not_a_refusal() {
        let flights = Flights::new(10, 10, 1);
        let (old, new) = (token("old"), token("new"));
        let driver = flights.enter("sub:alice", "a", false, &old).unwrap();
        let rider = flights.enter("sub:alice", "a", false, &new).unwrap();
        let refused = |_: Arc<FileAccessToken>, keys: Vec<FlightKey>, _: Early<'_>| async move {
            keys.iter()
                .map(|_| Err(AccessError::PresignUnauthorized { status: http::StatusCode::UNAUTHORIZED }))
                .collect()
        };
        let (driven, ridden) = futures::executor::block_on(futures::future::join(
            flights.wait(driver, refused),
            flights.wait(rider, refused),
        ));
        assert!(matches!(driven, Err(AccessError::PresignUnauthorized { .. })), "the old token's holder renews it");
        assert!(matches!(ridden, Err(AccessError::Cancelled(_))), "the new token's holder asks again: {ridden:?}");
    }

    #[test]
    fn a_dropped_driver_closes_only_its_own_flights_not_one_opened_again_after_an_early_answer() {
        use futures::FutureExt;
        let flights = Flights::new(10, 10, 2);
        let t = token("one");
        // A answers its key early, then its call never ends.
        let a = flights.enter("s", "a", false, &t).unwrap();
        let mut driver_a = Box::pin(flights.wait(a, |_, keys, early| async move {
            early.deliver(0, Err(AccessError::Cancelled(keys[0].url.to_string())));
            futures::future::pending::<Vec<Outcome>>().await
        }));
        for _ in 0..3 {
            assert!((&mut driver_a).now_or_never().is_none());
        }
        assert_eq!(flights.waiting(), 0, "answered early: its flight is closed");
        // A new caller opens the key again and B takes it into a call of its own.
        let b = flights.enter("s", "a", false, &t).unwrap();
        assert!(b.opened);
        let mut driver_b = Box::pin(flights.wait(b, |_, _, _| futures::future::pending::<Vec<Outcome>>()));
        for _ in 0..3 {
            assert!((&mut driver_b).now_or_never().is_none());
        }
        assert_eq!(flights.waiting(), 1);
        drop(driver_a);
        assert_eq!(flights.waiting(), 1, "B's flight is B's: A's cleanup leaves it");
    }

    #[test]
    fn many_abandoned_flights_leave_no_queue_behind() {
        let flights = Flights::new(10, 10, 1);
        let t = token("one");
        for n in 0..10_000 {
            drop(flights.enter("s", &n.to_string(), false, &t).unwrap());
        }
        assert_eq!(flights.waiting(), 0);
        assert!(flights.state().queue.len() <= 16);
    }
}
