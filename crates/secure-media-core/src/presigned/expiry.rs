//! When does a signed URL stop working? Read from the URL itself.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use url::Url;

/// The expiry a signed URL carries, the earliest of: CloudFront's `Expires=<unix seconds>`,
/// S3's `X-Amz-Date` + `X-Amz-Expires`, and Azure's `se=<ISO 8601>`. `None` when it has none.
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
            "Expires" => expires = value.parse::<u64>().ok().map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            "X-Amz-Date" => amz_date = parse_compact_utc(&value),
            "X-Amz-Expires" => amz_expires = value.parse::<u64>().ok().map(Duration::from_secs),
            "se" => azure = parse_iso_utc(&value),
            _ => {}
        }
    }
    let amz = amz_date.zip(amz_expires).map(|(date, ttl)| date + ttl);
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
    u64::try_from(secs).ok().map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
