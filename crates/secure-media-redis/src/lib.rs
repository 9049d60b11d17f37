//! # secure-media-redis
//!
//! A [`PresignCache`] on Redis, so a fleet (API pods, a scaled media proxy) asks the presign
//! endpoint once per URL and principal instead of once per process, and a restart keeps the cache.
//!
//! ```no_run
//! use std::sync::Arc;
//! use secure_media_core::presigned::{Presigner, PresignedStrategy};
//! use secure_media_core::{SecureHosts, StaticToken};
//! use secure_media_redis::RedisPresignCache;
//!
//! # async fn run(presigner: impl Presigner) -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Arc::new(RedisPresignCache::new("redis://127.0.0.1:6379")?);
//! let strategy =
//!     PresignedStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("fat")?), presigner)
//!         .with_cache(cache);
//! # Ok(()) }
//! ```
//!
//! - **Key**: `{prefix}:{s:<principal scope>}:{clean URL}`, or `{prefix}:{s:<scope>}:h:{digest}`
//!   for URLs longer than 256 bytes, where the digest is XXH3-64 (seed 0) of the clean URL in 16
//!   hex digits: stable across processes, releases and platforms. The braces are a Redis Cluster
//!   hash tag: one principal's entries and leases share a slot. **Value**: JSON with the presigned URL, its expiry and the clean URL
//!   (checked on read). **TTL**: the URL's expiry minus the safety margin (capped at a quarter of
//!   its lifetime, as the strategy does), so Redis drops entries before they go stale.
//! - **What Redis holds**: presigned URLs (which are themselves time-limited credentials for one
//!   file), clean URLs and principal scopes (`sub:<user id>`, or a one-way digest for tokens without
//!   `sub`, or `tok:<digest>` for a token not yet accepted by the endpoint). Never a FAT.
//! - **L1**: an in-memory LRU in front (on by default), so hits stay in nanoseconds and Redis sees
//!   only L1 misses.
//! - **Redis down or slow**: every call has a timeout (default 250 ms); a failure is a miss (or a
//!   skipped write), logged once per outage, never an error to the caller. The strategy presigns
//!   directly, and the connection manager reconnects when Redis is back.
//! - **One presign per URL across the fleet**: before a presign call, a process takes a lease on
//!   each URL that missed (`{entry key}#lease`, `SET NX PX`, 5 s by default, one script per
//!   principal and batch) and presigns only the URLs it got; for the others it waits for the
//!   holder's entry, looking at 5, 10, 20, 40, then every 50 ms. Storing an entry ends its lease
//!   in the same step; a failed call gives its leases up. A waiter presigns a URL itself when its
//!   holder gave up, when the lease runs out (the holder died), when Redis stops answering, or when
//!   the entry it finds is unusable or near its expiry (renewals ahead are each process's own).
//!   What another process stored is checked like any other entry. A process asking again for a
//!   lease it holds renews it; a lease with no expiry, one longer than the configured lease, or
//!   one that is not a string (planted) is taken over; no more than 16 KiB of an entry is read.
//!   A lease left by a process that was cancelled mid-call, or died, holds its URLs' waiters in
//!   other processes until it runs out.
//! - **Whose entries**: a JWT's `sub` is read, not verified, so a process uses `sub:<user>` entries
//!   for a token only after the presign endpoint accepted that token there (its first successful
//!   presign call); before that, only entries under the token's own `tok:<digest>` scope, which
//!   the first process to presign with that very token also wrote. A token whose payload merely
//!   claims a user gets none of that user's entries.
//! - **What is read back is checked**: an entry is used only if its URL is on a secure or CDN host
//!   under the secure hosts' scheme rule; anything else is a miss and is deleted (only if it is
//!   still the same entry). A refusal deletes only the refused URL, never a fresher one another
//!   process stored meanwhile.
//! - **Purge** (logout, user switch) clears this process's L1; Redis entries expire on their own.
//!
//! ## Redis Cluster
//!
//! `RedisPresignCache::new("redis+cluster://h1:7000,h2:7001,h3:7002")` (or
//! [`RedisPresignCache::cluster`] with `redis://` seed URLs) uses the `redis` crate's cluster
//! client instead: the seeds are asked for the slot map and every command goes to the master that
//! owns its key. Every command the cache sends touches one key (GETRANGE, DEL, the refusal's script)
//! or keys of one principal, which share a hash tag and so a slot (the lease, look, publish and
//! release scripts): no cross-slot command is ever sent, and a batch's leases are one command on
//! one node. One principal's entries live on one master, so a fixed scope (a service account)
//! puts the whole cache on one master; per-user scopes spread over all of them.
//!
//! The cluster connection is made in a task of its own, first when a call needs it, so a cluster
//! that is down at start costs misses, not an error from `new`; the client's connection and
//! response timeouts are the cache's timeout, with one retry. A master that is down or hangs (or
//! a slot that moves: the client follows `MOVED` and `ASK`) costs at most that timeout per call:
//! a miss, a skipped write, or a lease this process takes itself, for the principals in its
//! slots only; the others still hit through the same connection. Calls that fail for want of a
//! node start a new connection in the background (at most once a second, then less often while
//! they keep failing, up to every 30 s), which replaces the current one once made: so a master's
//! slots work again once it is back, even on a client that lost it. Cluster
//! mode has database 0 only, and no TLS (the crate is built without the `redis` TLS features).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::await_holding_lock)]

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use secure_media_core::presigned::endpoint::MAX_UNIX_SECS;
use secure_media_core::presigned::{
    CacheKey, Lease, MemoryPresignCache, PresignCache, SignedUrl, MAX_CLOCK_AHEAD, MAX_URL_LIFETIME,
};
use serde::{Deserialize, Serialize};

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCacheError {
    /// The Redis URL is not usable.
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// The Redis Cluster seeds are not usable together (none given, or different credentials or
    /// databases): the seeds without their passwords, and why.
    #[error("invalid Redis Cluster seeds {seeds}: {reason}")]
    InvalidCluster {
        /// The seed URLs, without passwords.
        seeds: String,
        /// Why the cluster client refused them.
        reason: String,
    },
}

