//! Resident memory per cached presigned URL, beside the bytes of the two URLs it holds.
//!
//! ```sh
//! cargo bench --bench cache_memory
//! ```
//!
//! Fills a [`MemoryPresignCache`] of capacity 200,000 with 200,000 entries (clean URL 82 bytes,
//! signed URL 270 bytes, one principal), and reads the process's resident set (`/proc/self/statm`)
//! before and after. The inputs are made and dropped entry by entry, so only what the cache keeps
//! is counted. Target (BENCHMARKS.md): at most 1.5x the two URLs' bytes per entry, and the cache
//! full to its capacity before it drops anything.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secure_media::presigned::{CacheKey, MemoryPresignCache, PresignCache, SignedUrl};

const ENTRIES: usize = 200_000;
const SCOPE: &str = "sub:user-1234";

/// An 82-byte clean URL.
fn clean(i: usize) -> String {
    let url = format!("https://files-us.cometchat.io/demo-app/media/images/2026/11/photo-{i:07}-thumbnail.jpg");
    debug_assert_eq!(url.len(), 82, "{url}");
    url
}

/// A 270-byte CloudFront-style signed URL for `clean`.
fn signed(clean: &str, i: usize) -> String {
    let signature: String = (0..121).map(|k| char::from(b'A' + ((i * 31 + k * 7) % 26) as u8)).collect();
    let url = format!("{clean}?Expires=1796083200&Signature={signature}&Key-Pair-Id=K2JCJMDEHXQW5F");
    debug_assert_eq!(url.len(), 270, "{}", url.len());
    url
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches` ask what is here
    }
    let now = SystemTime::now();
    let url_bytes = (clean(0).len() + signed(&clean(0), 0).len()) as f64;
    let cache = MemoryPresignCache::new(ENTRIES);
    let scope: Arc<str> = SCOPE.into();
    let before = resident_bytes();
    futures::executor::block_on(async {
        for i in 0..ENTRIES {
            let clean = clean(i);
            let url = url::Url::parse(&signed(&clean, i)).expect("a valid URL");
            let entry = SignedUrl::new(&clean, url, now, now + Duration::from_secs(86_400));
            cache.put(&CacheKey::new(&scope, &clean), entry).await;
        }
    });
    let after = resident_bytes();
    let per_entry = (after - before) as f64 / ENTRIES as f64;
    println!(
        "cache_memory: {ENTRIES} entries, {} held before any eviction ({:.1}% of capacity)",
        cache.len(),
        100.0 * cache.len() as f64 / ENTRIES as f64
    );
    println!(
        "cache_memory: {per_entry:.0} bytes of resident memory per entry; the two URLs are {url_bytes:.0} bytes: {:.2}x (target <= 1.5x)",
        per_entry / url_bytes
    );
    let held = (0..ENTRIES).step_by(997).all(|i| cache.get_ready(&CacheKey::new(&scope, &clean(i))).is_some());
    println!("cache_memory: every sampled entry answers: {held}");
}
