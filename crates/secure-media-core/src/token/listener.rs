//! [`TokenListener`]: told when a token source's token changes; the list of them a source keeps.

use std::sync::{Mutex, PoisonError, Weak};

use crate::FileAccessToken;

/// Told when a [`TokenSource`](crate::TokenSource)'s token changes (login, re-login, logout), so caches scoped by the
/// old principal can be purged.
pub trait TokenListener: Send + Sync {
    /// The token went from `old` to `new`.
    fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>);
}

/// The listeners a token source tells of each change, held weakly: one that is gone is dropped
/// from the list.
#[derive(Default)]
pub(super) struct Listeners(Mutex<Vec<Weak<dyn TokenListener>>>);

impl Listeners {
    pub(super) fn add(&self, listener: Weak<dyn TokenListener>) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(listener);
    }

    /// Tells every live listener that the token went from `old` to `new`. Call it outside every
    /// lock of the source: listeners may read it.
    pub(super) fn notify(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>) {
        let listeners: Vec<_> = {
            let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|l| l.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for listener in listeners {
            listener.token_changed(old, new);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::token::tests::jwt;
    use crate::{LoginCell, TokenSource};

    /// Records each token change as (old principal, new principal).
    #[derive(Default)]
    pub(crate) struct Recorder(Mutex<Vec<(Option<String>, Option<String>)>>);

    impl TokenListener for Recorder {
        fn token_changed(&self, old: Option<&FileAccessToken>, new: Option<&FileAccessToken>) {
            let p = |t: Option<&FileAccessToken>| t.map(|t| t.principal().to_owned());
            self.0.lock().unwrap().push((p(old), p(new)));
        }
    }

    impl Recorder {
        pub(crate) fn attach(cell: &LoginCell) -> Arc<Self> {
            let recorder = Arc::new(Self::default());
            cell.subscribe(Arc::downgrade(&recorder) as Weak<dyn TokenListener>);
            recorder
        }

        pub(crate) fn seen(&self) -> Vec<(Option<String>, Option<String>)> {
            self.0.lock().unwrap().clone()
        }
    }

    #[test]
    fn listeners_hear_login_and_logout() {
        let cell = LoginCell::new();
        let recorder = Recorder::attach(&cell);
        cell.set(FileAccessToken::new(jwt(r#"{"sub":"a"}"#)).unwrap());
        cell.clear();
        cell.clear();
        assert_eq!(recorder.seen(), vec![(None, Some("sub:a".into())), (Some("sub:a".into()), None)]);
    }
}