/// The scheme that names a cluster by its seeds: `redis+cluster://[user:password@]h1:p1,h2:p2,...`.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How the cache reaches Redis.
enum Backend {
    /// One node, through a reconnecting connection manager.
    Single(ConnectionManager),
    /// A cluster, through a connection made when first needed and made again after failures.
    Cluster(Box<ClusterBackend>),
}

/// The cluster client and its current connection.
struct ClusterBackend {
    client: ClusterClient,
    seeds: Vec<String>,
    /// Shared with the task that makes connections.
    state: Arc<ClusterState>,
    /// How long a connection may take to make (the seeds, the slot map, every master).
    connect_within: Duration,
}

#[derive(Default)]
struct ClusterState {
    /// The connection in use and its generation (each new connection gets the next).
    current: Mutex<Option<(u64, ClusterConnection)>>,
    /// The connection being made, if one is: callers without a connection wait for it (each
    /// under its own timeout) but never cancel it, so a slow cluster still ends up connected.
    connecting: Mutex<Option<Shared<BoxFuture<'static, ()>>>>,
    /// When the last connection was started, and the pause before the next may start.
    attempts: Mutex<Attempts>,
}

/// Connections started while calls fail: the pause between two doubles, from one second up to
/// half a minute, and comes back to a second once a connection is made.
struct Attempts {
    started_at: Option<Instant>,
    pause: Duration,
}

impl Default for Attempts {
    fn default() -> Self {
        Self { started_at: None, pause: FIRST_REMAKE_PAUSE }
    }
}

const FIRST_REMAKE_PAUSE: Duration = Duration::from_secs(1);
const LAST_REMAKE_PAUSE: Duration = Duration::from_secs(30);

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Ends a connection attempt however its task ends (made, failed, panicked, dropped with its
/// runtime): the next failure may start another.
struct Connecting(Arc<ClusterState>);

impl Drop for Connecting {
    fn drop(&mut self) {
        *locked(&self.0.connecting) = None;
    }
}

impl ClusterBackend {
    fn new(client: ClusterClient, seeds: Vec<String>, timeout: Duration) -> Self {
        Self { client, seeds, state: Arc::default(), connect_within: connect_within(timeout) }
    }

    /// The connection and its generation, made first if there is none.
    ///
    /// # Errors
    /// When there is none and none could be made now (a later call tries again).
    async fn connection(&self) -> redis::RedisResult<(u64, ClusterConnection)> {
        if let Some(current) = locked(&self.state.current).clone() {
            return Ok(current);
        }
        let pending = {
            let mut connecting = locked(&self.state.connecting);
            if connecting.is_none() {
                *connecting = self.start_connecting();
            }
            connecting.clone()
        };
        if let Some(pending) = pending {
            pending.await;
        }
        locked(&self.state.current)
            .clone()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no connection to the Redis Cluster yet")))
    }

    /// Makes a connection in a task of its own, bounded by `connect_within`; once made it
    /// replaces the current one (which serves until then). `None` if the last attempt started
    /// within the pause, or there is no tokio runtime to run it on.
    fn start_connecting(&self) -> Option<Shared<BoxFuture<'static, ()>>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        {
            let mut attempts = locked(&self.state.attempts);
            if attempts.started_at.is_some_and(|at| at.elapsed() < attempts.pause) {
                return None;
            }
            attempts.started_at = Some(Instant::now());
            attempts.pause = attempts.pause.saturating_mul(2).min(LAST_REMAKE_PAUSE);
        }
        let (client, state, within) = (self.client.clone(), self.state.clone(), self.connect_within);
        let connect = async move {
            let _ends = Connecting(state.clone());
            if let Ok(Ok(connection)) = tokio::time::timeout(within, client.get_async_connection()).await {
                let mut current = locked(&state.current);
                let generation = current.as_ref().map_or(1, |(generation, _)| generation + 1);
                *current = Some((generation, connection));
                drop(current);
                locked(&state.attempts).pause = FIRST_REMAKE_PAUSE;
            }
        };
        let task = runtime.spawn(connect);
        Some(
            async move {
                let _ = task.await;
            }
            .boxed()
            .shared(),
        )
    }

    /// A call on connection `generation` failed for want of a node (refused, dropped, timed
    /// out): a new connection is started in the background (with a growing pause between
    /// attempts), and replaces it once made. The current one keeps serving meanwhile: a master
    /// that hangs costs only its own slots. (redis 1.8's cluster client was seen never to serve
    /// a restarted master's slots again on a connection made while that master was down; a new
    /// one does.)
    fn failed(&self, generation: u64) {
        let mut connecting = locked(&self.state.connecting);
        let is_current = locked(&self.state.current).as_ref().is_some_and(|(current, _)| *current == generation);
        if is_current && connecting.is_none() {
            *connecting = self.start_connecting();
        }
    }
}

/// Making a cluster connection: seeds, then the slot map, then every master, each bounded by
/// `timeout`, and a second to spare.
fn connect_within(timeout: Duration) -> Duration {
    timeout.saturating_mul(3).saturating_add(Duration::from_secs(1))
}

impl Backend {
    /// A connection for one call, and its generation (0 for the self-repairing single node).
    ///
    /// # Errors
    /// When a cluster connection could not be made.
    async fn connection(&self) -> redis::RedisResult<(u64, Connection)> {
        match self {
            Self::Single(manager) => Ok((0, Connection::Single(manager.clone()))),
            Self::Cluster(cluster) => {
                let (generation, connection) = cluster.connection().await?;
                Ok((generation, Connection::Cluster(connection)))
            }
        }
    }

    /// A call on connection `generation` lost its node (the connection manager repairs itself).
    fn failed(&self, generation: u64) {
        if let Self::Cluster(cluster) = self {
            cluster.failed(generation);
        }
    }
}

