//! [`redirect_policy`]: reqwest follows same-origin redirects; cross-origin ones come back to
//! the middleware.

use reqwest::redirect::Policy;

/// The redirect policy for clients that carry [`SecureMediaMiddleware`](crate::SecureMediaMiddleware):
/// reqwest itself follows only same-origin redirects (up to 10); a cross-origin redirect is
/// handed back so the middleware follows it with per-hop rules (a token never travels to another
/// origin, in a header or in the query).
pub fn redirect_policy() -> Policy {
    Policy::custom(|attempt| {
        if attempt.previous().len() > 10 {
            return attempt.error("too many redirects");
        }
        let same_origin = attempt.previous().last().is_some_and(|previous| previous.origin() == attempt.url().origin());
        if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}
