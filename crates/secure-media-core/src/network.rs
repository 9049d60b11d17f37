//! [`NetworkError`]: why a request did not complete, typed ([`NetworkFailure`], [`TlsFailure`])
//! and with the cause chain in words, never a URL's query or a token.

use std::error::Error;
use std::fmt;
use std::io;

/// What went wrong on the network, as far as the client could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkFailure {
    /// The host name did not resolve.
    Dns,
    /// No connection: refused, unreachable, or reset before an answer.
    Connect,
    /// The TLS handshake failed.
    Tls(TlsFailure),
    /// No answer in time.
    Timeout,
    /// The answer stopped before its end (a connection dropped mid-body).
    Body,
    /// Something else; the detail says what.
    Other,
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The certificate is not signed by a CA the client trusts (a private CA not added, a
    /// self-signed certificate, an intercepting proxy).
    UnknownIssuer,
    /// The certificate has expired or is not valid yet.
    Expired,
    /// The certificate does not name the host that was asked for.
    WrongHostName,
    /// Anything else in the handshake (protocol versions, a bad signature, an alert).
    Handshake,
}

impl fmt::Display for NetworkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns => f.write_str("the host name did not resolve"),
            Self::Connect => f.write_str("could not connect"),
            Self::Tls(tls) => write!(f, "TLS: {tls}"),
            Self::Timeout => f.write_str("timed out"),
            Self::Body => f.write_str("the answer was cut off"),
            Self::Other => f.write_str("the request failed"),
        }
    }
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownIssuer => "the server's certificate is not signed by a trusted CA (add its CA certificate)",
            Self::Expired => "the server's certificate has expired or is not valid yet",
            Self::WrongHostName => "the server's certificate is not valid for this host name",
            Self::Handshake => "the handshake failed",
        })
    }
}

/// A request that did not complete: what failed, and the cause chain in words (each cause once,
/// joined by `": "`). Built by the HTTP adapters from their client's error, after the URL has been
/// taken out of it; the chain never holds a query string.
///
/// Its [`source()`](Error::source) is `None` by design: it keeps the causes as redacted words,
/// not the errors themselves, since a client's error may carry the URL with its token and would
/// hand it to whoever walks the chain. [`failure`](Self::failure) is the typed part.
///
/// ```
/// use std::io;
/// use secure_media_core::{NetworkError, NetworkFailure};
///
/// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
/// let error = NetworkError::from_chain(&refused, NetworkFailure::Other);
/// assert_eq!(error.failure(), NetworkFailure::Connect);
/// assert_eq!(error.to_string(), "could not connect: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkError {
    failure: NetworkFailure,
    detail: String,
}

impl NetworkError {
    /// A failure with its detail, as written.
    pub fn new(failure: NetworkFailure, detail: impl Into<String>) -> Self {
        Self { failure, detail: redact_queries(&detail.into()) }
    }

    /// Reads `error` and its sources: a TLS error (rustls or native-tls, with those features),
    /// an I/O error's kind, a resolver's "dns error"; `fallback` when none says more. Pass an
    /// error whose message holds no URL (reqwest: `error.without_url()`).
    pub fn from_chain(error: &(dyn Error + 'static), fallback: NetworkFailure) -> Self {
        // A TLS failure anywhere in the chain names it (an outer "connection reset" is how a
        // failed handshake looks one level up); otherwise the outermost cause that says more.
        let (mut tls, mut failure) = (None, None);
        let mut classify = |cause: &(dyn Error + 'static)| {
            tls = tls.or_else(|| tls_failure(cause));
            failure = failure.or_else(|| kind_of(cause));
        };
        let mut detail = String::new();
        let mut next = Some(error);
        while let Some(cause) = next {
            classify(cause);
            let text = cause.to_string();
            // io::Error shows its inner error's text but skips it in `source()` (and TLS stacks
            // nest one io::Error in another): read them here.
            let mut inner = io_inner(cause);
            while let Some(wrapped) = inner {
                classify(wrapped);
                inner = io_inner(wrapped);
            }
            if !text.is_empty() && !detail.contains(&text) {
                if !detail.is_empty() {
                    detail.push_str(": ");
                }
                detail.push_str(&text);
            }
            next = cause.source();
        }
        Self::new(tls.map(NetworkFailure::Tls).or(failure).unwrap_or(fallback), detail)
    }

    /// What failed.
    pub fn failure(&self) -> NetworkFailure {
        self.failure
    }

    /// The cause chain in words.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// No [`source()`](Error::source): the causes are kept as redacted words only ([`detail`](NetworkError::detail)).
impl Error for NetworkError {}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.failure)
        } else {
            write!(f, "{}: {}", self.failure, self.detail)
        }
    }
}

