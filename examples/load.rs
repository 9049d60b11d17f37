//! Load and soak: many concurrent requests over many distinct images, in every mode through both
//! stacks (reqwest, and tower over hyper-rustls), against the reference server in-process over
//! https (its test CA, no plain http). Every body is checked against the server's bytes by its
//! SHA-256. The run exits 1 on any failed request, wrong body, exchange of more than two attempts
//! (its `ExchangeRecord`), request the server did not serve on the mode's own proof, or, in
//! presigned mode, image presigned more than once (a cold cache and day-long URLs: once each).
//!
//! ```sh
//! cargo run --release --example load                        # 20,000 requests, 256 at a time, 500 images
//! cargo run --release --example load -- --short             # CI: 2,000 requests, 64 at a time, 100 images
//! cargo run --release --example load -- --requests 100000   # compare peak memory with the default run
//! cargo run --release --example load -- --soak 300          # 5 minutes: URLs expire every 3 s, FATs rotate
//! ```
//!
//! The images are written to a fresh temporary directory that the server serves
//! (`ServerConfig::media_dir`), so any number of distinct files is available; the directory is
//! removed at the end. Memory is the whole process's (clients and server): `VmRSS` after each pass
//! and `VmHWM`, its peak, from /proc/self/status.
//!
//! The soak runs the six clients at once, sharing the concurrency, with presigned URLs that live
//! 3 s and FATs that live 45 s, while the app logs in again every 60 s (`LoginCell::set`): so each
//! minute tokens expire (refused, renewed through the cell's relogin hook, retried once) and are
//! replaced, and presigned URLs are renewed ahead of expiry all along.

use std::collections::HashSet;
use std::fmt;
use std::io::Cursor;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use image::{ImageFormat, Rgb, RgbImage};
use reqwest_middleware::ClientWithMiddleware;
use secure_media::presigned::{PresignConfig, Presigned, Presigner};
use secure_media::{
    AccessError, ConfigError, ExchangeRecord, FileAccessToken, LoginCell, SecureMedia, SecureMediaMode,
};
use secure_media_reqwest::{client_builder, secure_client_from, ReqwestPresigner};
use secure_media_server::{ReferenceServer, RunningServer, ServerConfig, Stats};
use secure_media_tower::{SecureMediaLayer, SecureMediaService, TowerPresigner};
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Hyper = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;
type Sha = [u8; 32];

const MODES: [SecureMediaMode; 3] =
    [SecureMediaMode::Embedded, SecureMediaMode::HeaderBased, SecureMediaMode::Presigned];
const STACKS: [Stack; 2] = [Stack::Reqwest, Stack::Tower];
const USER: &str = "load-user";
/// Soak: presigned URLs live this long, FATs this long, and the app logs in again this often.
const SOAK_URL_TTL: Duration = Duration::from_secs(3);
const SOAK_FAT_TTL: Duration = Duration::from_secs(45);
const SOAK_ROTATION: Duration = Duration::from_secs(60);
const SOAK_REPORT: Duration = Duration::from_secs(30);
/// Failure messages kept per run, to show why.
const KEPT_ERRORS: usize = 5;

fn main() -> Result<ExitCode, Error> {
    // The server reads each image with tokio::fs, a blocking-pool thread per read in flight: uncapped,
    // 256 requests in flight grow the pool to ~500 threads, whose stacks would swamp the memory figures.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(8).build()?;
    runtime.block_on(run())
}

