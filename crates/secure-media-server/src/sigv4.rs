//! AWS Signature Version 4 query-string authentication, S3's "presigned URL": the server's fourth
//! proof of access, checked as AWS documents it
//! (<https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html>).
//!
//! Only the verifier lives here. A client signs by the same published rules (see the crate docs),
//! so the two share nothing but the spec; the unit tests hold the verifier to AWS's own example.

use std::borrow::Cow;
use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, Method, Uri};
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use time::macros::format_description;
use time::PrimitiveDateTime;

/// The one algorithm S3 signs presigned URLs with.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of a presigned URL: the body is not signed.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// AWS's longest `X-Amz-Expires`: seven days.
const MAX_EXPIRES: u32 = 604_800;
/// How far `X-Amz-Date` may be ahead of the server's clock.
const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

const ALGORITHM_PARAM: &str = "X-Amz-Algorithm";
const CREDENTIAL: &str = "X-Amz-Credential";
const DATE: &str = "X-Amz-Date";
const EXPIRES: &str = "X-Amz-Expires";
const SIGNED_HEADERS: &str = "X-Amz-SignedHeaders";
pub(crate) const SIGNATURE: &str = "X-Amz-Signature";
/// A query with any of these claims to be SigV4 and is judged as such.
const PARAMETERS: [&str; 6] = [ALGORITHM_PARAM, CREDENTIAL, DATE, EXPIRES, SIGNED_HEADERS, SIGNATURE];

/// AWS's UriEncode: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`, hex in upper case.
const URI_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The S3 credentials SigV4 presigned URLs are checked against ([`ServerConfig::s3`]). `Debug`
/// shows the access key id and the region, never the secret.
///
/// ```
/// use secure_media_server::{S3Key, ServerConfig};
///
/// let key = S3Key {
///     access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
///     secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
///     region: "us-east-1".into(),
/// };
/// assert!(!format!("{key:?}").contains("wJalr"));
/// let config = ServerConfig { s3: Some(key), ..ServerConfig::https() };
/// # drop(config);
/// ```
///
/// [`ServerConfig::s3`]: crate::ServerConfig::s3
#[derive(Clone)]
pub struct S3Key {
    /// The access key id a URL's `X-Amz-Credential` must name (`AKIAIOSFODNN7EXAMPLE`).
    pub access_key_id: String,
    /// The secret access key signing keys are derived from.
    pub secret_access_key: String,
    /// The region a URL's `X-Amz-Credential` must name (`us-east-1`).
    pub region: String,
}

impl std::fmt::Debug for S3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Key")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// Why a SigV4 presigned URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sigv4Refusal {
    /// A piece is missing or malformed, names another key or region, or the signature does not
    /// match: what is wrong, without any secret or signature in it.
    Invalid(&'static str),
    /// Now is past `X-Amz-Date + X-Amz-Expires`.
    Expired,
    /// `X-Amz-Date` is more than 15 minutes ahead of the server's clock.
    NotYetValid,
}

use Sigv4Refusal::Invalid;

/// The parameters of a SigV4 presigned URL, parsed and checked for shape.
pub(crate) struct Presigned {
    access_key_id: String,
    /// The credential scope's date, `yyyymmdd`: the day of `X-Amz-Date`.
    scope_date: String,
    region: String,
    /// `X-Amz-Date` as sent, `yyyymmddThhmmssZ`.
    amz_date: String,
    /// `X-Amz-Date` in unix seconds.
    signed_at: i64,
    expires: u32,
    /// `X-Amz-SignedHeaders` as sent, checked to be canonical already.
    signed_headers: String,
    signature: [u8; 32],
    /// Every parameter but `X-Amz-Signature`, canonicalised.
    canonical_query: String,
}

/// Does the query claim SigV4 (any `X-Amz-` parameter of a presigned URL)?
pub(crate) fn is_sigv4(query: &str) -> bool {
    pairs(query).any(|(name, _)| PARAMETERS.iter().any(|p| p.as_bytes() == &*name))
}

