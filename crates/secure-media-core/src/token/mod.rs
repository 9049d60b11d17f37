//! The File Access Token and where it comes from: [`FileAccessToken`] (the secret), the
//! [`TokenSource`]s that hand it out ([`StaticToken`], the app-fed [`LoginCell`]) and the
//! [`TokenListener`]s told when it changes.

mod listener;
mod login;
mod secret;
mod source;

pub use listener::TokenListener;
pub use login::LoginCell;
pub use secret::{FileAccessToken, CLOCK_SKEW_ALLOWANCE};
pub use source::{StaticToken, TokenRef, TokenSource};

/// The helpers other modules' tests share.
#[cfg(test)]
pub(crate) mod tests {
    pub(crate) use super::login::tests::{cell_with_hook, start, Hook};
    pub(crate) use super::secret::tests::jwt;
}
