//! [`KeepTokensHome`]: a tower-http redirect policy that strips tokens from hops that leave the
//! secure hosts.

use http::{header, HeaderName, Request};
use secure_media_core::{MediaUrl, Resolution, SecureHosts, FAT_PARAM};
use tower_http::follow_redirect::policy::{Action, Attempt, Policy};

/// A [`Policy`] for tower-http's `FollowRedirect`: every redirected request whose target is not
/// a secure host loses the `fat` query parameter and the `Authorization` and `fat` headers, so
/// neither a header token nor a query token (echoed into `Location` by some storage redirectors)
/// reaches another origin. Combine it with the standard policy:
///
/// ```
/// use tower_http::follow_redirect::{policy::{PolicyExt, Standard}, FollowRedirectLayer};
/// use secure_media_core::SecureHosts;
/// use secure_media_tower::KeepTokensHome;
///
/// let policy = Standard::default().and::<_, (), ()>(KeepTokensHome::new(SecureHosts::cometchat("us").unwrap()));
/// let layer = FollowRedirectLayer::with_policy(policy);
/// # let _ = layer;
/// ```
///
/// Put `FollowRedirect` outside [`SecureMediaLayer`](crate::SecureMediaLayer), so each hop to a
/// secure host is resolved afresh and each hop elsewhere is stripped.
#[derive(Debug, Clone)]
pub struct KeepTokensHome {
    hosts: SecureHosts,
}

impl KeepTokensHome {
    /// Keeps tokens on `hosts`.
    pub fn new(hosts: SecureHosts) -> Self {
        Self { hosts }
    }
}

impl<B, E> Policy<B, E> for KeepTokensHome {
    fn redirect(&mut self, _attempt: &Attempt<'_>) -> Result<Action, E> {
        Ok(Action::Follow)
    }

    fn on_request(&mut self, request: &mut Request<B>) {
        if MediaUrl::from_uri(request.uri()).is_some_and(|url| self.hosts.matches(&url)) {
            return;
        }
        let headers = request.headers_mut();
        headers.remove(header::AUTHORIZATION);
        headers.remove(HeaderName::from_static(FAT_PARAM));
        if let Ok(Some(stripped)) = Resolution::remove_param(FAT_PARAM).apply_to_uri(request.uri()) {
            tracing::info!(
                host = request.uri().host().unwrap_or(""),
                "redirect leaves the secure hosts: token removed"
            );
            *request.uri_mut() = stripped;
        }
    }
}
