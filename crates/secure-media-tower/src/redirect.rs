//! [`KeepTokensHome`]: a tower-http redirect policy that strips every credential from hops that
//! leave the secure hosts.

use std::sync::Arc;

use http::{HeaderName, Request};
use secure_media_core::{
    downgrades_to_http, strategy_serves, strip_credentials, Credentials, MediaAccessStrategy, MediaUrl, SecureHosts,
    CALLER_CREDENTIAL_HEADERS, DEFAULT_MAX_HOPS, FAT_PARAM,
};
use tower_http::follow_redirect::policy::{Action, Attempt, Policy};

/// A [`Policy`] for tower-http's `FollowRedirect`: every redirect hop whose target is not a secure
/// host loses its credentials (userinfo, the `fat` and signing query parameters, and the
/// `Authorization`, `Cookie`, `Proxy-Authorization`, `Referer` and `fat` headers), so no token
/// echoed into `Location` reaches another origin. It acts on hops only, never on the caller's
/// first request, and stops after 10 hops, so it is safe alone or combined:
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
/// [`SecureMediaLayer`](crate::SecureMediaLayer) follows the redirects of secure requests itself;
/// this policy is for a `FollowRedirect` a stack already has, outside the layer.
#[derive(Clone)]
pub struct KeepTokensHome {
    home: Home,
    /// A custom strategy's own credentials, stripped like `fat`.
    credentials: Credentials,
    /// Hops left for this request (the policy is cloned for each request).
    hops_left: u32,
    /// `redirect` said Follow: the next `on_request` is a hop, not the caller's request.
    hopping: bool,
    /// That hop leaves the origin of the request before it.
    cross_origin: bool,
}

/// Where proofs may go.
#[derive(Clone)]
enum Home {
    Hosts(SecureHosts),
    Strategy(Arc<dyn MediaAccessStrategy>),
}

impl Home {
    fn serves(&self, url: &MediaUrl<'_>) -> bool {
        match self {
            Self::Hosts(hosts) => hosts.matches(url),
            Self::Strategy(strategy) => strategy_serves(&**strategy, url),
        }
    }
}

impl std::fmt::Debug for KeepTokensHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let home: &dyn std::fmt::Debug = match &self.home {
            Home::Hosts(hosts) => hosts,
            Home::Strategy(strategy) => strategy.secure_hosts(),
        };
        f.debug_struct("KeepTokensHome")
            .field("home", home)
            .field("credentials", &self.credentials)
            .field("hops_left", &self.hops_left)
            .finish_non_exhaustive()
    }
}

impl KeepTokensHome {
    /// Keeps tokens on `hosts`; follows up to 10 hops.
    pub fn new(hosts: SecureHosts) -> Self {
        Self {
            home: Home::Hosts(hosts),
            credentials: Credentials::new(),
            hops_left: DEFAULT_MAX_HOPS,
            hopping: false,
            cross_origin: false,
        }
    }

    /// Keeps what a strategy serves and declares home: the URLs it takes (its `applies_to`, https
    /// unless its hosts allow http) and its own credentials
    /// ([`MediaAccessStrategy::credentials`]). The policy for a custom strategy.
    pub fn for_strategy(strategy: Arc<dyn MediaAccessStrategy>) -> Self {
        let credentials = strategy.credentials().clone();
        Self { home: Home::Strategy(strategy), credentials, ..Self::new(SecureHosts::new()) }
    }

    /// Follows up to `hops` hops.
    pub fn with_max_hops(mut self, hops: u32) -> Self {
        self.hops_left = hops;
        self
    }
}

impl<B, E> Policy<B, E> for KeepTokensHome {
    fn redirect(&mut self, attempt: &Attempt<'_>) -> Result<Action, E> {
        if self.hops_left == 0 {
            return Ok(Action::Stop);
        }
        // A plain-http hop onto a secure host: the redirect goes back to the caller instead.
        let location = url::Url::parse(&attempt.location().to_string());
        if location.is_ok_and(|to| downgrades_to_http(&to, |view| self.home.serves(view))) {
            return Ok(Action::Stop);
        }
        self.hops_left -= 1;
        self.hopping = true;
        let (from, to) = (MediaUrl::from_uri(attempt.previous()), MediaUrl::from_uri(attempt.location()));
        self.cross_origin = !matches!((from, to), (Some(from), Some(to)) if from.same_origin(&to));
        Ok(Action::Follow)
    }

