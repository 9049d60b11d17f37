//! Tokens the presign endpoint has accepted. A JWT's claims are read, not verified (only the
//! server can), so a token whose payload merely says `sub: alice` must not reach alice's cached
//! URLs: its claims name a cache scope only once the endpoint has accepted that exact token.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crossbeam_utils::sync::ShardedLock;
use sha2::{Digest as _, Sha256};

use crate::FileAccessToken;

/// Tokens remembered by address (a process holds one or two at a time; more only churn).
const RECENT: usize = 16;
/// Tokens remembered by digest; past it the set starts over (each token then proves itself again).
const DIGESTS: usize = 4096;

type TokenDigest = [u8; 32];

/// A one-way digest of a token, keyed by its purpose so it matches no other digest of it.
fn digest(token: &FileAccessToken) -> TokenDigest {
    let mut hasher = Sha256::new();
    hasher.update(b"secure-media/presigned/proven-token/v1\0");
    hasher.update(token.expose_secret().as_bytes());
    hasher.finalize().into()
}

/// The flight scope of a token whose claims are not proven yet: a digest of the whole token,
/// so only callers holding that very token share its presign call.
pub(crate) fn unproven_scope(token: &FileAccessToken) -> String {
    let mut scope = String::with_capacity(9 + 32);
    scope.push_str("unproven:");
    for byte in &digest(token)[..16] {
        let _ = write!(scope, "{byte:02x}");
    }
    scope
}

#[derive(Default)]
pub(crate) struct ProvenTokens {
    /// By address: the cache hit's check, with no hashing. Each `Weak` keeps its allocation, so
    /// no other token can live at a listed address.
    recent: ShardedLock<Vec<Weak<FileAccessToken>>>,
    /// By digest: another `Arc` of the same secret (the app set the same token again).
    digests: Mutex<HashSet<TokenDigest>>,
}

impl ProvenTokens {
    /// Was this very token (this allocation) accepted? The hot path's check.
    pub(crate) fn by_address(&self, token: &FileAccessToken) -> bool {
        let recent = self.recent.read().unwrap_or_else(PoisonError::into_inner);
        recent.iter().any(|known| std::ptr::eq(known.as_ptr(), token))
    }

    /// Was this token, or another with the same secret, accepted?
    pub(crate) fn contains(&self, token: &Arc<FileAccessToken>) -> bool {
        if self.by_address(token) {
            return true;
        }
        let known = self.digests.lock().unwrap_or_else(PoisonError::into_inner).contains(&digest(token));
        if known {
            self.remember_address(token);
        }
        known
    }

    /// The endpoint accepted `token`.
    pub(crate) fn insert(&self, token: &Arc<FileAccessToken>) {
        {
            let mut digests = self.digests.lock().unwrap_or_else(PoisonError::into_inner);
            if digests.len() >= DIGESTS {
                digests.clear();
            }
            digests.insert(digest(token));
        }
        self.remember_address(token);
    }

    fn remember_address(&self, token: &Arc<FileAccessToken>) {
        let mut recent = self.recent.write().unwrap_or_else(PoisonError::into_inner);
        if recent.iter().any(|known| std::ptr::eq(known.as_ptr(), Arc::as_ptr(token))) {
            return;
        }
        recent.retain(|known| known.strong_count() > 0);
        if recent.len() >= RECENT {
            recent.remove(0);
        }
        recent.push(Arc::downgrade(token));
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
    fn unproven_scopes_are_digests_that_never_show_the_token() {
        let token = FileAccessToken::new("s3cr3t").unwrap();
        let scope = unproven_scope(&token);
        assert!(scope.starts_with("unproven:") && scope.len() == 41 && !scope.contains("s3cr3t"));
        assert_eq!(scope, unproven_scope(&FileAccessToken::new("s3cr3t").unwrap()));
        assert_ne!(scope, unproven_scope(&FileAccessToken::new("s3cr3u").unwrap()));
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
