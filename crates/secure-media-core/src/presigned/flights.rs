//! Presign flights with group commit: concurrent misses for one key share one call, and misses
//! that arrive while a call is in flight ride together in the next call (up to the batch limit).
//! No timers and no runtime: whoever is waiting drives the next call.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::oneshot;
use futures::future::{self, Either, FutureExt, Shared};

use super::SignedUrl;
use crate::{AccessError, FileAccessToken};

pub(crate) type Outcome = Result<Arc<SignedUrl>, AccessError>;
type Waiter = Shared<oneshot::Receiver<Outcome>>;

/// A flight's identity: the principal scope and the clean URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct FlightKey {
    pub(crate) scope: Arc<str>,
    pub(crate) url: Arc<str>,
}

struct Flight {
    id: u64,
    token: Arc<FileAccessToken>,
    /// Taken by the caller that puts this flight into a presign call.
    sender: Option<oneshot::Sender<Outcome>>,
    waiter: Waiter,
}

#[derive(Default)]
struct State {
    flights: HashMap<FlightKey, Flight>,
    /// Keys waiting for a call, oldest first.
    queue: VecDeque<FlightKey>,
    next_id: u64,
}

/// A place in a flight, new or joined.
pub(crate) struct Ticket {
    key: FlightKey,
    waiter: Waiter,
    /// This caller opened the flight (nobody was fetching the key).
    pub(crate) opened: bool,
}

/// One batch taken for a presign call: the keys in order and their senders.
struct Batch {
    token: Arc<FileAccessToken>,
    keys: Vec<FlightKey>,
    senders: Vec<(u64, oneshot::Sender<Outcome>)>,
}

pub(crate) struct Flights {
    state: Mutex<State>,
    /// One presign call at a time; the misses behind it gather into the next batch.
    call_slot: futures::lock::Mutex<()>,
    batch_limit: usize,
    max_waiting: usize,
}

impl Flights {
    pub(crate) fn new(batch_limit: usize, max_waiting: usize) -> Self {
        Self {
            state: Mutex::default(),
            call_slot: futures::lock::Mutex::new(()),
            batch_limit: batch_limit.max(1),
            max_waiting: max_waiting.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the flight for `key`, or opens one. Errors when too many flights are waiting.
    pub(crate) fn enter(&self, scope: &str, url: &str, token: &Arc<FileAccessToken>) -> Result<Ticket, AccessError> {
        let key = FlightKey { scope: scope.into(), url: url.into() };
        let mut state = self.state();
        if let Some(flight) = state.flights.get(&key) {
            let waiter = flight.waiter.clone();
            return Ok(Ticket { key, waiter, opened: false });
        }
        if state.flights.len() >= self.max_waiting {
            return Err(AccessError::Busy(state.flights.len()));
        }
        let (sender, receiver) = oneshot::channel();
        let waiter = receiver.shared();
        state.next_id += 1;
        let id = state.next_id;
        state
            .flights
            .insert(key.clone(), Flight { id, token: token.clone(), sender: Some(sender), waiter: waiter.clone() });
        state.queue.push_back(key.clone());
        Ok(Ticket { key, waiter, opened: true })
    }

    /// Waits for the ticket's outcome. Whenever no call is running, the waiter takes the call slot
    /// and, if its key has not been taken yet, presigns it with the other waiting keys via `run`.
    pub(crate) async fn wait<R, F>(&self, ticket: Ticket, run: R) -> Outcome
    where
        R: FnOnce(Arc<FileAccessToken>, Vec<FlightKey>) -> F,
        F: Future<Output = Vec<Outcome>>,
    {
        let cancelled = || AccessError::Cancelled(ticket.key.url.to_string());
        let slot = self.call_slot.lock();
        let waiter = match future::select(ticket.waiter.clone(), slot).await {
            Either::Left((outcome, _)) => return outcome.unwrap_or_else(|_| Err(cancelled())),
            Either::Right((guard, waiter)) => {
                if let Some(batch) = self.take_batch(&ticket.key) {
                    let mut cleanup = Cleanup { flights: self, keys: batch.keys.clone(), armed: true };
                    let outcomes = run(batch.token.clone(), batch.keys.clone()).await;
                    self.deliver(batch, outcomes);
                    cleanup.armed = false;
                }
                drop(guard);
                waiter
            }
        };
        waiter.await.unwrap_or_else(|_| Err(cancelled()))
    }

    /// Takes `first` (if still waiting) and up to `batch_limit - 1` more waiting keys that use the
    /// same token, oldest first.
    fn take_batch(&self, first: &FlightKey) -> Option<Batch> {
        let mut state = self.state();
        let State { flights, queue, .. } = &mut *state;
        let head = flights.get_mut(first)?;
        let sender = head.sender.take()?;
        let token = head.token.clone();
        let mut batch = Batch { token: token.clone(), keys: vec![first.clone()], senders: vec![(head.id, sender)] };
        for key in queue.iter() {
            if batch.keys.len() >= self.batch_limit {
                break;
            }
            if let Some(flight) = flights.get_mut(key) {
                if Arc::ptr_eq(&flight.token, &token) {
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

    /// Hands each outcome to its flight's waiters and closes the flights.
    fn deliver(&self, batch: Batch, outcomes: Vec<Outcome>) {
        let mut outcomes = outcomes.into_iter();
        let mut state = self.state();
        for (key, (id, sender)) in batch.keys.into_iter().zip(batch.senders) {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(AccessError::Presign {
                    url: key.url.to_string(),
                    reason: "the presigner answered fewer URLs than asked".into(),
                })
            });
            if state.flights.get(&key).is_some_and(|f| f.id == id) {
                state.flights.remove(&key);
            }
            let _ = sender.send(outcome);
        }
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.state().flights.len()
    }
}

/// Closes the flights of a batch whose caller was dropped mid-call, so their waiters see
/// `Cancelled` (and retry) instead of joining a flight nobody drives.
struct Cleanup<'a> {
    flights: &'a Flights,
    keys: Vec<FlightKey>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.flights.state();
            for key in &self.keys {
                if state.flights.get(key).is_some_and(|f| f.sender.is_none()) {
                    state.flights.remove(key);
                }
            }
        }
    }
}