async fn run() -> Result<ExitCode, Error> {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(message) => {
            eprintln!("load: {message}\n\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    let images = ImageSet::generate(options.images)?;
    let config = ServerConfig { media_dir: Some(images.dir.clone()), ..ServerConfig::https() };
    let server = Arc::new(ReferenceServer::start(config).await?);
    let ca = server.ca_pem().ok_or("the server has no test CA")?.to_owned();
    let cell = login_cell(&server)?;
    println!(
        "reference server on {}; {} distinct images ({} KiB on average)",
        server.base_url(),
        images.len(),
        images.total_bytes / images.len().max(1) as u64 / 1024,
    );
    let passed = match options.soak {
        None => run_passes(&server, &ca, &cell, &images, &options).await?,
        Some(duration) => run_soak(&server, &ca, &cell, &images, &options, duration).await?.passed(),
    };

    if let Ok(server) = Arc::try_unwrap(server) {
        server.shutdown().await;
    }
    drop(images);
    if passed {
        println!("\nall checks passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nFAILED: see above (failed requests, wrong bodies, more than 2 attempts, \
             requests not served on the mode's proof, images presigned more than once)"
        );
        Ok(ExitCode::FAILURE)
    }
}

const USAGE: &str = "usage: load [--requests N] [--concurrency C] [--images K] [--short] [--soak SECONDS]
  --requests N      requests per mode and stack (default 20000; --short: 2000)
  --concurrency C   requests in flight (default 256; --short: 64)
  --images K        distinct images the requests are spread over (default 500; --short: 100)
  --short           the CI form: one small pass
  --soak SECONDS    instead of one pass after another, every mode and stack at once for SECONDS
                    (URLs live 3 s, FATs 45 s, the app logs in again every 60 s), reported every 30 s
Exit status 1 if any check fails, 2 on bad arguments.";

/// The command line.
#[derive(Debug)]
struct Options {
    requests: u64,
    concurrency: usize,
    images: usize,
    soak: Option<Duration>,
}

impl Options {
    /// The options, or `None` for `--help`.
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Self>, String> {
        let (mut requests, mut concurrency, mut images, mut soak, mut short) = (None, None, None, None, false);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<u64, String> {
                let text = args.next().ok_or_else(|| format!("{name} needs a number"))?;
                text.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}: not a positive number: {text}"))
            };
            match arg.as_str() {
                "--requests" => requests = Some(value("--requests")?),
                "--concurrency" => concurrency = Some(value("--concurrency")?),
                "--images" => images = Some(value("--images")?),
                "--soak" => soak = Some(Duration::from_secs(value("--soak")?)),
                "--short" => short = true,
                "-h" | "--help" => return Ok(None),
                other => return Err(format!("unknown argument {other}")),
            }
        }
        let (default_requests, default_concurrency, default_images) =
            if short { (2_000, 64, 100) } else { (20_000, 256, 500) };
        let to_usize = |n: u64| usize::try_from(n).map_err(|_| format!("{n} is too large"));
        Ok(Some(Self {
            requests: requests.unwrap_or(default_requests),
            concurrency: to_usize(concurrency.unwrap_or(default_concurrency))?,
            images: to_usize(images.unwrap_or(default_images))?,
            soak,
        }))
    }
}

/// K distinct PNGs in a temporary directory the server serves, and the SHA-256 of each.
struct ImageSet {
    dir: PathBuf,
    names: Vec<String>,
    expected: Arc<[Sha]>,
    total_bytes: u64,
}