    fn on_request(&mut self, request: &mut Request<B>) {
        // tower-http calls this for the caller's first request too: that one is the caller's.
        if !std::mem::take(&mut self.hopping) {
            return;
        }
        if std::mem::take(&mut self.cross_origin) {
            // The caller's credentials (and the strategy's own headers) are for the origin it
            // named, secure host or not.
            for name in CALLER_CREDENTIAL_HEADERS.iter().chain(self.credentials.headers()) {
                request.headers_mut().remove(name);
            }
        }
        if MediaUrl::from_uri(request.uri()).is_some_and(|url| self.home.serves(&url)) {
            return;
        }
        request.headers_mut().remove(HeaderName::from_static(FAT_PARAM));
        for name in self.credentials.headers() {
            request.headers_mut().remove(name);
        }
        let stripped = url::Url::parse(&request.uri().to_string()).ok().and_then(|mut url| {
            strip_credentials(&mut url, &self.credentials);
            url.as_str().parse().ok()
        });
        match stripped {
            Some(uri) => *request.uri_mut() = uri,
            // Not a URL we can clean: send nowhere rather than with a token.
            None => *request.uri_mut() = http::Uri::from_static("http://invalid./"),
        }
        tracing::info!(
            host = request.uri().host().unwrap_or(""),
            "redirect leaves the secure hosts: credentials removed"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http::{header, Request, Response, StatusCode};
    use tower::{ServiceBuilder, ServiceExt};
    use tower_http::follow_redirect::FollowRedirectLayer;

    use super::*;

    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A server that redirects every request to `location` and records what it got.
    async fn follow(first: &str, location: &'static str) -> Vec<(String, Option<String>)> {
        follow_with(KeepTokensHome::new(SecureHosts::cometchat("us").unwrap()), first, location, "authorization").await
    }

    /// The same with `policy`, recording the header `header`.
    async fn follow_with(
        policy: KeepTokensHome,
        first: &str,
        location: &'static str,
        header: &'static str,
    ) -> Vec<(String, Option<String>)> {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let inner = tower::service_fn(move |request: Request<String>| {
            let auth = request.headers().get(header).map(|v| v.to_str().unwrap().to_owned());
            record.lock().unwrap().push((request.uri().to_string(), auth));
            async move {
                let mut response = Response::new(String::new());
                *response.status_mut() = StatusCode::FOUND;
                response.headers_mut().insert(header::LOCATION, http::HeaderValue::from_static(location));
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let service = ServiceBuilder::new().layer(FollowRedirectLayer::with_policy(policy)).service(inner);
        let request = Request::get(first)
            .header(header::AUTHORIZATION, "Basic mine")
            .header("x-sig", "SIG")
            .body(String::new())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FOUND);
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[tokio::test]
    async fn the_callers_first_request_is_never_touched() {
        let seen = follow("https://api.example/x?fat=mine", "https://other.example/y?fat=echo&Signature=s").await;
        assert_eq!(seen[0], ("https://api.example/x?fat=mine".into(), Some("Basic mine".into())));
        assert_eq!(seen[1], ("https://other.example/y".into(), None), "a hop elsewhere is stripped");
    }

    #[tokio::test]
    async fn the_callers_credentials_stay_home_on_a_hop_to_a_secure_host_of_another_origin() {
        let seen = follow("https://api.example/x", "https://files-us.cometchat.io/a").await;
        assert_eq!(seen[1], ("https://files-us.cometchat.io/a".into(), None));
    }

    #[tokio::test]
    async fn a_hop_to_a_secure_host_over_plain_http_is_not_followed() {
        let seen = follow("https://files-us.cometchat.io/a", "http://files-us.cometchat.io/a").await;
        assert_eq!(seen.len(), 1, "the redirect goes back to the caller");
        let seen = follow("https://api.example/x", "http://files-us.cometchat.io/a").await;
        assert_eq!(seen.len(), 1, "from any origin");
    }

    /// A custom strategy that takes one host by `applies_to` alone and declares `md5` and the
    /// header `x-sig` as its proof.
    struct Signer(Credentials);

    impl MediaAccessStrategy for Signer {
        fn applies_to(&self, url: &MediaUrl<'_>) -> bool {
            url.host() == "media.example"
        }
        fn credentials(&self) -> &Credentials {
            &self.0
        }
    }

    fn for_signer() -> KeepTokensHome {
        let credentials = Credentials::new().param("md5").header(HeaderName::from_static("x-sig"));
        KeepTokensHome::for_strategy(Arc::new(Signer(credentials)))
    }

    #[tokio::test]
    async fn for_a_strategy_its_own_parameters_and_headers_stay_home() {
        let seen =
            follow_with(for_signer(), "https://media.example/a", "https://other.example/b?md5=S&w=1", "x-sig").await;
        assert_eq!(seen[1], ("https://other.example/b?w=1".into(), None), "md5 and x-sig stay behind");
        // Another origin that the strategy also serves: the hop is secure, the header still stays.
        let seen = follow_with(for_signer(), "https://api.example/x", "https://media.example/b", "x-sig").await;
        assert_eq!(seen[1], ("https://media.example/b".into(), None));
        // Plain http on the strategy's host: not followed, although `applies_to` looks at the host only.
        let seen = follow_with(for_signer(), "https://media.example/a", "http://media.example/a", "x-sig").await;
        assert_eq!(seen.len(), 1);
    }

    #[tokio::test]
    async fn alone_it_stops_a_redirect_loop_after_ten_hops() {
        let seen = follow("https://files-us.cometchat.io/a", "/a").await;
        assert_eq!(seen.len(), 11, "the first request and ten hops");
        assert!(seen.iter().all(|(_, auth)| auth.as_deref() == Some("Basic mine")), "secure hops keep headers");
    }
}
