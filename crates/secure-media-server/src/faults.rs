//! Fault knobs for tests: delays, injected failures, dropped connections, answers cut off
//! mid-body, short lifetimes, every FAT expired at once, cross-origin redirects and malformed
//! presign answers. Set them through [`RunningServer::faults`](crate::RunningServer::faults) or,
//! when [`ServerConfig::control`](crate::ServerConfig::control) is on, `POST /_control`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The routes faults apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// `POST /v1/auth/login`
    Login,
    /// `GET /{app_id}/media/{*path}`
    Media,
    /// `POST /v1/media/presign`
    Presign,
}

impl Route {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
struct RouteFaults {
    delay: Duration,
    fail_next: u32,
    fail_status: Option<StatusCode>,
    drop_next: u32,
    cut_body_next: u32,
}

#[derive(Debug, Default)]
struct State {
    routes: [RouteFaults; 3],
    fat_ttl: Option<Duration>,
    url_ttl: Option<Duration>,
    redirect_to: Option<String>,
    redirect_keeps_query: bool,
    moved: Option<(String, String)>,
    malformed_presign_next: u32,
    oversized_presign_next: u64,
}

/// What to do with one request, decided when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Injected {
    Fail(StatusCode),
    Drop,
    /// Send the real answer's head (with its `Content-Length`) and half its body, then close.
    CutBody,
}

/// The fault knobs of one running server.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
    /// Oversized answers started, and the bytes of them that reached a client.
    oversized_answers: AtomicU64,
    oversized_bytes_sent: Arc<AtomicU64>,
    /// Stamped into every FAT issued; a FAT stamped lower is refused. Raised by
    /// [`Faults::expire_fats_now`], never lowered: a FAT once expired stays expired.
    fat_generation: AtomicU64,
}

impl Faults {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Delays every request of `route` by `by` (zero to stop), on a timer precise to about
    /// 0.2 ms (async-io's timerfd, not tokio's millisecond ticks).
    pub fn delay(&self, route: Route, by: Duration) {
        self.with(|s| s.routes[route.index()].delay = by);
    }

    /// Answers the next `count` requests of `route` with `status`.
    pub fn fail_next(&self, route: Route, count: u32, status: StatusCode) {
        self.with(|s| {
            let r = &mut s.routes[route.index()];
            r.fail_next = count;
            r.fail_status = Some(status);
        });
    }

    /// Drops the connection of the next `count` requests of `route` mid-response.
    pub fn drop_next(&self, route: Route, count: u32) {
        self.with(|s| s.routes[route.index()].drop_next = count);
    }

    /// Cuts off the answer to the next `count` requests of `route` mid-body: the real answer's
    /// head goes out with its `Content-Length`, then half of its body, then the connection
    /// closes. A client must report an error, never the half as the whole.
    pub fn cut_body_next(&self, route: Route, count: u32) {
        self.with(|s| s.routes[route.index()].cut_body_next = count);
    }

    /// FATs issued from now on live `ttl`, at most [`MAX_TTL`](crate::MAX_TTL) (`Duration::MAX`
    /// is clamped, not an overflow).
    pub fn set_fat_ttl(&self, ttl: Duration) {
        self.with(|s| s.fat_ttl = Some(ttl));
    }

    /// Presigned URLs issued from now on live `ttl`, at most [`MAX_TTL`](crate::MAX_TTL)
    /// (`Duration::MAX` is clamped, not an overflow).
    pub fn set_url_ttl(&self, ttl: Duration) {
        self.with(|s| s.url_ttl = Some(ttl));
    }

