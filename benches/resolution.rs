//! Resolution throughput, each group with its baseline measured in the same run.
//!
//! ```sh
//! for run in 1 2 3; do cargo bench --bench resolution -- --save-baseline run$run; done
//! cargo xtask bench-report   # median of the runs -> BENCHMARKS.md table and chart
//! ```
//!
//! Function names: `secure-media ...` is ours; `baseline ...` is what a user would otherwise write.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{header, HeaderMap, HeaderValue};
use secure_media::presigned::{
    CacheKey, MemoryPresignCache, PresignCache, PresignConfig, Presigned, PresignedStrategy, Presigner, SignedUrl,
};
use secure_media::{
    resolve_str, AccessError, EmbeddedStrategy, FileAccessToken, HeaderBasedStrategy, MediaAccessStrategy, MediaUrl,
    SecureHosts, StaticToken, TokenSource,
};
use tower::{Service, ServiceExt};
use url::Url;

/// A realistic FAT: a 300-byte HS256 JWT.
fn jwt() -> String {
    let payload = format!(
        "{{\"sub\":\"user-1234\",\"app_id\":\"demo\",\"iat\":1800000000,\"exp\":4000000000,\"pad\":\"{}\"}}",
        "x".repeat(150)
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.{}", b64(r#"{"alg":"HS256","typ":"JWT"}"#), b64(&payload), "s".repeat(43))
}

const HOST: &str = "files-us.cometchat.io";

/// The principal scope of [`jwt`]'s token (`sub:<sub>`).
const SCOPE: &str = "sub:user-1234";

fn media_url(n: usize) -> String {
    format!("https://{HOST}/demo/media/photo-{n:05}.jpg")
}

fn hosts() -> SecureHosts {
    SecureHosts::cometchat("us").unwrap()
}

fn tokens() -> Arc<dyn TokenSource> {
    Arc::new(StaticToken::parse(jwt()).unwrap())
}

fn embedded(c: &mut Criterion) {
    let strategy = EmbeddedStrategy::new(hosts(), tokens());
    let token = jwt();
    let text = media_url(1);
    let mut group = c.benchmark_group("embedded_str");
    group.throughput(Throughput::Elements(1));
    group.bench_function("secure-media embed", |b| {
        b.iter(|| black_box(strategy.embed(black_box(&text)).unwrap().len()))
    });
    group.bench_function("baseline parse+append_pair", |b| {
        b.iter(|| {
            let mut url = Url::parse(black_box(&text)).unwrap();
            url.query_pairs_mut().append_pair("fat", &token);
            black_box(String::from(url).len())
        })
    });
    group.finish();

    let parsed = Url::parse(&text).unwrap();
    let mut group = c.benchmark_group("embedded_url");
    group.throughput(Throughput::Elements(1));
    group.bench_function("secure-media resolve+apply", |b| {
        b.iter(|| {
            let mut url = black_box(&parsed).clone();
            let view = MediaUrl::from_url(&parsed).unwrap();
            if strategy.applies_to(&view) {
                strategy.resolve_ready(&view).unwrap().unwrap().apply_to_url(&mut url);
            }
            black_box(url)
        })
    });
    group.bench_function("baseline append_pair", |b| {
        b.iter(|| {
            let mut url = black_box(&parsed).clone();
            url.query_pairs_mut().append_pair("fat", &token);
            black_box(url)
        })
    });
    group.finish();
}

fn header_mode(c: &mut Criterion) {
    let strategy = HeaderBasedStrategy::new(hosts(), tokens());
    let parsed = Url::parse(&media_url(1)).unwrap();
    let precomputed = HeaderValue::from_str(&format!("Bearer {}", jwt())).unwrap();
    let mut group = c.benchmark_group("header");
    group.throughput(Throughput::Elements(1));
    group.bench_function("secure-media resolve+insert", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            let view = MediaUrl::from_url(black_box(&parsed)).unwrap();
            if strategy.applies_to(&view) {
                let resolution = strategy.resolve_ready(&view).unwrap().unwrap();
                for (name, value) in resolution.headers() {
                    headers.insert(name.clone(), value.clone());
                }
            }
            black_box(headers)
        })
    });
    group.bench_function("baseline insert cloned HeaderValue", |b| {
        b.iter(|| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, black_box(&precomputed).clone());
            black_box(headers)
        })
    });
    group.finish();
}