impl ImageSet {
    fn generate(count: usize) -> Result<Self, Error> {
        let dir = std::env::temp_dir().join(format!("secure-media-load-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        // From here on, the directory goes away with `set`, also on an early return.
        let mut set = Self { dir, names: Vec::with_capacity(count), expected: Arc::new([]), total_bytes: 0 };
        let mut expected = Vec::with_capacity(count);
        for n in 0..count {
            let name = format!("img-{n}.png");
            let bytes = distinct_png(n)?;
            std::fs::write(set.dir.join(&name), &bytes)?;
            expected.push(sha256(&bytes));
            set.total_bytes += bytes.len() as u64;
            set.names.push(name);
        }
        if expected.iter().collect::<HashSet<_>>().len() != count {
            return Err("two generated images are identical".into());
        }
        set.expected = expected.into();
        Ok(set)
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    fn urls(&self, server: &RunningServer) -> Arc<[String]> {
        self.names.iter().map(|name| server.media_url(name)).collect()
    }
}

impl Drop for ImageSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A 64x64 PNG of noise seeded by `n` (about 12 KiB: a thumbnail), different for every `n`.
fn distinct_png(n: usize) -> Result<Vec<u8>, Error> {
    let mut state = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let image = RgbImage::from_fn(64, 64, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [r, g, b, ..] = state.to_le_bytes();
        Rgb([r, g, b])
    });
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn sha256(bytes: &[u8]) -> Sha {
    Sha256::digest(bytes).into()
}

/// The app's login cell: a FAT from the server now, and a relogin hook for a refused one.
fn login_cell(server: &Arc<RunningServer>) -> Result<Arc<LoginCell>, Error> {
    let relogin_server = server.clone();
    let cell = LoginCell::new().with_relogin(move || {
        let server = relogin_server.clone();
        async move { fresh_token(&server) }
    });
    cell.set(fresh_token(server)?);
    Ok(Arc::new(cell))
}

fn fresh_token(server: &RunningServer) -> Result<FileAccessToken, AccessError> {
    // The only refusal is a uid the server does not take: this example's configuration.
    let answer = server.login(USER).map_err(|reason| AccessError::from(ConfigError::InvalidConfig(reason)))?;
    FileAccessToken::new(answer.fat)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stack {
    Reqwest,
    Tower,
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stack::Reqwest => "reqwest",
            Stack::Tower => "tower",
        })
    }
}

/// One client of one stack in one mode, built fresh (own connections, own presign cache).
#[derive(Clone)]
enum LoadClient {
    Reqwest(ClientWithMiddleware),
    Tower(SecureMediaService<Hyper>),
}

/// What one request brought back.
struct Fetched {
    status: StatusCode,
    record: Option<ExchangeRecord>,
    body: Bytes,
}

impl LoadClient {
    /// The client, and what its presigner was asked.
    fn build(
        server: &RunningServer,
        ca: &str,
        cell: &Arc<LoginCell>,
        mode: SecureMediaMode,
        stack: Stack,
    ) -> Result<(Self, Arc<BatchLog>), Error> {
        let endpoint = server.presign_url();
        let hyper = hyper_trusting(ca)?;
        let presigner: Arc<dyn Presigner> = match stack {
            Stack::Reqwest => Arc::new(ReqwestPresigner::new(reqwest_trusting(ca)?.build()?, endpoint.parse()?)?),
            Stack::Tower => Arc::new(TowerPresigner::new(hyper.clone(), endpoint.parse()?)?),
        };
        let batches = Arc::new(BatchLog::new(presigner));
        let media = SecureMedia::builder(server.app_id())
            .secure_host(&server.host())
            .mode(mode)
            .token_source(cell.clone())
            .presigner(batches.clone())
            .build()?;
        let client = match stack {
            Stack::Reqwest => Self::Reqwest(secure_client_from(reqwest_trusting(ca)?, media.strategy())?),
            Stack::Tower => Self::Tower(SecureMediaLayer::new(media.strategy()).layer(hyper)),
        };
        Ok((client, batches))
    }

    async fn get(&self, url: &str) -> Result<Fetched, String> {
        match self {
            Self::Reqwest(client) => {
                let response = client.get(url).send().await.map_err(|e| e.to_string())?;
                let (status, record) = (response.status(), response.extensions().get::<ExchangeRecord>().copied());
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                Ok(Fetched { status, record, body })
            }
            Self::Tower(service) => {
                let request = http::Request::get(url).body(Full::default()).map_err(|e| e.to_string())?;
                let response = service.clone().oneshot(request).await.map_err(|e| e.to_string())?;
                let (status, record) = (response.status(), response.extensions().get::<ExchangeRecord>().copied());
                let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok(Fetched { status, record, body })
            }
        }
    }
}

/// A presigner that notes the size of its largest call, and the batch limit the strategy applies.
struct BatchLog {
    inner: Arc<dyn Presigner>,
    limit: usize,
    largest: AtomicUsize,
}

impl BatchLog {
    fn new(inner: Arc<dyn Presigner>) -> Self {
        // What PresignedStrategy takes per call: its config's limit, capped by the presigner's.
        let limit = PresignConfig::default().batch_limit.min(inner.max_batch());
        Self { inner, limit, largest: AtomicUsize::new(0) }
    }

