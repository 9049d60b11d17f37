//! [`UrlChange`]: how a request's URL changes, made the same way on a parsed [`Url`], an
//! [`http::Uri`] and a URL string; [`ParamValue`]: a query parameter value, raw and encoded.

use std::borrow::Cow;
use std::sync::Arc;

use url::Url;

use super::query;
use crate::presigned::SignedUrl;
use crate::{AccessError, MediaUrl};

/// A query parameter value, raw and form-urlencoded, encoded when it is made; clones share it.
/// `Debug` hides it: it is usually a credential.
#[derive(Clone)]
pub struct ParamValue(Arc<ParamText>);

struct ParamText {
    raw: Box<str>,
    /// `None` when encoding changes nothing (a JWT is all unreserved characters).
    encoded: Option<Box<str>>,
}

impl ParamValue {
    /// Encodes `raw` once (`+` -> `%2B`, `/` -> `%2F`, `=` -> `%3D`, ...).
    pub fn new(raw: impl Into<Box<str>>) -> Self {
        let raw: Box<str> = raw.into();
        let encoded: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let encoded = (encoded != *raw).then(|| encoded.into_boxed_str());
        Self(Arc::new(ParamText { raw, encoded }))
    }

    /// The value as given.
    pub fn raw(&self) -> &str {
        &self.0.raw
    }

    /// The value form-urlencoded, ready for a query string.
    pub fn encoded(&self) -> &str {
        self.0.encoded.as_deref().unwrap_or(&self.0.raw)
    }
}

impl std::fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the request URL changes. Adapters apply it to their own URL type without reparsing.
/// `Debug` hides parameter values and signed URLs: they are credentials.
#[derive(Clone)]
#[non_exhaustive]
pub enum UrlChange {
    /// Send the URL as it is.
    Keep,
    /// Set one query parameter: the first existing one is replaced in place, duplicates dropped,
    /// otherwise it goes last.
    SetParam {
        /// The parameter name (plain ASCII).
        name: &'static str,
        /// The value, raw and encoded.
        value: ParamValue,
    },
    /// Set several query parameters in order (a local signer's `md5` and `expires`), each
    /// replacing its name in any case or spelling; names are stored encoded.
    SetParams(Arc<[(Box<str>, ParamValue)]>),
    /// Remove a query parameter (a stale `fat` in header mode).
    RemoveParam(&'static str),
    /// Request another URL instead (a presigned or signed URL).
    Replace(SignedUrl),
}

impl std::fmt::Debug for UrlChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Keep => f.write_str("Keep"),
            Self::SetParam { name, .. } => {
                f.debug_struct("SetParam").field("name", name).field("value", &"<redacted>").finish()
            }
            Self::SetParams(params) => {
                let names: Vec<&str> = params.iter().map(|(name, _)| &**name).collect();
                f.debug_struct("SetParams").field("names", &names).field("values", &"<redacted>").finish()
            }
            Self::RemoveParam(name) => f.debug_tuple("RemoveParam").field(name).finish(),
            Self::Replace(signed) => f.debug_tuple("Replace").field(signed).finish(),
        }
    }
}

impl UrlChange {
    /// Makes the change on a parsed [`Url`].
    pub(crate) fn apply_to_url(&self, url: &mut Url) {
        match self {
            UrlChange::Keep => {}
            UrlChange::SetParam { name, value } => match url.query() {
                Some(q) if query::contains(q, name) => {
                    if let Some(q) = query::set(Some(q), name, value.encoded()) {
                        url.set_query(Some(&q));
                    }
                }
                // Appending serialises unreserved bytes as runs: far cheaper than set_query's reparse.
                _ => {
                    url.query_pairs_mut().append_pair(name, value.raw());
                }
            },
            UrlChange::SetParams(params) => {
                if let Some(q) = set_all(url.query(), params) {
                    url.set_query(Some(&q));
                }
            }
            UrlChange::RemoveParam(name) => {
                if let Some(q) = query::remove(url.query(), name) {
                    url.set_query(q.as_deref());
                }
            }
            UrlChange::Replace(signed) => {
                // The fragment never reaches the server; keep the caller's (a video's #t=10).
                let fragment = url.fragment().map(str::to_owned);
                *url = signed.url();
                url.set_fragment(fragment.as_deref());
            }
        }
    }

