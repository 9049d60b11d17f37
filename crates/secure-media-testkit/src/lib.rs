//! Test helpers shared by the secure-media crates (not published): a logged-in token source and
//! a [`MediaFetcher`] for the reference server, in any mode.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::sync::Arc;

use secure_media_core::{FileAccessToken, LoginCell, MediaFetcher, SecureMedia, SecureMediaMode, TokenSource};
use secure_media_reqwest::{ReqwestFetcher, ReqwestPresigner};
use secure_media_server::RunningServer;

/// A login cell holding a fresh FAT for `uid` from `server`.
///
/// # Panics
/// If the server refuses the uid (a test bug).
pub fn logged_in(server: &RunningServer, uid: &str) -> Arc<dyn TokenSource> {
    let cell = LoginCell::new();
    let answer = server.login(uid).unwrap_or_else(|e| panic!("login {uid}: {e}"));
    cell.set(FileAccessToken::new(answer.fat).unwrap_or_else(|e| panic!("login {uid}: {e}")));
    Arc::new(cell)
}

/// The [`SecureMedia`] handle for `server` (secure host over http, presigner configured).
///
/// # Panics
/// On a configuration the server's address cannot make (a test bug).
pub fn media(server: &RunningServer, mode: SecureMediaMode, tokens: Arc<dyn TokenSource>) -> SecureMedia {
    let endpoint = server.presign_url().parse().unwrap_or_else(|e| panic!("presign URL: {e}"));
    SecureMedia::builder(server.app_id())
        .secure_host(&server.host())
        .allowing_http()
        .mode(mode)
        .token_source(tokens)
        .presigner(Arc::new(
            ReqwestPresigner::new_allowing_http(reqwest::Client::new(), endpoint)
                .unwrap_or_else(|e| panic!("presigner: {e}")),
        ))
        .build()
        .unwrap_or_else(|e| panic!("secure media config: {e}"))
}

/// A [`MediaFetcher`] for `server` in `mode`.
///
/// # Panics
/// If the HTTP client cannot be built.
pub fn fetcher(server: &RunningServer, mode: SecureMediaMode, tokens: Arc<dyn TokenSource>) -> Arc<dyn MediaFetcher> {
    let fetcher = ReqwestFetcher::new(media(server, mode, tokens).strategy()).unwrap_or_else(|e| panic!("client: {e}"));
    Arc::new(fetcher)
}