    fn largest(&self) -> usize {
        self.largest.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Presigner for BatchLog {
    async fn presign(&self, url: &str, token: &FileAccessToken) -> Result<Presigned, AccessError> {
        self.largest.fetch_max(1, Ordering::Relaxed);
        self.inner.presign(url, token).await
    }

    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        self.largest.fetch_max(urls.len(), Ordering::Relaxed);
        self.inner.presign_batch(urls, token).await
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }
}

/// reqwest through the crate's builder, trusting the test CA only.
fn reqwest_trusting(ca: &str) -> Result<reqwest::ClientBuilder, Error> {
    Ok(client_builder().tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes())?]))
}

/// hyper over hyper-rustls, trusting the test CA only.
fn hyper_trusting(ca: &str) -> Result<Hyper, Error> {
    let tls = secure_media_server::client_config_trusting(ca)?;
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().build();
    Ok(HyperClient::builder(TokioExecutor::new()).build(https))
}

/// Outcomes counted by every worker of one run.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: AtomicU64,
    mismatches: AtomicU64,
    /// Requests whose exchange took two attempts (a retry after a refusal).
    retried: AtomicU64,
    max_attempts: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, outcome: Result<Fetched, String>, expected: &Sha) {
        let fetched = match outcome {
            Ok(fetched) => fetched,
            Err(error) => return self.fail(&self.failures, error),
        };
        let Some(record) = fetched.record else {
            return self.fail(&self.failures, "no ExchangeRecord in the response".into());
        };
        self.max_attempts.fetch_max(u64::from(record.attempts), Ordering::Relaxed);
        if record.attempts >= 2 {
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
        if fetched.status != StatusCode::OK {
            self.fail(&self.failures, format!("status {}", fetched.status));
        } else if sha256(&fetched.body) != *expected {
            self.fail(&self.mismatches, format!("wrong body ({} bytes)", fetched.body.len()));
        } else {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn fail(&self, counter: &AtomicU64, error: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if errors.len() < KEPT_ERRORS {
            errors.push(error);
        }
    }

    fn snapshot(&self) -> Counts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            ok: load(&self.ok),
            failures: load(&self.failures),
            mismatches: load(&self.mismatches),
            retried: load(&self.retried),
            max_attempts: load(&self.max_attempts),
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    ok: u64,
    failures: u64,
    mismatches: u64,
    retried: u64,
    max_attempts: u64,
}

impl Counts {
    fn done(&self) -> u64 {
        self.ok + self.failures + self.mismatches
    }

    fn passed(&self) -> bool {
        self.failures == 0 && self.mismatches == 0 && self.max_attempts <= 2
    }

    fn add(self, other: Counts) -> Counts {
        Counts {
            ok: self.ok + other.ok,
            failures: self.failures + other.failures,
            mismatches: self.mismatches + other.mismatches,
            retried: self.retried + other.retried,
            max_attempts: self.max_attempts.max(other.max_attempts),
        }
    }
}

/// When a run stops taking requests.
#[derive(Clone, Copy)]
enum Budget {
    Requests(u64),
    Until(Instant),
}

/// What the workers of one run share.
struct Work {
    urls: Arc<[String]>,
    expected: Arc<[Sha]>,
    budget: Budget,
    issued: AtomicU64,
    tally: Tally,
}

impl Work {
    fn new(images: &ImageSet, server: &RunningServer, budget: Budget) -> Arc<Self> {
        Arc::new(Self {
            urls: images.urls(server),
            expected: images.expected.clone(),
            budget,
            issued: AtomicU64::new(0),
            tally: Tally::default(),
        })
    }

    /// The image of the next request, round-robin over the set; `None` once the budget is spent.
    fn next(&self) -> Option<usize> {
        let n = self.issued.fetch_add(1, Ordering::Relaxed);
        let more = match self.budget {
            Budget::Requests(total) => n < total,
            Budget::Until(deadline) => Instant::now() < deadline,
        };
        more.then(|| (n % self.urls.len() as u64) as usize)
    }
}

/// `concurrency` tasks sending requests through `client` until the budget is spent.
async fn drive(client: LoadClient, work: Arc<Work>, concurrency: usize) {
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, work) = (client.clone(), work.clone());
            tokio::spawn(async move {
                while let Some(image) = work.next() {
                    let outcome = client.get(&work.urls[image]).await;
                    work.tally.record(outcome, &work.expected[image]);
                }
            })
        })
        .collect();
    for worker in workers {
        if let Err(error) = worker.await {
            work.tally.fail(&work.tally.failures, format!("a worker panicked: {error}"));
        }
    }
}

