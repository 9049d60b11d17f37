//! The safe client: [`secure_client`] (one call), [`client_builder`] (to add your own settings)
//! and [`redirect_policy`].

use std::sync::Arc;

use reqwest::redirect::Policy;
use reqwest_middleware::ClientWithMiddleware;
use secure_media_core::{carries_credentials, MediaAccessStrategy, MediaUrl};

use crate::SecureMediaMiddleware;

/// The redirect policy for clients that carry [`SecureMediaMiddleware`]: reqwest follows none,
/// so every redirect comes back to the middleware, which follows it hop by hop (a hop to a secure
/// host is resolved afresh, any other hop carries no token in its query, its headers or a
/// `Referer`). reqwest's own following happens below every middleware and keeps the query on a
/// cross-origin hop.
pub fn redirect_policy() -> Policy {
    Policy::none()
}

/// A `reqwest::ClientBuilder` set up for [`SecureMediaMiddleware`]: [`redirect_policy`] and no
/// `Referer` (a tokenised URL never names itself to another origin). Add your own settings, build,
/// then wrap it with the middleware; or take [`secure_client`].
///
/// ```
/// let client = secure_media_reqwest::client_builder().timeout(std::time::Duration::from_secs(30)).build()?;
/// # let _ = client;
/// # Ok::<(), reqwest::Error>(())
/// ```
pub fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder().redirect(redirect_policy()).referer(false)
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
pub fn secure_client(strategy: Arc<dyn MediaAccessStrategy>) -> Result<ClientWithMiddleware, reqwest::Error> {
    let client = client_builder().redirect(redirect_policy_outside(strategy.clone())).build()?;
    Ok(reqwest_middleware::ClientBuilder::new(client).with(SecureMediaMiddleware::new(strategy)).build())
}

/// A redirect policy for requests that are not the middleware's: reqwest follows a chain (up to 10
/// hops) as long as no URL in it is one `strategy` serves or carries a credential (a presigned
/// URL on a CDN, a token echoed into `Location`), and hands the redirect back at the first that
/// does: the middleware follows those hop by hop, with its per-hop rules.
pub fn redirect_policy_outside(strategy: Arc<dyn MediaAccessStrategy>) -> Policy {
    Policy::custom(move |attempt| {
        let ours = |url: &url::Url| {
            carries_credentials(url) || MediaUrl::from_url(url).is_some_and(|view| strategy.applies_to(&view))
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
