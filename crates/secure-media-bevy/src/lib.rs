//! # secure-media-bevy
//!
//! A `bevy_asset` [`AssetReader`] for secure media: [`SecureMediaPlugin`] registers an asset
//! source (named `secure` by default; it can take over `https`) whose paths are `host/path`, so
//! `asset_server.load("secure://files-us.cometchat.io/app/media/photo.png")` fetches
//! `https://files-us.cometchat.io/app/media/photo.png` through a [`MediaFetcher`]: the strategy's
//! host rules, one retry, token refresh and presign cache.
//!
//! ```no_run
//! # fn run(fetcher: std::sync::Arc<dyn secure_media_core::MediaFetcher>, runtime: tokio::runtime::Handle) {
//! use bevy_app::App;
//! use secure_media_bevy::SecureMediaPlugin;
//!
//! let mut app = App::new();
//! // Before AssetPlugin (DefaultPlugins): sources are built when AssetPlugin is added.
//! app.add_plugins(SecureMediaPlugin::new(fetcher, runtime));
//! # }
//! ```
//!
//! Bevy runs readers on its own executor, not tokio: fetches run on the tokio [`Handle`](tokio::runtime::Handle)
//! the plugin is given. `read_meta` answers `NotFound` at once, so no `.meta` request is ever sent
//! (bevy #10157). A 404 is `NotFound`; other refusals are `HttpError(status)`.
//!
//! ## Compatibility
//!
//! | secure-media-bevy | bevy_asset / bevy | Rust |
//! |---|---|---|
//! | 0.1 | 0.20 (depend on `bevy_asset`; the full `bevy` 0.20 needs Rust 1.97) | 1.95 |
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use bevy_app::{App, Plugin};
use bevy_asset::io::{AssetReader, AssetReaderError, AssetSourceBuilder, AssetSourceId, PathStream, Reader, VecReader};
use bevy_asset::AssetApp;
use secure_media_core::{AccessError, MediaFetcher};

/// Reads `host/path` as `{scheme}://host/path` through a [`MediaFetcher`].
#[derive(Clone)]
pub struct SecureAssetReader {
    fetcher: Arc<dyn MediaFetcher>,
    runtime: tokio::runtime::Handle,
    scheme: &'static str,
}

impl SecureAssetReader {
    /// Reads over https, fetching on `runtime`.
    pub fn new(fetcher: Arc<dyn MediaFetcher>, runtime: tokio::runtime::Handle) -> Self {
        Self { fetcher, runtime, scheme: "https" }
    }

    /// Reads over plain http: for a local reference server only.
    pub fn over_http(mut self) -> Self {
        self.scheme = "http";
        self
    }

    /// The URL a path stands for.
    pub fn url_of(&self, path: &Path) -> String {
        let path = path.to_string_lossy().replace('\\', "/");
        format!("{}://{}", self.scheme, path.trim_start_matches('/'))
    }

    /// Asks ahead, in the background on the runtime, for assets a scene is about to load (paths
    /// as this reader reads them, `host/path`): in presigned mode their reads then find their
    /// URLs ready. Returns at once.
    pub fn prefetch<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> tokio::task::JoinHandle<()> {
        let urls: Vec<String> = paths.into_iter().map(|path| self.url_of(path)).collect();
        let fetcher = self.fetcher.clone();
        self.runtime.spawn(async move {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            fetcher.prefetch(&urls).await;
        })
    }
}

fn reader_error(path: &Path, error: AccessError) -> AssetReaderError {
    match error {
        AccessError::Status { status, .. } if status.as_u16() == 404 => AssetReaderError::NotFound(path.to_owned()),
        AccessError::NotSecure(_) | AccessError::InvalidUrl(_) => AssetReaderError::NotFound(path.to_owned()),
        AccessError::Refused { status, .. } | AccessError::Status { status, .. } => {
            AssetReaderError::HttpError(status.as_u16())
        }
        // The error itself, not its words: a reader of the io::Error can still get at it.
        other => AssetReaderError::Io(Arc::new(std::io::Error::other(other))),
    }
}

impl AssetReader for SecureAssetReader {
    async fn read<'a>(&'a self, path: &'a Path) -> Result<impl Reader + 'a, AssetReaderError> {
        let url = self.url_of(path);
        let fetcher = self.fetcher.clone();
        // Bevy's executor is not tokio: run the fetch on the runtime we were given.
        let fetched = self
            .runtime
            .spawn(async move { fetcher.fetch(&url).await })
            .await
            .map_err(|e| AssetReaderError::Io(Arc::new(std::io::Error::other(e.to_string()))))?;
        match fetched {
            Ok(media) => Ok(VecReader::new(media.bytes.to_vec())),
            Err(error) => {
                tracing::info!(path = %path.display(), %error, "secure asset not loaded");
                Err(reader_error(path, error))
            }
        }
    }

    async fn read_meta<'a>(&'a self, path: &'a Path) -> Result<impl Reader + 'a, AssetReaderError> {
        // No .meta files on media hosts: answer at once instead of asking the server for one.
        Err::<VecReader, _>(AssetReaderError::NotFound(path.to_owned()))
    }

    async fn read_directory<'a>(&'a self, path: &'a Path) -> Result<Box<PathStream>, AssetReaderError> {
        Err(AssetReaderError::NotFound(path.to_owned()))
    }

    async fn is_directory<'a>(&'a self, _path: &'a Path) -> Result<bool, AssetReaderError> {
        Ok(false)
    }
}

/// Registers a [`SecureAssetReader`] as an asset source. Add it before `AssetPlugin`.
pub struct SecureMediaPlugin {
    reader: SecureAssetReader,
    source: String,
}

impl SecureMediaPlugin {
    /// A source named `secure`, over https.
    pub fn new(fetcher: Arc<dyn MediaFetcher>, runtime: tokio::runtime::Handle) -> Self {
        Self { reader: SecureAssetReader::new(fetcher, runtime), source: "secure".into() }
    }

    /// Another source name (`"https"` takes over bevy's https source).
    pub fn with_source_name(mut self, name: impl Into<String>) -> Self {
        self.source = name.into();
        self
    }

    /// Plain http (a local reference server only).
    pub fn over_http(mut self) -> Self {
        self.reader = self.reader.over_http();
        self
    }

    /// The source name.
    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// The reader the source uses: keep a clone to [`prefetch`](SecureAssetReader::prefetch).
    pub fn reader(&self) -> &SecureAssetReader {
        &self.reader
    }
}

impl Plugin for SecureMediaPlugin {
    fn build(&self, app: &mut App) {
        let reader = self.reader.clone();
        app.register_asset_source(
            AssetSourceId::from(self.source.clone()),
            AssetSourceBuilder::new(move || Box::new(reader.clone())),
        );
    }
}

impl std::fmt::Debug for SecureAssetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureAssetReader").field("scheme", &self.scheme).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SecureMediaPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureMediaPlugin").field("source", &self.source).field("reader", &self.reader).finish()
    }
}
