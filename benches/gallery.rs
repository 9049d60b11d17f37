//! The gallery scenario: presigned mode as a user feels it, end to end on loopback.
//!
//! ```sh
//! cargo bench --bench gallery          # about 4 minutes; writes target/criterion/gallery.json
//! cargo xtask bench-report             # -> BENCHMARKS.md's gallery section and benches/gallery.svg
//! ```
//!
//! Two reference servers run in this process over https (the testkit's CA), sharing their keys
//! as the vendor's two hosts do: the files host serves 200 distinct 64x64 PNG thumbnails from
//! memory (each made before the first measurement), its media route delayed 5 ms a request; the
//! chat API (another origin) logs in and presigns, its presign endpoint delayed 25 ms a call. The
//! delays run on a timer precise to about 0.2 ms (`Faults::delay`).
//!
//! - **Cold gallery**, for each concurrency in [1, 16, 64, 200] (loads in flight at once,
//!   `buffer_unordered`): the wall time to load the 200 thumbnails with a fresh login, client,
//!   cache and connections, through
//!   - ours in presigned mode asking ahead (`SecureMedia::prefetch` of the 200 URLs, then the
//!     loads), and without asking ahead (the loads alone: each miss presigns), on both stacks
//!     (reqwest-middleware, and tower over hyper-rustls);
//!   - ours in header and embedded mode, both stacks;
//!   - the vendor page's recipe written by hand: per image one presign call (`{"urls":[url]}`, the
//!     FAT as Bearer), the answer kept in a `HashMap` behind a mutex, then a bare reqwest GET;
//!   - a bare reqwest GET with the Bearer set by hand (no library, no presign): what the network
//!     and the server cost a token mode, connections included.
//!
//!   Each is measured 5 times (`--runs N`), interleaved with the others, and reported as the
//!   median. The limits come from the delays alone: asking ahead, one presign round and then
//!   the media rounds, `25 + ceil(200 / c) * 5` ms; a loader that asks one window of `c` URLs at
//!   a time, `ceil(200 / c) * (25 + 5)` ms; the token modes, `ceil(200 / c) * 5` ms.
//! - **Warm scroll**: right after each cold load, the same 200 again through the same client (all
//!   cached), presigned (the client that asked ahead), header, embedded, the recipe and the bare
//!   GET.
//! - **Token rotation**: presigned, header and embedded mode on both stacks, a login cell whose
//!   relogin hook logs in again at the chat API; a cold scroll of the 200 at concurrency 16 (no
//!   asking ahead), and when the 100th image is in, every FAT issued so far expires at both
//!   hosts (`Faults::expire_fats_now`). Failed images, relogins, the strategy's renewals and the
//!   chat API's presign calls.
//!
//! Every body is compared with the server's bytes; failures are counted. The results go to
//! `gallery.json` in criterion's directory (`$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`,
//! else `target/criterion`) and a table to stdout. Run without `--bench` (`cargo test --benches`)
//! it makes one small pass (20 images, concurrency 16) as a check, and writes nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use reqwest_middleware::ClientWithMiddleware;
use secure_media::presigned::{PresignConfig, Presigner};
use secure_media::{AccessError, FileAccessToken, LoginCell, MediaAccessStrategy, SecureMedia, SecureMediaMode};
use secure_media_reqwest::{network_error, secure_client_from, ReqwestPresigner};
use secure_media_server::{gallery_image, LoginAnswer, ReferenceServer, Route, RunningServer, ServerConfig};
use secure_media_testkit::Hyper;
use secure_media_tower::{SecureMediaLayer, SecureMediaService, TowerPresigner};
use serde_json::json;
use tower::{Layer, ServiceExt};

const PRESIGN_DELAY: Duration = Duration::from_millis(25);
const MEDIA_DELAY: Duration = Duration::from_millis(5);
const USER: &str = "gallery-user";
/// Error messages kept per measurement, to show why.
const KEPT_ERRORS: usize = 3;