/// Checks a presigned request against `key` at `now`: the signature first, so that only authentic
/// URLs count as expired or early.
pub(crate) fn verify(
    key: &S3Key,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(), Sigv4Refusal> {
    let presigned = parse(uri.query().unwrap_or(""))?;
    if presigned.access_key_id != key.access_key_id {
        return Err(Invalid("X-Amz-Credential names an access key id this server does not know"));
    }
    if presigned.region != key.region {
        return Err(Invalid("X-Amz-Credential names a region that is not the server's"));
    }
    let canonical_headers = canonical_headers(&presigned.signed_headers, headers, uri.authority())?;
    // S3 does not normalise the path: it is signed as it travels, percent-encoding and all.
    let request = canonical_request(
        method.as_str(),
        uri.path(),
        &presigned.canonical_query,
        &canonical_headers,
        &presigned.signed_headers,
        UNSIGNED_PAYLOAD,
    );
    let scope = credential_scope(&presigned.scope_date, &presigned.region);
    let to_sign = string_to_sign(&presigned.amz_date, &scope, &request);
    let signing_key = signing_key(&key.secret_access_key, &presigned.scope_date, &presigned.region)?;
    hmac(&signing_key, &to_sign)?
        .verify_slice(&presigned.signature)
        .map_err(|_| Invalid("the signature does not match the request"))?;
    let now = i64::try_from(crate::auth::unix(now)).map_err(|_| Invalid("the server's clock is out of range"))?;
    let expires_at =
        presigned.signed_at.checked_add(i64::from(presigned.expires)).ok_or(Invalid("X-Amz-Date is out of range"))?;
    if now > expires_at {
        return Err(Sigv4Refusal::Expired);
    }
    if presigned.signed_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(Sigv4Refusal::NotYetValid);
    }
    Ok(())
}

/// The query's `name=value` pairs, percent-decoded (`+` stays `+`: AWS encodes a space `%20`).
fn pairs(query: &str) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(name).into(), percent_decode_str(value).into())
    })
}

/// AWS's UriEncode of `bytes`.
fn uri_encode(bytes: &[u8]) -> String {
    percent_encode(bytes, URI_ENCODE).to_string()
}

/// Parses the SigV4 parameters of `query` and canonicalises it; never panics.
pub(crate) fn parse(query: &str) -> Result<Presigned, Sigv4Refusal> {
    let mut found: [Option<Cow<'_, [u8]>>; PARAMETERS.len()] = Default::default();
    let mut canonical = Vec::new();
    for (name, value) in pairs(query) {
        if let Some(slot) = PARAMETERS.iter().position(|p| p.as_bytes() == &*name).and_then(|i| found.get_mut(i)) {
            if slot.replace(value.clone()).is_some() {
                return Err(Invalid("each X-Amz- parameter may appear only once"));
            }
        }
        if *name != *SIGNATURE.as_bytes() {
            canonical.push((uri_encode(&name), uri_encode(&value)));
        }
    }
    // By name, then by value; byte order of the encoded text, as AWS sorts.
    canonical.sort_unstable();
    let canonical_query = canonical.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&");
    let [algorithm, credential, amz_date, expires, signed_headers, signature] =
        found.map(|value| value.and_then(|v| String::from_utf8(v.into_owned()).ok()));

    if algorithm.as_deref() != Some(ALGORITHM) {
        return Err(Invalid("X-Amz-Algorithm must be AWS4-HMAC-SHA256"));
    }
    let credential = credential
        .ok_or(Invalid("X-Amz-Credential is missing: <access key id>/<yyyymmdd>/<region>/s3/aws4_request"))?;
    let (access_key_id, scope_date, region) = parse_credential(&credential)?;
    let amz_date = amz_date.ok_or(Invalid("X-Amz-Date is missing: yyyymmddThhmmssZ"))?;
    let signed_at = parse_amz_date(&amz_date)?;
    if amz_date.get(..8) != Some(scope_date) {
        return Err(Invalid("the date in X-Amz-Credential must be the day of X-Amz-Date"));
    }
    let expires = expires
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|e| e.parse::<u32>().ok())
        .filter(|e| (1..=MAX_EXPIRES).contains(e))
        .ok_or(Invalid("X-Amz-Expires must be whole seconds from 1 to 604800"))?;
    let signed_headers = signed_headers.filter(|h| is_canonical_header_list(h)).ok_or(Invalid(
        "X-Amz-SignedHeaders must be lowercase header names, sorted, separated by ';', including host",
    ))?;
    let mut bytes = [0u8; 32];
    let decoded = signature.as_deref().and_then(|s| base16ct::lower::decode(s, &mut bytes).ok()).map(<[u8]>::len);
    if decoded != Some(bytes.len()) {
        return Err(Invalid("X-Amz-Signature must be 64 lowercase hex digits"));
    }
    Ok(Presigned {
        access_key_id: access_key_id.to_owned(),
        scope_date: scope_date.to_owned(),
        region: region.to_owned(),
        amz_date,
        signed_at,
        expires,
        signed_headers,
        signature: bytes,
        canonical_query,
    })
}

