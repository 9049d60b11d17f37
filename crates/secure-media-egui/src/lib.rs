//! # secure-media-egui
//!
//! [`SecureBytesLoader`]: an [`egui::load::BytesLoader`] for secure media hosts. URLs that are not
//! on a secure host are answered `NotSupported`, so egui_extras' own http loader keeps serving
//! public images; secure ones are fetched through a [`MediaFetcher`] (the strategy's host rules,
//! one retry, refresh, presign cache) on the tokio runtime it is given.
//!
//! ```no_run
//! # fn run(ctx: &egui::Context, fetcher: std::sync::Arc<dyn secure_media_core::MediaFetcher>, runtime: tokio::runtime::Handle) {
//! use secure_media_egui::{install, SecureBytesLoader};
//!
//! // After egui_extras::install_image_loaders(ctx): the loader added last is asked first.
//! install(ctx, SecureBytesLoader::new(fetcher, runtime));
//! // Then, in the UI: ui.image("https://files-us.cometchat.io/app/media/photo.jpg");
//! # }
//! ```
//!
//! Entries are keyed by the clean URL (a stale `?fat=` or signature is the same image). A failed
//! load (a refusal included) is reported, then retried after [`SecureBytesLoader::with_retry_after`]
//! or at once after `forget`: a refusal is never a permanent failure. `request_repaint` is called
//! after the result is stored and the lock released.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::await_holding_lock)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use egui::load::{Bytes, BytesLoadResult, BytesLoader, BytesPoll, LoadError};
use egui::Context;
use secure_media_core::MediaFetcher;

enum Entry {
    Pending,
    Ready { bytes: Arc<[u8]>, mime: String },
    Failed { error: String, at: Instant },
}

type Cache = Arc<Mutex<HashMap<String, Entry>>>;

/// Loads bytes for secure media URLs. See the [crate docs](crate).
pub struct SecureBytesLoader {
    fetcher: Arc<dyn MediaFetcher>,
    runtime: tokio::runtime::Handle,
    retry_after: Duration,
    cache: Cache,
}

impl SecureBytesLoader {
    /// Fetches through `fetcher` on `runtime` (egui has no executor of its own); failures are
    /// retried after 5 seconds.
    pub fn new(fetcher: Arc<dyn MediaFetcher>, runtime: tokio::runtime::Handle) -> Self {
        Self { fetcher, runtime, retry_after: Duration::from_secs(5), cache: Arc::default() }
    }

    /// How long a failure is reported before the URL is tried again.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Asks ahead for the URLs a screen is about to show (a gallery, a page of a chat), in the
    /// background on the runtime: in presigned mode their loads then find their URLs ready.
    /// Returns at once; egui's own `load` calls are unchanged.
    pub fn prefetch(&self, urls: impl IntoIterator<Item = String>) -> tokio::task::JoinHandle<()> {
        let (fetcher, urls): (_, Vec<String>) = (self.fetcher.clone(), urls.into_iter().collect());
        self.runtime.spawn(async move {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            fetcher.prefetch(&urls).await;
        })
    }

    /// The fetcher's key for `uri` (no credential its strategy declares, scoped to the principal).
    fn key(&self, uri: &str) -> String {
        self.fetcher.key_of(uri).map_or_else(|| uri.to_owned(), |k| k.to_string())
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BytesLoader for SecureBytesLoader {
    fn id(&self) -> &str {
        egui::generate_loader_id!(SecureBytesLoader)
    }

    fn load(&self, ctx: &Context, uri: &str) -> BytesLoadResult {
        if !self.fetcher.handles(uri) {
            return Err(LoadError::NotSupported);
        }
        let key = self.key(uri);
        {
            let mut cache = self.cache();
            match cache.get(&key) {
                Some(Entry::Ready { bytes, mime }) => {
                    return Ok(BytesPoll::Ready {
                        size: None,
                        bytes: Bytes::Shared(bytes.clone()),
                        mime: Some(mime.clone()),
                    })
                }
                Some(Entry::Pending) => return Ok(BytesPoll::Pending { size: None }),
                Some(Entry::Failed { error, at }) if at.elapsed() < self.retry_after => {
                    return Err(LoadError::Loading(error.clone()))
                }
                _ => {
                    cache.insert(key.clone(), Entry::Pending);
                }
            }
        }
        let (fetcher, cache, ctx, uri) = (self.fetcher.clone(), self.cache.clone(), ctx.clone(), uri.to_owned());
        self.runtime.spawn(async move {
            let entry = match fetcher.fetch(&uri).await {
                Ok(media) => Entry::Ready { bytes: Arc::from(&media.bytes[..]), mime: media.content_type },
                Err(error) => {
                    tracing::info!(url = %key, %error, "secure media load failed");
                    Entry::Failed { error: error.to_string(), at: Instant::now() }
                }
            };
            {
                let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
                // Forgotten while loading: leave it forgotten.
                if let Some(slot @ Entry::Pending) = cache.get_mut(&key) {
                    *slot = entry;
                }
            }
            // After the lock is released: touching ctx under it can deadlock.
            ctx.request_repaint();
        });
        Ok(BytesPoll::Pending { size: None })
    }

    fn forget(&self, uri: &str) {
        self.cache().remove(&self.key(uri));
    }

    fn forget_all(&self) {
        self.cache().clear();
    }

    fn byte_size(&self) -> usize {
        self.cache().values().map(|e| if let Entry::Ready { bytes, .. } = e { bytes.len() } else { 0 }).sum()
    }

    fn has_pending(&self) -> bool {
        self.cache().values().any(|e| matches!(e, Entry::Pending))
    }
}

/// Installs the loader on a context (call it after `egui_extras::install_image_loaders`).
pub fn install(ctx: &Context, loader: SecureBytesLoader) {
    ctx.add_bytes_loader(Arc::new(loader));
}

impl std::fmt::Debug for SecureBytesLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureBytesLoader").field("retry_after", &self.retry_after).finish_non_exhaustive()
    }
}
