//! # secure-media-reqwest
//!
//! Secure media through [reqwest-middleware](https://docs.rs/reqwest-middleware):
//! [`SecureMediaMiddleware`] adds proof of access on secure hosts only, retries once after a
//! refusal and follows redirects hop by hop; [`secure_client`] builds the client it needs in one
//! call (no redirects below the middleware, no `Referer`); [`ReqwestPresigner`] talks to the
//! presign endpoint.
//!
//! Order in a stack (outermost first): an HTTP cache keyed by URL (it sees the clean URL), then
//! `reqwest-retry` (network retries of whole exchanges), then `reqwest-tracing` (spans see the
//! clean URL), then [`SecureMediaMiddleware`] last, closest to the client, so the token is added
//! after everything that logs or caches has seen the request.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(clippy::await_holding_lock)]

mod client;
mod fetcher;
mod middleware;
mod presigner;

pub use client::{client_builder, redirect_policy, redirect_policy_outside, secure_client};
pub use fetcher::ReqwestFetcher;
pub use middleware::SecureMediaMiddleware;
pub use presigner::ReqwestPresigner;