/// `<access key id>/<yyyymmdd>/<region>/s3/aws4_request` -> (key id, date, region).
fn parse_credential(credential: &str) -> Result<(&str, &str, &str), Sigv4Refusal> {
    let malformed = Invalid("X-Amz-Credential must be <access key id>/<yyyymmdd>/<region>/s3/aws4_request");
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key_id, date, region, "s3", "aws4_request"] if !key_id.is_empty() && !region.is_empty() && date.len() == 8 => {
            Ok((key_id, date, region))
        }
        _ => Err(malformed),
    }
}

/// `yyyymmddThhmmssZ` (UTC) -> unix seconds.
fn parse_amz_date(text: &str) -> Result<i64, Sigv4Refusal> {
    let malformed = Invalid("X-Amz-Date must be a UTC time as yyyymmddThhmmssZ");
    // The format takes exactly two digits a field, four for the year, and nothing after `Z`; but
    // `[year]` also takes a sign before its digits (`+2013`), which AWS's format has not.
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(malformed);
    }
    let format = format_description!("[year][month][day]T[hour][minute][second]Z");
    PrimitiveDateTime::parse(text, format).map(|t| t.assume_utc().unix_timestamp()).map_err(|_| malformed)
}

/// Lowercase header names, strictly ascending (sorted, no repeats), `;`-separated, with `host`.
fn is_canonical_header_list(list: &str) -> bool {
    let names: Vec<&str> = list.split(';').collect();
    names.iter().all(|n| HeaderName::from_bytes(n.as_bytes()).is_ok_and(|h| h.as_str() == *n))
        && names.windows(2).all(|pair| pair.first() < pair.last())
        && names.contains(&"host")
}