    /// Makes the change on the text `url`, split into its base (all before the query), query
    /// and fragment; borrowed when nothing changes.
    pub(crate) fn apply_to_parts<'u>(
        &self,
        url: &'u str,
        base: &str,
        old_query: Option<&str>,
        fragment: Option<&str>,
    ) -> Cow<'u, str> {
        let mut out;
        match self {
            UrlChange::Keep => return Cow::Borrowed(url),
            UrlChange::SetParam { name, value } => {
                return set_param_in(url, base, old_query, fragment, name, value.encoded());
            }
            UrlChange::Replace(signed) => {
                let signed = signed.as_str();
                let base = signed.split_once('#').map_or(signed, |(base, _)| base);
                out = String::with_capacity(base.len() + fragment.map_or(0, |f| f.len() + 1));
                out.push_str(base);
            }
            UrlChange::SetParams(params) => {
                let Some(query) = set_all(old_query, params) else {
                    return Cow::Borrowed(url);
                };
                out = String::with_capacity(base.len() + query.len() + 1);
                out.push_str(base);
                out.push('?');
                out.push_str(&query);
            }
            UrlChange::RemoveParam(name) => {
                let Some(kept) = query::remove(old_query, name) else {
                    return Cow::Borrowed(url);
                };
                out = String::with_capacity(url.len());
                out.push_str(base);
                if let Some(kept) = kept {
                    out.push('?');
                    out.push_str(&kept);
                }
            }
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
        Cow::Owned(out)
    }

    /// Makes the change on an [`http::Uri`]; `None` when nothing changes.
    pub(crate) fn apply_to_uri(&self, uri: &http::Uri) -> Result<Option<http::Uri>, AccessError> {
        let new_query = match self {
            UrlChange::Keep => return Ok(None),
            UrlChange::Replace(signed) => {
                return signed
                    .as_str()
                    .parse()
                    .map(Some)
                    .map_err(|_| AccessError::InvalidUrl("the signed URL is not a valid URI"));
            }
            UrlChange::SetParam { name, value } => match query::set(uri.query(), name, value.encoded()) {
                Some(q) => Some(q),
                None => return Ok(None),
            },
            UrlChange::SetParams(params) => match set_all(uri.query(), params) {
                Some(q) => Some(q),
                None => return Ok(None),
            },
            UrlChange::RemoveParam(name) => match query::remove(uri.query(), name) {
                Some(q) => q,
                None => return Ok(None),
            },
        };
        let path_and_query = match new_query {
            Some(q) => format!("{}?{q}", uri.path()),
            None => uri.path().to_owned(),
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query =
            Some(path_and_query.parse().map_err(|_| AccessError::InvalidUrl("the rewritten path is not a valid URI"))?);
        http::Uri::from_parts(parts).map(Some).map_err(|_| AccessError::InvalidUrl("the rewritten URI is invalid"))
    }
}

/// The base (all before the query), query and fragment of the text a [`MediaUrl::parse_plain`]
/// view was made from, reusing the view's split: its path is a subslice of `url`, so the base
/// ends where the path ends (split afresh should `url` be another string).
pub(crate) fn plain_parts<'u>(view: &MediaUrl<'u>, url: &'u str) -> (&'u str, Option<&'u str>, Option<&'u str>) {
    let path = view.path();
    let base_len = (path.as_ptr() as usize).checked_sub(url.as_ptr() as usize).map(|start| start + path.len());
    match base_len.and_then(|len| url.get(..len)) {
        Some(base) => (base, view.query(), view.fragment()),
        None => crate::media_url::split_tail(url),
    }
}

/// `url` (split into base, query and fragment) with `name=encoded` set: one allocation, none
/// when the query already says exactly that.
pub(crate) fn set_param_in<'u>(
    url: &'u str,
    base: &str,
    old_query: Option<&str>,
    fragment: Option<&str>,
    name: &str,
    encoded: &str,
) -> Cow<'u, str> {
    // Already exactly that (idempotence): no allocation. A clean media URL, the common case,
    // has no query to scan.
    if old_query.is_some() && query::is_exactly(old_query, name, encoded) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + name.len() + encoded.len() + 2);
    out.push_str(base);
    out.push('?');
    match old_query {
        None => {
            out.push_str(name);
            out.push('=');
            out.push_str(encoded);
        }
        Some(_) => query::write_set(&mut out, old_query, name, encoded),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Cow::Owned(out)
}

