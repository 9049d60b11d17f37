//! # secure-media-tower
//!
//! tower middleware for secure media: [`SecureMediaLayer`] adds proof of access (a `fat` query
//! parameter, an `Authorization` header, or a presigned URL) to requests for secure hosts only,
//! and retries once after a 401 or 403; [`KeepTokensHome`] keeps tokens from following
//! redirects to other origins; [`TowerPresigner`] talks to the presign endpoint through any
//! tower HTTP service.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::sync::Arc;
//! use secure_media_core::{EmbeddedStrategy, SecureHosts, StaticToken};
//! use secure_media_tower::SecureMediaLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let strategy = EmbeddedStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("my-fat")?));
//! let service = ServiceBuilder::new()
//!     .layer(SecureMediaLayer::new(Arc::new(strategy)))
//!     .service_fn(|req: http::Request<String>| async move {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(req.uri().to_string()))
//!     });
//! let request = http::Request::get("https://files-us.cometchat.io/app/media/a.png").body(String::new())?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.body(), "https://files-us.cometchat.io/app/media/a.png?fat=my-fat");
//! # Ok(())
//! # }
//! ```
//!
//! ## Order in a stack
//! `FollowRedirect` (with [`KeepTokensHome`]) outside, then `Trace`, then a `tower::retry` layer
//! for transient failures, then `SecureMediaLayer`, then `Timeout`, then the client: redirects are
//! followed hop by hop through our layer (so a secure hop is resolved afresh and any other hop is
//! stripped), traces see the clean URL, a retried request is resolved afresh, and the timeout
//! covers each attempt. Refusals (401/403) are ours to retry, once: keep them out of the retry
//! policy.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::await_holding_lock)]

mod presigner;
mod redirect;
mod service;

pub use presigner::TowerPresigner;
pub use redirect::KeepTokensHome;
pub use service::{BoxError, ResponseFuture, SecureMediaLayer, SecureMediaService};