/// What one invocation measures.
struct Plan {
    images: usize,
    concurrency: Vec<usize>,
    runs: usize,
    /// An untimed round first (connections, allocator, code paths).
    warm_up: bool,
    /// Write gallery.json (the full run only).
    write: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Stack {
    Reqwest,
    Tower,
}

impl Stack {
    fn name(self) -> &'static str {
        match self {
            Stack::Reqwest => "reqwest",
            Stack::Tower => "tower",
        }
    }
}

/// One way to load the gallery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Approach {
    /// Ours, presigned, `prefetch` of every URL first.
    Ahead(Stack),
    /// Ours, presigned, the loads alone.
    Windowed(Stack),
    Header(Stack),
    Embedded(Stack),
    /// The vendor page's recipe written by hand.
    Recipe,
    /// A bare reqwest GET with the Bearer set by hand.
    BareHeader,
}

const APPROACHES: [Approach; 10] = [
    Approach::Ahead(Stack::Reqwest),
    Approach::Ahead(Stack::Tower),
    Approach::Windowed(Stack::Reqwest),
    Approach::Windowed(Stack::Tower),
    Approach::Header(Stack::Reqwest),
    Approach::Header(Stack::Tower),
    Approach::Embedded(Stack::Reqwest),
    Approach::Embedded(Stack::Tower),
    Approach::Recipe,
    Approach::BareHeader,
];

impl Approach {
    /// The id in gallery.json, and the stack.
    fn id(self) -> (&'static str, &'static str) {
        match self {
            Approach::Ahead(stack) => ("presigned-ahead", stack.name()),
            Approach::Windowed(stack) => ("presigned-windowed", stack.name()),
            Approach::Header(stack) => ("header", stack.name()),
            Approach::Embedded(stack) => ("embedded", stack.name()),
            Approach::Recipe => ("recipe", "reqwest"),
            Approach::BareHeader => ("bare-header", "reqwest"),
        }
    }

    /// Is a warm scroll measured after its cold load? (Both presigned clients end up with the
    /// same cache: the one that asked ahead stands for presigned mode.)
    fn warm_too(self) -> bool {
        !matches!(self, Approach::Windowed(_))
    }
}

/// The vendor's two hosts on loopback: the files host (the media) and the chat API (login and the
/// presign endpoint), two reference servers sharing their keys, the API signing URLs on the files
/// host's origin. As against the vendor, no client reuses a presign call's connection for a media
/// GET (on one origin the recipe's 200 presign calls would open the connections its GETs reuse).
struct Stage {
    files: RunningServer,
    api: RunningServer,
}

impl Stage {
    async fn start() -> Self {
        let keys = |config: ServerConfig| ServerConfig {
            fat_secret: Some(b"gallery-bench-fat-secret".to_vec()),
            url_secret: Some(b"gallery-bench-url-secret".to_vec()),
            ..secure_media_testkit::https(config)
        };
        let start = |config| async { ReferenceServer::start(config).await.expect("a reference server") };
        let files = start(keys(ServerConfig::default())).await;
        let api = start(keys(ServerConfig { public_origins: vec![files.base_url()], ..ServerConfig::default() })).await;
        files.faults().delay(Route::Media, MEDIA_DELAY);
        api.faults().delay(Route::Presign, PRESIGN_DELAY);
        Self { files, api }
    }

    fn login(&self, uid: &str) -> Result<LoginAnswer, &'static str> {
        self.api.login(uid)
    }

    fn reset_stats(&self) {
        self.files.reset_stats();
        self.api.reset_stats();
    }

    fn presign_calls(&self) -> u64 {
        self.api.stats().presign_calls
    }

    /// Every FAT issued so far expires, at both hosts.
    fn expire_fats_now(&self) {
        self.files.faults().expire_fats_now();
        self.api.faults().expire_fats_now();
    }
}

/// A client of one approach, built fresh for each measurement.
enum Client {
    Reqwest(ClientWithMiddleware),
    Tower(SecureMediaService<Hyper>),
    Recipe(Recipe),
    Bare { client: reqwest::Client, fat: String },
}

/// The vendor page's recipe: one presign call per image, a plain map, a bare GET.
struct Recipe {
    client: reqwest::Client,
    fat: String,
    endpoint: String,
    signed: Mutex<HashMap<String, String>>,
}