    /// Expires every FAT issued so far, now: from this call on, each is refused with a 401 as
    /// expired (`Refusals::expired_fat`) on the media route (`?fat=` and `Authorization: Bearer`)
    /// and at the presign endpoint, while FATs from logins after the call work. Tokens carry the
    /// generation they were issued in (the `gen` claim) and this raises the server's, so a token
    /// issued in the same second but after the call is not caught. [`Faults::reset`] does not
    /// bring expired FATs back.
    ///
    /// Presigned URLs signed before the call stay valid until their own `Expires`, as at a CDN,
    /// which checks a URL's signature and knows nothing of FATs; so do SigV4 URLs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use secure_media_server::{ReferenceServer, ServerConfig};
    ///
    /// let server = ReferenceServer::start(ServerConfig::default()).await?;
    /// let (client, image) = (reqwest::Client::new(), server.gallery_url(0));
    /// let before = server.login("alice")?.fat;
    /// server.faults().expire_fats_now();
    /// assert_eq!(client.get(&image).bearer_auth(&before).send().await?.status(), 401);
    /// let after = server.login("alice")?.fat;
    /// assert_eq!(client.get(&image).bearer_auth(&after).send().await?.status(), 200);
    /// # Ok(())
    /// # }
    /// ```
    pub fn expire_fats_now(&self) {
        self.fat_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Answers media requests with `302 Location: <origin><path>` (and the original query when
    /// `keep_query`, as some storage redirectors do); `None` stops.
    pub fn redirect_media_to(&self, origin: Option<String>, keep_query: bool) {
        self.with(|s| {
            s.redirect_to = origin.map(|o| o.trim_end_matches('/').to_owned());
            s.redirect_keeps_query = keep_query;
        });
    }

    /// Answers media requests for the file `from` with `302 Location: <to>` on the same host, a
    /// path relative to the server with no query (so a `?fat=` is lost on the way, as it is with
    /// real storage redirects); `None` stops.
    pub fn move_media(&self, moved: Option<(&str, &str)>) {
        self.with(|s| s.moved = moved.map(|(from, to)| (from.to_owned(), to.to_owned())));
    }

    /// Answers the next presign call with a body of `bytes` spaces, streamed in chunks with no
    /// `Content-Length` (a client must cap what it reads); `0` stops.
    pub fn oversized_presign_next(&self, bytes: u64) {
        self.with(|s| s.oversized_presign_next = bytes);
    }

    /// Oversized presign answers started, and the bytes of them the clients read.
    pub fn oversized_sent(&self) -> (u64, u64) {
        (self.oversized_answers.load(Ordering::Relaxed), self.oversized_bytes_sent.load(Ordering::Relaxed))
    }

    /// Answers the next `count` presign calls with malformed JSON.
    pub fn malformed_presign_next(&self, count: u32) {
        self.with(|s| s.malformed_presign_next = count);
    }

    /// Clears every fault. FATs expired by [`Faults::expire_fats_now`] stay expired.
    pub fn reset(&self) {
        self.with(|s| *s = State::default());
    }

    /// The generation FATs issued now carry, and the lowest one accepted.
    pub(crate) fn fat_generation(&self) -> u64 {
        self.fat_generation.load(Ordering::SeqCst)
    }

    pub(crate) fn delay_of(&self, route: Route) -> Duration {
        self.with(|s| s.routes[route.index()].delay)
    }

    pub(crate) fn take_injected(&self, route: Route) -> Option<Injected> {
        self.with(|s| {
            let r = &mut s.routes[route.index()];
            if r.drop_next > 0 {
                r.drop_next -= 1;
                return Some(Injected::Drop);
            }
            if r.fail_next > 0 {
                r.fail_next -= 1;
                return Some(Injected::Fail(r.fail_status.unwrap_or(StatusCode::SERVICE_UNAVAILABLE)));
            }
            if r.cut_body_next > 0 {
                r.cut_body_next -= 1;
                return Some(Injected::CutBody);
            }
            None
        })
    }

    pub(crate) fn fat_ttl(&self) -> Option<Duration> {
        self.with(|s| s.fat_ttl)
    }

    pub(crate) fn url_ttl(&self) -> Option<Duration> {
        self.with(|s| s.url_ttl)
    }

    /// The same-host location for a media `path`, when its file was moved.
    pub(crate) fn moved_location(&self, path: &str) -> Option<String> {
        self.with(|s| {
            let (from, to) = s.moved.as_ref()?;
            let dir = path.strip_suffix(from.as_str())?.strip_suffix('/')?;
            Some(format!("{dir}/{to}"))
        })
    }

    pub(crate) fn redirect(&self) -> Option<(String, bool)> {
        self.with(|s| s.redirect_to.clone().map(|o| (o, s.redirect_keeps_query)))
    }

    /// The oversized answer to send now, if one was asked for: the bytes to stream, and the
    /// counter they are added to as the client reads them.
    pub(crate) fn take_oversized_presign(&self) -> Option<(u64, Arc<AtomicU64>)> {
        let bytes = self.with(|s| std::mem::take(&mut s.oversized_presign_next));
        (bytes > 0).then(|| {
            self.oversized_answers.fetch_add(1, Ordering::Relaxed);
            (bytes, self.oversized_bytes_sent.clone())
        })
    }

    pub(crate) fn take_malformed_presign(&self) -> bool {
        self.with(|s| {
            let hit = s.malformed_presign_next > 0;
            s.malformed_presign_next = s.malformed_presign_next.saturating_sub(1);
            hit
        })
    }

    /// Applies a `POST /_control` body.
    pub(crate) fn apply(&self, control: &Control) -> Result<(), &'static str> {
        if control.reset {
            self.reset();
        }
        if let Some(route) = control.route {
            if let Some(ms) = control.delay_ms {
                self.delay(route, Duration::from_millis(ms));
            }
            if let Some(count) = control.fail_next {
                let status =
                    StatusCode::from_u16(control.status.unwrap_or(503)).map_err(|_| "status is not an HTTP status")?;
                self.fail_next(route, count, status);
            }
            if let Some(count) = control.drop_next {
                self.drop_next(route, count);
            }
            if let Some(count) = control.cut_body_next {
                self.cut_body_next(route, count);
            }
        } else if control.delay_ms.is_some()
            || control.fail_next.is_some()
            || control.drop_next.is_some()
            || control.cut_body_next.is_some()
        {
            return Err("delay_ms, fail_next, drop_next and cut_body_next need a route (login, media or presign)");
        }
        if control.expire_fats {
            self.expire_fats_now();
        }
        if let Some(secs) = control.fat_ttl_secs {
            self.set_fat_ttl(Duration::from_secs(secs));
        }
        if let Some(secs) = control.url_ttl_secs {
            self.set_url_ttl(Duration::from_secs(secs));
        }
        if let Some(target) = &control.redirect_to {
            let origin = (!target.is_empty()).then(|| target.clone());
            self.redirect_media_to(origin, control.redirect_keeps_query.unwrap_or(true));
        }
        if let Some(count) = control.malformed_presign_next {
            self.malformed_presign_next(count);
        }
        Ok(())
    }

    #[cfg(test)]
    fn routes_clear(&self) -> bool {
        self.with(|s| s.routes.iter().all(|r| r.fail_next == 0))
    }
}

/// The body of `POST /_control` (served only when
/// [`ServerConfig::control`](crate::ServerConfig::control) is on); every field optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Control {
    /// Clear every fault first.
    pub reset: bool,
    /// The route for `delay_ms`, `fail_next`, `drop_next` and `cut_body_next`.
    pub route: Option<Route>,
    /// Delay in milliseconds.
    pub delay_ms: Option<u64>,
    /// Fail the next N requests...
    pub fail_next: Option<u32>,
    /// ...with this status (default 503).
    pub status: Option<u16>,
    /// Drop the connection of the next N requests.
    pub drop_next: Option<u32>,
    /// Cut off the answers to the next N requests mid-body (head and half the body, then close).
    pub cut_body_next: Option<u32>,
    /// Expire every FAT issued so far ([`Faults::expire_fats_now`]); logins after it work.
    pub expire_fats: bool,
    /// FAT lifetime in seconds for FATs issued from now on, at most [`MAX_TTL`](crate::MAX_TTL).
    pub fat_ttl_secs: Option<u64>,
    /// Presigned URL lifetime in seconds for URLs issued from now on, at most
    /// [`MAX_TTL`](crate::MAX_TTL).
    pub url_ttl_secs: Option<u64>,
    /// Redirect media to this origin; `""` stops.
    pub redirect_to: Option<String>,
    /// Whether the redirect keeps the original query (default true).
    pub redirect_keeps_query: Option<bool>,
    /// Answer the next N presign calls with malformed JSON.
    pub malformed_presign_next: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_next_counts_down() {
        let faults = Faults::default();
        faults.fail_next(Route::Media, 2, StatusCode::BAD_GATEWAY);
        assert_eq!(faults.take_injected(Route::Media), Some(Injected::Fail(StatusCode::BAD_GATEWAY)));
        assert_eq!(faults.take_injected(Route::Login), None);
        assert_eq!(faults.take_injected(Route::Media), Some(Injected::Fail(StatusCode::BAD_GATEWAY)));
        assert_eq!(faults.take_injected(Route::Media), None);
        assert!(faults.routes_clear());
    }