/// Every mode through both stacks in turn; prints the table and answers whether all passed.
async fn run_passes(
    server: &RunningServer,
    ca: &str,
    cell: &Arc<LoginCell>,
    images: &ImageSet,
    options: &Options,
) -> Result<bool, Error> {
    println!("{} requests per mode and stack, {} at a time\n", options.requests, options.concurrency);
    let mut rows = Vec::new();
    for mode in MODES {
        for stack in STACKS {
            rows.push(run_pass(server, ca, cell, images, options, mode, stack).await?);
        }
    }
    print_table(&rows, images.len());
    Ok(rows.iter().all(PassRow::passed))
}

/// One row of the results table.
struct PassRow {
    mode: SecureMediaMode,
    stack: Stack,
    requests: u64,
    counts: Counts,
    presign_calls: u64,
    urls_presigned: u64,
    /// Requests the server served on the mode's own proof (`?fat=`, bearer, presigned signature).
    served_by_proof: u64,
    /// Distinct images the pass asked for.
    distinct: u64,
    batch_limit: usize,
    largest_batch: usize,
    wall: Duration,
    memory: Option<Memory>,
}

impl PassRow {
    /// Every request answered with the right bytes, on the mode's own proof, in at most two
    /// attempts; in presigned mode, every image presigned exactly once (cold cache, long-lived URLs).
    fn passed(&self) -> bool {
        let presigned_once = self.mode != SecureMediaMode::Presigned || self.urls_presigned == self.distinct;
        self.counts.passed()
            && self.counts.ok == self.requests
            && self.served_by_proof == self.requests
            && presigned_once
    }
}

/// One mode through one stack: `options.requests` requests, cold cache, fresh connections.
async fn run_pass(
    server: &RunningServer,
    ca: &str,
    cell: &Arc<LoginCell>,
    images: &ImageSet,
    options: &Options,
    mode: SecureMediaMode,
    stack: Stack,
) -> Result<PassRow, Error> {
    let (client, batches) = LoadClient::build(server, ca, cell, mode, stack)?;
    let work = Work::new(images, server, Budget::Requests(options.requests));
    server.reset_stats();
    let started = Instant::now();
    drive(client, work.clone(), options.concurrency).await;
    let wall = started.elapsed();
    let stats = server.stats();
    let row = PassRow {
        mode,
        stack,
        requests: options.requests,
        counts: work.tally.snapshot(),
        presign_calls: stats.presign_calls,
        urls_presigned: stats.urls_presigned,
        served_by_proof: match mode {
            SecureMediaMode::Embedded => stats.served.fat_query,
            SecureMediaMode::HeaderBased => stats.served.bearer,
            _ => stats.served.presigned,
        },
        distinct: options.requests.min(images.len() as u64),
        batch_limit: batches.limit,
        largest_batch: batches.largest(),
        wall,
        memory: Memory::now(),
    };
    println!(
        "{mode:<9} {stack:<8} {} requests in {:.2} s; memory after: {}",
        row.counts.done(),
        wall.as_secs_f64(),
        Memory::show(row.memory)
    );
    for error in work.tally.errors() {
        println!("    error: {error}");
    }
    Ok(row)
}