/// One node or a cluster behind one [`ConnectionLike`], so every command path is shared.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// A cluster client with the cache's bounds: a dead node costs at most `timeout` per call.
fn cluster_client(seeds: &[String], timeout: Duration) -> Result<ClusterClient, RedisCacheError> {
    ClusterClient::builder(seeds.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .build()
        .map_err(|error| RedisCacheError::InvalidCluster { seeds: redact_seeds(seeds), reason: error.to_string() })
}

/// The seeds of a `redis+cluster://` URL as `redis://` URLs, each with the URL's credentials.
fn cluster_seeds(url: &str) -> Result<Vec<String>, RedisCacheError> {
    let invalid = || RedisCacheError::InvalidUrl(redact_cluster_url(url));
    let rest = url.get(CLUSTER_SCHEME.len()..).ok_or_else(invalid)?;
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains(['/', '?', '#']) {
        return Err(invalid()); // no database, no options: a cluster has database 0 only
    }
    hosts
        .split(',')
        .map(|host| if host.is_empty() { Err(invalid()) } else { Ok(format!("redis://{auth}{host}")) })
        .collect()
}

/// The bound on every Redis call unless `with_timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// How long a lease lasts unless `with_lease` says otherwise.
const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// The first wait between two looks at leased keys, doubled up to the last.
const FIRST_POLL: Duration = Duration::from_millis(5);
const LAST_POLL: Duration = Duration::from_millis(50);

/// The longest timeout `with_timeout` takes.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// The longest lease `with_lease` takes (the scripts' `MAX_LEASE_MS`).
const MAX_LEASE: Duration = Duration::from_secs(3600);

/// The most bytes of an entry read back: an entry is well under 8 KiB (two URLs of at most
/// 2 KiB each and two times), and anything a writer to Redis planted past it is not read.
const MAX_ENTRY_BYTES: usize = 16 * 1024;

/// Lua shared by the lease scripts. Any key may hold anything a writer to Redis put there:
/// `redis.pcall` reads a wrong type as an error value, never a failed script. `leased(k)` is true
/// while `k` holds a lease; one with no expiry, one longer than any lease may be, or one that is
/// not a string (planted) is deleted and reads as none. (Pods may run with different leases:
/// each lease is judged by the longest allowed, not by the reader's own.)
macro_rules! lease_script {
    ($body:literal) => {
        concat!(
            r"
local function value(k)
  local v = redis.pcall('GET', k)
  if type(v) == 'string' then return v end
  return false
end
local MAX_LEASE_MS = 3600000
local function leased(k)
  local ttl = redis.pcall('PTTL', k)
  if type(ttl) ~= 'number' or ttl == -2 then return false end
  if ttl == -1 or ttl > MAX_LEASE_MS or value(k) == false then redis.pcall('DEL', k) return false end
  return true
end
",
            $body
        )
    };
}

/// Takes a lease (`ARGV[1]`, `ARGV[2]` ms) on each (entry, lease) pair of `KEYS` whose entry is
/// absent: 1 where this process holds it now (new, or its own already), 0 where an entry or
/// another's lease is there. All keys share a hash tag (one slot): one command on one node.
const LEASE: &str = lease_script!(
    r"
local limit = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS, 2 do
  if redis.pcall('EXISTS', KEYS[i]) == 1 then
    out[#out + 1] = 0
  elseif leased(KEYS[i + 1]) then
    if value(KEYS[i + 1]) == ARGV[1] then
      redis.pcall('PEXPIRE', KEYS[i + 1], limit)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  else
    redis.pcall('SET', KEYS[i + 1], ARGV[1], 'PX', limit)
    out[#out + 1] = 1
  end
end
return out
"
);

/// For each (entry, lease) pair of `KEYS`: the entry's first `ARGV[1]` bytes if there is one
/// (a string), else 1 while a lease is held, else empty (the holder gave up or went away).
const LOOK: &str = lease_script!(
    r"
local out = {}
for i = 1, #KEYS, 2 do
  local v = redis.pcall('GETRANGE', KEYS[i], 0, tonumber(ARGV[1]) - 1)
  if type(v) == 'string' and v ~= '' then
    out[#out + 1] = v
  elseif leased(KEYS[i + 1]) then
    out[#out + 1] = 1
  else
    out[#out + 1] = ''
  end
end
return out
"
);

/// Stores the entry `KEYS[1]` (value `ARGV[1]`, TTL `ARGV[2]` ms) and ends this process's lease
/// `KEYS[2]` (`ARGV[3]`) in one step: waiters see the entry as soon as the lease is gone.
const PUBLISH: &str = lease_script!(
    r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if value(KEYS[2]) == ARGV[3] then redis.pcall('DEL', KEYS[2]) end
return 1
"
);

/// Ends the leases in `KEYS` that this process (`ARGV[1]`) holds.
const RELEASE: &str = lease_script!(
    r"
for i = 1, #KEYS do
  if value(KEYS[i]) == ARGV[1] then redis.pcall('DEL', KEYS[i]) end
end
return 1
"
);

/// A name for this cache's leases: unique enough to tell processes (and caches) apart.
fn holder_id() -> String {
    use std::hash::BuildHasher;
    static CACHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = CACHES.fetch_add(1, Ordering::Relaxed);
    let seed = std::collections::hash_map::RandomState::new();
    format!("lease:{:016x}", seed.hash_one((std::process::id(), SystemTime::now(), nonce)))
}

/// Keys longer than this are stored by hash.
const MAX_PLAIN_KEY: usize = 256;

/// The latest time a stored entry may name, in milliseconds: 9999-12-31T23:59:59.999Z, where the
/// core clamps every expiry. Later is not a time anyone wrote: a miss.
const MAX_ENTRY_MILLIS: u64 = MAX_UNIX_SECS * 1000 + 999;

/// Deletes `KEYS[1]` only while it still holds the URL `ARGV[1]` (or something unreadable): the
/// check and the delete are one step, so a fresher entry another process wrote is never lost.
const DELETE_IF_SAME: &str = r"
local stored = redis.pcall('GET', KEYS[1])
if type(stored) ~= 'string' then stored = '' end
local ok, entry = pcall(cjson.decode, stored)
if ok and type(entry) == 'table' and type(entry.url) == 'string' and entry.url ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
";

/// The scripts, sent by their SHA-1 (`EVALSHA`), not their text, on every call: the `redis`
/// crate loads one where it is missing (`NOSCRIPT`: a restarted node; on a cluster, every master).
static LEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LEASE));
static LOOK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LOOK));
static PUBLISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PUBLISH));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));
static DELETE_IF_SAME_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_IF_SAME));