/// `name:value\n` for each signed header, in the order of `signed` (already sorted). A value is
/// trimmed, its runs of whitespace made one space; several values of one header are joined by
/// `,`. `host` falls back to the request's authority (HTTP/2 sends no `Host`).
fn canonical_headers(
    signed: &str,
    headers: &HeaderMap,
    authority: Option<&http::uri::Authority>,
) -> Result<String, Sigv4Refusal> {
    let mut out = String::new();
    for name in signed.split(';') {
        let mut values = Vec::new();
        for value in headers.get_all(name) {
            let value =
                std::str::from_utf8(value.as_bytes()).map_err(|_| Invalid("a signed header's value is not UTF-8"))?;
            values.push(value.split_ascii_whitespace().collect::<Vec<_>>().join(" "));
        }
        if values.is_empty() {
            match authority {
                Some(authority) if name == "host" => values.push(authority.as_str().to_owned()),
                _ => return Err(Invalid("a header named in X-Amz-SignedHeaders is missing from the request")),
            }
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// `<credential date>/<region>/s3/aws4_request`.
fn credential_scope(date: &str, region: &str) -> String {
    format!("{date}/{region}/s3/aws4_request")
}

/// The canonical request. `canonical_headers` ends each header with `\n`, hence the blank line.
fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!("{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    let hash = base16ct::lower::encode_string(&Sha256::digest(canonical_request.as_bytes()));
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{hash}")
}

fn hmac(key: &[u8], data: &str) -> Result<Hmac<Sha256>, Sigv4Refusal> {
    let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| Invalid("the signing key is unusable"))?;
    Ok(mac.chain_update(data.as_bytes()))
}

/// HMAC chain `"AWS4" + secret` -> date -> region -> `s3` -> `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str) -> Result<Vec<u8>, Sigv4Refusal> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [date, region, "s3", "aws4_request"] {
        key = hmac(&key, part)?.finalize().into_bytes().to_vec();
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    /// AWS's example: a presigned GET of `examplebucket`/`test.txt`, 2013-05-24, for a day.
    const AWS_QUERY: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const AWS_HOST: &str = "examplebucket.s3.amazonaws.com";
    /// 2013-05-24T00:00:00Z.
    const AWS_SIGNED_AT: u64 = 1_369_353_600;

    fn aws_key() -> S3Key {
        S3Key {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: AWS_SECRET.into(),
            region: "us-east-1".into(),
        }
    }

    fn host(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, value.parse().unwrap());
        headers
    }

    /// `secs` after the epoch, or the latest time the platform has.
    fn at(secs: u64) -> SystemTime {
        (0..u64::BITS)
            .find_map(|shift| UNIX_EPOCH.checked_add(Duration::from_secs(secs >> shift)))
            .unwrap_or(UNIX_EPOCH)
    }

    /// `query` with the signature the AWS example key gives a GET of `/test.txt` from AWS_HOST:
    /// the verifier's own functions, to reach the checks that follow a good signature.
    fn signed(query: &str) -> String {
        let parsed = parse(&format!("{query}&X-Amz-Signature={}", "0".repeat(64))).unwrap();
        let headers = canonical_headers(&parsed.signed_headers, &host(AWS_HOST), None).unwrap();
        let request = canonical_request(
            "GET",
            "/test.txt",
            &parsed.canonical_query,
            &headers,
            &parsed.signed_headers,
            UNSIGNED_PAYLOAD,
        );
        let scope = credential_scope(&parsed.scope_date, &parsed.region);
        let key = signing_key(AWS_SECRET, &parsed.scope_date, &parsed.region).unwrap();
        let tag = hmac(&key, &string_to_sign(&parsed.amz_date, &scope, &request)).unwrap().finalize();
        format!("{query}&X-Amz-Signature={}", base16ct::lower::encode_string(&tag.into_bytes()))
    }

    fn verify_aws(query: &str, now: SystemTime) -> Result<(), Sigv4Refusal> {
        let uri: Uri = format!("/test.txt?{query}").parse().unwrap();
        verify(&aws_key(), &Method::GET, &uri, &host(AWS_HOST), now)
    }

    #[test]
    fn the_aws_documented_presigned_url_example_canonicalises_and_signs_as_aws_says() {
        let presigned = parse(AWS_QUERY).unwrap();
        assert_eq!(presigned.signed_at, i64::try_from(AWS_SIGNED_AT).unwrap());
        assert_eq!(
            presigned.canonical_query,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        );
        let headers = canonical_headers(&presigned.signed_headers, &host(AWS_HOST), None).unwrap();
        assert_eq!(headers, "host:examplebucket.s3.amazonaws.com\n");
        let request =
            canonical_request("GET", "/test.txt", &presigned.canonical_query, &headers, "host", UNSIGNED_PAYLOAD);
        assert_eq!(
            request,
            "GET\n/test.txt\n\
             X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\n\
             host:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        let to_sign = string_to_sign("20130524T000000Z", &credential_scope("20130524", "us-east-1"), &request);
        assert_eq!(
            to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
        );
        let key = signing_key(AWS_SECRET, "20130524", "us-east-1").unwrap();
        let signature = hmac(&key, &to_sign).unwrap().finalize().into_bytes();
        assert_eq!(
            base16ct::lower::encode_string(&signature),
            "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn the_aws_example_verifies_for_its_day_and_no_longer() {
        assert_eq!(verify_aws(AWS_QUERY, at(AWS_SIGNED_AT)), Ok(()));
        // Parameter order on the wire does not matter: the canonical query is sorted.
        let shuffled: Vec<&str> = AWS_QUERY.split('&').rev().collect();
        assert_eq!(verify_aws(&shuffled.join("&"), at(AWS_SIGNED_AT)), Ok(()));
        // `/` in the credential may travel unencoded in a query; it canonicalises to %2F.
        assert_eq!(verify_aws(&AWS_QUERY.replace("%2F", "/"), at(AWS_SIGNED_AT)), Ok(()));
        assert_eq!(verify_aws(AWS_QUERY, at(AWS_SIGNED_AT + 86_400)), Ok(()));
        assert_eq!(verify_aws(AWS_QUERY, at(AWS_SIGNED_AT + 86_401)), Err(Sigv4Refusal::Expired));
        assert_eq!(verify_aws(AWS_QUERY, at(AWS_SIGNED_AT - 900)), Ok(()));
        assert_eq!(verify_aws(AWS_QUERY, at(AWS_SIGNED_AT - 901)), Err(Sigv4Refusal::NotYetValid));
        // Another host, method or path is another request.
        let uri: Uri = format!("/test.txt?{AWS_QUERY}").parse().unwrap();
        let now = at(AWS_SIGNED_AT);
        assert!(matches!(verify(&aws_key(), &Method::GET, &uri, &host("other.example"), now), Err(Invalid(_))));
        assert!(matches!(verify(&aws_key(), &Method::HEAD, &uri, &host(AWS_HOST), now), Err(Invalid(_))));
        let other: Uri = format!("/test.txt2?{AWS_QUERY}").parse().unwrap();
        assert!(matches!(verify(&aws_key(), &Method::GET, &other, &host(AWS_HOST), now), Err(Invalid(_))));
        // No Host header: the authority stands in for it.
        let absolute: Uri = format!("https://{AWS_HOST}/test.txt?{AWS_QUERY}").parse().unwrap();
        assert_eq!(verify(&aws_key(), &Method::GET, &absolute, &HeaderMap::new(), now), Ok(()));
        let wrong_key = S3Key { access_key_id: "AKIAOTHER".into(), ..aws_key() };
        assert!(matches!(verify(&wrong_key, &Method::GET, &uri, &host(AWS_HOST), now), Err(Invalid(_))));
        let wrong_secret = S3Key { secret_access_key: "not it".into(), ..aws_key() };
        assert!(matches!(verify(&wrong_secret, &Method::GET, &uri, &host(AWS_HOST), now), Err(Invalid(_))));
        let wrong_region = S3Key { region: "eu-west-1".into(), ..aws_key() };
        assert!(matches!(verify(&wrong_region, &Method::GET, &uri, &host(AWS_HOST), now), Err(Invalid(_))));
    }

    #[test]
    fn the_aws_documented_header_example_canonicalises_several_signed_headers() {
        // AWS's GET Object example (header authentication): same canonical headers rules, with
        // a trailing space in `Range` and the empty body's hash in place of UNSIGNED-PAYLOAD.
        let mut headers = host(AWS_HOST);
        headers.insert(http::header::RANGE, "bytes=0-9 ".parse().unwrap());
        headers.insert(
            "x-amz-content-sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse().unwrap(),
        );
        headers.insert("x-amz-date", "20130524T000000Z".parse().unwrap());
        let signed = "host;range;x-amz-content-sha256;x-amz-date";
        assert!(is_canonical_header_list(signed));
        let canonical = canonical_headers(signed, &headers, None).unwrap();
        let request = canonical_request(
            "GET",
            "/test.txt",
            "",
            &canonical,
            signed,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        let to_sign = string_to_sign("20130524T000000Z", &credential_scope("20130524", "us-east-1"), &request);
        assert!(to_sign.ends_with("\n7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"), "{to_sign}");
        let key = signing_key(AWS_SECRET, "20130524", "us-east-1").unwrap();
        let signature = hmac(&key, &to_sign).unwrap().finalize().into_bytes();
        assert_eq!(
            base16ct::lower::encode_string(&signature),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn uri_encode_keeps_only_unreserved_characters() {
        assert_eq!(uri_encode(b"AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(uri_encode("a b/ü+*=&%".as_bytes()), "a%20b%2F%C3%BC%2B%2A%3D%26%25");
        // Query values are decoded first, then encoded: `%20` and `+` differ, `%7E` is `~`.
        let presigned = parse(&format!("{AWS_QUERY}&x=a%20b&y=a+b&z=%7e&w")).unwrap();
        assert!(presigned.canonical_query.ends_with("&w=&x=a%20b&y=a%2Bb&z=~"), "{}", presigned.canonical_query);
        // Sorted by name, then value.
        let presigned = parse(&format!("b=2&a=2&a=1&{AWS_QUERY}")).unwrap();
        assert!(presigned.canonical_query.starts_with("X-Amz-"), "upper case sorts first");
        assert!(presigned.canonical_query.ends_with("&a=1&a=2&b=2"), "{}", presigned.canonical_query);
    }

    #[test]
    fn malformed_parameters_are_refused_with_what_is_wrong() {
        let replace = |from: &str, to: &str| {
            assert!(AWS_QUERY.contains(from), "{from}");
            AWS_QUERY.replace(from, to)
        };
        let cases = [
            replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders="),
            replace("&X-Amz-SignedHeaders=host", ""),
            replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=HOST"),
            replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range"),
            replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=range;host"),
            replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host;host"),
            replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=host;;range"),
            replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
            replace("X-Amz-Expires=86400", "X-Amz-Expires=0"),
            replace("X-Amz-Expires=86400", "X-Amz-Expires=604801"),
            replace("X-Amz-Expires=86400", "X-Amz-Expires=-1"),
            replace("X-Amz-Expires=86400", "X-Amz-Expires=%2B60"),
            replace("X-Amz-Expires=86400", "X-Amz-Expires=18446744073709551616"),
            replace("X-Amz-Expires=86400", "X-Amz-Expires=soon"),
            replace("20130524T000000Z", "20130532T000000Z"),
            replace("20130524T000000Z", "20130524T240000Z"),
            replace("20130524T000000Z", "2013-05-24T00:00:00Z"),
            replace("20130524T000000Z", "+0130524T000000Z"),
            replace("20130524T000000Z", "+20130524T000000Z"),
            replace("20130524T000000Z", "-20130524T000000Z"),
            replace("20130524T000000Z", "%2B20130524T000000Z"),
            replace("20130524T000000Z", "%2020130524T000000Z"),
            replace("20130524T000000Z", "20130524T000000Z%20"),
            replace("20130524T000000Z", "020130524T000000Z"),
            replace("20130524T000000Z", "20130524T000000"),
            replace("20130524T000000Z", "20130524t000000Z"),
            replace("20130524T000000Z", "20130524T000000z"),
            replace("20130524T000000Z", "20130524T000000.5Z"),
            replace("20130524T000000Z", "20130524T00000Z"),
            replace("20130524T000000Z", "20130524T000060Z"),
            replace("20130524T000000Z", "20130524T000000%2B00"),
            replace("20130524T000000Z", "%EF%BC%92%EF%BC%90130524T000000Z"),
            replace("20130524T000000Z", "20130525T000000Z"),
            replace("%2F20130524%2F", "%2F2013052%2F"),
            replace("%2Fs3%2F", "%2Fsqs%2F"),
            replace("%2Faws4_request", "%2Faws4_request%2F"),
            replace("AKIAIOSFODNN7EXAMPLE%2F", "%2F"),
            replace("X-Amz-Signature=aeeed9bb", "X-Amz-Signature=AEEED9BB"),
            replace("X-Amz-Signature=aeeed9bb", "X-Amz-Signature=zzeed9bb"),
            replace("X-Amz-Signature=aeeed9bb", "X-Amz-Signature=eed9bb"),
            replace("X-Amz-Signature=aeeed9bb", "X-Amz-Signature=%FFeeed9bb"),
            format!("{AWS_QUERY}&X-Amz-Expires=60"),
            format!("{AWS_QUERY}&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
        ];
        for query in cases {
            assert!(matches!(parse(&query), Err(Invalid(_))), "{query}");
        }
        // Well formed but tampered: the signature decides.
        let tampered = replace("X-Amz-Expires=86400", "X-Amz-Expires=86401");
        assert_eq!(verify_aws(&tampered, at(AWS_SIGNED_AT)), Err(Invalid("the signature does not match the request")));
        assert_eq!(
            verify_aws(&format!("{AWS_QUERY}&extra=1"), at(AWS_SIGNED_AT)),
            Err(Invalid("the signature does not match the request"))
        );
    }

    #[test]
    fn extreme_dates_are_checked_without_overflow() {
        let unsigned = |date: &str, expires: &str| {
            format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F{}%2Fus-east-1%2Fs3%2Faws4_request\
                 &X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
                &date[..8]
            )
        };
        assert_eq!(signed(&unsigned("20130524T000000Z", "86400")), AWS_QUERY);
        let last = signed(&unsigned("99991231T235959Z", "604800"));
        let last_second = parse(&last).unwrap().signed_at;
        assert_eq!(parse(&last).unwrap().expires, MAX_EXPIRES);
        let first = signed(&unsigned("00000101T000000Z", "1"));
        assert!(parse(&first).unwrap().signed_at < 0);
        let latest = at(u64::MAX);
        for (query, now, verdict) in [
            (&last, UNIX_EPOCH, Err(Sigv4Refusal::NotYetValid)),
            (&last, SystemTime::now(), Err(Sigv4Refusal::NotYetValid)),
            (&last, at(last_second.unsigned_abs()), Ok(())),
            (&first, UNIX_EPOCH, Err(Sigv4Refusal::Expired)),
            (&first, latest, Err(Sigv4Refusal::Expired)),
            (&AWS_QUERY.to_owned(), latest, Err(Sigv4Refusal::Expired)),
        ] {
            assert_eq!(verify_aws(query, now), verdict, "{query} at {now:?}");
        }
    }

    /// The shape AWS writes: eight digits, `T`, six digits, `Z`.
    fn aws_shape(text: &str) -> bool {
        text.len() == 16
            && text.bytes().enumerate().all(|(i, b)| match i {
                8 => b == b'T',
                15 => b == b'Z',
                _ => b.is_ascii_digit(),
            })
    }

    /// `unix` written as AWS writes X-Amz-Date, from the calendar fields.
    fn amz_date_of(unix: i64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap();
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    #[test]
    fn amz_dates_parse_as_aws_writes_them_and_nothing_else() {
        assert_eq!(parse_amz_date("20130524T000000Z"), Ok(i64::try_from(AWS_SIGNED_AT).unwrap()));
        assert_eq!(parse_amz_date("19700101T000000Z"), Ok(0));
        assert_eq!(parse_amz_date("20240229T235959Z"), Ok(1_709_251_199));
        assert_eq!(parse_amz_date("00000101T000000Z"), Ok(-62_167_219_200));
        assert_eq!(parse_amz_date("99991231T235959Z"), Ok(253_402_300_799));
        for bad in [
            "",
            "20130524",
            "+2013052T000000Z",
            "+20130524T000000Z",
            "-20130524T000000Z",
            " 20130524T000000Z",
            "20130524T000000Z ",
            "020130524T000000Z",
            "20130524T000000",
            "20130524t000000Z",
            "20130524T000000z",
            "20130524T000000.5Z",
            "20130524T000000+00:00",
            "2013-05-24T00:00:00Z",
            "20130524T00000Z",
            "2013524T000000Z",
            "20130229T000000Z",
            "20131301T000000Z",
            "20130500T000000Z",
            "20130524T240000Z",
            "20130524T006000Z",
            "20130524T000060Z",
            "２０130524T000000Z",
            "20130524T000000Zé",
        ] {
            assert!(matches!(parse_amz_date(bad), Err(Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let shown = format!("{:?}", aws_key());
        assert!(!shown.contains(AWS_SECRET) && shown.contains("<redacted>") && shown.contains("AKIAIOSFODNN7EXAMPLE"));
    }

    /// Query text close enough to SigV4 to reach every check, and plain garbage.
    fn query_strategy() -> impl Strategy<Value = String> {
        let names = prop::sample::select(vec![
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-SignedHeaders",
            "X-Amz-Signature",
            "x",
            "",
        ]);
        let values = prop_oneof![
            any::<String>(),
            "[0-9TZ]{0,20}",
            "[0-9a-f]{62,66}",
            "[a-zA-Z0-9%/;_+=-]{0,40}",
            prop::sample::select(vec![
                "AWS4-HMAC-SHA256".to_owned(),
                "AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request".to_owned(),
                "20130524T000000Z".to_owned(),
                "99991231T235959Z".to_owned(),
                "604800".to_owned(),
                "host".to_owned(),
                "%".to_owned(),
                "%FF%FE".to_owned(),
            ]),
        ];
        let pair = (names, values).prop_map(|(name, value)| format!("{name}={value}"));
        prop_oneof![any::<String>(), prop::collection::vec(pair, 0..10).prop_map(|pairs| pairs.join("&"))]
    }

    proptest! {
        /// Every second from year 0 to 9999 reads back as itself.
        #[test]
        fn amz_dates_round_trip(unix in -62_167_219_200i64..=253_402_300_799) {
            prop_assert_eq!(parse_amz_date(&amz_date_of(unix)), Ok(unix));
        }

        /// Only AWS's shape parses, whatever is near it.
        #[test]
        fn only_the_aws_shape_parses(text in prop_oneof!["[0-9+ -]?[0-9]{7,9}[Tt][0-9]{5,7}[Zz]?[.0-9+:Z ]{0,3}", any::<String>()]) {
            if parse_amz_date(&text).is_ok() {
                prop_assert!(aws_shape(&text), "{:?}", text);
            }
        }

        #[test]
        fn the_parser_and_verifier_never_panic(query in query_strategy(), now in any::<u64>()) {
            let _ = is_sigv4(&query);
            let _ = parse(&query);
            if let Ok(uri) = format!("/test.txt?{query}").parse::<Uri>() {
                let _ = verify(&aws_key(), &Method::GET, &uri, &host(AWS_HOST), at(now));
            }
        }
    }
}