fn print_table(rows: &[PassRow], images: usize) {
    println!(
        "\n| mode | stack | requests | ok | failures | wrong bodies | max attempts | retried | served by proof | presign calls | \
         at least ceil(K/B) | largest call | URLs presigned | wall | requests/s | RSS after | peak RSS |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        // Only presigned mode calls the endpoint: the other modes show dashes.
        let presigned = |text: String| if row.mode == SecureMediaMode::Presigned { text } else { "-".into() };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} s | {:.0} | {} | {} |",
            row.mode,
            row.stack,
            row.requests,
            row.counts.ok,
            row.counts.failures,
            row.counts.mismatches,
            row.counts.max_attempts,
            row.counts.retried,
            row.served_by_proof,
            presigned(row.presign_calls.to_string()),
            presigned(format!("{} (B = {})", images.div_ceil(row.batch_limit), row.batch_limit)),
            presigned(row.largest_batch.to_string()),
            presigned(row.urls_presigned.to_string()),
            row.wall.as_secs_f64(),
            row.counts.done() as f64 / row.wall.as_secs_f64(),
            Memory::show_rss(row.memory),
            Memory::show_hwm(row.memory),
        );
    }
    println!(
        "\nserved by proof: media the server answered on the mode's own proof (?fat=, Bearer, presigned \
         signature). K = {images} distinct images; B = the batch limit PresignedStrategy applies, \
         min(PresignConfig::batch_limit, Presigner::max_batch). K cold URLs take at least ceil(K/B) \
         presign calls. Calls run one at a time with no timer: each takes the misses queued while the \
         one before it ran (up to B), so misses that arrive one by one go one per call; the count \
         depends on how the misses arrive, and K URLs presigned means none was presigned twice."
    );
}

/// Soak results: per mode and stack, and the memory at each report.
struct SoakReport {
    counts: Vec<(SecureMediaMode, Stack, Counts)>,
    /// Memory at each report, every 30 s and at the end.
    memory_reports: Vec<Memory>,
}

impl SoakReport {
    fn passed(&self) -> bool {
        self.counts.iter().all(|(_, _, counts)| counts.passed() && counts.ok > 0)
    }
}