impl Recipe {
    async fn get(&self, url: &str) -> Result<Bytes, String> {
        let cached = self.signed.lock().unwrap_or_else(PoisonError::into_inner).get(url).cloned();
        let signed = match cached {
            Some(signed) => signed,
            None => {
                let answer: serde_json::Value = self
                    .client
                    .post(&self.endpoint)
                    .bearer_auth(&self.fat)
                    .json(&json!({ "urls": [url] }))
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|e| format!("presign: {e}"))?
                    .json()
                    .await
                    .map_err(|e| format!("presign answer: {e}"))?;
                let signed = answer["urls"][0]["presigned_url"]
                    .as_str()
                    .ok_or_else(|| format!("presign answer without presigned_url: {answer}"))?
                    .to_owned();
                self.signed.lock().unwrap_or_else(PoisonError::into_inner).insert(url.to_owned(), signed.clone());
                signed
            }
        };
        bare_get(self.client.get(&signed)).await
    }
}

/// A bare request: its errors are told without the URL (a presigned URL carries its signature).
async fn bare_get(request: reqwest::RequestBuilder) -> Result<Bytes, String> {
    body(request.send().await.map_err(|e| network_error(e).to_string())?).await
}

/// A response's body, or why not (no URL in either).
async fn body(response: reqwest::Response) -> Result<Bytes, String> {
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    response.bytes().await.map_err(|e| network_error(e).to_string())
}

impl Client {
    async fn get(&self, url: &str) -> Result<Bytes, String> {
        match self {
            // The middleware's errors carry no URL.
            Client::Reqwest(client) => body(client.get(url).send().await.map_err(|e| e.to_string())?).await,
            Client::Tower(service) => {
                let request = http::Request::get(url).body(Full::<Bytes>::default()).map_err(|e| e.to_string())?;
                let response = service.clone().oneshot(request).await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("status {}", response.status()));
                }
                Ok(response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes())
            }
            Client::Recipe(recipe) => recipe.get(url).await,
            Client::Bare { client, fat } => bare_get(client.get(url).bearer_auth(fat)).await,
        }
    }
}

/// Ours: the handle (for `prefetch` and the strategy's counters), the client, the relogins.
struct Ours {
    media: SecureMedia,
    relogins: Arc<AtomicUsize>,
}

/// A fresh login, and a login cell that logs in again at the chat API when a token is refused.
fn login_cell(server: &Arc<Stage>, relogins: &Arc<AtomicUsize>) -> Arc<LoginCell> {
    let (hook_server, hook_count) = (server.clone(), relogins.clone());
    let cell = LoginCell::new().with_relogin(move || {
        let (server, count) = (hook_server.clone(), hook_count.clone());
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            fresh_token(&server)
        }
    });
    cell.set(fresh_token(server).unwrap_or_else(|e| panic!("login: {e}")));
    Arc::new(cell)
}

fn fresh_token(server: &Stage) -> Result<FileAccessToken, AccessError> {
    let answer = server.login(USER).map_err(AccessError::MalformedToken)?;
    FileAccessToken::new(answer.fat)
}

fn ours(server: &Arc<Stage>, mode: SecureMediaMode, stack: Stack) -> (Ours, Client) {
    let relogins = Arc::new(AtomicUsize::new(0));
    let cell = login_cell(server, &relogins);
    let endpoint = server.api.presign_url();
    let presigner: Arc<dyn Presigner> = match stack {
        Stack::Reqwest => Arc::new(
            ReqwestPresigner::new(secure_media_testkit::reqwest_client(), endpoint.parse().expect("presign URL"))
                .expect("presigner"),
        ),
        Stack::Tower => Arc::new(
            TowerPresigner::new(secure_media_testkit::hyper(), endpoint.parse().expect("presign URI"))
                .expect("presigner"),
        ),
    };
    let media = SecureMedia::builder(server.files.app_id())
        .secure_host(&server.files.host())
        .mode(mode)
        .token_source(cell)
        .presigner(presigner)
        .presign_config(PresignConfig::default())
        .build()
        .expect("secure media");
    let client = match stack {
        Stack::Reqwest => Client::Reqwest(
            secure_client_from(secure_media_testkit::reqwest_builder(), media.strategy()).expect("client"),
        ),
        Stack::Tower => Client::Tower(SecureMediaLayer::new(media.strategy()).layer(secure_media_testkit::hyper())),
    };
    (Ours { media, relogins }, client)
}

