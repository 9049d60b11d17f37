//! Counters, served at `GET /_stats` and by [`RunningServer::stats`](crate::RunningServer::stats).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// A snapshot of the server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Stats {
    /// Successful logins.
    pub logins: u64,
    /// Calls to the presign endpoint that were answered with URLs.
    pub presign_calls: u64,
    /// URLs presigned over all calls.
    pub urls_presigned: u64,
    /// Media answered (200, 206 or 304) by proof kind.
    pub served: Served,
    /// Refusals by reason.
    pub refusals: Refusals,
    /// Requests of any route that carried a token (`fat` in the query, in any case or
    /// percent-encoding, or an `Authorization` header).
    pub requests_with_token: u64,
    /// Requests of any route whose query carried a presign signature: `Signature` (this server's
    /// presigned URLs) or `X-Amz-Signature` (SigV4), in any case or percent-encoding.
    #[serde(default)]
    pub requests_with_signature: u64,
    /// Requests of any route that carried a token or a presign signature, each counted once:
    /// the leak count on a server that should see no credential (another origin, a stand-in for
    /// a CDN or a tracker).
    #[serde(default)]
    pub requests_with_credentials: u64,
    /// All requests.
    pub requests: u64,
    /// Media requests answered with the redirect fault.
    pub redirects: u64,
    /// Requests answered by an injected failure (status or dropped connection).
    pub faults_injected: u64,
}

/// Media served, by how access was proven.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Served {
    /// `?fat=` in the query.
    pub fat_query: u64,
    /// `Authorization: Bearer`.
    pub bearer: u64,
    /// A presigned signature (`Expires`, `Signature`, `Key-Pair-Id`).
    pub presigned: u64,
    /// An AWS SigV4 presigned URL (`X-Amz-Signature` and its fellows).
    #[serde(default)]
    pub sigv4: u64,
}

/// Refusals by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Refusals {
    /// No proof at all (401).
    pub missing: u64,
    /// A FAT that does not verify (401).
    pub invalid_fat: u64,
    /// A FAT past its `exp` (401).
    pub expired_fat: u64,
    /// A presigned URL past its `Expires`, or a SigV4 one past `X-Amz-Date + X-Amz-Expires` (403).
    pub expired_url: u64,
    /// A presigned or SigV4 URL whose signature does not verify, or whose parameters are missing,
    /// malformed or name another key or region; SigV4 on a server without [`ServerConfig::s3`]
    /// (403).
    ///
    /// [`ServerConfig::s3`]: crate::ServerConfig::s3
    pub bad_signature: u64,
    /// A SigV4 URL whose `X-Amz-Date` is more than 15 minutes ahead of the server's clock (403).
    #[serde(default)]
    pub not_yet_valid: u64,
    /// A path escaping the media directory (400).
    pub traversal: u64,
    /// No such file (404).
    pub not_found: u64,
}

const FIELDS: usize = 21;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) logins: AtomicU64,
    pub(crate) presign_calls: AtomicU64,
    pub(crate) urls_presigned: AtomicU64,
    pub(crate) served_fat_query: AtomicU64,
    pub(crate) served_bearer: AtomicU64,
    pub(crate) served_presigned: AtomicU64,
    pub(crate) served_sigv4: AtomicU64,
    pub(crate) refused_missing: AtomicU64,
    pub(crate) refused_invalid_fat: AtomicU64,
    pub(crate) refused_expired_fat: AtomicU64,
    pub(crate) refused_expired_url: AtomicU64,
    pub(crate) refused_bad_signature: AtomicU64,
    pub(crate) refused_not_yet_valid: AtomicU64,
    pub(crate) refused_traversal: AtomicU64,
    pub(crate) not_found: AtomicU64,
    pub(crate) requests_with_token: AtomicU64,
    pub(crate) requests_with_signature: AtomicU64,
    pub(crate) requests_with_credentials: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) redirects: AtomicU64,
    pub(crate) faults_injected: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The kinds of credential one request carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Carried {
    /// `fat` in the query, or an `Authorization` header.
    pub(crate) token: bool,
    /// A presign signature in the query.
    pub(crate) signature: bool,
}

