//! [`SecureHosts`]: which URLs need proof of access, and so may ever see a token.

use std::fmt;

use url::Url;

use crate::{ConfigError, MediaUrl};

/// One configured host, normalised: lowercase, no trailing dot, `None` for the default port.
#[derive(Clone, PartialEq, Eq)]
struct HostEntry {
    host: Box<str>,
    port: Option<u16>,
}

/// The set of secure media hosts. A URL needs (and may receive) a token only when its host is
/// one of these exactly: after lowercasing and dropping a trailing dot, on the same port
/// (default ports count as absent), over https, or http when [explicitly allowed](Self::allowing_http).
///
/// ```
/// use secure_media_core::SecureHosts;
///
/// let hosts = SecureHosts::cometchat("us").unwrap();
/// assert!(hosts.matches_str("https://files-us.cometchat.io/app/media/a.png"));
/// assert!(hosts.matches_str("https://FILES-US.cometchat.io./app/media/a.png"));
/// assert!(!hosts.matches_str("https://files-us.cometchat.io.evil.com/a.png"));
/// assert!(!hosts.matches_str("https://evil.com/?u=files-us.cometchat.io"));
/// assert!(!hosts.matches_str("https://files-us.cometchat.io@evil.com/"));
/// assert!(!hosts.matches_str("http://files-us.cometchat.io/a.png")); // https only
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecureHosts {
    entries: Vec<HostEntry>,
    allow_http: bool,
}

impl SecureHosts {
    /// No hosts: nothing matches.
    pub fn new() -> Self {
        Self::default()
    }

    /// No hosts, as a `'static` reference (what a strategy that answers `applies_to` itself
    /// reports).
    pub fn none() -> &'static SecureHosts {
        static NONE: std::sync::OnceLock<SecureHosts> = std::sync::OnceLock::new();
        NONE.get_or_init(SecureHosts::default)
    }

    /// The vendor's hosts for a region: `files-<region>.cometchat.io`,
    /// `files-<region>.cometchat.com` and `media-<region>.cometchat.io`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHost`] when `region` is empty or holds anything but letters, digits
    /// and hyphens.
    pub fn cometchat(region: &str) -> Result<Self, ConfigError> {
        Self::new().with_cometchat_region(region)
    }

    /// Adds the vendor's three hosts for a region.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHost`] when `region` is empty or holds anything but letters, digits
    /// and hyphens.
    pub fn with_cometchat_region(mut self, region: &str) -> Result<Self, ConfigError> {
        let region = region.trim().to_ascii_lowercase();
        let valid =
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ConfigError::InvalidHost {
                entry: region,
                reason: "a region is letters, digits and hyphens (e.g. \"us\", \"eu\", \"in\")",
            });
        }
        for host in [
            format!("files-{region}.cometchat.io"),
            format!("files-{region}.cometchat.com"),
            format!("media-{region}.cometchat.io"),
        ] {
            self.add(&host)?;
        }
        Ok(self)
    }

    /// Adds a host, `host:port`, or an `https://host[:port]` origin.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHost`] when `entry` is empty, not a valid host name, or carries a
    /// path, query or user info.
    pub fn with_host(mut self, entry: &str) -> Result<Self, ConfigError> {
        self.add(entry)?;
        Ok(self)
    }

    /// Adds a host, `host:port`, or an `https://host[:port]` origin, in place.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidHost`], as [`with_host`](Self::with_host); the hosts are unchanged.
    pub fn add(&mut self, entry: &str) -> Result<(), ConfigError> {
        let parsed = parse_entry(entry)?;
        if !self.entries.contains(&parsed) {
            self.entries.push(parsed);
        }
        Ok(())
    }

    /// Lets `http://` URLs on these hosts match too: for loopback test servers only, since a
    /// token sent over plain http can be read on the way. Then an http URL on these hosts is
    /// secure like an https one, also when a redirect leads there from https, and gets the token.
    pub fn allowing_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// Whether `http://` is allowed.
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    /// No host configured?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The configured hosts as `host` or `host:port`.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        self.entries.iter().map(|e| match e.port {
            Some(port) => format!("{}:{port}", e.host),
            None => e.host.to_string(),
        })
    }

    /// Is this URL on a secure host? The hot-path check every request pays.
    pub fn matches(&self, url: &MediaUrl<'_>) -> bool {
        match url.scheme() {
            crate::Scheme::Https => {}
            crate::Scheme::Http if self.allow_http => {}
            crate::Scheme::Http => return false,
        }
        let host = url.host();
        let host = host.strip_suffix('.').unwrap_or(host);
        let port = url.port();
        // Entries are lowercase; most hosts arrive lowercase too, so try the plain compare first.
        self.entries.iter().any(|e| e.port == port && (*e.host == *host || e.host.eq_ignore_ascii_case(host)))
    }

    /// [`matches`](Self::matches) for a parsed [`Url`].
    pub fn matches_url(&self, url: &Url) -> bool {
        MediaUrl::from_url(url).is_some_and(|m| self.matches(&m))
    }

    /// [`matches`](Self::matches) for a string: the plain fast path, else the full WHATWG parse.
    /// An invalid URL is never on a secure host.
    pub fn matches_str(&self, url: &str) -> bool {
        match MediaUrl::parse_plain(url) {
            Some(m) => self.matches(&m),
            None => Url::parse(url).is_ok_and(|u| self.matches_url(&u)),
        }
    }
}

