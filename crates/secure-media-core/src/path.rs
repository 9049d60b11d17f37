//! The path a signer signs: dot segments removed as the WHATWG URL spec (and `url`, reqwest's
//! parser, at parse time) removes them, so a path from an `http::Uri` (tower) or a plain string
//! signs the same.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// `path` without dot segments (RFC 3986 §5.2.4 `remove_dot_segments`, with the `%2e` and `%2E`
/// spellings of a dot that the WHATWG URL parser also takes), `"/"` for an empty path. A `..`
/// above the root stays at the root. Only `/` separates segments: `%2F` and `\` are ordinary
/// bytes. Borrowed when nothing changes.
pub(crate) fn remove_dot_segments(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let absolute = path.strip_prefix('/');
    let segments = absolute.unwrap_or(path);
    if absolute.is_some() && !segments.split('/').any(|segment| dots(segment).is_some()) {
        return Cow::Borrowed(path);
    }
    // The WHATWG path state: a list of segments; a dot segment in last place leaves an empty
    // one behind, so `/a/b/..` is `/a/` (as RFC 3986 has it too).
    let mut kept: Vec<&str> = Vec::new();
    let mut rest = segments.split('/').peekable();
    while let Some(segment) = rest.next() {
        let last = rest.peek().is_none();
        match dots(segment) {
            Some(Dots::Two) => {
                kept.pop();
                if last {
                    kept.push("");
                }
            }
            Some(Dots::One) if last => kept.push(""),
            Some(Dots::One) => {}
            None => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    Cow::Owned(out)
}

/// `path` percent-decoded, invalid UTF-8 replaced by U+FFFD; `+` stays `+` (a path is not a
/// form). Borrowed when there is nothing to decode.
pub(crate) fn percent_decoded(path: Cow<'_, str>) -> Cow<'_, str> {
    match path {
        Cow::Borrowed(path) => percent_decode_str(path).decode_utf8_lossy(),
        Cow::Owned(path) => {
            let decoded = match percent_decode_str(&path).decode_utf8_lossy() {
                Cow::Owned(decoded) => Some(decoded),
                Cow::Borrowed(_) => None,
            };
            Cow::Owned(decoded.unwrap_or(path))
        }
    }
}

/// The dot segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dots {
    /// `.`: this directory.
    One,
    /// `..`: the parent directory.
    Two,
}

/// Is `segment` `.` or `..`, each dot spelled `.`, `%2e` or `%2E` (the spellings `url` takes)?
fn dots(segment: &str) -> Option<Dots> {
    let mut rest = segment.as_bytes();
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] | [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return None,
        };
        count += 1;
    }
    match count {
        1 => Some(Dots::One),
        2 => Some(Dots::Two),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `url::Url::parse` makes of a path, the reference `remove_dot_segments` follows.
    fn url_path(path: &str) -> String {
        url::Url::parse(&format!("https://h.io{path}")).unwrap().path().to_owned()
    }

    #[test]
    fn dot_segments_go_as_url_removes_them() {
        for (path, normal) in [
            ("", "/"),
            ("/", "/"),
            ("/.", "/"),
            ("/..", "/"),
            ("/../..", "/"),
            ("/a/..", "/"),
            ("/a/../", "/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/../c%20d", "/a/c%20d"),
            ("/a/../../b", "/b"),
            ("///..", "//"),
            ("/a///..", "/a//"),
            ("//./", "//"),
            ("//", "//"),
            ("//..", "/"),
            ("/a//../b", "/a/b"),
            ("/a/%2e%2e/b", "/b"),
            ("/%2E%2E", "/"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2E./b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a/%2e", "/a/"),
            ("/a/...", "/a/..."),
            ("/a/%2e%2e%2e/b", "/a/%2e%2e%2e/b"),
            ("/a/%252e%252e/b", "/a/%252e%252e/b"),
            ("/a/%2f../b", "/a/%2f../b"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/%zz/..", "/"),
        ] {
            assert_eq!(remove_dot_segments(path), normal, "{path:?}");
            assert_eq!(url_path(path), normal, "{path:?}: the reference moved");
        }
    }

    #[test]
    fn a_path_without_dot_segments_is_borrowed() {
        for path in ["/", "//", "/a/b/", "/a/...", "/a/%2e%2e%2e", "/.a/b."] {
            assert!(matches!(remove_dot_segments(path), Cow::Borrowed(p) if p == path), "{path}");
        }
        assert!(matches!(remove_dot_segments("/a/../b"), Cow::Owned(_)));
    }

    #[test]
    fn decoding_keeps_plus_and_replaces_invalid_utf8() {
        assert_eq!(percent_decoded(Cow::Borrowed("/a+b%20c")), "/a+b c");
        assert_eq!(percent_decoded(Cow::Borrowed("/%C3%BC/%FF")), "/ü/\u{FFFD}");
        assert_eq!(percent_decoded(Cow::Borrowed("/100%/%zz")), "/100%/%zz");
        assert_eq!(percent_decoded(Cow::Borrowed("/a%2Fb")), "/a/b");
        assert!(matches!(percent_decoded(Cow::Borrowed("/plain")), Cow::Borrowed("/plain")));
        assert_eq!(percent_decoded(Cow::Owned("/a%41".to_owned())), "/aA");
        assert_eq!(percent_decoded(Cow::Owned("/a".to_owned())), "/a");
    }
}