fn passthrough(c: &mut Criterion) {
    let strategy = EmbeddedStrategy::new(hosts(), tokens());
    let foreign = Url::parse("https://cdn.example.com/demo/media/photo-00001.jpg").unwrap();
    let mut group = c.benchmark_group("passthrough");
    group.throughput(Throughput::Elements(1));
    group.bench_function("secure-media applies_to", |b| {
        b.iter(|| black_box(MediaUrl::from_url(black_box(&foreign)).is_some_and(|v| strategy.applies_to(&v))))
    });
    let hosts = hosts();
    group
        .bench_function("baseline SecureHosts check", |b| b.iter(|| black_box(hosts.matches_url(black_box(&foreign)))));
    group.bench_function("baseline host_str compare", |b| {
        b.iter(|| black_box(black_box(&foreign).host_str() == Some(HOST)))
    });
    group.finish();
}

/// Signs instantly (after one yield, as a network call would), counting calls.
#[derive(Default)]
struct LocalSigner {
    calls: AtomicUsize,
}

#[async_trait]
impl Presigner for LocalSigner {
    async fn presign(&self, url: &str, _: &FileAccessToken) -> Result<Presigned, AccessError> {
        Ok(Presigned {
            url: format!("{url}?Expires=4000000000&Signature=abcdefghijklmnop&Key-Pair-Id=K"),
            expires_at: None,
        })
    }
    async fn presign_batch(&self, urls: &[Arc<str>], token: &FileAccessToken) -> Vec<Result<Presigned, AccessError>> {
        tokio::task::yield_now().await;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::with_capacity(urls.len());
        for url in urls {
            out.push(self.presign(url, token).await);
        }
        out
    }
    fn max_batch(&self) -> usize {
        100
    }
}

const RESIDENT: usize = 10_000;

fn random_indices(n: usize, seed: u64) -> Vec<usize> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % RESIDENT as u64) as usize
        })
        .collect()
}

fn presigned_hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let strategy = Arc::new(
        PresignedStrategy::new(hosts(), tokens(), LocalSigner::default())
            .with_cache(Arc::new(MemoryPresignCache::new(RESIDENT * 2))),
    );
    let texts: Vec<String> = (0..RESIDENT).map(media_url).collect();
    let urls: Vec<Url> = texts.iter().map(|t| Url::parse(t).unwrap()).collect();
    rt.block_on(async {
        for url in &urls {
            strategy.resolve(&MediaUrl::from_url(url).unwrap()).await.unwrap();
        }
    });
    let signed: Vec<Arc<str>> =
        texts.iter().map(|t| Arc::from(format!("{t}?Expires=4000000000&Signature=abcdefghijklmnop"))).collect();
    let map: HashMap<String, Arc<str>> = texts.iter().cloned().zip(signed.iter().cloned()).collect();
    let moka = moka::sync::Cache::<String, Arc<str>>::new(RESIDENT as u64 * 2);
    let quick = quick_cache::sync::Cache::<String, Arc<str>>::new(RESIDENT * 2);
    for (t, s) in texts.iter().zip(&signed) {
        moka.insert(t.clone(), s.clone());
        quick.insert(t.clone(), s.clone());
    }
    // Every lookup starts from the request's parsed URL (what a middleware holds): the baselines
    // key by its text, ours derives the clean key from it. Our cache alone is also handed the
    // URL's text (with the scope), the like-for-like cache comparison.
    let memory = MemoryPresignCache::new(RESIDENT * 2);
    let scope: Arc<str> = SCOPE.into();
    let now = std::time::SystemTime::now();
    rt.block_on(async {
        for (t, s) in texts.iter().zip(&signed) {
            let url = Url::parse(s).unwrap();
            let entry = SignedUrl::new(t, url, now, now + Duration::from_secs(86_400));
            memory.put(&CacheKey::new(&scope, t), entry).await;
        }
    });
    let order = random_indices(1 << 16, 0x9e37_79b9);
    let ours = |i: usize| {
        let view = MediaUrl::from_url(&urls[i]).unwrap();
        black_box(strategy.resolve_ready(&view).unwrap().unwrap());
    };

    let mut group = c.benchmark_group("presigned_hit");
    group.throughput(Throughput::Elements(1));
    let mut n = 0usize;
    group.bench_function("secure-media resolve_ready", |b| {
        b.iter(|| {
            n = (n + 1) & 0xffff;
            ours(order[n])
        })
    });
    group.bench_function("secure-media MemoryPresignCache get", |b| {
        b.iter(|| {
            n = (n + 1) & 0xffff;
            black_box(memory.get_ready(&CacheKey::new(&scope, urls[order[n]].as_str())))
        })
    });
    group.bench_function("baseline HashMap get+clone", |b| {
        b.iter(|| {
            n = (n + 1) & 0xffff;
            black_box(map.get(urls[order[n]].as_str()).cloned())
        })
    });
    group.bench_function("baseline moka get", |b| {
        b.iter(|| {
            n = (n + 1) & 0xffff;
            black_box(moka.get(urls[order[n]].as_str()))
        })
    });
    group.bench_function("baseline quick_cache get", |b| {
        b.iter(|| {
            n = (n + 1) & 0xffff;
            black_box(quick.get(urls[order[n]].as_str()))
        })
    });
    group.finish();

    // Aggregate throughput: each iteration is one lookup on each of two threads.
    let mut group = c.benchmark_group("presigned_hit_2_threads");
    group.throughput(Throughput::Elements(2));
    let two_threads = |iters: u64, lookup: &(dyn Fn(usize) + Sync)| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let order = random_indices(1 << 16, 0x1234_5678 + t);
                s.spawn(move || {
                    for i in 0..iters as usize {
                        lookup(order[i & 0xffff]);
                    }
                });
            }
        });
        start.elapsed()
    };
    group.bench_function("secure-media resolve_ready", |b| b.iter_custom(|iters| two_threads(iters, &ours)));
    group.bench_function("secure-media MemoryPresignCache get", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|i| {
                black_box(memory.get_ready(&CacheKey::new(&scope, urls[i].as_str())));
            })
        })
    });
    group.bench_function("baseline quick_cache get", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &|i| {
                black_box(quick.get(urls[i].as_str()));
            })
        })
    });
    group.finish();
}