fn build(server: &Arc<Stage>, approach: Approach) -> (Option<Ours>, Client) {
    let (ours_of, stack) = match approach {
        Approach::Ahead(stack) | Approach::Windowed(stack) => (SecureMediaMode::Presigned, stack),
        Approach::Header(stack) => (SecureMediaMode::HeaderBased, stack),
        Approach::Embedded(stack) => (SecureMediaMode::Embedded, stack),
        Approach::Recipe => {
            let recipe = Recipe {
                client: secure_media_testkit::reqwest_client(),
                fat: server.login(USER).expect("login").fat,
                endpoint: server.api.presign_url(),
                signed: Mutex::default(),
            };
            return (None, Client::Recipe(recipe));
        }
        Approach::BareHeader => {
            let fat = server.login(USER).expect("login").fat;
            return (None, Client::Bare { client: secure_media_testkit::reqwest_client(), fat });
        }
    };
    let (ours, client) = ours(server, ours_of, stack);
    (Some(ours), client)
}

/// What one pass over the gallery brought back.
#[derive(Default)]
struct Loaded {
    failures: usize,
    errors: Vec<String>,
}

/// Loads every URL, `concurrency` at a time, checking each body; `halfway` runs once half of them
/// are in.
async fn load(
    client: &Client,
    urls: &[String],
    expected: &[Bytes],
    concurrency: usize,
    halfway: Option<&(dyn Fn() + Sync)>,
) -> Loaded {
    let mut results = futures::stream::iter(0..urls.len())
        .map(|i| async move { (i, client.get(&urls[i]).await) })
        .buffer_unordered(concurrency);
    let (mut loaded, mut done) = (Loaded::default(), 0);
    while let Some((i, result)) = results.next().await {
        let error = match result {
            Ok(body) if body == expected[i] => None,
            Ok(body) => Some(format!("image {i}: wrong body ({} bytes)", body.len())),
            Err(error) => Some(format!("image {i}: {error}")),
        };
        if let Some(error) = error {
            loaded.failures += 1;
            if loaded.errors.len() < KEPT_ERRORS {
                loaded.errors.push(error);
            }
        }
        done += 1;
        if done == urls.len() / 2 {
            if let Some(halfway) = halfway {
                halfway();
            }
        }
    }
    loaded
}

/// One measurement: the cold load (and the warm scroll after it).
struct Sample {
    cold_ms: f64,
    cold_calls: u64,
    cold_failures: usize,
    warm: Option<(f64, u64, usize)>,
    errors: Vec<String>,
}

async fn measure(server: &Arc<Stage>, approach: Approach, urls: &[String], expected: &[Bytes], c: usize) -> Sample {
    let (ours, client) = build(server, approach);
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    server.reset_stats();
    let started = Instant::now();
    if let (Approach::Ahead(_), Some(ours)) = (approach, &ours) {
        ours.media.prefetch(&url_refs).await;
    }
    let cold = load(&client, urls, expected, c, None).await;
    let cold_ms = ms(started.elapsed());
    let cold_calls = server.presign_calls();
    let mut errors = cold.errors;
    let warm = if approach.warm_too() {
        server.reset_stats();
        let started = Instant::now();
        let warm = load(&client, urls, expected, c, None).await;
        let warm_ms = ms(started.elapsed());
        errors.extend(warm.errors);
        Some((warm_ms, server.presign_calls(), warm.failures))
    } else {
        None
    };
    Sample { cold_ms, cold_calls, cold_failures: cold.failures, warm, errors }
}

/// One token-rotation scroll.
struct Rotation {
    mode: &'static str,
    stack: Stack,
    ms: f64,
    failures: usize,
    relogins: usize,
    token_refreshes: u64,
    retries: u64,
    presign_calls: u64,
    expired_fat_refusals: u64,
    errors: Vec<String>,
}

