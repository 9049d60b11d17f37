//! When does a signed URL stop working? Read from the URL itself.

use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};
use url::Url;

use super::endpoint::{saturating_add, unix_secs, MAX_UNIX_SECS};

/// The expiry a signed URL carries, the earliest of: CloudFront's `Expires=<unix seconds>`,
/// S3's `X-Amz-Date` + `X-Amz-Expires`, and Azure's `se=<ISO 8601>`. `None` when it has none.
/// Never panics: values that are not numbers are ignored, and times past year 9999 (say
/// `Expires=9223372036854775808` or a huge `X-Amz-Expires`) are read as 9999.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use secure_media_core::presigned::expiry_of;
///
/// let url = url::Url::parse("https://media-us.cometchat.io/a.png?Expires=1700000000&Signature=x&Key-Pair-Id=k").unwrap();
/// assert_eq!(expiry_of(&url), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
/// ```
pub fn expiry_of(url: &Url) -> Option<SystemTime> {
    let (mut expires, mut amz_date, mut amz_expires, mut azure) = (None, None, None, None);
    for (name, value) in url.query_pairs() {
        match &*name {
            "Expires" => expires = value.parse::<u64>().ok().map(unix_secs),
            "X-Amz-Date" => amz_date = parse_compact_utc(&value),
            "X-Amz-Expires" => amz_expires = value.parse::<u64>().ok().map(Duration::from_secs),
            "se" => azure = parse_iso_utc(&value),
            _ => {}
        }
    }
    let amz = amz_date.zip(amz_expires).map(|(date, ttl)| saturating_add(date, ttl).min(unix_secs(MAX_UNIX_SECS)));
    [expires, amz, azure].into_iter().flatten().min()
}

/// S3's `X-Amz-Date`: ISO 8601 basic, `20261128T101500Z`.
fn parse_compact_utc(text: &str) -> Option<SystemTime> {
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    after_epoch(PrimitiveDateTime::parse(text, format).ok()?.assume_utc())
}

/// Azure's `se`: RFC 3339 (`2026-11-28T10:15:00Z`), or a date alone (`2026-11-28`, midnight UTC).
fn parse_iso_utc(text: &str) -> Option<SystemTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return after_epoch(at);
    }
    let date = Date::parse(text, format_description!("[year]-[month]-[day]")).ok()?;
    after_epoch(date.midnight().assume_utc())
}

/// An instant as a `SystemTime`: `None` before the epoch, clamped at year 9999.
fn after_epoch(at: OffsetDateTime) -> Option<SystemTime> {
    u64::try_from(at.unix_timestamp()).ok().map(unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn cloudfront_expires() {
        let url = Url::parse("https://m.io/a?Expires=1764324900&Signature=s&Key-Pair-Id=k").unwrap();
        assert_eq!(expiry_of(&url), Some(at(1_764_324_900)));
    }

    #[test]
    fn s3_date_plus_expires() {
        // 2026-11-28T10:15:00Z = 1795860900
        let url = Url::parse("https://m.io/a?X-Amz-Date=20261128T101500Z&X-Amz-Expires=900&X-Amz-Signature=s").unwrap();
        assert_eq!(expiry_of(&url), Some(at(1_795_860_900 + 900)));
    }

    #[test]
    fn azure_se() {
        let url = Url::parse("https://m.io/a?se=2026-11-28T10:15:00Z&sig=s").unwrap();
        assert_eq!(expiry_of(&url), Some(at(1_795_860_900)));
        let url = Url::parse("https://m.io/a?se=1970-01-02&sig=s").unwrap();
        assert_eq!(expiry_of(&url), Some(at(86_400)));
    }

    #[test]
    fn earliest_wins_and_garbage_is_ignored() {
        let url = Url::parse("https://m.io/a?Expires=2000000000&se=2026-11-28T10:15:00Z").unwrap();
        assert_eq!(expiry_of(&url), Some(at(1_795_860_900)));
        for bad in [
            "https://m.io/a",
            "https://m.io/a?Expires=soon",
            "https://m.io/a?se=2026-13-01",
            "https://m.io/a?X-Amz-Date=2026&X-Amz-Expires=9",
        ] {
            assert_eq!(expiry_of(&Url::parse(bad).unwrap()), None, "{bad}");
        }
    }

    #[test]
    fn huge_expiries_are_clamped_not_a_panic() {
        let far = unix_secs(MAX_UNIX_SECS);
        for url in [
            "https://m.io/a?Expires=9223372036854775808&Signature=s",
            "https://m.io/a?Expires=18446744073709551615",
            "https://m.io/a?X-Amz-Date=20261128T101500Z&X-Amz-Expires=18446744073709551615",
            "https://m.io/a?X-Amz-Date=99991231T235959Z&X-Amz-Expires=9999999999",
        ] {
            assert_eq!(expiry_of(&Url::parse(url).unwrap()), Some(far), "{url}");
        }
        // Zero and negative lifetimes: the epoch (already expired), or ignored when not a number.
        assert_eq!(expiry_of(&Url::parse("https://m.io/a?Expires=0").unwrap()), Some(UNIX_EPOCH));
        assert_eq!(expiry_of(&Url::parse("https://m.io/a?Expires=-5").unwrap()), None);
        let amz = Url::parse("https://m.io/a?X-Amz-Date=20261128T101500Z&X-Amz-Expires=-900").unwrap();
        assert_eq!(expiry_of(&amz), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Any query, made of the names we read and arbitrary values, gives an expiry or none,
        /// never a panic, and never one past year 9999.
        #[test]
        fn expiry_of_never_panics_on_arbitrary_values(
            pairs in proptest::collection::vec(
                (
                    prop_oneof![Just("Expires"), Just("X-Amz-Date"), Just("X-Amz-Expires"), Just("se"), Just("x")],
                    prop_oneof![
                        any::<u64>().prop_map(|n| n.to_string()),
                        any::<i64>().prop_map(|n| n.to_string()),
                        "[0-9]{8}T[0-9]{6}Z",
                        "[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)?",
                        ".{0,24}",
                    ],
                ),
                0..6,
            )
        ) {
            let mut url = Url::parse("https://m.io/a").unwrap();
            url.query_pairs_mut().extend_pairs(pairs);
            if let Some(at) = expiry_of(&url) {
                prop_assert!(at <= unix_secs(MAX_UNIX_SECS));
                let _ = saturating_add(at, Duration::MAX);
            }
        }

        /// The same for a raw query string, as an endpoint or a cache may hand one over.
        #[test]
        fn expiry_of_never_panics_on_arbitrary_queries(query in ".{0,80}") {
            if let Ok(url) = Url::parse(&format!("https://m.io/a?{query}")) {
                let _ = expiry_of(&url);
            }
        }
    }
}
