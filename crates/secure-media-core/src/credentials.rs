//! [`Credentials`]: the query parameters and headers that carry a strategy's proof, so that the
//! exchange treats them all as it treats `fat`.

use std::sync::{Arc, OnceLock};

use http::HeaderName;

/// The query parameters and headers that carry a strategy's proof, beyond the ones every
/// strategy shares (`fat`, `Expires`, `Signature`, `Key-Pair-Id`, `Policy`, `sig`, `se`,
/// `X-Amz-*`, and the `Authorization`, `Cookie`, `Proxy-Authorization` headers).
///
/// What a strategy declares ([`MediaAccessStrategy::credentials`](crate::MediaAccessStrategy::credentials))
/// is treated exactly as `fat`: stripped from a hop to another origin, never part of a
/// [`MediaKey`](crate::MediaKey) or of the URL a response hands back, never in an error. Names
/// match whatever their case or percent-encoding (`MD5`, `%6Dd5`), as with `fat`.
///
/// ```
/// use secure_media_core::{Credentials, MediaUrl};
///
/// // nginx secure_link's parameters.
/// let credentials = Credentials::new().param("md5").param("expires");
/// let url = url::Url::parse("https://media.example/v/a.mp4?md5=abc&expires=2000000000&t=5").unwrap();
/// let view = MediaUrl::from_url(&url).unwrap();
/// assert_eq!(view.clean_key_with(&credentials), "https://media.example/v/a.mp4?t=5");
/// // `expires` is a shared name already (`Expires`, any case); `md5` is known only when declared.
/// assert_eq!(view.clean_key(), "https://media.example/v/a.mp4?md5=abc&t=5");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    params: Arc<[Box<str>]>,
    headers: Arc<[HeaderName]>,
}

impl Credentials {
    /// None beyond the shared ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared ones only, as a `'static` reference (what a strategy declares by default).
    pub fn shared() -> &'static Credentials {
        static SHARED: OnceLock<Credentials> = OnceLock::new();
        SHARED.get_or_init(Credentials::default)
    }

    /// Adds a query parameter (its decoded name).
    pub fn param(mut self, name: impl Into<Box<str>>) -> Self {
        let mut params = self.params.to_vec();
        params.push(name.into());
        self.params = params.into();
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName) -> Self {
        let mut headers = self.headers.to_vec();
        headers.push(name);
        self.headers = headers.into();
        self
    }

    /// The declared query parameters.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|name| &**name)
    }

    /// The declared headers.
    pub fn headers(&self) -> &[HeaderName] {
        &self.headers
    }

    /// The declared headers, shared (one reference count).
    pub(crate) fn headers_shared(&self) -> Arc<[HeaderName]> {
        self.headers.clone()
    }

    /// Is `decoded` (a decoded parameter name) one of the declared parameters, whatever its case?
    pub(crate) fn declares_param(&self, decoded: &str) -> bool {
        self.params.iter().any(|name| decoded.eq_ignore_ascii_case(name))
    }
}