async fn rotation(
    server: &Arc<Stage>,
    mode: SecureMediaMode,
    stack: Stack,
    urls: &[String],
    expected: &[Bytes],
    c: usize,
) -> Rotation {
    let (ours, client) = ours(server, mode, stack);
    server.reset_stats();
    let expire = || server.expire_fats_now();
    let started = Instant::now();
    let loaded = load(&client, urls, expected, c, Some(&expire)).await;
    let elapsed = ms(started.elapsed());
    let (files, api, strategy) = (server.files.stats(), server.api.stats(), ours.media.strategy().stats());
    Rotation {
        mode: mode_name(mode),
        stack,
        ms: elapsed,
        failures: loaded.failures,
        relogins: ours.relogins.load(Ordering::SeqCst),
        token_refreshes: strategy.token_refreshes,
        retries: strategy.retries,
        presign_calls: api.presign_calls,
        expired_fat_refusals: files.refusals.expired_fat + api.refusals.expired_fat,
        errors: loaded.errors,
    }
}

fn mode_name(mode: SecureMediaMode) -> &'static str {
    match mode {
        SecureMediaMode::Presigned => "presigned",
        SecureMediaMode::HeaderBased => "header",
        _ => "embedded",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median (upper middle for an even count).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Every sample of one approach at one concurrency.
#[derive(Default)]
struct Cell {
    cold_ms: Vec<f64>,
    cold_calls: Vec<u64>,
    cold_failures: usize,
    warm_ms: Vec<f64>,
    warm_calls: Vec<u64>,
    warm_failures: usize,
}

/// A limit or bound in ms, from the number of images and the concurrency.
type Limit = fn(usize, usize) -> f64;

fn limit_ahead(images: usize, c: usize) -> f64 {
    ms(PRESIGN_DELAY) + images.div_ceil(c) as f64 * ms(MEDIA_DELAY)
}

fn bound_windowed(images: usize, c: usize) -> f64 {
    images.div_ceil(c) as f64 * ms(PRESIGN_DELAY + MEDIA_DELAY)
}

fn limit_tokens(images: usize, c: usize) -> f64 {
    images.div_ceil(c) as f64 * ms(MEDIA_DELAY)
}

/// Where criterion writes (the same rule as criterion's and `cargo xtask bench-report`'s):
/// `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else `target/criterion`, relative to
/// the package root `cargo bench` runs us in.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from).join("criterion")
}