impl Counters {
    fn all(&self) -> [&AtomicU64; FIELDS] {
        [
            &self.logins,
            &self.presign_calls,
            &self.urls_presigned,
            &self.served_fat_query,
            &self.served_bearer,
            &self.served_presigned,
            &self.served_sigv4,
            &self.refused_missing,
            &self.refused_invalid_fat,
            &self.refused_expired_fat,
            &self.refused_expired_url,
            &self.refused_bad_signature,
            &self.refused_not_yet_valid,
            &self.refused_traversal,
            &self.not_found,
            &self.requests_with_token,
            &self.requests_with_signature,
            &self.requests_with_credentials,
            &self.requests,
            &self.redirects,
            &self.faults_injected,
        ]
    }

    /// Counts the credentials one request carried, by kind and in all.
    pub(crate) fn count_credentials(&self, carried: Carried) {
        if carried.token {
            bump(&self.requests_with_token);
        }
        if carried.signature {
            bump(&self.requests_with_signature);
        }
        if carried.token || carried.signature {
            bump(&self.requests_with_credentials);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let [logins, presign_calls, urls_presigned, fat_query, bearer, presigned, sigv4, missing, invalid_fat, expired_fat, expired_url, bad_signature, not_yet_valid, traversal, not_found, requests_with_token, requests_with_signature, requests_with_credentials, requests, redirects, faults_injected] =
            self.all().map(|c| c.load(Ordering::Relaxed));
        Stats {
            logins,
            presign_calls,
            urls_presigned,
            served: Served { fat_query, bearer, presigned, sigv4 },
            refusals: Refusals {
                missing,
                invalid_fat,
                expired_fat,
                expired_url,
                bad_signature,
                not_yet_valid,
                traversal,
                not_found,
            },
            requests_with_token,
            requests_with_signature,
            requests_with_credentials,
            requests,
            redirects,
            faults_injected,
        }
    }

    pub(crate) fn reset(&self) {
        for counter in self.all() {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_from_before_sigv4_still_deserialize() {
        let old = serde_json::json!({
            "logins": 1, "presign_calls": 2, "urls_presigned": 3,
            "served": {"fat_query": 4, "bearer": 5, "presigned": 6},
            "refusals": {"missing": 7, "invalid_fat": 8, "expired_fat": 9, "expired_url": 10,
                         "bad_signature": 11, "traversal": 12, "not_found": 13},
            "requests_with_token": 14, "requests": 15, "redirects": 16, "faults_injected": 17
        });
        let stats: Stats = serde_json::from_value(old).unwrap();
        assert_eq!((stats.served.presigned, stats.served.sigv4), (6, 0));
        assert_eq!((stats.refusals.bad_signature, stats.refusals.not_yet_valid), (11, 0));
        assert_eq!(
            (stats.requests_with_token, stats.requests_with_signature, stats.requests_with_credentials),
            (14, 0, 0)
        );
    }

    #[test]
    fn credentials_count_by_kind_and_once_in_all() {
        let counters = Counters::default();
        for (token, signature) in [(true, false), (false, true), (true, true), (false, false)] {
            counters.count_credentials(Carried { token, signature });
        }
        let stats = counters.snapshot();
        assert_eq!(
            (stats.requests_with_token, stats.requests_with_signature, stats.requests_with_credentials),
            (2, 2, 3)
        );
    }

    #[test]
    fn every_counter_is_snapshot_and_reset() {
        let counters = Counters::default();
        for counter in counters.all() {
            bump(counter);
        }
        let stats = counters.snapshot();
        assert_eq!((stats.served.sigv4, stats.refusals.not_yet_valid, stats.faults_injected), (1, 1, 1));
        assert_eq!((stats.requests_with_signature, stats.requests_with_credentials), (1, 1));
        counters.reset();
        assert_eq!(counters.snapshot(), Stats::default());
    }
}
