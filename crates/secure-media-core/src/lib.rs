//! # secure-media-core
//!
//! The vocabulary of secure-media, with no HTTP client and no runtime: which hosts are secure
//! ([`SecureHosts`]), the File Access Token ([`FileAccessToken`], [`TokenSource`]), the
//! extension point ([`MediaAccessStrategy`], [`Resolution`]) and its three implementations
//! ([`EmbeddedStrategy`], [`HeaderBasedStrategy`], [`presigned::PresignedStrategy`]), and the
//! SDK-parity handle [`SecureMedia`].
//!
//! ```
//! use std::sync::Arc;
//! use secure_media_core::{EmbeddedStrategy, SecureHosts, StaticToken};
//!
//! let hosts = SecureHosts::cometchat("us")?;
//! let strategy = EmbeddedStrategy::new(hosts, Arc::new(StaticToken::parse("my-fat")?));
//! assert_eq!(
//!     strategy.embed("https://files-us.cometchat.io/app/media/a.png?w=64")?,
//!     "https://files-us.cometchat.io/app/media/a.png?w=64&fat=my-fat",
//! );
//! # Ok::<(), secure_media_core::AccessError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::await_holding_lock)]

mod clock;
mod counters;
mod credentials;
mod embedded;
mod error;
mod exchange;
mod fetch;
mod header;
mod host;
mod media;
mod media_url;
mod mode;
mod network;
mod path;
pub mod presigned;
mod rewrite;
mod strategy;
mod token;

#[cfg(any(test, feature = "test-util"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use credentials::Credentials;
pub use embedded::{EmbeddedStrategy, FAT_PARAM};
pub use error::{AccessError, ConfigError, NotMediaReason, PresignFailure, RefreshFailure};
pub use exchange::{
    carries_credentials, downgrades_to_http, strip_credentials, Attempt, Exchange, ExchangeRecord,
    CALLER_CREDENTIAL_HEADERS, DEFAULT_MAX_HOPS,
};
pub use fetch::{check_media, Media, MediaFetcher};
pub use header::HeaderBasedStrategy;
pub use host::SecureHosts;
pub use media::{SecureMedia, SecureMediaBuilder};
pub use media_url::{redacted_url, MediaKey, MediaUrl, Scheme};
pub use mode::SecureMediaMode;
pub use network::{NetworkError, NetworkFailure, TlsFailure};
pub use rewrite::{ParamValue, Resolution, SharedHeaders, UrlChange};
pub use strategy::{resolve_str, strategy_serves, MediaAccessStrategy, RetryDecision, StrategyStats};
pub use token::{FileAccessToken, LoginCell, StaticToken, TokenListener, TokenRef, TokenSource, CLOCK_SKEW_ALLOWANCE};
