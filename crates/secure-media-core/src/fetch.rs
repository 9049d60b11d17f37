//! [`MediaFetcher`]: "fetch this secure media" as one object-safe capability, so image loaders
//! (image, egui, bevy, ...) are thin bridges with the same host rules, retry and caching.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{AccessError, MediaKey, NotMediaReason};

/// Media bytes and what they are.
#[derive(Clone)]
pub struct Media {
    /// The body.
    pub bytes: Bytes,
    /// The `Content-Type` the server sent (checked against the bytes).
    pub content_type: String,
    /// The clean URL: the key to cache it by.
    pub key: MediaKey,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .field("key", &self.key)
            .finish()
    }
}

/// Fetches secure media through a configured strategy and client, with the one-retry rule.
///
/// Implementations cap the body, refuse answers that are not media (an HTML login page with a
/// 200), and answer [`AccessError::NotSecure`] for URLs that are not on a secure host, so a loader
/// can hand those on to its ordinary loader.
#[async_trait]
pub trait MediaFetcher: Send + Sync + 'static {
    /// Would [`fetch`](Self::fetch) handle this URL (is it on a secure host)?
    fn handles(&self, url: &str) -> bool;

    /// The media at `url`.
    ///
    /// # Errors
    ///
    /// [`AccessError::NotSecure`] for a URL that is not on a secure host (hand it to an ordinary
    /// loader), [`AccessError::InvalidUrl`] for one that is not an http(s) URL; the strategy's
    /// errors when no proof can be had ([`MediaAccessStrategy::resolve`](crate::MediaAccessStrategy::resolve));
    /// [`AccessError::Refused`] when the server still refuses after the one retry,
    /// [`AccessError::Status`] for another status that is not a success,
    /// [`AccessError::NotMedia`] for an answer that is not media ([`check_media`]),
    /// [`AccessError::TooLarge`] past the body cap, and [`AccessError::Network`] for a request
    /// that did not complete.
    async fn fetch(&self, url: &str) -> Result<Media, AccessError>;

    /// The key a cache or a log should use for `url`: its clean URL, without any credential the
    /// fetcher's strategy declares (and within its principal's scope when it serves `url`).
    /// Default: the clean URL without the shared credential names ([`MediaKey::of_str`]).
    fn key_of(&self, url: &str) -> Option<MediaKey> {
        MediaKey::of_str(url)
    }

    /// Asks ahead for URLs about to be fetched ([`MediaAccessStrategy::prefetch`](crate::MediaAccessStrategy::prefetch)).
    /// Default: nothing.
    async fn prefetch(&self, urls: &[&str]) {
        let _ = urls;
    }
}

/// Is this answer media? Judged by its content type and its first bytes: HTML (a login page) is
/// not, and an `image/*` answer must carry an image signature (PNG, JPEG, GIF, WebP, BMP, ICO, AVIF).
/// A fetcher answers a refusal as [`AccessError::NotMedia`] with the clean URL.
///
/// ```
/// use secure_media_core::check_media;
///
/// assert!(check_media("image/png", b"\x89PNG\r\n\x1a\n...").is_ok());
/// assert!(check_media("text/html", b"<!doctype html>").is_err());
/// assert!(check_media("image/png", b"<html>sign in</html>").is_err());
/// ```
///
/// # Errors
///
/// [`NotMediaReason::Html`] for HTML (by its content type, or a body that starts with `<` and is
/// not SVG), [`NotMediaReason::NotAnImage`] for an `image/*` answer whose bytes carry no image
/// signature, [`NotMediaReason::WrongContentType`] for any other content type than media ones.
pub fn check_media(content_type: &str, head: &[u8]) -> Result<(), NotMediaReason> {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "text/html" || head.trim_ascii_start().starts_with(b"<") && !essence.contains("svg") {
        return Err(NotMediaReason::Html);
    }
    let image_signature = head.starts_with(b"\x89PNG\r\n\x1a\n")
        || head.starts_with(&[0xff, 0xd8, 0xff])
        || head.starts_with(b"GIF8")
        || head.starts_with(b"BM")
        || head.starts_with(&[0, 0, 1, 0])
        || (head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP")
        || (head.len() >= 12 && &head[4..8] == b"ftyp" && (&head[8..12] == b"avif" || &head[8..12] == b"avis"));
    if essence.starts_with("image/") && essence != "image/svg+xml" && !image_signature {
        return Err(NotMediaReason::NotAnImage { content_type: essence });
    }
    let media = ["image/", "video/", "audio/"].iter().any(|p| essence.starts_with(p))
        || matches!(essence.as_str(), "application/octet-stream" | "application/pdf" | "text/plain" | "");
    if media {
        Ok(())
    } else {
        Err(NotMediaReason::WrongContentType { content_type: essence })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_is_told_from_login_pages() {
        assert!(check_media("image/webp", b"RIFF\0\0\0\0WEBPVP8L").is_ok());
        assert!(check_media("video/mp4", b"\0\0\0\x18ftyp").is_ok());
        assert_eq!(check_media("text/html; charset=utf-8", b"<!doctype html>"), Err(NotMediaReason::Html));
        assert_eq!(check_media("application/octet-stream", b"<html>"), Err(NotMediaReason::Html));
        let not_an_image = check_media("Image/JPEG; q=1", b"not a jpeg").unwrap_err();
        assert_eq!(not_an_image, NotMediaReason::NotAnImage { content_type: "image/jpeg".into() });
        assert_eq!(not_an_image.to_string(), "the answer says image/jpeg but its bytes are not an image");
        let json = check_media("application/json", b"{}").unwrap_err();
        assert_eq!(json, NotMediaReason::WrongContentType { content_type: "application/json".into() });
        assert_eq!(json.to_string(), "the answer is \"application/json\", not media");
    }
}
