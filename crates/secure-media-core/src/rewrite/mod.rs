//! How a request is rewritten to carry its proof: [`Resolution`] (the URL change, the headers to
//! add, the token used) and how it is applied to each stack's URL type. The URL change itself is
//! [`UrlChange`] (`url_change.rs`); query-string surgery on encoded text is `query.rs`.

pub(crate) mod query;
mod url_change;

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use url::Url;

pub(crate) use self::url_change::{plain_parts, set_param_in};
pub use self::url_change::{ParamValue, UrlChange};
use crate::presigned::SignedUrl;
use crate::{AccessError, FileAccessToken, MediaUrl};

/// Headers a resolution adds, as a list shared between resolutions: build it once and hand a
/// clone to each ([`Resolution::with_headers`]).
pub type SharedHeaders = Arc<[(HeaderName, HeaderValue)]>;

/// What to send for one media request: the URL change and the headers to add.
///
/// ```
/// use secure_media_core::{MediaUrl, Resolution};
///
/// let resolution = Resolution::set_param("fat", secure_media_core::ParamValue::new("abc"));
/// let url = "https://files-us.cometchat.io/a.png?w=1#top";
/// assert_eq!(resolution.apply_to_str(url), "https://files-us.cometchat.io/a.png?w=1&fat=abc#top");
/// ```
#[derive(Clone)]
pub struct Resolution {
    url: UrlChange,
    headers: Option<SharedHeaders>,
    token: Option<Arc<FileAccessToken>>,
}

/// Header names only: the values are proof of access.
impl std::fmt::Debug for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&HeaderName> = self.headers().iter().map(|(name, _)| name).collect();
        f.debug_struct("Resolution")
            .field("url", &self.url)
            .field("headers", &header_names)
            .field("token", &self.token)
            .finish()
    }
}

impl Resolution {
    /// Send the request unchanged.
    pub fn keep() -> Self {
        Self { url: UrlChange::Keep, headers: None, token: None }
    }

    /// Set a query parameter.
    pub fn set_param(name: &'static str, value: ParamValue) -> Self {
        Self { url: UrlChange::SetParam { name, value }, ..Self::keep() }
    }

    /// Set several query parameters at once, in order: what a local signer sends (nginx
    /// secure_link's `md5` and `expires`, a SigV4 query). Each replaces any parameter of its name
    /// in any case or spelling (a stale `MD5=` the caller's URL echoes), in place. Declare their names in the strategy's
    /// [`credentials`](crate::MediaAccessStrategy::credentials) so they never leave the host.
    ///
    /// ```
    /// use secure_media_core::{ParamValue, Resolution};
    ///
    /// let signed = Resolution::set_params([("md5", ParamValue::new("q1w2")), ("expires", ParamValue::new("2000000000"))]);
    /// assert_eq!(
    ///     signed.apply_to_str("https://media.example/a.mp4?t=5&md5=old"),
    ///     "https://media.example/a.mp4?t=5&md5=q1w2&expires=2000000000",
    /// );
    /// ```
    pub fn set_params<N: AsRef<str>>(params: impl IntoIterator<Item = (N, ParamValue)>) -> Self {
        // Names are encoded once, as values are: a name with `&`, `#` or a space stays one name.
        let encode = |name: &str| url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>();
        let params: Arc<[(Box<str>, ParamValue)]> =
            params.into_iter().map(|(name, value)| (encode(name.as_ref()).into_boxed_str(), value)).collect();
        Self { url: UrlChange::SetParams(params), ..Self::keep() }
    }

    /// Remove a query parameter.
    pub fn remove_param(name: &'static str) -> Self {
        Self { url: UrlChange::RemoveParam(name), ..Self::keep() }
    }

    /// Request another URL.
    pub fn replace(url: SignedUrl) -> Self {
        Self { url: UrlChange::Replace(url), ..Self::keep() }
    }