/// One command for [`RedisPresignCache::call`]: a plain one, or a script.
enum Command {
    Plain(Cmd),
    Script(ScriptInvocation<'static>),
}

impl From<Cmd> for Command {
    fn from(command: Cmd) -> Self {
        Self::Plain(command)
    }
}

impl From<ScriptInvocation<'static>> for Command {
    fn from(invocation: ScriptInvocation<'static>) -> Self {
        Self::Script(invocation)
    }
}

impl Command {
    async fn run<T: redis::FromRedisValue>(&self, connection: &mut Connection) -> redis::RedisResult<T> {
        match self {
            Self::Plain(command) => command.query_async(connection).await,
            Self::Script(invocation) => invocation.invoke_async(connection).await,
        }
    }
}

/// A presign cache on Redis with an optional in-memory L1. See the [crate docs](crate).
pub struct RedisPresignCache {
    redis: Backend,
    prefix: String,
    /// How long a lease lasts, and the longest wait for another process's URL.
    lease: Duration,
    /// Names this cache's leases, so it gives up only its own.
    holder: String,
    timeout: Duration,
    safety_margin: Duration,
    l1: Option<MemoryPresignCache>,
    down: AtomicBool,
}

impl RedisPresignCache {
    /// A cache on the Redis at `url` (`redis://host:port/db`), with prefix `secure-media`, a 250 ms
    /// timeout per call, a 30 s safety margin and a 10,000-entry L1. Connects lazily: Redis may be
    /// down now and come up later. Call it inside a tokio runtime.
    ///
    /// A Redis Cluster is named by its seed nodes:
    /// `redis+cluster://[user:password@]h1:p1,h2:p2,...` (the credentials apply to every node), the
    /// same as [`cluster`](Self::cluster) with `redis://h1:p1`, `redis://h2:p2`, ...
    ///
    /// # Errors
    ///
    /// [`RedisCacheError`] when `url` is not a Redis URL the client accepts (the message shows
    /// it without its password).
    pub fn new(url: &str) -> Result<Self, RedisCacheError> {
        if url.get(..CLUSTER_SCHEME.len()).is_some_and(|scheme| scheme.eq_ignore_ascii_case(CLUSTER_SCHEME)) {
            return Self::cluster(&cluster_seeds(url)?);
        }
        let timeout = DEFAULT_TIMEOUT;
        let client = redis::Client::open(url).map_err(|_| RedisCacheError::InvalidUrl(redact_url(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        let redis = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| RedisCacheError::InvalidUrl(e.to_string()))?;
        Ok(Self::with_backend(Backend::Single(redis), timeout))
    }

    /// A cache on the Redis Cluster reached through `seeds` (`redis://host:port` URLs of some of
    /// its nodes, with the same credentials), with the defaults of [`new`](Self::new). Connects
    /// lazily, on the first call and under its timeout: the cluster may be down now and come up
    /// later, and `cluster` does no I/O (it needs no runtime). Every command touches one key or
    /// keys of one principal, which share a hash tag. See the [crate docs](crate#redis-cluster).
    ///
    /// # Errors
    ///
    /// [`RedisCacheError`] when a seed is not a Redis URL, there is none, or the seeds do not
    /// agree on credentials or database (messages show the seeds without their passwords).
    pub fn cluster<S: AsRef<str>>(seeds: &[S]) -> Result<Self, RedisCacheError> {
        let seeds: Vec<String> = seeds.iter().map(|seed| seed.as_ref().to_owned()).collect();
        for seed in &seeds {
            seed.as_str().into_connection_info().map_err(|_| RedisCacheError::InvalidUrl(redact_url(seed)))?;
        }
        if seeds.is_empty() {
            return Err(RedisCacheError::InvalidCluster { seeds: "[]".into(), reason: "no seed nodes".into() });
        }
        let client = cluster_client(&seeds, DEFAULT_TIMEOUT)?;
        Ok(Self::with_backend(
            Backend::Cluster(Box::new(ClusterBackend::new(client, seeds, DEFAULT_TIMEOUT))),
            DEFAULT_TIMEOUT,
        ))
    }

    fn with_backend(redis: Backend, timeout: Duration) -> Self {
        Self {
            redis,
            prefix: "secure-media".into(),
            lease: DEFAULT_LEASE,
            holder: holder_id(),
            timeout,
            safety_margin: Duration::from_secs(30),
            l1: Some(MemoryPresignCache::new(10_000)),
            down: AtomicBool::new(false),
        }
    }

    /// Whether this cache is on a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.redis, Backend::Cluster(_))
    }

    /// Keys start with `{prefix}:`. Braces are dropped from it: keys carry a hash tag of their
    /// own, which a brace in the prefix would cut.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().replace(['{', '}'], "");
        self
    }

