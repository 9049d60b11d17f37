//! The hot path allocates nothing: a warm embedded or header resolution and a presigned cache hit
//! cost no heap allocation (the adapters' own URL rewrite is the only one left).
//! One test in this binary, so the counting allocator sees only this thread's work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use secure_media_core::presigned::{Presigned, PresignedStrategy, Presigner};
use secure_media_core::*;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl Fn()) -> usize {
    f(); // warm up (first header clone, lazily built values)
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..100 {
        f();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

struct Signer;

#[async_trait]
impl Presigner for Signer {
    async fn presign(&self, url: &str, _: &FileAccessToken) -> Result<Presigned, AccessError> {
        Ok(Presigned { url: format!("{url}?Expires=4000000000&Signature=s&Key-Pair-Id=k"), expires_at: None })
    }
}

#[test]
fn warm_resolutions_and_cache_hits_do_not_allocate() {
    let hosts = SecureHosts::cometchat("us").unwrap();
    let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::parse("eyJhbGciOiJIUzI1NiJ9.e30.sig").unwrap());
    let url = url::Url::parse("https://files-us.cometchat.io/app/media/photo-1234.jpg").unwrap();
    let other = url::Url::parse("https://cdn.example.com/app/media/photo-1234.jpg").unwrap();

    let embedded = EmbeddedStrategy::new(hosts.clone(), tokens.clone());
    let header = HeaderBasedStrategy::new(hosts.clone(), tokens.clone());
    let presigned = PresignedStrategy::new(hosts.clone(), tokens, Signer);
    let view = MediaUrl::from_url(&url).unwrap();
    futures::executor::block_on(presigned.resolve(&view)).unwrap(); // fill the cache

    let strategies: [(&str, &dyn MediaAccessStrategy); 3] =
        [("embedded", &embedded), ("header", &header), ("presigned hit", &presigned)];
    for (name, strategy) in strategies {
        let count = allocations_in(|| {
            let view = MediaUrl::from_url(&url).unwrap();
            assert!(strategy.applies_to(&view));
            let resolution = strategy.resolve_ready(&view).expect("ready").expect("resolved");
            std::hint::black_box(resolution);
        });
        assert_eq!(count, 0, "{name}: {count} allocations per 100 resolutions");
    }
    let passthrough = allocations_in(|| {
        let view = MediaUrl::from_url(&other).unwrap();
        assert!(!embedded.applies_to(&view));
    });
    assert_eq!(passthrough, 0);
    assert_eq!(presigned.stats().presign_calls, 1);
}