fn io_inner<'e>(error: &'e (dyn Error + 'static)) -> Option<&'e (dyn Error + 'static)> {
    let inner = error.downcast_ref::<io::Error>()?.get_ref()?;
    Some(inner as &(dyn Error + 'static))
}

/// What an I/O error's kind or a resolver's words say.
fn kind_of(error: &(dyn Error + 'static)) -> Option<NetworkFailure> {
    if let Some(io) = error.downcast_ref::<io::Error>() {
        return match io.kind() {
            io::ErrorKind::TimedOut => Some(NetworkFailure::Timeout),
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable => Some(NetworkFailure::Connect),
            io::ErrorKind::UnexpectedEof => Some(NetworkFailure::Body),
            _ => None,
        };
    }
    // hyper-util's resolver reports "dns error" with no type of its own to downcast to.
    error.to_string().starts_with("dns error").then_some(NetworkFailure::Dns)
}

#[cfg(feature = "rustls")]
fn rustls_failure(error: &(dyn Error + 'static)) -> Option<TlsFailure> {
    use rustls::{CertificateError, Error as Rustls};
    Some(match error.downcast_ref::<Rustls>()? {
        Rustls::InvalidCertificate(certificate) => match certificate {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => TlsFailure::UnknownIssuer,
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsFailure::WrongHostName
            }
            _ => TlsFailure::Handshake,
        },
        _ => TlsFailure::Handshake,
    })
}

#[cfg(not(feature = "rustls"))]
fn rustls_failure(_: &(dyn Error + 'static)) -> Option<TlsFailure> {
    None
}

#[cfg(feature = "native-tls")]
fn native_tls_failure(error: &(dyn Error + 'static)) -> Option<TlsFailure> {
    // native-tls gives the platform's words only: name the common causes from them.
    let error = error.downcast_ref::<native_tls::Error>()?;
    let text = error.to_string().to_ascii_lowercase();
    Some(if text.contains("expired") || text.contains("not yet valid") {
        TlsFailure::Expired
    } else if text.contains("hostname mismatch") || text.contains("ip address mismatch") {
        TlsFailure::WrongHostName
    } else if text.contains("issuer") || text.contains("self-signed") || text.contains("self signed") {
        TlsFailure::UnknownIssuer
    } else {
        TlsFailure::Handshake
    })
}

#[cfg(not(feature = "native-tls"))]
fn native_tls_failure(_: &(dyn Error + 'static)) -> Option<TlsFailure> {
    None
}

fn tls_failure(error: &(dyn Error + 'static)) -> Option<TlsFailure> {
    rustls_failure(error).or_else(|| native_tls_failure(error))
}

/// Cuts what could carry a credential out of `text`: the query of anything that looks like a URL
/// or a path (`.../p?fat=...`), and any `name=value` pair named like a credential (`fat=`,
/// `Signature=`, in any spelling), wherever words end (whitespace, quotes, brackets). No cause in
/// a chain may carry a token, whoever wrote its message.
fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '\'' | '"' | '(' | ')' | '<' | '>' | '{' | '}' | '[' | ']' | ',') {
            push_redacted(&mut out, &word);
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    push_redacted(&mut out, &word);
    out
}

fn push_redacted(out: &mut String, word: &str) {
    let word = match word.find('?') {
        Some(at) if word[..at].contains('/') => &word[..at],
        _ => word,
    };
    if word.contains('=')
        && crate::rewrite::query::has_credential(word.trim_start_matches(['?', '&', ';']), crate::Credentials::shared())
    {
        out.push_str("<redacted>");
    } else {
        out.push_str(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<dyn Error + Send + Sync>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    #[test]
    fn the_chain_is_read_through_io_errors_and_said_once() {
        let io = io::Error::new(io::ErrorKind::TimedOut, Layer("deadline passed", None));
        let top = Layer("error sending request", Some(Box::new(Layer("client error (Connect)", Some(Box::new(io))))));
        let error = NetworkError::from_chain(&top, NetworkFailure::Other);
        assert_eq!(error.failure(), NetworkFailure::Timeout);
        assert_eq!(error.detail(), "error sending request: client error (Connect): deadline passed");
    }

    #[test]
    fn dns_and_fallback() {
        let dns = Layer("dns error", Some(Box::new(Layer("failed to lookup address information", None))));
        assert_eq!(NetworkError::from_chain(&dns, NetworkFailure::Other).failure(), NetworkFailure::Dns);
        let vague = Layer("something", None);
        assert_eq!(NetworkError::from_chain(&vague, NetworkFailure::Body).failure(), NetworkFailure::Body);
    }

    #[test]
    fn a_query_in_a_cause_is_cut() {
        let error = NetworkError::new(
            NetworkFailure::Other,
            "error for https://h/a.png?fat=SECRET and /p?Signature=S, plain? words",
        );
        assert!(!error.to_string().contains("SECRET") && !error.to_string().contains("Signature"));
        assert!(error.detail().contains("plain? words"));
        for written in [
            "'/v1/presign?fat=SECRET'",
            "uri=/v1/presign?fat=SECRET",
            "failed:\n/v1/presign?fat=SECRET",
            "GET h.example/p?fat=SECRET",
            "https://h/p?name=a b&fat=SECRET",
            "Url { query: Some(\"fat=SECRET\") }",
            "params: X-Amz-Signature=SECRET&x=1",
        ] {
            let detail = NetworkError::new(NetworkFailure::Other, written).detail().to_owned();
            assert!(!detail.contains("SECRET"), "{written:?} -> {detail:?}");
        }
        let kept = "connection refused (os error 111): key=value stays";
        assert_eq!(NetworkError::new(NetworkFailure::Connect, kept).detail(), kept);
    }

    #[test]
    fn a_tls_failure_inside_a_reset_is_named_as_tls() {
        #[cfg(feature = "rustls")]
        {
            let rustls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
            let reset = io::Error::new(io::ErrorKind::ConnectionReset, rustls);
            let error = NetworkError::from_chain(&reset, NetworkFailure::Other);
            assert_eq!(error.failure(), NetworkFailure::Tls(TlsFailure::UnknownIssuer));
        }
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        assert_eq!(NetworkError::from_chain(&reset, NetworkFailure::Other).failure(), NetworkFailure::Connect);
    }

    #[cfg(feature = "rustls")]
    #[test]
    fn rustls_certificate_errors_are_named() {
        use rustls::{CertificateError, Error as Rustls};
        let cases = [
            (CertificateError::UnknownIssuer, TlsFailure::UnknownIssuer),
            (CertificateError::Expired, TlsFailure::Expired),
            (CertificateError::NotValidForName, TlsFailure::WrongHostName),
            (CertificateError::Revoked, TlsFailure::Handshake),
        ];
        for (certificate, expected) in cases {
            // As tokio-rustls and hyper-util hand it up: one io::Error inside another.
            let io = io::Error::new(io::ErrorKind::InvalidData, Rustls::InvalidCertificate(certificate));
            let top = Layer("client error (Connect)", Some(Box::new(io::Error::other(io))));
            let error = NetworkError::from_chain(&top, NetworkFailure::Other);
            assert_eq!(error.failure(), NetworkFailure::Tls(expected));
            assert!(error.to_string().starts_with("TLS: "), "{error}");
        }
    }
}