/// Every mode through both stacks at once for `duration`: presigned URLs live 3 s, FATs 45 s, and
/// the app logs in again every minute; counts and memory every 30 s.
async fn run_soak(
    server: &Arc<RunningServer>,
    ca: &str,
    cell: &Arc<LoginCell>,
    images: &ImageSet,
    options: &Options,
    duration: Duration,
) -> Result<SoakReport, Error> {
    server.faults().set_url_ttl(SOAK_URL_TTL);
    server.faults().set_fat_ttl(SOAK_FAT_TTL);
    cell.set(fresh_token(server)?);
    server.reset_stats();
    let started = Instant::now();
    let deadline = started + duration;
    let per_client = (options.concurrency / (MODES.len() * STACKS.len())).max(1);
    println!(
        "\nsoak: {} s, every mode and stack at once ({per_client} in flight each), URLs live {} s, \
         FATs {} s, a new login every {} s",
        duration.as_secs(),
        SOAK_URL_TTL.as_secs(),
        SOAK_FAT_TTL.as_secs(),
        SOAK_ROTATION.as_secs()
    );

    let mut runs = Vec::new();
    for mode in MODES {
        for stack in STACKS {
            let (client, _) = LoadClient::build(server, ca, cell, mode, stack)?;
            let work = Work::new(images, server, Budget::Until(deadline));
            let task = tokio::spawn(drive(client, work.clone(), per_client));
            runs.push((mode, stack, work, task));
        }
    }
    let rotation = tokio::spawn(rotate_logins(server.clone(), cell.clone(), deadline));

    println!(
        "\n| t | requests | requests/s | failures | retried | max attempts | presign calls | logins | RSS | peak RSS | \
         threads |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut memory_reports = Vec::new();
    let (mut last_report, mut done_before) = (started, 0);
    loop {
        let next = (last_report + SOAK_REPORT).min(deadline);
        tokio::time::sleep_until(next.into()).await;
        let total = runs.iter().fold(Counts::default(), |sum, (_, _, work, _)| sum.add(work.tally.snapshot()));
        let memory = Memory::now();
        memory_reports.extend(memory);
        let now = Instant::now();
        let rate = (total.done() - done_before) as f64 / (now - last_report).as_secs_f64();
        print_soak_row(now - started, &total, rate, &server.stats(), memory);
        (last_report, done_before) = (now, total.done());
        if now >= deadline {
            break;
        }
    }

    let mut counts = Vec::new();
    for (mode, stack, work, task) in runs {
        task.await?;
        counts.push((mode, stack, work.tally.snapshot()));
        for error in work.tally.errors() {
            println!("    {mode} {stack} error: {error}");
        }
    }
    rotation.await?;
    server.faults().reset();
    let report = SoakReport { counts, memory_reports };
    print_soak_summary(&report, server, started.elapsed());
    Ok(report)
}

fn print_soak_row(elapsed: Duration, total: &Counts, rate: f64, stats: &Stats, memory: Option<Memory>) {
    println!(
        "| {:.0} s | {} | {rate:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
        elapsed.as_secs_f64(),
        total.done(),
        total.failures + total.mismatches,
        total.retried,
        total.max_attempts,
        stats.presign_calls,
        stats.logins,
        Memory::show_rss(memory),
        Memory::show_hwm(memory),
        memory.map_or_else(|| "n/a".into(), |m| m.threads.to_string()),
    );
}

/// The app's own re-login every minute until `deadline`.
async fn rotate_logins(server: Arc<RunningServer>, cell: Arc<LoginCell>, deadline: Instant) {
    let mut next = Instant::now() + SOAK_ROTATION;
    while next < deadline {
        tokio::time::sleep_until(next.into()).await;
        next += SOAK_ROTATION;
        match fresh_token(&server) {
            Ok(token) => {
                cell.set(token);
            }
            Err(error) => println!("    login failed: {error}"),
        }
    }
}

fn print_soak_summary(report: &SoakReport, server: &RunningServer, elapsed: Duration) {
    let stats = server.stats();
    println!("\n| mode | stack | requests | ok | failures | wrong bodies | max attempts | retried |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (mode, stack, counts) in &report.counts {
        println!(
            "| {mode} | {stack} | {} | {} | {} | {} | {} | {} |",
            counts.done(),
            counts.ok,
            counts.failures,
            counts.mismatches,
            counts.max_attempts,
            counts.retried
        );
    }
    println!(
        "\nsoak over {:.0} s: {} presign calls ({} URLs), {} logins, refusals: {} expired URLs, {} expired FATs; \
         RSS first report {}, last report {}",
        elapsed.as_secs_f64(),
        stats.presign_calls,
        stats.urls_presigned,
        stats.logins,
        stats.refusals.expired_url,
        stats.refusals.expired_fat,
        Memory::show_rss(report.memory_reports.first().copied()),
        Memory::show_rss(report.memory_reports.last().copied()),
    );
}

/// The process's resident memory now and at its peak, and its threads (`VmRSS`, `VmHWM`, `Threads`
/// of /proc/self/status).
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
}

impl Memory {
    /// `None` where /proc is not there (not Linux).
    fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| {
            status.lines().find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
        };
        let threads = status.lines().find_map(|line| line.strip_prefix("Threads:")?.trim().parse().ok())?;
        Some(Self { rss_kib: field("VmRSS:")?, hwm_kib: field("VmHWM:")?, threads })
    }

    fn show(memory: Option<Self>) -> String {
        match memory {
            Some(m) => format!("RSS {}, peak {}, {} threads", mib(m.rss_kib), mib(m.hwm_kib), m.threads),
            None => "n/a".into(),
        }
    }

    fn show_rss(memory: Option<Self>) -> String {
        memory.map_or_else(|| "n/a".into(), |m| mib(m.rss_kib))
    }

    fn show_hwm(memory: Option<Self>) -> String {
        memory.map_or_else(|| "n/a".into(), |m| mib(m.hwm_kib))
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
