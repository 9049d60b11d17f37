//! When does a signed URL stop working? Read from the URL itself.

use std::time::{Duration, SystemTime};

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

/// `20261128T101500Z`
fn parse_compact_utc(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    civil(num(0..4)?, num(4..6)?, num(6..8)?, num(9..11)?, num(11..13)?, num(13..15)?)
}

/// `2026-11-28T10:15:00Z` or `2026-11-28` (midnight UTC).
fn parse_iso_utc(text: &str) -> Option<SystemTime> {
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let b = text.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.len() == 10 {
        return civil(y, mo, d, 0, 0, 0);
    }
    if b.len() != 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return None;
    }
    civil(y, mo, d, num(11..13)?, num(14..16)?, num(17..19)?)
}

/// Seconds since the epoch of a UTC civil time (Howard Hinnant's days-from-civil).
fn civil(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<SystemTime> {
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    u64::try_from(secs).ok().map(unix_secs)
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
