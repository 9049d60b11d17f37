//! # secure-media-reqwest
//!
//! Secure media through [reqwest-middleware](https://docs.rs/reqwest-middleware):
//! [`SecureMediaMiddleware`] adds proof of access on secure hosts only, retries once after a
//! refusal and follows redirects hop by hop; [`secure_client`] builds the client it needs in one
//! call (no redirects below the middleware, no `Referer`); [`ReqwestPresigner`] talks to the
//! presign endpoint.
//!
//! ## TLS
//! Features mirror reqwest's: `rustls` (default: rustls with the platform's certificate verifier,
//! aws-lc-rs) or `native-tls` (the platform's TLS). The clients this crate builds
//! ([`client_builder`], [`secure_client`], [`ReqwestFetcher::new`]) speak https out of the box,
//! and a TLS failure comes back typed ([`network_error`]: unknown CA, expired certificate, wrong
//! host name).
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

pub use client::{
    client_builder, network_error, redirect_policy, redirect_policy_outside, secure_client, secure_client_from,
};
pub use fetcher::ReqwestFetcher;
pub use middleware::SecureMediaMiddleware;
pub use presigner::ReqwestPresigner;