/// `query` with every parameter of `params` (names already encoded) set in order, each name in
/// any case or spelling ([`query::set_any_case`]); `None` when it already says exactly that.
fn set_all(query: Option<&str>, params: &[(Box<str>, ParamValue)]) -> Option<String> {
    let mut current: Option<String> = None;
    for (name, value) in params {
        let now = current.as_deref().or(query);
        if let Some(next) = query::set_any_case(now, name, value.encoded()) {
            current = Some(next);
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resolution;

    #[test]
    fn set_params_encodes_names_and_every_adapter_agrees() {
        let resolution = Resolution::set_params([
            ("a b", ParamValue::new("1")),
            ("x&y", ParamValue::new("2")),
            ("h#", ParamValue::new("3")),
            ("md5", ParamValue::new("v&w=#")),
        ]);
        let text = "https://h.io/p?w=1&MD5=old#frag";
        let expected = "https://h.io/p?w=1&md5=v%26w%3D%23&a+b=1&x%26y=2&h%23=3#frag";
        assert_eq!(resolution.apply_to_str(text), expected);
        let mut url = Url::parse(text).unwrap();
        resolution.apply_to_url(&mut url);
        assert_eq!(url.as_str(), expected);
        let uri: http::Uri = "https://h.io/p?w=1&MD5=old".parse().unwrap();
        let sent = resolution.apply_to_uri(&uri).unwrap().unwrap();
        assert_eq!(sent.to_string(), expected.trim_end_matches("#frag"));
        // Applying it again changes nothing.
        assert!(matches!(resolution.apply_to_str(expected), Cow::Borrowed(_)));
    }

    #[test]
    fn apply_to_str_keeps_query_and_fragment_order() {
        let r = Resolution::set_param("fat", ParamValue::new("T"));
        assert_eq!(r.apply_to_str("https://h.io/a"), "https://h.io/a?fat=T");
        assert_eq!(r.apply_to_str("https://h.io/a?x=1"), "https://h.io/a?x=1&fat=T");
        assert_eq!(r.apply_to_str("https://h.io/a?fat=old&x=1#f"), "https://h.io/a?fat=T&x=1#f");
        assert!(matches!(r.apply_to_str("https://h.io/a?fat=T"), Cow::Borrowed(_)));
        let strip = Resolution::remove_param("fat");
        assert_eq!(strip.apply_to_str("https://h.io/a?fat=old#f"), "https://h.io/a#f");
        assert_eq!(strip.apply_to_str("https://h.io/a?w=1&fat=old"), "https://h.io/a?w=1");
    }

    #[test]
    fn apply_to_url_and_uri_match_apply_to_str() {
        let r = Resolution::set_param("fat", ParamValue::new("T+"));
        for text in ["https://h.io/a", "https://h.io/a?x=1", "https://h.io/a?fat=1&x=2"] {
            let mut url = Url::parse(text).unwrap();
            r.apply_to_url(&mut url);
            let uri: http::Uri = text.parse().unwrap();
            let uri = r.apply_to_uri(&uri).unwrap().unwrap();
            assert_eq!(url.as_str(), r.apply_to_str(text));
            assert_eq!(uri.to_string(), r.apply_to_str(text));
        }
    }

    #[test]
    fn replace_keeps_the_callers_fragment_and_hides_the_signature_in_debug() {
        let now = std::time::SystemTime::now();
        let signed = url::Url::parse("https://m.io/a.mp4?Signature=SIG").unwrap();
        let r = Resolution::replace(SignedUrl::new("https://h.io/a.mp4", signed, now, now));
        assert_eq!(r.apply_to_str("https://h.io/a.mp4#t=10"), "https://m.io/a.mp4?Signature=SIG#t=10");
        let mut url = Url::parse("https://h.io/a.mp4?fat=x#t=10").unwrap();
        r.apply_to_url(&mut url);
        assert_eq!(url.as_str(), "https://m.io/a.mp4?Signature=SIG#t=10");
        assert!(!format!("{r:?}").contains("SIG"));
        let set = Resolution::set_param("fat", ParamValue::new("SECRET"));
        assert!(!format!("{set:?}").contains("SECRET"));
    }
}
