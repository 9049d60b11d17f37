//! # secure-media
//!
//! Load protected media (images, video, audio, files) through any HTTP client stack. Chat
//! platforms protect media with a File Access Token (FAT); secure-media proves access in the
//! vendor's three modes: the token in the query ([`EmbeddedStrategy`]), in a header
//! ([`HeaderBasedStrategy`]), or a time-limited presigned URL ([`presigned::PresignedStrategy`]),
//! and sends a token only to the configured secure hosts.
//!
//! This facade re-exports the workspace's crates; adapters come behind features.
//!
//! ```
//! use std::sync::Arc;
//! use secure_media::{FileAccessToken, LoginCell, SecureMedia, SecureMediaMode};
//!
//! # futures_lite_block_on(async {
//! let login = Arc::new(LoginCell::new());
//! let media = SecureMedia::builder("my-app")
//!     .region("us")
//!     .mode(SecureMediaMode::Embedded)
//!     .token_source(login.clone())
//!     .build()?;
//! login.set(FileAccessToken::new("the-fat-from-login")?); // after the app's login
//! assert_eq!(
//!     media.resolve_url("https://files-us.cometchat.io/my-app/media/a.png").await?,
//!     "https://files-us.cometchat.io/my-app/media/a.png?fat=the-fat-from-login",
//! );
//! # Ok::<(), secure_media::AccessError>(())
//! # });
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub use secure_media_core::*;

/// tower middleware (feature `tower`).
#[cfg(feature = "tower")]
pub use secure_media_tower as tower;

/// reqwest-middleware middleware (feature `reqwest`).
#[cfg(feature = "reqwest")]
pub use secure_media_reqwest as reqwest;

/// The reference server (feature `server`).
#[cfg(feature = "server")]
pub use secure_media_server as server;

/// The presign cache on Redis (feature `redis`).
#[cfg(feature = "redis")]
pub use secure_media_redis as redis;

/// Loading and decoding images (feature `image`).
#[cfg(feature = "image")]
pub use secure_media_image as image;

/// An egui bytes loader for secure hosts (feature `egui`).
#[cfg(feature = "egui")]
pub use secure_media_egui as egui;

/// A bevy_asset reader for secure hosts (feature `bevy`).
#[cfg(feature = "bevy")]
pub use secure_media_bevy as bevy;

/// The README's code, compiled as doctests so it cannot drift from the API.
#[cfg(all(doctest, feature = "reqwest", feature = "tower", feature = "image", feature = "egui", feature = "redis"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