    /// How long a lease lasts: a process that misses a URL another process is presigning waits
    /// at most this long for its URL, then presigns it itself (the holder died or is slow). Also
    /// the longest a lease of a process that died blocks anyone. `Duration::ZERO`: no leases, each
    /// process presigns what it misses. Default 5 s, at most an hour. Make it longer than the
    /// presigner's slowest call (its retries included): a lease that runs out mid-call sends its
    /// waiters to presign too.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease.min(MAX_LEASE);
        self
    }

    /// The bound on every Redis call (on a cluster, also the client's connection and response
    /// timeouts), at most ten minutes.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        let timeout = timeout.min(MAX_TIMEOUT);
        self.timeout = timeout;
        if let Backend::Cluster(cluster) = &mut self.redis {
            // Not connected yet (connecting is lazy), and these seeds were accepted once already.
            if locked(&cluster.state.current).is_none() {
                if let Ok(rebuilt) = cluster_client(&cluster.seeds, timeout) {
                    cluster.client = rebuilt;
                    cluster.connect_within = connect_within(timeout);
                }
            }
        }
        self
    }

    /// Entries leave Redis this long before their URL expires (capped at a quarter of its life);
    /// match the strategy's `PresignConfig::safety_margin`.
    pub fn with_safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = margin;
        self
    }

    /// An L1 of `capacity` entries, or none for `0`.
    pub fn with_l1(mut self, capacity: usize) -> Self {
        self.l1 = (capacity > 0).then(|| MemoryPresignCache::new(capacity));
        self
    }

    /// The Redis key of a cache key: `{prefix}:{s:<scope>}:<clean URL>` (`%`, `{` and `}` in the
    /// scope percent-encoded). The braces are a Redis Cluster hash tag: one principal's keys share
    /// a slot, so a batch's leases are one command on one node.
    pub fn redis_key(&self, key: &CacheKey<'_>) -> String {
        let scope = tag_safe(key.scope());
        if key.url().len() <= MAX_PLAIN_KEY {
            format!("{}:{{s:{scope}}}:{}", self.prefix, key.url())
        } else {
            format!("{}:{{s:{scope}}}:h:{:016x}", self.prefix, url_digest(key.url()))
        }
    }

    /// The lease beside an entry's key (same hash tag, same slot): `#` never ends a clean URL or
    /// a digest, so no entry key ends in `#lease`.
    fn lease_key(entry_key: &str) -> String {
        format!("{entry_key}#lease")
    }

    /// The L1, if any.
    pub fn l1(&self) -> Option<&MemoryPresignCache> {
        self.l1.as_ref()
    }

    /// `keys` grouped by principal (one hash tag, one slot each): each group's indices into
    /// `keys`, and its (entry key, lease key) pairs in that order.
    fn by_scope(&self, keys: &[CacheKey<'_>]) -> Vec<(Vec<usize>, Vec<String>)> {
        let mut groups: Vec<(&str, Vec<usize>, Vec<String>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let entry = self.redis_key(key);
            let lease = Self::lease_key(&entry);
            match groups.iter_mut().find(|(scope, ..)| *scope == key.scope()) {
                Some((_, indices, pairs)) => {
                    indices.push(i);
                    pairs.extend([entry, lease]);
                }
                None => groups.push((key.scope(), vec![i], vec![entry, lease])),
            }
        }
        groups.into_iter().map(|(_, indices, pairs)| (indices, pairs)).collect()
    }

    /// `script` over `keys` (all of one principal: one slot); the caller adds `ARGV`.
    fn script(script: &'static Script, keys: &[String]) -> ScriptInvocation<'static> {
        let mut invocation = script.prepare_invoke();
        invocation.key(keys);
        invocation
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// One look at leased keys: `None` if Redis did not answer (the caller stops waiting).
    async fn look(&self, keys: &[CacheKey<'_>]) -> Option<Vec<Look>> {
        let groups = self.by_scope(keys);
        let answers = futures::future::join_all(groups.iter().map(|(_, pairs)| {
            let mut look = Self::script(&LOOK_SCRIPT, pairs);
            look.arg(MAX_ENTRY_BYTES);
            self.call::<Vec<Value>>("LOOK", look)
        }))
        .await;
        let now = SystemTime::now();
        let mut looks: Vec<Look> = keys.iter().map(|_| Look::Gone).collect();
        for ((indices, _), answer) in groups.iter().zip(answers) {
            let answer = answer.filter(|answer| answer.len() == indices.len())?;
            for (&i, value) in indices.iter().zip(answer) {
                looks[i] = match value {
                    Value::Int(1) => Look::Held,
                    // Anything but an entry for this very key is no URL: this process presigns.
                    Value::BulkString(bytes) => std::str::from_utf8(&bytes)
                        .ok()
                        .and_then(|text| decode(&keys[i], text, now))
                        .map_or(Look::Gone, Look::Entry),
                    _ => Look::Gone,
                };
            }
        }
        Some(looks)
    }

    /// Runs one Redis command under the timeout; a failure is logged once per outage and read as
    /// `None`. A connection that lost a node is made again (on a cluster).
    async fn call<T: redis::FromRedisValue>(&self, what: &str, command: impl Into<Command>) -> Option<T> {
        let command = command.into();
        // The timeout is clamped (`with_timeout`): no overflow.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (generation, mut connection) = match tokio::time::timeout_at(deadline, self.redis.connection()).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return self.went_down(what, &error.to_string()),
            Err(_) => return self.went_down(what, "timed out connecting"),
        };
        match tokio::time::timeout_at(deadline, command.run::<T>(&mut connection)).await {
            Ok(Ok(value)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis presign cache is back");
                }
                Some(value)
            }
            Ok(Err(error)) if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped() => {
                self.redis.failed(generation);
                self.went_down(what, &error.to_string())
            }
            Ok(Err(error)) => {
                // Redis answered, with an error (a key of another type, planted): a miss, not an outage.
                tracing::debug!(operation = what, %error, "redis presign cache: an error answer, read as a miss");
                None
            }
            Err(_) => {
                self.redis.failed(generation);
                self.went_down(what, "timed out")
            }
        }
    }

    /// Logs an outage once (until a call succeeds again); answers the miss.
    fn went_down<T>(&self, what: &str, why: &str) -> Option<T> {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                operation = what,
                reason = why,
                "redis presign cache unavailable: presigning directly until it is back"
            );
        }
        None
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The seeds, each without its password, for messages.
fn redact_seeds(seeds: &[String]) -> String {
    format!("[{}]", seeds.iter().map(|seed| redact_url(seed)).collect::<Vec<_>>().join(", "))
}

/// A `redis+cluster://` URL without its credentials, for messages.
fn redact_cluster_url(url: &str) -> String {
    let rest = url.get(CLUSTER_SCHEME.len()..).unwrap_or_default();
    let hosts = rest.rsplit_once('@').map_or(rest, |(_, hosts)| hosts);
    format!("{CLUSTER_SCHEME}{hosts}")
}

fn redact_url(url: &str) -> String {
    // A Redis URL may carry a password.
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => "<unparsable>".into(),
    }
}

