//! [`TokenSource`]: where the current token comes from; [`TokenRef`]: a token lent for a read;
//! [`StaticToken`]: a source whose token never changes.

use std::fmt;
use std::sync::{Arc, RwLockReadGuard, Weak};

use async_trait::async_trait;

use crate::{AccessError, FileAccessToken, RefreshFailure, TokenListener};

/// A token lent by [`TokenSource::peek`]: read it, do not keep it (a lock may be held).
pub struct TokenRef<'a>(Lent<'a>);

enum Lent<'a> {
    Borrowed(&'a FileAccessToken),
    Locked(RwLockReadGuard<'a, Option<Arc<FileAccessToken>>>),
    Owned(Arc<FileAccessToken>),
}

impl<'a> TokenRef<'a> {
    /// Lends the token in the slot `guard` reads, holding the lock until it is dropped; `None`
    /// when the slot is empty.
    pub(super) fn locked(guard: RwLockReadGuard<'a, Option<Arc<FileAccessToken>>>) -> Option<Self> {
        guard.is_some().then(|| Self(Lent::Locked(guard)))
    }
}

impl std::ops::Deref for TokenRef<'_> {
    type Target = FileAccessToken;

    fn deref(&self) -> &FileAccessToken {
        match &self.0 {
            Lent::Borrowed(token) => token,
            // Proven invariant: `TokenRef::locked` builds this only from a guard over `Some`, and
            // the read guard it holds keeps every writer out until it is dropped.
            #[allow(clippy::expect_used)]
            Lent::Locked(guard) => guard.as_deref().expect("peek lends a guard only over a token"),
            Lent::Owned(token) => token,
        }
    }
}

impl fmt::Debug for TokenRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Where the current file access token comes from.
///
/// `current` is the synchronous hot path; `refresh` is called after the media server refused
/// `stale`, and must be single-flight (one renewal for any number of callers that saw `stale`)
/// and skip the renewal when `stale` is no longer the current token. It may answer an error at
/// once instead of renewing: after a logout, or while it backs off from renewals that failed or
/// did not help (see [`LoginCell`](crate::LoginCell)).
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// The current token, if there is one.
    fn current(&self) -> Option<Arc<FileAccessToken>>;

    /// The current token, lent for a read rather than handed out (a cache lookup needs only its
    /// scope). Override it when the source can lend its token without cloning it. Default:
    /// through [`current`](Self::current).
    fn peek(&self) -> Option<TokenRef<'_>> {
        self.current().map(|token| TokenRef(Lent::Owned(token)))
    }

    /// The current token, waiting for one to be fetched if the source can do that.
    ///
    /// # Errors
    ///
    /// [`AccessError::NotLoggedIn`] when there is no token and the source cannot fetch one (the
    /// default); a source that fetches answers its own error when fetching fails.
    async fn token(&self) -> Result<Arc<FileAccessToken>, AccessError> {
        self.current().ok_or(AccessError::NotLoggedIn)
    }

    /// `stale` was refused: answer a newer token, renewing it if `stale` is still current.
    ///
    /// # Errors
    ///
    /// When no newer token can be had: [`AccessError::NotLoggedIn`] after a logout,
    /// [`AccessError::RefreshFailed`] when the token cannot be renewed (a static token), the
    /// renewal failed, or the source declines to renew for now (see [`LoginCell`](crate::LoginCell));
    /// its [`RefreshFailure`] says which.
    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError>;

    /// Registers a listener for token changes. Sources whose token never changes ignore it.
    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        let _ = listener;
    }
}

#[async_trait]
impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        (**self).current()
    }
    fn peek(&self) -> Option<TokenRef<'_>> {
        (**self).peek()
    }
    async fn token(&self) -> Result<Arc<FileAccessToken>, AccessError> {
        (**self).token().await
    }
    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        (**self).refresh(stale).await
    }
    fn subscribe(&self, listener: Weak<dyn TokenListener>) {
        (**self).subscribe(listener)
    }
}

/// A token that never changes (a service account, a test). A refusal cannot be repaired.
#[derive(Debug, Clone)]
pub struct StaticToken(Arc<FileAccessToken>);

impl StaticToken {
    /// Wraps a token.
    pub fn new(token: FileAccessToken) -> Self {
        Self(Arc::new(token))
    }

    /// Parses and wraps a token.
    ///
    /// # Errors
    ///
    /// [`AccessError::MalformedToken`] when `secret` is not a usable token
    /// ([`FileAccessToken::new`]).
    pub fn parse(secret: impl Into<String>) -> Result<Self, AccessError> {
        FileAccessToken::new(secret).map(Self::new)
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    fn current(&self) -> Option<Arc<FileAccessToken>> {
        Some(self.0.clone())
    }

    fn peek(&self) -> Option<TokenRef<'_>> {
        Some(TokenRef(Lent::Borrowed(&self.0)))
    }

    async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
        if Arc::ptr_eq(stale, &self.0) {
            Err(RefreshFailure::StaticToken.into())
        } else {
            Ok(self.0.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoginCell;

    #[test]
    fn peek_lends_the_current_token_from_every_source() {
        let cell = LoginCell::new();
        assert!(cell.peek().is_none());
        cell.set(FileAccessToken::new("one").unwrap());
        assert_eq!(cell.peek().unwrap().expose_secret(), "one");
        let fixed = StaticToken::parse("two").unwrap();
        assert_eq!(fixed.peek().unwrap().expose_secret(), "two");
        let shared: Arc<dyn TokenSource> = Arc::new(fixed);
        assert_eq!(shared.peek().unwrap().expose_secret(), "two");
        assert_eq!(format!("{:?}", shared.peek().unwrap()), format!("{:?}", shared.current().unwrap()));
        // A source that only answers `current` is lent a clone.
        struct Plain(Arc<FileAccessToken>);
        #[async_trait]
        impl TokenSource for Plain {
            fn current(&self) -> Option<Arc<FileAccessToken>> {
                Some(self.0.clone())
            }
            async fn refresh(&self, stale: &Arc<FileAccessToken>) -> Result<Arc<FileAccessToken>, AccessError> {
                Ok(stale.clone())
            }
        }
        assert_eq!(Plain(Arc::new(FileAccessToken::new("three").unwrap())).peek().unwrap().expose_secret(), "three");
    }

    #[tokio::test]
    async fn a_static_token_cannot_be_renewed() {
        let fixed = StaticToken::parse("x").unwrap();
        let error = fixed.refresh(&fixed.current().unwrap()).await.unwrap_err();
        assert_eq!(error, AccessError::RefreshFailed(RefreshFailure::StaticToken));
        assert!(error.to_string().ends_with("could not be refreshed: a static token cannot be renewed"), "{error}");
        assert!(std::error::Error::source(&error).is_none());
    }
}
