//! Tokens the presign endpoint has accepted. A JWT's claims are read, not verified (only the
//! server can), so a token whose payload merely says `sub: alice` must not reach alice's cached
//! URLs: its claims name a cache scope only once the endpoint has accepted that exact token.
//! Until then it is scoped by a digest of itself ([`FileAccessToken::own_scope`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crossbeam_utils::sync::ShardedLock;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};

use crate::FileAccessToken;

/// Tokens remembered by address (a process holds one or two at a time; more only churn).
const RECENT: usize = 16;
/// Tokens remembered by digest; past it the set starts over (each token then proves itself again).
const DIGESTS: usize = 4096;

// The address path (`last`, `recent`) is hand-written for a user-level figure: a cache hit on
// two threads (`presigned_hit_2_threads` in BENCHMARKS.md) checks proof with one load and a
// per-thread read lock, not a shared lock or a hash of the token.
#[derive(Default)]
pub(crate) struct ProvenTokens {
    /// The address of the token proven last, or null: one load on a cache hit, the usual case
    /// (an app holds one token at a time). Only ever an address listed in `recent`, and cleared
    /// before its `Weak` leaves, so it always names a live allocation.
    last: AtomicPtr<FileAccessToken>,
    /// By address, with no hashing. Each `Weak` keeps its allocation, so no other token can live
    /// at a listed address.
    recent: ShardedLock<Vec<Weak<FileAccessToken>>>,
    /// By the token's own scope (a digest of its secret, computed once per token): another `Arc`
    /// of the same secret (the app set the same token again).
    digests: Mutex<HashSet<Arc<str>>>,
    /// Proofs under way, by token scope: resolved (or dropped) when the proving call ends.
    proofs: Mutex<HashMap<String, Shared<oneshot::Receiver<()>>>>,
}

/// A caller's part in proving a token: make the proving call, or wait for the one under way.
pub(crate) enum Proof<'p> {
    /// Prove it: the caller's own presign call. Followers wake when this is dropped.
    Lead(ProofGuard<'p>),
    /// Someone is proving it: wait, then look under the token's proven scope.
    Follow(Shared<oneshot::Receiver<()>>),
}

/// Held by the caller proving a token; its drop (success, failure or cancellation) wakes the
/// callers waiting for the proof.
pub(crate) struct ProofGuard<'p> {
    proofs: &'p ProvenTokens,
    scope: String,
    done: Shared<oneshot::Receiver<()>>,
    _sender: oneshot::Sender<()>,
}

impl Drop for ProofGuard<'_> {
    fn drop(&mut self) {
        let mut proofs = self.proofs.proofs.lock().unwrap_or_else(PoisonError::into_inner);
        if proofs.get(&self.scope).is_some_and(|done| done.ptr_eq(&self.done)) {
            proofs.remove(&self.scope);
        }
    }
}

impl ProvenTokens {
    /// Was this very token (this allocation) accepted? The hot path's check.
    pub(crate) fn by_address(&self, token: &FileAccessToken) -> bool {
        if std::ptr::eq(self.last.load(Ordering::Acquire), token) {
            return true;
        }
        let recent = self.recent.read().unwrap_or_else(PoisonError::into_inner);
        recent.iter().any(|known| std::ptr::eq(known.as_ptr(), token))
    }

    /// Was this token, or another with the same secret, accepted?
    pub(crate) fn contains(&self, token: &Arc<FileAccessToken>) -> bool {
        if self.by_address(token) {
            return true;
        }
        let known = self.digests.lock().unwrap_or_else(PoisonError::into_inner).contains(token.own_scope());
        if known {
            self.remember_address(token);
        }
        known
    }