fn presigned_cold(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let texts: Vec<String> = (0..1000).map(media_url).collect();
    let mut group = c.benchmark_group("presigned_cold_burst");
    group.sample_size(10);
    for (name, distinct) in [("1000 x one URL", false), ("1000 distinct URLs", true)] {
        let mut calls_seen = 0;
        group.bench_function(BenchmarkId::new("secure-media", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let signer = Arc::new(LocalSigner::default());
                    let strategy =
                        PresignedStrategy::new(hosts(), tokens(), signer.clone()).with_config(PresignConfig::default());
                    let start = Instant::now();
                    rt.block_on(futures::future::join_all(
                        (0..1000).map(|i| resolve_str(&strategy, if distinct { &texts[i] } else { &texts[0] })),
                    ));
                    total += start.elapsed();
                    calls_seen = signer.calls.load(Ordering::Relaxed);
                }
                total
            })
        });
        let line = format!("{name}: {calls_seen} presigner calls (batch limit 50)\n");
        eprint!("presigned_cold_burst {line}");
        let path = std::path::Path::new("target/criterion/bursts.txt");
        let previous = if distinct { std::fs::read_to_string(path).unwrap_or_default() } else { String::new() };
        let _ = std::fs::write(path, previous + &line);
    }
    group.finish();
}

/// A loopback HTTP server that answers 200 "ok" to everything.
fn loopback(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr.to_string()
    })
}

struct NoOp;

#[async_trait]
impl reqwest_middleware::Middleware for NoOp {
    async fn handle(
        &self,
        req: reqwest::Request,
        ext: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        next.run(req, ext).await
    }
}

/// What a user would otherwise write for header mode: a prebuilt header on every request (no
/// host check, no retry).
struct SetHeader(http::HeaderValue);

#[async_trait]
impl reqwest_middleware::Middleware for SetHeader {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        ext: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        req.headers_mut().insert(http::header::AUTHORIZATION, self.0.clone());
        next.run(req, ext).await
    }
}

/// Ends a middleware chain with a canned 200, so nothing goes over the network.
struct Answer;