/// The 1-, 5- and 15-minute load averages, where /proc has them: how busy the machine was.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut bench, mut list, mut runs, mut filters) = (false, false, None, Vec::new());
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => bench = true,
            "--list" => list = true,
            "--runs" => match args.next().and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0) {
                Some(n) => runs = Some(n),
                None => {
                    eprintln!("gallery: --runs needs a positive number");
                    return ExitCode::from(2);
                }
            },
            // Other harness flags (criterion's, libtest's) mean nothing here.
            other if other.starts_with('-') => {}
            filter => filters.push(filter.to_owned()),
        }
    }
    if list {
        println!("gallery: benchmark");
        return ExitCode::SUCCESS;
    }
    // `cargo bench -- presigned_hit` runs every bench binary with that filter: only ours if named.
    if !filters.is_empty() && !filters.iter().any(|f| "gallery".contains(f.as_str())) {
        return ExitCode::SUCCESS;
    }
    let plan = if bench {
        Plan { images: 200, concurrency: vec![1, 16, 64, 200], runs: runs.unwrap_or(5), warm_up: true, write: true }
    } else {
        // `cargo test --benches`: one small pass, as a check that everything loads.
        Plan { images: 20, concurrency: vec![16], runs: runs.unwrap_or(1), warm_up: false, write: false }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    if runtime.block_on(run(&plan)) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Everything; answers whether every image loaded.
async fn run(plan: &Plan) -> bool {
    let load_before = load_average();
    let server = Arc::new(Stage::start().await);
    let images = plan.images;
    let urls: Vec<String> = (0..images).map(|i| server.files.gallery_url(i)).collect();
    // The server makes each thumbnail on its first request: made now, it serves from memory.
    let expected: Vec<Bytes> = (0..images).map(|i| gallery_image(i).expect("a gallery thumbnail")).collect();
    assert!(expected.iter().all(|png| png.starts_with(b"\x89PNG")), "the thumbnails are PNGs");
    eprintln!(
        "gallery: {images} thumbnails from {} (presign at {}), presign +{} ms, media +{} ms, concurrency {:?}, {} runs each",
        server.files.base_url(),
        server.api.base_url(),
        PRESIGN_DELAY.as_millis(),
        MEDIA_DELAY.as_millis(),
        plan.concurrency,
        plan.runs
    );
    if plan.warm_up {
        for approach in APPROACHES {
            measure(&server, approach, &urls, &expected, 16).await;
        }
    }

    let mut cells: HashMap<(Approach, usize), Cell> = HashMap::new();
    let mut all_ok = true;
    for &c in &plan.concurrency {
        for run in 1..=plan.runs {
            // Interleaved: each run of each approach meets the machine as the others of its round do.
            for approach in APPROACHES {
                let sample = measure(&server, approach, &urls, &expected, c).await;
                let (id, stack) = approach.id();
                eprintln!(
                    "c={c:<3} run {run}/{}: {id:<18} {stack:<7} cold {:>7.1} ms, {:>3} presign calls{}{}",
                    plan.runs,
                    sample.cold_ms,
                    sample.cold_calls,
                    sample.warm.map(|(w, _, _)| format!(", warm {w:>6.1} ms")).unwrap_or_default(),
                    if sample.cold_failures + sample.warm.map_or(0, |w| w.2) > 0 { ", FAILURES" } else { "" },
                );
                for error in &sample.errors {
                    eprintln!("    {error}");
                }
                let cell = cells.entry((approach, c)).or_default();
                cell.cold_ms.push(sample.cold_ms);
                cell.cold_calls.push(sample.cold_calls);
                cell.cold_failures += sample.cold_failures;
                if let Some((warm_ms, warm_calls, warm_failures)) = sample.warm {
                    cell.warm_ms.push(warm_ms);
                    cell.warm_calls.push(warm_calls);
                    cell.warm_failures += warm_failures;
                }
                all_ok &= sample.cold_failures == 0 && sample.warm.is_none_or(|w| w.2 == 0);
            }
        }
    }

    let mut rotations = Vec::new();
    for mode in [SecureMediaMode::Presigned, SecureMediaMode::HeaderBased, SecureMediaMode::Embedded] {
        for stack in [Stack::Reqwest, Stack::Tower] {
            let r = rotation(&server, mode, stack, &urls, &expected, 16).await;
            for error in &r.errors {
                eprintln!("    rotation {} {}: {error}", r.mode, r.stack.name());
            }
            all_ok &= r.failures == 0;
            rotations.push(r);
        }
    }
    let load_after = load_average();

    print_tables(plan, &cells, &rotations);
    if plan.write {
        let report = to_json(plan, &cells, &rotations, [load_before, load_after]);
        let dir = criterion_dir();
        let path = dir.join("gallery.json");
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()));
        match written {
            Ok(()) => println!(
                "\nwritten: {} (cargo xtask bench-report turns it into BENCHMARKS.md's section)",
                path.display()
            ),
            Err(error) => {
                eprintln!("gallery: cannot write {}: {error}", path.display());
                return false;
            }
        }
    }
    if !all_ok {
        println!("\nFAILED: some images did not load (see above)");
    }
    all_ok
}