    /// Lead the proof of the token whose scope is `scope`, or follow the one under way.
    pub(crate) fn prove(&self, scope: &str) -> Proof<'_> {
        let mut proofs = self.proofs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(done) = proofs.get(scope) {
            return Proof::Follow(done.clone());
        }
        let (sender, receiver) = oneshot::channel();
        let done = receiver.shared();
        proofs.insert(scope.to_owned(), done.clone());
        Proof::Lead(ProofGuard { proofs: self, scope: scope.to_owned(), done, _sender: sender })
    }

    /// The endpoint accepted `token`.
    pub(crate) fn insert(&self, token: &Arc<FileAccessToken>) {
        if self.by_address(token) {
            return; // already known: the usual case after the first call
        }
        {
            let mut digests = self.digests.lock().unwrap_or_else(PoisonError::into_inner);
            if digests.len() >= DIGESTS {
                digests.clear();
            }
            digests.insert(token.own_scope().clone());
        }
        self.remember_address(token);
    }

    fn remember_address(&self, token: &Arc<FileAccessToken>) {
        let mut recent = self.recent.write().unwrap_or_else(PoisonError::into_inner);
        if !recent.iter().any(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(token))) {
            // Whatever leaves the list leaves `last` first (we hold the write lock).
            let forget = |known: &Weak<FileAccessToken>| {
                let null = std::ptr::null_mut();
                let _ =
                    self.last.compare_exchange(known.as_ptr().cast_mut(), null, Ordering::AcqRel, Ordering::Acquire);
            };
            recent.retain(|known| {
                let alive = known.strong_count() > 0;
                if !alive {
                    forget(known);
                }
                alive
            });
            if recent.len() >= RECENT {
                forget(&recent.remove(0));
            }
            recent.push(Arc::downgrade(token));
        }
        self.last.store(Arc::as_ptr(token).cast_mut(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_proven_by_itself_or_by_its_secret_never_by_its_claims() {
        let proven = ProvenTokens::default();
        let alice = Arc::new(FileAccessToken::new("a.eyJzdWIiOiJhbGljZSJ9.good").unwrap());
        let forged = Arc::new(FileAccessToken::new("a.eyJzdWIiOiJhbGljZSJ9.forged").unwrap());
        assert_eq!(alice.principal(), forged.principal());
        proven.insert(&alice);
        assert!(proven.by_address(&alice) && proven.contains(&alice));
        assert!(!proven.by_address(&forged) && !proven.contains(&forged));
        let again = Arc::new(FileAccessToken::new("a.eyJzdWIiOiJhbGljZSJ9.good").unwrap());
        assert!(!proven.by_address(&again));
        assert!(proven.contains(&again));
        assert!(proven.by_address(&again), "remembered by address once its digest matched");
    }

    #[test]
    fn token_scopes_are_stable_digests_that_never_show_the_token() {
        let token = FileAccessToken::new("s3cr3t").unwrap();
        let scope = token.own_scope().to_string();
        assert!(scope.starts_with("tok:") && scope.len() == 36 && !scope.contains("s3cr3t"));
        assert_eq!(scope.as_str(), &**FileAccessToken::new("s3cr3t").unwrap().own_scope());
        assert_ne!(scope.as_str(), &**FileAccessToken::new("s3cr3u").unwrap().own_scope());
        // Pinned: processes sharing a cache must agree on it.
        assert_eq!(scope, "tok:9276c640b9cbe49f945bc75936dce226");
    }

    #[test]
    fn the_last_address_never_outlives_its_listing() {
        let proven = ProvenTokens::default();
        let first = Arc::new(FileAccessToken::new("t-first").unwrap());
        proven.insert(&first);
        assert!(std::ptr::eq(proven.last.load(Ordering::Acquire), Arc::as_ptr(&first)));
        drop(first);
        // Enough others to push `first` out of the list: `last` follows each new one.
        let others: Vec<_> =
            (0..RECENT + 2).map(|n| Arc::new(FileAccessToken::new(format!("o{n}")).unwrap())).collect();
        for other in &others {
            proven.insert(other);
            let last = proven.last.load(Ordering::Acquire);
            let recent = proven.recent.read().unwrap();
            assert!(last.is_null() || recent.iter().any(|known| std::ptr::eq(known.as_ptr(), last)));
        }
        assert!(proven.by_address(others.last().unwrap()));
    }

    #[test]
    fn one_caller_leads_a_proof_and_the_others_wake_when_it_ends() {
        let proven = ProvenTokens::default();
        let lead = proven.prove("tok:a");
        let Proof::Follow(done) = proven.prove("tok:a") else { panic!("a second caller follows") };
        assert!(matches!(proven.prove("tok:b"), Proof::Lead(_)), "another token leads its own");
        assert!(futures::FutureExt::now_or_never(done.clone()).is_none());
        drop(lead);
        assert!(futures::FutureExt::now_or_never(done).is_some());
        assert!(matches!(proven.prove("tok:a"), Proof::Lead(_)), "a later caller leads afresh");
    }

    #[test]
    fn the_address_list_stays_bounded() {
        let proven = ProvenTokens::default();
        let tokens: Vec<_> = (0..100).map(|n| Arc::new(FileAccessToken::new(format!("t{n}")).unwrap())).collect();
        for token in &tokens {
            proven.insert(token);
        }
        assert!(proven.recent.read().unwrap().len() <= RECENT);
        assert!(tokens.iter().all(|t| proven.contains(t)));
    }
}