/// What one look at a leased key saw.
enum Look {
    /// Another process still holds the lease.
    Held,
    /// No lease and no usable entry: the holder gave up or went away.
    Gone,
    /// The holder's URL.
    Entry(SignedUrl),
}

/// What a Redis value holds, as JSON.
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    /// The clean URL it was stored for (a hashed key may be shared by two URLs).
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
    fetched_at_ms: u64,
    expires_at_ms: u64,
}

fn encode(key: &CacheKey<'_>, url: &SignedUrl) -> String {
    let entry = Entry {
        key: key.url().into(),
        url: url.as_str().into(),
        fetched_at_ms: millis(url.fetched_at()),
        expires_at_ms: millis(url.expires_at()),
    };
    // Strings and numbers into a String cannot fail.
    serde_json::to_string(&entry).unwrap_or_default()
}

/// A stored value read back at `now`: `None` (a miss) for anything but an entry for this very key
/// with two times in order, neither past year 9999 and the fetch not in the future.
fn decode(key: &CacheKey<'_>, text: &str, now: SystemTime) -> Option<SignedUrl> {
    // An object only: serde's derived structs would also read an array, field by position.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let entry: Entry<'_> = serde_json::from_str(text).ok()?;
    if entry.key != key.url() {
        return None; // a hashed key shared by two URLs: a miss, never the other URL
    }
    let url = url::Url::parse(&entry.url).ok()?;
    // Only the form a refusal can name (its serialisation) is an entry: anything else would
    // survive the delete script.
    if url.as_str() != entry.url {
        return None;
    }
    // Anyone who can write to Redis can write here: no arithmetic that could overflow.
    let at = |millis: u64| {
        let millis = Some(millis).filter(|millis| *millis <= MAX_ENTRY_MILLIS)?;
        UNIX_EPOCH.checked_add(Duration::from_millis(millis))
    };
    let (fetched_at, expires_at) = (at(entry.fetched_at_ms)?, at(entry.expires_at_ms)?);
    let fetched_in_the_past = now.checked_add(MAX_CLOCK_AHEAD).is_none_or(|latest| fetched_at <= latest);
    if expires_at <= fetched_at || !fetched_in_the_past {
        return None;
    }
    Some(SignedUrl::new(key.url(), url, fetched_at, expires_at))
}

#[async_trait]
impl PresignCache for RedisPresignCache {
    fn get_ready(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        self.l1.as_ref()?.get_ready(key)
    }

    async fn get(&self, key: &CacheKey<'_>) -> Option<SignedUrl> {
        if let Some(hit) = self.get_ready(key) {
            return Some(hit);
        }
        // At most an entry's bytes, whatever was stored there (an absent key reads as empty).
        // Bytes, not a `String`: a value that is not UTF-8 is a bad entry (a miss), not an outage.
        let mut get = redis::cmd("GETRANGE");
        get.arg(self.redis_key(key)).arg(0).arg(MAX_ENTRY_BYTES - 1);
        let bytes: Vec<u8> = self.call("GET", get).await?;
        let url = decode(key, std::str::from_utf8(&bytes).ok()?, SystemTime::now())?;
        if let Some(l1) = &self.l1 {
            l1.put(key, url.clone()).await;
        }
        Some(url)
    }

    async fn put(&self, key: &CacheKey<'_>, url: SignedUrl) {
        if let Some(l1) = &self.l1 {
            l1.put(key, url.clone()).await;
        }
        let margin = self.safety_margin.min(url.lifetime() / 4);
        let Some(Ok(left)) = url.expires_at().checked_sub(margin).map(|stale| stale.duration_since(SystemTime::now()))
        else {
            // Already within the margin: not worth sharing. Whoever waits for it presigns.
            return self.release(std::slice::from_ref(key)).await;
        };
        // The strategy trusts no URL longer than this; Redis refuses absurd TTLs anyway.
        let ttl_ms = u64::try_from(left.min(MAX_URL_LIFETIME).as_millis()).unwrap_or(u64::MAX).max(1);
        let redis_key = self.redis_key(key);
        let lease_key = Self::lease_key(&redis_key);
        let mut publish = Self::script(&PUBLISH_SCRIPT, &[redis_key, lease_key]);
        publish.arg(encode(key, &url)).arg(ttl_ms).arg(&self.holder);
        let _: Option<i64> = self.call("SET", publish).await;
    }

    async fn remove(&self, key: &CacheKey<'_>) {
        if let Some(l1) = &self.l1 {
            l1.remove(key).await;
        }
        let mut delete = redis::cmd("DEL");
        delete.arg(self.redis_key(key));
        let _: Option<i64> = self.call("DEL", delete).await;
    }

    async fn remove_refused(&self, key: &CacheKey<'_>, refused: &SignedUrl) {
        if let Some(l1) = &self.l1 {
            l1.remove_refused(key, refused).await;
        }
        // One key in KEYS: the cluster client routes the script to the master that owns it.
        let mut delete = Self::script(&DELETE_IF_SAME_SCRIPT, &[self.redis_key(key)]);
        delete.arg(refused.as_str());
        let _: Option<i64> = self.call("DELETE_IF_SAME", delete).await;
    }

