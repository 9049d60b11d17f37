//! The safe client: [`secure_client`] (one call), [`client_builder`] (to add your own settings)
//! and [`redirect_policy`].

use std::sync::Arc;

use reqwest::redirect::Policy;
use reqwest_middleware::ClientWithMiddleware;
use secure_media_core::{
    carries_credentials, downgrades_to_http, strategy_serves, MediaAccessStrategy, MediaUrl, NetworkError,
    NetworkFailure,
};

use crate::SecureMediaMiddleware;

/// The redirect policy for clients that carry [`SecureMediaMiddleware`]: reqwest follows none,
/// so every redirect comes back to the middleware, which follows it hop by hop (a hop to a secure
/// host is resolved afresh, any other hop carries no token in its query, its headers or a
/// `Referer`). reqwest's own following happens below every middleware and keeps the query on a
/// cross-origin hop.
pub fn redirect_policy() -> Policy {
    Policy::none()
}

/// A `reqwest::ClientBuilder` set up for [`SecureMediaMiddleware`]: [`redirect_policy`], no
/// `Referer` (a tokenised URL never names itself to another origin), and https through this
/// crate's TLS feature (`rustls`, the default, with the platform's verifier; or `native-tls`).
/// Add your own settings, build, then wrap it with the middleware; or take [`secure_client`].
///
/// A private CA (a staging host, a test server) is added with reqwest's own
/// `tls_certs_merge` (trusted beside the platform's roots) or `tls_certs_only`:
///
/// ```no_run
/// let ca = reqwest::Certificate::from_pem(&std::fs::read("ca.pem")?)?;
/// let client = secure_media_reqwest::client_builder()
///     .timeout(std::time::Duration::from_secs(30))
///     .tls_certs_merge([ca])
///     .build()?;
/// # let _ = client;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().redirect(redirect_policy()).referer(false);
    // reqwest prefers native-tls when both are built in; ours is rustls unless it is turned off.
    #[cfg(feature = "rustls")]
    let builder = builder.tls_backend_rustls();
    builder
}

/// What failed in a reqwest error, typed ([`NetworkFailure`]: DNS, connect, TLS with its cause,
/// timeout, a cut-off body) with the cause chain in words, and the URL taken out first (it may
/// carry a token).
///
/// ```
/// # async fn run() {
/// use secure_media_core::NetworkFailure;
///
/// let client = secure_media_reqwest::client_builder().build().unwrap();
/// let error = client.get("http://127.0.0.1:9/a.png?fat=SECRET").send().await.unwrap_err();
/// let network = secure_media_reqwest::network_error(error);
/// assert_eq!(network.failure(), NetworkFailure::Connect);
/// assert!(!network.to_string().contains("SECRET"));
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run());
/// ```
pub fn network_error(error: reqwest::Error) -> NetworkError {
    let fallback = if error.is_timeout() {
        NetworkFailure::Timeout
    } else if error.is_connect() {
        NetworkFailure::Connect
    } else if error.is_body() || error.is_decode() {
        NetworkFailure::Body
    } else {
        NetworkFailure::Other
    };
    let error = error.without_url();
    // A timeout is reqwest's own verdict; its sources only say which operation was cut short.
    if fallback == NetworkFailure::Timeout {
        return NetworkError::new(fallback, NetworkError::from_chain(&error, fallback).detail());
    }
    NetworkError::from_chain(&error, fallback)
}

/// The easy way is the safe one: a reqwest client from [`client_builder`] with
/// [`SecureMediaMiddleware`] over `strategy`. Redirects of secure requests are the middleware's;
/// reqwest itself follows only chains that never touch a host the strategy serves
/// ([`redirect_policy_outside`]), so other URLs load as with a plain client.
///
/// ```
/// use std::sync::Arc;
/// use secure_media_core::{EmbeddedStrategy, SecureHosts, StaticToken};
///
/// let strategy = EmbeddedStrategy::new(SecureHosts::cometchat("us")?, Arc::new(StaticToken::parse("my-fat")?));
/// let client = secure_media_reqwest::secure_client(Arc::new(strategy))?;
/// # let _ = client;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// reqwest's error when the client cannot be built (its TLS backend cannot be set up).
pub fn secure_client(strategy: Arc<dyn MediaAccessStrategy>) -> Result<ClientWithMiddleware, reqwest::Error> {
    secure_client_from(client_builder(), strategy)
}

/// [`secure_client`] from your own builder (a private CA, a timeout, a proxy): its redirect
/// policy becomes [`redirect_policy_outside`] and `Referer` is turned off, whatever it said.
/// Start from [`client_builder`] to keep this crate's TLS choice.
///
/// ```no_run
/// use std::sync::Arc;
/// use secure_media_core::{HeaderBasedStrategy, SecureHosts, StaticToken};
///
/// let strategy = HeaderBasedStrategy::new(SecureHosts::new().with_host("media.staging.internal")?, Arc::new(StaticToken::parse("my-fat")?));
/// let ca = reqwest::Certificate::from_pem(&std::fs::read("staging-ca.pem")?)?;
/// let builder = secure_media_reqwest::client_builder().tls_certs_merge([ca]);
/// let client = secure_media_reqwest::secure_client_from(builder, Arc::new(strategy))?;
/// # let _ = client;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// reqwest's error when `builder` cannot build a client (a certificate or TLS setting its
/// backend refuses).
pub fn secure_client_from(
    builder: reqwest::ClientBuilder,
    strategy: Arc<dyn MediaAccessStrategy>,
) -> Result<ClientWithMiddleware, reqwest::Error> {
    let client = builder.redirect(redirect_policy_outside(strategy.clone())).referer(false).build()?;
    Ok(reqwest_middleware::ClientBuilder::new(client).with(SecureMediaMiddleware::new(strategy)).build())
}

/// A redirect policy for requests that are not the middleware's: reqwest follows a chain (up to 10
/// hops) as long as no URL in it is one `strategy` serves or carries a credential (a presigned
/// URL on a CDN, a token echoed into `Location`), and hands the redirect back at the first that
/// does: the middleware follows those hop by hop, with its per-hop rules.
pub fn redirect_policy_outside(strategy: Arc<dyn MediaAccessStrategy>) -> Policy {
    Policy::custom(move |attempt| {
        let takes = |view: &MediaUrl<'_>| strategy_serves(&*strategy, view);
        // A secure host in any form: served, carrying a credential, or its plain-http downgrade.
        let ours = |url: &url::Url| {
            carries_credentials(url, strategy.credentials())
                || MediaUrl::from_url(url).is_some_and(|view| takes(&view))
                || downgrades_to_http(url, takes)
        };
        if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else if ours(attempt.url()) || attempt.previous().iter().any(ours) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}
