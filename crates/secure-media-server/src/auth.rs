//! The server's proofs of access: FATs (HS256 JWTs) and presigned URL signatures (HMAC-SHA256).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The claims of a FAT.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claims {
    pub(crate) sub: String,
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    pub(crate) app_id: String,
    /// Unique per login, so every login yields a new token.
    #[serde(default)]
    pub(crate) jti: String,
    /// The server's FAT generation at issue ([`Faults::expire_fats_now`] raises it): a token of
    /// an older generation is refused as expired. Absent in a token is generation 0.
    ///
    /// [`Faults::expire_fats_now`]: crate::Faults::expire_fats_now
    #[serde(default, rename = "gen")]
    pub(crate) generation: u64,
}

/// Why a FAT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FatRefusal {
    Expired,
    Invalid,
}

/// Why a presigned URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureRefusal {
    Expired,
    Invalid,
}

pub(crate) struct Keys {
    fat_encoding: EncodingKey,
    fat_decoding: DecodingKey,
    /// Keyed once; cloned per signature.
    url_mac: Hmac<Sha256>,
    pub(crate) key_pair_id: String,
    app_id: String,
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The longest lifetime the server gives a FAT or a presigned URL: the vendor's longest, one month
/// (30 days). Longer lifetimes, from the configuration or the fault knobs, are clamped to it.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

/// The unix second at which something issued at `now` for `ttl` expires: `ttl` is clamped to
/// [`MAX_TTL`] and the sum never overflows (`Duration::MAX` is a valid knob value).
pub(crate) fn expiry(now: SystemTime, ttl: Duration) -> u64 {
    let ttl = ttl.min(MAX_TTL);
    now.checked_add(ttl).map_or_else(|| unix(now).saturating_add(ttl.as_secs()), unix)
}

pub(crate) fn random_secret() -> Result<Vec<u8>, crate::ServerError> {
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|_| crate::ServerError::Entropy)?;
    Ok(key)
}