#[async_trait]
impl reqwest_middleware::Middleware for Answer {
    async fn handle(
        &self,
        _req: reqwest::Request,
        _ext: &mut http::Extensions,
        _next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Ok(reqwest::Response::from(http::Response::new(Vec::<u8>::new())))
    }
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let addr = loopback(&rt);
    let url = format!("http://{addr}/demo/media/photo.jpg");
    let local_hosts = SecureHosts::new().with_host(&addr).unwrap().allowing_http();
    let fat = jwt();
    let client = reqwest::Client::new();
    let with = |m: Arc<dyn reqwest_middleware::Middleware>| {
        reqwest_middleware::ClientBuilder::new(client.clone()).with_arc(m).build()
    };
    let header: Arc<dyn MediaAccessStrategy> = Arc::new(HeaderBasedStrategy::new(local_hosts.clone(), tokens()));
    let embedded: Arc<dyn MediaAccessStrategy> = Arc::new(EmbeddedStrategy::new(local_hosts.clone(), tokens()));
    let presigned: Arc<dyn MediaAccessStrategy> =
        Arc::new(PresignedStrategy::new(local_hosts.clone(), tokens(), LocalSigner::default()));
    // The presigned strategy is warmed, so every measured request is a cache hit.
    rt.block_on(presigned.resolve(&MediaUrl::from_url(&Url::parse(&url).unwrap()).unwrap())).unwrap();
    let ours = |s: &Arc<dyn MediaAccessStrategy>| -> Arc<dyn reqwest_middleware::Middleware> {
        Arc::new(secure_media_reqwest::SecureMediaMiddleware::new(s.clone()))
    };
    let clients = [
        ("baseline reqwest, token by hand", None),
        ("baseline no-op middleware", Some(with(Arc::new(NoOp)))),
        ("secure-media header", Some(with(ours(&header)))),
        ("secure-media embedded", Some(with(ours(&embedded)))),
        ("secure-media presigned hit", Some(with(ours(&presigned)))),
    ];
    let mut group = c.benchmark_group("reqwest_end_to_end");
    group.throughput(Throughput::Elements(1));
    for (name, middleware_client) in &clients {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async {
                let response = match middleware_client {
                    None => client.get(&url).bearer_auth(&fat).send().await.unwrap(),
                    Some(m) => m.get(&url).send().await.unwrap(),
                };
                black_box(response.bytes().await.unwrap())
            })
        });
    }
    group.finish();

    // The middleware chain in process: a terminal middleware answers without the network, so
    // what remains is what each middleware costs.
    let bearer = http::HeaderValue::from_str(&format!("Bearer {fat}")).unwrap();
    let in_process = |m: Option<Arc<dyn reqwest_middleware::Middleware>>| {
        let mut builder = reqwest_middleware::ClientBuilder::new(client.clone());
        if let Some(m) = m {
            builder = builder.with_arc(m);
        }
        builder.with(Answer).build()
    };
    let chains = [
        ("baseline terminal only", in_process(None)),
        ("baseline no-op middleware", in_process(Some(Arc::new(NoOp)))),
        ("baseline header middleware", in_process(Some(Arc::new(SetHeader(bearer.clone()))))),
        ("secure-media header", in_process(Some(ours(&header)))),
        (
            "secure-media header, without MediaKey",
            in_process(Some(Arc::new(
                secure_media_reqwest::SecureMediaMiddleware::new(header.clone()).without_media_key(),
            ))),
        ),
        ("secure-media embedded", in_process(Some(ours(&embedded)))),
        ("secure-media presigned hit", in_process(Some(ours(&presigned)))),
    ];
    let mut group = c.benchmark_group("reqwest_middleware_in_process");
    group.throughput(Throughput::Elements(1));
    for (name, chain) in &chains {
        group.bench_function(*name, |b| {
            b.to_async(&rt).iter(|| async { black_box(chain.get(&url).send().await.unwrap().status()) })
        });
    }
    group.finish();

    // The tower layer over an in-process service: what the layer itself adds to a call.
    let inner = tower::service_fn(|req: http::Request<String>| async move {
        Ok::<_, std::convert::Infallible>(http::Response::new(req.headers().len()))
    });
    let layer = secure_media_tower::SecureMediaLayer::new(header);
    let layered = tower::ServiceBuilder::new().layer(layer.clone()).service(inner);
    let keyless = tower::ServiceBuilder::new().layer(layer.without_media_key()).service(inner);
    let set_header = tower::ServiceBuilder::new()
        .layer(tower_http::set_header::SetRequestHeaderLayer::overriding(http::header::AUTHORIZATION, bearer))
        .service(inner);
    let request = || http::Request::get(url.as_str()).body(String::new()).unwrap();
    let mut group = c.benchmark_group("tower_in_process");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline service_fn call", |b| {
        b.to_async(&rt).iter(|| async {
            let mut inner = inner;
            black_box(inner.ready().await.unwrap().call(request()).await.unwrap())
        })
    });
    group.bench_function("baseline tower-http SetRequestHeader", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set_header = set_header.clone();
            black_box(set_header.ready().await.unwrap().call(request()).await.unwrap())
        })
    });
    group.bench_function("secure-media layer, header mode", |b| {
        b.to_async(&rt).iter(|| async {
            let mut layered = layered.clone();
            black_box(layered.ready().await.unwrap().call(request()).await.unwrap())
        })
    });
    group.bench_function("secure-media layer, header mode, without MediaKey", |b| {
        b.to_async(&rt).iter(|| async {
            let mut keyless = keyless.clone();
            black_box(keyless.ready().await.unwrap().call(request()).await.unwrap())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(40);
    targets = embedded, header_mode, passthrough, presigned_hits, presigned_cold, end_to_end
}
criterion_main!(benches);