fn parse_entry(entry: &str) -> Result<HostEntry, ConfigError> {
    let invalid = |reason| ConfigError::InvalidHost { entry: entry.to_owned(), reason };
    let trimmed = entry.trim();
    let bare = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://")).unwrap_or(trimmed);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    if bare.is_empty() {
        return Err(invalid("empty host"));
    }
    if bare.contains(['/', '?', '#', '@', '\\']) || bare.chars().any(char::is_whitespace) {
        return Err(invalid("expected a host or host:port, without path, query or user"));
    }
    let url = Url::parse(&format!("https://{bare}/")).map_err(|_| invalid("not a valid host name"))?;
    let host = url.host_str().ok_or_else(|| invalid("not a valid host name"))?;
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    Ok(HostEntry { host: host.into(), port: url.port() })
}

impl fmt::Debug for SecureHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureHosts")
            .field("hosts", &self.iter().collect::<Vec<_>>())
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us() -> SecureHosts {
        SecureHosts::cometchat("us").unwrap()
    }

    #[test]
    fn region_presets_cover_the_three_hosts() {
        let hosts = us();
        for url in [
            "https://files-us.cometchat.io/app/media/a.jpg",
            "https://files-us.cometchat.com/app/media/a.jpg",
            "https://media-us.cometchat.io/app/media/a.jpg",
        ] {
            assert!(hosts.matches_str(url), "{url}");
        }
        assert!(!hosts.matches_str("https://files-eu.cometchat.io/app/media/a.jpg"));
        assert!(SecureHosts::cometchat("u s").is_err());
        assert!(SecureHosts::cometchat("").is_err());
        let error = SecureHosts::cometchat("bad region!").unwrap_err();
        assert!(matches!(&error, ConfigError::InvalidHost { entry, .. } if entry == "bad region!"), "{error:?}");
    }

    #[test]
    fn case_and_trailing_dot_are_normalised() {
        let hosts = us();
        assert!(hosts.matches_str("https://FILES-US.CometChat.IO/a"));
        assert!(hosts.matches_str("https://files-us.cometchat.io./a"));
        let hosts = SecureHosts::new().with_host("Media.Example.COM.").unwrap();
        assert!(hosts.matches_str("https://media.example.com/a"));
    }

    #[test]
    fn substring_tricks_never_match() {
        let hosts = us();
        for url in [
            "https://files-us.cometchat.io.evil.com/a.png",
            "https://evil.com/?u=files-us.cometchat.io",
            "https://evil.com/files-us.cometchat.io/a.png",
            "https://files-us.cometchat.io@evil.com/",
            "https://user:pass@evil.com/files-us.cometchat.io",
            "https://evil.com\\@files-us.cometchat.io/",
            "https://evil.com#@files-us.cometchat.io/",
            "https://xfiles-us.cometchat.io/a",
            "https://files-us.cometchat.io%2eevil.com/a",
            "files-us.cometchat.io/a.png",
            "//files-us.cometchat.io/a.png",
            "not a url",
            "",
        ] {
            assert!(!hosts.matches_str(url), "{url}");
        }
    }

    #[test]
    fn whatwg_normalisation_is_honoured_on_the_slow_path() {
        let hosts = us();
        // Tabs and newlines are removed by the WHATWG parser: the client connects to the secure host.
        assert!(hosts.matches_str("https://files-us.comet\tchat.io/a"));
        // Percent-encoded host letters decode to the secure host.
        assert!(hosts.matches_str("https://files-us.cometchat%2eio/a"));
    }

    #[test]
    fn ports_are_part_of_the_host() {
        let hosts = SecureHosts::new().with_host("127.0.0.1:8080").unwrap().allowing_http();
        assert!(hosts.matches_str("http://127.0.0.1:8080/a"));
        assert!(!hosts.matches_str("http://127.0.0.1:8081/a"));
        assert!(!hosts.matches_str("http://127.0.0.1/a"));
        let default = us();
        assert!(default.matches_str("https://files-us.cometchat.io:443/a"));
        assert!(!default.matches_str("https://files-us.cometchat.io:8443/a"));
    }

    #[test]
    fn http_only_when_allowed() {
        let hosts = SecureHosts::new().with_host("localhost").unwrap();
        assert!(!hosts.matches_str("http://localhost/a"));
        assert!(hosts.clone().allowing_http().matches_str("http://localhost/a"));
        assert!(!hosts.matches_str("ftp://localhost/a"));
    }

    #[test]
    fn entries_are_validated() {
        for bad in ["", "  ", "a/b", "user@host", "host?x", "a b", "https://h.io/path"] {
            assert!(SecureHosts::new().with_host(bad).is_err(), "{bad:?}");
        }
        let hosts = SecureHosts::new().with_host("https://h.io:8443").unwrap();
        assert_eq!(hosts.iter().collect::<Vec<_>>(), vec!["h.io:8443"]);
        let ipv6 = SecureHosts::new().with_host("[::1]:9000").unwrap();
        assert!(ipv6.matches_str("https://[::1]:9000/x"));
    }

    #[test]
    fn uri_and_url_views_agree() {
        let hosts = us();
        let uri: http::Uri = "https://files-us.cometchat.io@evil.com/x".parse().unwrap();
        assert!(!hosts.matches(&MediaUrl::from_uri(&uri).unwrap()));
        let uri: http::Uri = "https://FILES-US.cometchat.io/x".parse().unwrap();
        assert!(hosts.matches(&MediaUrl::from_uri(&uri).unwrap()));
    }
}