impl Keys {
    pub(crate) fn new(
        fat_secret: Vec<u8>,
        url_secret: Vec<u8>,
        key_pair_id: String,
        app_id: String,
    ) -> Result<Self, crate::ServerError> {
        let url_mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&url_secret).map_err(|_| crate::ServerError::Key)?;
        let fat_encoding = EncodingKey::from_secret(&fat_secret).map_err(|_| crate::ServerError::Key)?;
        let fat_decoding = DecodingKey::from_secret(&fat_secret).map_err(|_| crate::ServerError::Key)?;
        Ok(Self { fat_encoding, fat_decoding, url_mac, key_pair_id, app_id })
    }

    /// A FAT for `uid`, valid for `ttl` in FAT `generation` (see [`Claims::generation`]).
    pub(crate) fn issue_fat(
        &self,
        uid: &str,
        now: SystemTime,
        ttl: Duration,
        generation: u64,
    ) -> Result<(String, u64), crate::ServerError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|_| crate::ServerError::Entropy)?;
        let jti = base16ct::lower::encode_string(&nonce);
        let claims = Claims {
            sub: uid.to_owned(),
            iat: unix(now),
            exp: expiry(now, ttl),
            app_id: self.app_id.clone(),
            jti,
            generation,
        };
        let token =
            encode(&Header::new(Algorithm::HS256), &claims, &self.fat_encoding).map_err(|_| crate::ServerError::Key)?;
        Ok((token, claims.exp))
    }

    /// Verifies signature, expiry (no leeway), app id, and that the token's generation is at
    /// least `oldest_generation`.
    pub(crate) fn verify_fat(
        &self,
        token: &str,
        now: SystemTime,
        oldest_generation: u64,
    ) -> Result<Claims, FatRefusal> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked below against our clock, without leeway
        validation.required_spec_claims.clear();
        let data = decode::<Claims>(token, &self.fat_decoding, &validation).map_err(|_| FatRefusal::Invalid)?;
        if data.claims.app_id != self.app_id {
            return Err(FatRefusal::Invalid);
        }
        if data.claims.exp <= unix(now) || data.claims.generation < oldest_generation {
            return Err(FatRefusal::Expired);
        }
        Ok(data.claims)
    }

    fn url_mac(&self, method: &str, path: &str, expires: u64) -> Hmac<Sha256> {
        let mut mac = self.url_mac.clone();
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// `Signature` for a GET of `path` until `expires` (base64url, no padding). `path` is the
    /// path exactly as it goes on the wire, percent-encoding included (see [`crate`] docs).
    pub(crate) fn sign_url(&self, path: &str, expires: u64) -> String {
        let tag = self.url_mac("GET", path, expires).finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    }

    /// Checks a presigned URL's parameters in constant time. `path` is the request's path as it
    /// arrived, not decoded, so it is the same text [`Keys::sign_url`] signed.
    pub(crate) fn verify_url(
        &self,
        path: &str,
        expires: Option<&str>,
        signature: Option<&str>,
        key_pair_id: Option<&str>,
        now: SystemTime,
    ) -> Result<(), SignatureRefusal> {
        let expires: u64 = expires.and_then(|e| e.parse().ok()).ok_or(SignatureRefusal::Invalid)?;
        if key_pair_id != Some(self.key_pair_id.as_str()) {
            return Err(SignatureRefusal::Invalid);
        }
        let signature = signature
            .and_then(|s| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok())
            .ok_or(SignatureRefusal::Invalid)?;
        self.url_mac("GET", path, expires).verify_slice(&signature).map_err(|_| SignatureRefusal::Invalid)?;
        if expires <= unix(now) {
            return Err(SignatureRefusal::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new(b"fat-secret".to_vec(), b"url-secret".to_vec(), "KID".into(), "demo".into()).unwrap()
    }

    #[test]
    fn fats_verify_and_expire() {
        let k = keys();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (fat, exp) = k.issue_fat("alice", now, Duration::from_secs(60), 0).unwrap();
        assert_eq!(exp, 1_000_060);
        assert_eq!(k.verify_fat(&fat, now, 0).unwrap().sub, "alice");
        assert_eq!(k.verify_fat(&fat, now + Duration::from_secs(60), 0).unwrap_err(), FatRefusal::Expired);
        let other = Keys::new(b"other".to_vec(), b"u".to_vec(), "KID".into(), "demo".into()).unwrap();
        assert_eq!(other.verify_fat(&fat, now, 0).unwrap_err(), FatRefusal::Invalid);
        let other_app = Keys::new(b"fat-secret".to_vec(), b"u".to_vec(), "KID".into(), "other".into()).unwrap();
        assert_eq!(other_app.verify_fat(&fat, now, 0).unwrap_err(), FatRefusal::Invalid);
    }

    #[test]
    fn fats_of_an_expired_generation_are_refused_within_the_same_second() {
        let k = keys();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (old, _) = k.issue_fat("alice", now, Duration::from_secs(60), 0).unwrap();
        let (new, _) = k.issue_fat("alice", now, Duration::from_secs(60), 1).unwrap();
        assert_eq!(k.verify_fat(&old, now, 1).unwrap_err(), FatRefusal::Expired);
        assert_eq!(k.verify_fat(&new, now, 1).unwrap().generation, 1);
        assert!(k.verify_fat(&new, now, 2).is_err());
        // A token without the claim (issued before it existed) is generation 0.
        let claims = serde_json::json!({"sub": "bob", "exp": 1_000_060, "iat": 1_000_000, "app_id": "demo"});
        let bare =
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"fat-secret").unwrap()).unwrap();
        assert_eq!(k.verify_fat(&bare, now, 0).unwrap().generation, 0);
        assert_eq!(k.verify_fat(&bare, now, 1).unwrap_err(), FatRefusal::Expired);
    }

    #[test]
    fn expiry_clamps_huge_lifetimes_to_a_month_without_overflow() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(expiry(now, Duration::ZERO), 1_000);
        assert_eq!(expiry(now, Duration::from_millis(1_500)), 1_001);
        assert_eq!(expiry(now, Duration::from_secs(60)), 1_060);
        assert_eq!(expiry(now, Duration::MAX), 1_000 + MAX_TTL.as_secs());
        assert_eq!(expiry(now, Duration::from_secs(u64::MAX)), 1_000 + MAX_TTL.as_secs());
        let (_, exp) = keys().issue_fat("alice", now, Duration::MAX, 0).unwrap();
        assert_eq!(exp, 1_000 + MAX_TTL.as_secs());
    }

    #[test]
    fn url_signatures_verify_expire_and_resist_tampering() {
        let k = keys();
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let sig = k.sign_url("/demo/media/a.png", 2_000);
        assert!(k.verify_url("/demo/media/a.png", Some("2000"), Some(&sig), Some("KID"), now).is_ok());
        let forever = k.sign_url("/demo/media/a.png", u64::MAX);
        assert!(k
            .verify_url("/demo/media/a.png", Some("18446744073709551615"), Some(&forever), Some("KID"), now)
            .is_ok());
        let late = UNIX_EPOCH + Duration::from_secs(2_000);
        assert_eq!(
            k.verify_url("/demo/media/a.png", Some("2000"), Some(&sig), Some("KID"), late),
            Err(SignatureRefusal::Expired)
        );
        for (path, exp, s, kid) in [
            ("/demo/media/b.png", "2000", sig.as_str(), "KID"),
            ("/demo/media/a.png", "2001", sig.as_str(), "KID"),
            ("/demo/media/a.png", "2000", "AAAA", "KID"),
            ("/demo/media/a.png", "2000", sig.as_str(), "OTHER"),
            ("/demo/media/a.png", "soon", sig.as_str(), "KID"),
            ("/demo/media/a.png", "-1", sig.as_str(), "KID"),
            ("/demo/media/a.png", "18446744073709551616", sig.as_str(), "KID"),
            ("/demo/media/a.png", "", sig.as_str(), "KID"),
        ] {
            assert_eq!(k.verify_url(path, Some(exp), Some(s), Some(kid), now), Err(SignatureRefusal::Invalid));
        }
    }
}