    /// Also send this header (replacing any header of that name the request had). The value is
    /// marked sensitive: it is a credential, so HTTP/2 never indexes it and `Debug` hides it.
    pub fn with_header(mut self, name: HeaderName, mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        let mut all = self.headers().to_vec();
        all.push((name, value));
        self.headers = Some(all.into());
        self
    }

    /// Also send these headers, after any already set: build the list once and share it across
    /// resolutions. Mark the values sensitive when you build them; the adapters mark every
    /// header they add anyway.
    pub fn with_headers(mut self, headers: SharedHeaders) -> Self {
        self.headers = match self.headers() {
            [] => Some(headers),
            mine => Some(mine.iter().chain(headers.iter()).cloned().collect()),
        };
        self
    }

    /// Remember which token this resolution used, so a refusal renews exactly that one.
    pub fn with_token(mut self, token: Arc<FileAccessToken>) -> Self {
        self.token = Some(token);
        self
    }

    /// The URL change.
    pub fn url_change(&self) -> &UrlChange {
        &self.url
    }

    /// The headers to set.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        self.headers.as_deref().unwrap_or_default()
    }

    /// The token this resolution used, if any.
    pub fn token(&self) -> Option<&Arc<FileAccessToken>> {
        self.token.as_ref()
    }

    /// Applies the URL change to a parsed [`Url`].
    pub fn apply_to_url(&self, url: &mut Url) {
        self.url.apply_to_url(url);
    }

    /// Applies the URL change to a URL string that is on a secure host (checked by the caller).
    /// Answers `url` itself, borrowed, when nothing changes.
    pub fn apply_to_str<'u>(&self, url: &'u str) -> Cow<'u, str> {
        let (base, old_query, fragment) = crate::media_url::split_tail(url);
        self.url.apply_to_parts(url, base, old_query, fragment)
    }

    /// [`apply_to_str`](Self::apply_to_str) for the text a [`MediaUrl::parse_plain`] view was
    /// made from, reusing the view's split.
    pub(crate) fn apply_to_plain<'u>(&self, view: &MediaUrl<'u>, url: &'u str) -> Cow<'u, str> {
        let (base, query, fragment) = plain_parts(view, url);
        self.url.apply_to_parts(url, base, query, fragment)
    }

    /// Applies the URL change to an [`http::Uri`] (tower, hyper): the URI to send instead, or
    /// `None` when nothing changes.
    ///
    /// # Errors
    ///
    /// [`AccessError::InvalidUrl`] when the result is not a valid URI: a signed URL that
    /// [`http::Uri`] does not accept, or a path and query that no longer parse.
    pub fn apply_to_uri(&self, uri: &http::Uri) -> Result<Option<http::Uri>, AccessError> {
        self.url.apply_to_uri(uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_a_strategy_adds_are_marked_sensitive() {
        let r = Resolution::keep().with_header(HeaderName::from_static("x-key"), HeaderValue::from_static("SECRET"));
        assert!(r.headers()[0].1.is_sensitive());
        assert!(!format!("{r:?}").contains("SECRET"));
        let shared: SharedHeaders = Arc::new([(HeaderName::from_static("x-key"), HeaderValue::from_static("SECRET"))]);
        let r = Resolution::keep().with_headers(shared);
        assert!(!format!("{r:?}").contains("SECRET") && format!("{r:?}").contains("x-key"));
    }

    #[test]
    fn headers_keep_their_order_and_shared_lists_are_not_copied() {
        let name = HeaderName::from_static("x-a");
        let r = Resolution::keep().with_header(name.clone(), HeaderValue::from_static("1"));
        let r = r.with_header(HeaderName::from_static("x-b"), HeaderValue::from_static("2"));
        assert_eq!(r.headers().len(), 2);
        assert_eq!(r.headers()[0].0, name);
        let shared: SharedHeaders = Arc::new([(name, HeaderValue::from_static("3"))]);
        let r = Resolution::keep().with_headers(shared.clone());
        assert!(std::ptr::eq(r.headers(), &*shared));
        assert!(std::mem::size_of::<Resolution>() <= 80, "a resolution is moved on every request");
    }
}