    #[test]
    fn control_needs_a_route_for_route_faults() {
        let faults = Faults::default();
        assert!(faults.apply(&Control { fail_next: Some(1), ..Control::default() }).is_err());
        assert!(faults
            .apply(&Control { route: Some(Route::Presign), fail_next: Some(1), status: Some(99), ..Control::default() })
            .is_err());
        faults.apply(&Control { route: Some(Route::Presign), drop_next: Some(1), ..Control::default() }).unwrap();
        assert_eq!(faults.take_injected(Route::Presign), Some(Injected::Drop));
        assert!(faults.apply(&Control { cut_body_next: Some(1), ..Control::default() }).is_err());
        faults.apply(&Control { route: Some(Route::Media), cut_body_next: Some(1), ..Control::default() }).unwrap();
        assert_eq!(faults.take_injected(Route::Media), Some(Injected::CutBody));
        assert_eq!(faults.take_injected(Route::Media), None);
    }

    #[test]
    fn expired_fats_stay_expired_through_a_reset() {
        let faults = Faults::default();
        assert_eq!(faults.fat_generation(), 0);
        faults.expire_fats_now();
        faults.apply(&Control { expire_fats: true, ..Control::default() }).unwrap();
        assert_eq!(faults.fat_generation(), 2);
        faults.apply(&Control { reset: true, ..Control::default() }).unwrap();
        assert_eq!(faults.fat_generation(), 2);
    }
}