    async fn lease(&self, keys: &[CacheKey<'_>]) -> Vec<Lease> {
        let mut leases = vec![Lease::Mine; keys.len()];
        if self.lease.is_zero() {
            return leases;
        }
        let groups = self.by_scope(keys);
        let answers = futures::future::join_all(groups.iter().map(|(_, pairs)| {
            let mut lease = Self::script(&LEASE_SCRIPT, pairs);
            lease.arg(&self.holder).arg(self.lease_ms());
            self.call::<Vec<i64>>("LEASE", lease)
        }))
        .await;
        // Redis down or an odd answer: this process presigns (as without a fleet).
        for ((indices, _), answer) in groups.iter().zip(answers) {
            let Some(answer) = answer.filter(|answer| answer.len() == indices.len()) else { continue };
            for (&i, got) in indices.iter().zip(answer) {
                if got == 0 {
                    leases[i] = Lease::Theirs;
                }
            }
        }
        leases
    }

    async fn wait_for(&self, keys: &[CacheKey<'_>]) -> Vec<Option<SignedUrl>> {
        let mut found: Vec<Option<SignedUrl>> = vec![None; keys.len()];
        let mut pending: Vec<usize> = (0..keys.len()).collect();
        // The lease is clamped (`with_lease`): no overflow.
        let deadline = tokio::time::Instant::now().checked_add(self.lease);
        let mut pause = FIRST_POLL;
        while !pending.is_empty() {
            let waiting: Vec<CacheKey<'_>> = pending.iter().map(|&i| keys[i]).collect();
            let Some(looks) = self.look(&waiting).await else { break };
            let mut still = Vec::new();
            for (&i, look) in pending.iter().zip(looks) {
                match look {
                    Look::Held => still.push(i),
                    Look::Gone => {}
                    Look::Entry(url) => found[i] = Some(url),
                }
            }
            pending = still;
            if pending.is_empty() || deadline.is_none_or(|deadline| tokio::time::Instant::now() + pause > deadline) {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LAST_POLL);
        }
        if let Some(l1) = &self.l1 {
            for (key, url) in keys.iter().zip(&found) {
                if let Some(url) = url {
                    l1.put(key, url.clone()).await;
                }
            }
        }
        found
    }

    async fn release(&self, keys: &[CacheKey<'_>]) {
        if self.lease.is_zero() {
            return;
        }
        let groups = self.by_scope(keys);
        futures::future::join_all(groups.iter().map(|(_, pairs)| {
            let leases: Vec<String> = pairs.iter().skip(1).step_by(2).cloned().collect();
            let mut release = Self::script(&RELEASE_SCRIPT, &leases);
            release.arg(&self.holder);
            self.call::<i64>("RELEASE", release)
        }))
        .await;
    }

    fn purge_scope(&self, scope: &str) {
        if let Some(l1) = &self.l1 {
            l1.purge_scope(scope);
        }
    }
}

impl fmt::Debug for RedisPresignCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresignCache")
            .field("prefix", &self.prefix)
            .field("cluster", &self.is_cluster())
            .field("lease", &self.lease)
            .field("timeout", &self.timeout)
            .field("l1", &self.l1.as_ref().map(MemoryPresignCache::capacity))
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A scope inside a hash tag: `%`, `{` and `}` percent-encoded, so the tag ends where the scope
/// does and no two (scope, URL) pairs share a key.
fn tag_safe(scope: &str) -> Cow<'_, str> {
    if !scope.contains(['%', '{', '}']) {
        return Cow::Borrowed(scope);
    }
    Cow::Owned(scope.replace('%', "%25").replace('{', "%7B").replace('}', "%7D"))
}

/// The digest that names a long URL's key: XXH3-64 with seed 0, the same in every process
/// (a digest clash reads as a miss: the entry names its clean URL, checked on read).
fn url_digest(url: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(url.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_long_url_digest_is_pinned_xxh3() {
        // XXH3-64's published vector for empty input, then one of our own: a change to either
        // orphans every fleet's long-URL entries, so it must be deliberate (and in the changelog).
        assert_eq!(url_digest(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(url_digest("https://files-us.cometchat.io/app/media/a.png"), 0x5616_8278_9d33_316e);
        let cache = RedisPresignCache::new("redis://127.0.0.1:1").unwrap();
        let long = format!("https://files-us.cometchat.io/app/media/{}.png", "a".repeat(300));
        let alice: Arc<str> = "sub:alice".into();
        let key = cache.redis_key(&CacheKey::new(&alice, &long));
        assert_eq!(key, format!("secure-media:{{s:sub:alice}}:h:{:016x}", url_digest(&long)));
    }

    #[test]
    fn values_round_trip_and_refuse_another_key() {
        let now = UNIX_EPOCH + Duration::from_millis(1_800_000_000_000);
        let signed = SignedUrl::new(
            "https://m.io/a",
            url::Url::parse("https://m.io/a?Signature=s").unwrap(),
            now,
            now + Duration::from_secs(60),
        );
        let scope: Arc<str> = "sub:a".into();
        let key = CacheKey::new(&scope, "https://m.io/a");
        let text = encode(&key, &signed);
        let back = decode(&key, &text, now).unwrap();
        assert_eq!((back.as_str(), back.expires_at(), back.fetched_at()), (signed.as_str(), signed.expires_at(), now));
        assert!(decode(&CacheKey::new(&scope, "https://m.io/b"), &text, now).is_none());
        let positional = r#"["https://m.io/a","https://m.io/a?Signature=s",1800000000000,1800000060000]"#;
        assert!(decode(&key, positional, now).is_none(), "an array is not an entry");
        assert!(decode(&key, "not json", now).is_none());
    }

    #[test]
    fn absurd_times_in_a_stored_value_are_a_miss_not_a_panic() {
        let scope: Arc<str> = "sub:a".into();
        let key = CacheKey::new(&scope, "https://m.io/a");
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        // Found by `decode_never_panics_and_absurd_times_are_a_miss`: the first five were read as
        // entries (fetched in year 584 million or ahead of the clock, expiring before their fetch).
        for (fetched, expires) in [
            ("18446744073709551615", "1"),
            ("1", "18446744073709551615"),
            ("18446744073709551614", "18446744073709551615"),
            ("1800000600000", "1800003600000"),
            ("5", "5"),
            ("-1", "5"),
            ("1.5", "2"),
            ("253402300800000", "253402300800001"),
        ] {
            let text = format!(
                r#"{{"key":"https://m.io/a","url":"https://m.io/a?s=1","fetched_at_ms":{fetched},"expires_at_ms":{expires}}}"#
            );
            assert!(decode(&key, &text, now).is_none(), "{fetched} .. {expires}");
        }
        let ahead = r#"{"key":"https://m.io/a","url":"https://m.io/a?s=1","fetched_at_ms":1800000060000,"expires_at_ms":1800003600000}"#;
        assert!(decode(&key, ahead, now).is_some(), "a clock a minute ahead is fine");
    }

    #[test]
    fn passwords_never_reach_errors() {
        assert!(!redact_url("redis://user:hunter2@h:6379/0").contains("hunter2"));
        for bad in
            ["redis+cluster://user:hunter2@h1:1,,h2:2", "redis+cluster://user:hunter2@h1:1/3", "redis+cluster://"]
        {
            let error = RedisPresignCache::new(bad).unwrap_err().to_string();
            assert!(!error.contains("hunter2") && error.contains("invalid"), "{error}");
        }
        let mismatch = RedisPresignCache::cluster(&["redis://:hunter2@h1:1", "redis://:other@h2:2"]).unwrap_err();
        let message = mismatch.to_string();
        assert!(!message.contains("hunter2") && !message.contains("other@"), "{message}");
        assert!(RedisPresignCache::cluster::<&str>(&[]).is_err());
    }

    #[tokio::test]
    async fn braces_in_a_scope_cannot_end_the_hash_tag_and_a_lease_is_at_most_an_hour() {
        let cache = RedisPresignCache::new("redis://127.0.0.1:1").unwrap().with_prefix("a{b}c");
        let (odd, plain): (Arc<str>, Arc<str>) = ("sub:x}:%{y".into(), "sub:x".into());
        let url = "https://files-us.cometchat.io/app/media/a.png";
        assert_eq!(cache.redis_key(&CacheKey::new(&odd, url)), format!("abc:{{s:sub:x%7D:%25%7By}}:{url}"));
        assert_eq!(cache.redis_key(&CacheKey::new(&plain, url)), format!("abc:{{s:sub:x}}:{url}"));
        let cache = cache.with_lease(Duration::MAX).with_timeout(Duration::MAX);
        assert!(format!("{cache:?}").contains("lease: 3600s"), "{cache:?}");
        assert!(format!("{cache:?}").contains("timeout: 600s"), "{cache:?}");
        // The scripts judge planted leases by the same bound.
        for script in [LEASE, LOOK, PUBLISH, RELEASE] {
            assert!(script.contains(&format!("MAX_LEASE_MS = {}", MAX_LEASE.as_millis())));
        }
    }

    #[test]
    fn a_cluster_url_names_its_seeds_with_its_credentials() {
        assert_eq!(
            cluster_seeds("redis+cluster://u:p@h1:7000,h2:7001/").unwrap(),
            ["redis://u:p@h1:7000", "redis://u:p@h2:7001"]
        );
        assert_eq!(cluster_seeds("redis+cluster://h1:7000").unwrap(), ["redis://h1:7000"]);
        // No runtime, no I/O: connecting is lazy.
        let cache = RedisPresignCache::new("redis+cluster://127.0.0.1:1,127.0.0.1:2").unwrap();
        assert!(cache.is_cluster());
        assert!(format!("{cache:?}").contains("cluster: true"));
    }

    /// Bad input (issue 16): whatever another process (or anyone who can write to Redis) stored,
    /// `PROPTEST_CASES` cases (2048 when unset); the long run:
    /// `PROPTEST_CASES=200000 cargo test -p secure-media-redis --lib --release`.
    mod parser_props {
        use proptest::prelude::*;

        use super::*;

        fn cases() -> u32 {
            std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(2048)
        }

        fn json_number() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => (1_700_000_000_000u64..1_900_000_000_000).prop_map(|n| n.to_string()),
                2 => any::<u64>().prop_map(|n| n.to_string()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => any::<f64>().prop_map(|f| if f.is_finite() { format!("{f:e}") } else { "null".into() }),
                1 => proptest::sample::select(&["253402300799999", "253402300800000", "0", "-0", "1e400", "\"5\"", "[]", "{}", "null", "true"][..]).prop_map(str::to_owned),
            ]
        }

        fn stored_value() -> impl Strategy<Value = Vec<u8>> {
            let url = prop_oneof![
                3 => Just("\"https://m.io/a?Signature=s\"".to_owned()),
                1 => any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
                1 => Just("42".to_owned()),
            ];
            let key = prop_oneof![4 => Just("\"https://m.io/a\"".to_owned()), 1 => Just("\"https://m.io/b\"".to_owned()), 1 => Just("null".to_owned())];
            prop_oneof![
                6 => (key, url, json_number(), json_number(), any::<bool>()).prop_map(|(key, url, fetched, expires, extra)| {
                    let extra = if extra { r#","extra":[[[[1]]]]"# } else { "" };
                    format!(r#"{{"key":{key},"url":{url},"fetched_at_ms":{fetched},"expires_at_ms":{expires}{extra}}}"#).into_bytes()
                }),
                2 => proptest::collection::vec(any::<u8>(), 0..128),
                1 => (1usize..50_000).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(cases()))]

            /// Random bytes and entries with any numbers: a miss or an entry whose times are in
            /// order, within year 9999 and fetched no later than the clock allows; never a panic,
            /// and what the strategy computes from it never overflows.
            #[test]
            fn decode_never_panics_and_absurd_times_are_a_miss(bytes in stored_value(), now_ms in 1_700_000_000_000u64..1_900_000_000_000) {
                let scope: Arc<str> = "sub:a".into();
        let key = CacheKey::new(&scope, "https://m.io/a");
                let now = UNIX_EPOCH + Duration::from_millis(now_ms);
                let Some(text) = std::str::from_utf8(&bytes).ok() else { return Ok(()) };
                if let Some(url) = decode(&key, text, now) {
                    prop_assert!(url.fetched_at() < url.expires_at());
                    prop_assert!(url.expires_at() <= UNIX_EPOCH + Duration::from_millis(MAX_ENTRY_MILLIS));
                    prop_assert!(url.fetched_at() <= now + MAX_CLOCK_AHEAD);
                    prop_assert!(url.lifetime() > Duration::ZERO);
                    let _ = encode(&key, &url);
                }
            }
        }
    }
}