fn to_json(
    plan: &Plan,
    cells: &HashMap<(Approach, usize), Cell>,
    rotations: &[Rotation],
    load: [Option<String>; 2],
) -> serde_json::Value {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for approach in APPROACHES {
        let (id, stack) = approach.id();
        for &c in &plan.concurrency {
            let Some(cell) = cells.get(&(approach, c)) else { continue };
            cold.push(json!({
                "approach": id, "stack": stack, "concurrency": c,
                "ms": cell.cold_ms, "presign_calls": cell.cold_calls, "failures": cell.cold_failures,
            }));
            if !cell.warm_ms.is_empty() {
                warm.push(json!({
                    "approach": id, "stack": stack, "concurrency": c,
                    "ms": cell.warm_ms, "presign_calls": cell.warm_calls, "failures": cell.warm_failures,
                }));
            }
        }
    }
    let rotation: Vec<_> = rotations
        .iter()
        .map(|r| {
            json!({
                "mode": r.mode, "stack": r.stack.name(), "concurrency": 16, "images": plan.images,
                "ms": r.ms, "failures": r.failures, "relogins": r.relogins,
                "token_refreshes": r.token_refreshes, "retries": r.retries,
                "presign_calls": r.presign_calls, "expired_fat_refusals": r.expired_fat_refusals,
            })
        })
        .collect();
    let config = PresignConfig::default();
    json!({
        "version": 1,
        "unix_time": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "images": plan.images,
        "presign_delay_ms": ms(PRESIGN_DELAY),
        "media_delay_ms": ms(MEDIA_DELAY),
        "batch_limit": config.batch_limit,
        "max_concurrent_calls": config.max_concurrent_calls,
        "runs": plan.runs,
        "statistic": "median",
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "load_average": { "before": load[0], "after": load[1] },
        "concurrency": plan.concurrency,
        "cold": cold,
        "warm": warm,
        "rotation": rotation,
    })
}

fn print_tables(plan: &Plan, cells: &HashMap<(Approach, usize), Cell>, rotations: &[Rotation]) {
    let header: String = plan.concurrency.iter().map(|c| format!(" {:>16}", format!("c={c}"))).collect();
    let images = plan.images;
    for (title, warm) in [("cold gallery", false), ("warm scroll", true)] {
        println!("\n{title}: median of {} runs, ms (presign calls)", plan.runs);
        println!("{:<30}{header}", "approach");
        for approach in APPROACHES {
            if warm && !approach.warm_too() {
                continue;
            }
            let (id, stack) = approach.id();
            let row: String = plan
                .concurrency
                .iter()
                .map(|&c| {
                    let Some(cell) = cells.get(&(approach, c)) else { return format!(" {:>16}", "-") };
                    let (times, calls, failures) = if warm {
                        (&cell.warm_ms, &cell.warm_calls, cell.warm_failures)
                    } else {
                        (&cell.cold_ms, &cell.cold_calls, cell.cold_failures)
                    };
                    let calls = calls.iter().max().copied().unwrap_or(0);
                    let failed = if failures > 0 { format!(" {failures}!") } else { String::new() };
                    format!(" {:>16}", format!("{:.1} ({calls}){failed}", median(times)))
                })
                .collect();
            println!("{:<30}{row}", format!("{id} {stack}"));
        }
        let limits: &[(&str, Limit)] = if warm {
            &[("limit (media only)", limit_tokens)]
        } else {
            &[("limit ahead", limit_ahead), ("bound windowed", bound_windowed), ("limit tokens", limit_tokens)]
        };
        for (name, f) in limits {
            let row: String = plan.concurrency.iter().map(|&c| format!(" {:>16.1}", f(images, c))).collect();
            println!("{name:<30}{row}");
        }
    }
    println!(
        "\nlimits: ahead = {p} + ceil({images}/c) x {m}; windowed = ceil({images}/c) x ({p} + {m}); tokens = ceil({images}/c) x {m} (ms)",
        p = PRESIGN_DELAY.as_millis(),
        m = MEDIA_DELAY.as_millis()
    );
    println!("\ntoken rotation ({images} images, concurrency 16, every FAT expired once half are in):");
    println!(
        "mode       stack     ms  failed  relogins  strategy renewals  retries  presign calls  expired-FAT refusals"
    );
    for r in rotations {
        println!(
            "{:<9} {:<7} {:>6.1} {:>7} {:>9} {:>18} {:>8} {:>14} {:>21}",
            r.mode,
            r.stack.name(),
            r.ms,
            r.failures,
            r.relogins,
            r.token_refreshes,
            r.retries,
            r.presign_calls,
            r.expired_fat_refusals
        );
    }
}
