//! # secure-media-image
//!
//! Load secure images with the [`image`] crate through any [`MediaFetcher`] (the reqwest one is
//! `secure_media_reqwest::ReqwestFetcher`), decode them within [`DecodeLimits`] (a "bomb" whose
//! header claims 100,000 x 100,000 pixels is refused before anything is allocated), and load a
//! screenful with bounded concurrency.
//!
//! ```no_run
//! # async fn run(fetcher: std::sync::Arc<dyn secure_media_core::MediaFetcher>) -> Result<(), secure_media_image::ImageLoadError> {
//! use secure_media_image::ImageLoader;
//!
//! let loader = ImageLoader::new(fetcher);
//! let image = loader.load("https://files-us.cometchat.io/app/media/photo.jpg").await?;
//! println!("{}x{}", image.width(), image.height());
//! let thumbs = loader.load_all(&["https://files-us.cometchat.io/app/media/a.png"], 8).await;
//! # Ok(()) }
//! ```
//!
//! ## Recipes for other UI stacks (no crate needed)
//!
//! - **iced**: `iced::widget::image::Handle::from_bytes(media.bytes.to_vec())` with the bytes of
//!   `fetcher.fetch(url).await?`, or `Handle::from_rgba(w, h, image.to_rgba8().into_raw())` with a
//!   decoded [`DynamicImage`] (decoded within limits here, off the UI thread).
//! - **slint**: `let rgba = image.to_rgba8();` then
//!   `slint::Image::from_rgba8(slint::SharedPixelBuffer::clone_from_slice(&rgba, rgba.width(), rgba.height()))`,
//!   set from `slint::invoke_from_event_loop`.
//! - **ratatui-image**: `picker.new_resize_protocol(image)` with the [`DynamicImage`] from
//!   [`ImageLoader::load`].
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::io::Cursor;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
pub use image::DynamicImage;
use image::ImageReader;
use secure_media_core::{AccessError, MediaFetcher};

/// Caps on what a decode may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// The widest image accepted (pixels).
    pub max_width: u32,
    /// The tallest image accepted (pixels).
    pub max_height: u32,
    /// The most memory a decode may allocate (bytes).
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    /// 16,384 x 16,384 pixels and 256 MiB: any photo, never a decompression bomb.
    fn default() -> Self {
        Self { max_width: 16_384, max_height: 16_384, max_alloc: 256 * 1024 * 1024 }
    }
}

impl DecodeLimits {
    fn to_image(self) -> image::Limits {
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(self.max_width);
        limits.max_image_height = Some(self.max_height);
        limits.max_alloc = Some(self.max_alloc);
        limits
    }
}

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageLoadError {
    /// Fetching failed (not a secure host, refused, not media, too large, network).
    #[error(transparent)]
    Fetch(#[from] AccessError),
    /// The image is larger than the limits allow.
    #[error("the image exceeds the decode limits: {0}")]
    Limits(#[source] image::error::LimitError),
    /// The bytes are not a decodable image.
    #[error("the image cannot be decoded: {0}")]
    Decode(#[source] image::ImageError),
    /// The decoding task stopped before it finished (its runtime is shutting down).
    #[error("the image decode was interrupted: {0}")]
    Interrupted(#[source] tokio::task::JoinError),
}

fn decode_error(error: image::ImageError) -> ImageLoadError {
    match error {
        image::ImageError::Limits(limits) => ImageLoadError::Limits(limits),
        other => ImageLoadError::Decode(other),
    }
}

/// Loads and decodes secure images.
#[derive(Clone)]
pub struct ImageLoader {
    fetcher: Arc<dyn MediaFetcher>,
    limits: DecodeLimits,
}

impl ImageLoader {
    /// Loads through `fetcher` with [`DecodeLimits::default`].
    pub fn new(fetcher: Arc<dyn MediaFetcher>) -> Self {
        Self { fetcher, limits: DecodeLimits::default() }
    }

    /// Other limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Fetches and decodes one image; the decode runs on a blocking thread.
    ///
    /// # Errors
    ///
    /// [`ImageLoadError::Fetch`] when the fetcher fails (not on a secure host, refused, not media,
    /// too large, the network: the [`AccessError`]), [`ImageLoadError::Limits`] for an image
    /// larger than the limits, [`ImageLoadError::Decode`] for bytes that do not decode.
    pub async fn load(&self, url: &str) -> Result<DynamicImage, ImageLoadError> {
        let media = self.fetcher.fetch(url).await?;
        let limits = self.limits;
        tokio::task::spawn_blocking(move || decode(&media.bytes, limits)).await.map_err(ImageLoadError::Interrupted)?
    }

    /// Loads many images, at most `concurrency` at a time, answers in the order asked. Their
    /// proofs are asked for first, all at once ([`MediaFetcher::prefetch`]).
    pub async fn load_all(&self, urls: &[&str], concurrency: usize) -> Vec<Result<DynamicImage, ImageLoadError>> {
        // The whole list is known: its proofs are asked for at once (presigned mode: one round of
        // concurrent calls, which the first load would wait for anyway), not one window at a time.
        self.fetcher.prefetch(urls).await;
        stream::iter(urls.iter().map(|url| self.load(url))).buffered(concurrency.max(1)).collect().await
    }

    /// Decodes bytes within this loader's limits.
    ///
    /// # Errors
    ///
    /// As [`decode`](fn@decode).
    pub fn decode(&self, bytes: &[u8]) -> Result<DynamicImage, ImageLoadError> {
        decode(bytes, self.limits)
    }
}

/// Decodes bytes within `limits` (format guessed from the bytes).
///
/// # Errors
///
/// [`ImageLoadError::Limits`] for an image larger than `limits`, [`ImageLoadError::Decode`] for
/// bytes that are not an image this build decodes.
pub fn decode(bytes: &[u8], limits: DecodeLimits) -> Result<DynamicImage, ImageLoadError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageLoadError::Decode(image::ImageError::IoError(e)))?;
    reader.limits(limits.to_image());
    reader.decode().map_err(decode_error)
}

/// Width and height from the header only: nothing is decoded.
///
/// # Errors
///
/// [`ImageLoadError::Decode`] when the header cannot be read (not an image this build knows),
/// [`ImageLoadError::Limits`] should reading it exceed the default limits.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ImageLoadError> {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageLoadError::Decode(image::ImageError::IoError(e)))?
        .into_dimensions()
        .map_err(decode_error)
}

impl std::fmt::Debug for ImageLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageLoader").field("limits", &self.limits).finish_non_exhaustive()
    }
}
