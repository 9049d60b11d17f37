//! Query-string surgery on already encoded text: find, replace and remove one parameter
//! without reparsing or re-encoding the rest of the URL.

use std::borrow::Cow;

use url::form_urlencoded;

use crate::Credentials;

/// Parameters that carry credentials or signatures: never part of a media key.
const CREDENTIAL_PARAMS: &[&str] = &["fat", "Expires", "Signature", "Key-Pair-Id", "Policy", "sig", "se"];

/// The name a raw (still encoded) parameter name decodes to; borrowed when nothing is encoded.
fn decoded_name(raw_name: &str) -> Cow<'_, str> {
    if !raw_name.contains(['%', '+']) {
        return Cow::Borrowed(raw_name);
    }
    form_urlencoded::parse(raw_name.as_bytes()).next().map(|(k, _)| k).unwrap_or_default()
}

/// Does the raw (still encoded) parameter name decode to `name`?
pub(crate) fn name_is(raw_name: &str, name: &str) -> bool {
    raw_name == name || decoded_name(raw_name) == name
}

/// The raw name of one `name=value` pair.
fn raw_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name)
}

/// Is `pair` a credential or signature parameter (a shared one, or one `declared` by the
/// strategy), in any spelling (`FAT=`, `%66at=`), also behind a `;` (some servers still split
/// queries on it)?
pub(crate) fn is_credential(pair: &str, declared: &Credentials) -> bool {
    // The whole pair first: a declared name may itself hold a `;`.
    is_credential_name(pair, declared)
        || (pair.contains(';') && pair.split(';').any(|part| is_credential_name(part, declared)))
}

fn is_credential_name(pair: &str, declared: &Credentials) -> bool {
    let decoded = decoded_name(raw_name(pair));
    // Servers differ in how they read names: match the credential names whatever their case.
    CREDENTIAL_PARAMS.iter().any(|c| decoded.eq_ignore_ascii_case(c))
        || decoded.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("x-amz-"))
        || declared.declares_param(&decoded)
}

/// Does the query carry a credential or signature parameter ([`is_credential`])?
pub(crate) fn has_credential(query: &str, declared: &Credentials) -> bool {
    query.split('&').any(|pair| is_credential(pair, declared))
}

/// The query without its credential parameters: `None` when it has none (keep it as it is),
/// `Some(None)` when nothing else is left.
pub(crate) fn without_credentials(query: &str, declared: &Credentials) -> Option<Option<String>> {
    has_credential(query, declared).then(|| retain(query, |pair| !is_credential(pair, declared)))
}

/// Does the query hold a parameter called `name`?
pub(crate) fn contains(query: &str, name: &str) -> bool {
    query.split('&').any(|pair| name_is(raw_name(pair), name))
}

/// Does the query hold `name` exactly once, with exactly this value?
pub(crate) fn is_exactly(query: Option<&str>, name: &str, encoded_value: &str) -> bool {
    let mut matches = query.unwrap_or("").split('&').filter(|pair| name_is(raw_name(pair), name));
    match (matches.next(), matches.next()) {
        (Some(only), None) => {
            only.len() == name.len() + 1 + encoded_value.len()
                && only.starts_with(name)
                && only.ends_with(encoded_value)
                && only.as_bytes()[name.len()] == b'='
        }
        _ => false,
    }
}

/// Writes the query with `name=encoded_value` set into `out`: the first existing `name` is
/// replaced in place, later ones are dropped, and without one the pair goes last.
pub(crate) fn write_set(out: &mut String, query: Option<&str>, name: &str, encoded_value: &str) {
    write_set_by(out, query, name, encoded_value, |raw| name_is(raw, name));
}

/// [`write_set`] with `same` deciding which raw names are `name`.
fn write_set_by(out: &mut String, query: Option<&str>, name: &str, encoded_value: &str, same: impl Fn(&str) -> bool) {
    let start = out.len();
    let mut placed = false;
    let push = |out: &mut String, piece: &[&str]| {
        if out.len() > start {
            out.push('&');
        }
        piece.iter().for_each(|p| out.push_str(p));
    };
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        if same(raw_name(pair)) {
            if !placed {
                push(out, &[name, "=", encoded_value]);
                placed = true;
            }
        } else {
            push(out, &[pair]);
        }
    }
    if !placed {
        push(out, &[name, "=", encoded_value]);
    }
}

/// The query with `name=encoded_value` set ([`write_set`]); `None` when it already says exactly that.
pub(crate) fn set(query: Option<&str>, name: &str, encoded_value: &str) -> Option<String> {
    if is_exactly(query, name, encoded_value) {
        return None;
    }
    let mut out = String::with_capacity(query.map_or(0, str::len) + name.len() + encoded_value.len() + 2);
    write_set(&mut out, query, name, encoded_value);
    Some(out)
}

/// The query with `encoded_name=encoded_value` set, the name matched in any case or spelling
/// (`MD5`, `%6Dd5`): the first match is replaced in place and every other dropped, so no stale
/// spelling of a signer's parameter reaches a server that reads names case-insensitively.
/// `None` when the query already says exactly that.
pub(crate) fn set_any_case(query: Option<&str>, encoded_name: &str, encoded_value: &str) -> Option<String> {
    let name = decoded_name(encoded_name);
    let mut out = String::with_capacity(query.map_or(0, str::len) + encoded_name.len() + encoded_value.len() + 2);
    write_set_by(&mut out, query, encoded_name, encoded_value, |raw| decoded_name(raw).eq_ignore_ascii_case(&name));
    (Some(out.as_str()) != query).then_some(out)
}

/// Removes every `name` parameter. `None` when there was none; `Some(None)` when nothing is left.
pub(crate) fn remove(query: Option<&str>, name: &str) -> Option<Option<String>> {
    let query = query?;
    if !contains(query, name) {
        return None;
    }
    Some(retain(query, |pair| !name_is(raw_name(pair), name)))
}

/// The pairs that pass `keep`, joined again; `None` when nothing is left.
pub(crate) fn retain(query: &str, keep: impl Fn(&str) -> bool) -> Option<String> {
    let mut out = String::with_capacity(query.len());
    for pair in query.split('&').filter(|pair| !pair.is_empty() && keep(pair)) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_any_case_replaces_every_spelling_once() {
        assert_eq!(set_any_case(Some("MD5=old&w=1&%6Dd5=x"), "md5", "new").as_deref(), Some("md5=new&w=1"));
        assert_eq!(set_any_case(Some("w=1"), "md5", "new").as_deref(), Some("w=1&md5=new"));
        assert_eq!(set_any_case(None, "md5", "new").as_deref(), Some("md5=new"));
        assert_eq!(set_any_case(Some("w=1&md5=new"), "md5", "new"), None, "already exactly that");
        assert_eq!(set_any_case(Some("a%20b=1"), "a%20b", "2").as_deref(), Some("a%20b=2"));
    }

    #[test]
    fn a_declared_name_may_hold_a_semicolon() {
        let declared = Credentials::new().param("a;b");
        assert!(is_credential("a;b=SECRET", &declared));
        assert!(is_credential("x=1;fat=T", &declared), "a shared name behind a `;` still counts");
        assert_eq!(without_credentials("a;b=SECRET&w=1", &declared), Some(Some("w=1".to_owned())));
    }

    #[test]
    fn set_appends_last_and_keeps_the_rest() {
        assert_eq!(set(None, "fat", "T").as_deref(), Some("fat=T"));
        assert_eq!(set(Some("x=1&y=2"), "fat", "T").as_deref(), Some("x=1&y=2&fat=T"));
    }

    #[test]
    fn set_replaces_in_place_and_never_twice() {
        assert_eq!(set(Some("a=1&fat=old&b=2&fat=older"), "fat", "T").as_deref(), Some("a=1&fat=T&b=2"));
        assert_eq!(set(Some("%66at=old&b=2"), "fat", "T").as_deref(), Some("fat=T&b=2"));
    }

    #[test]
    fn set_is_idempotent() {
        assert_eq!(set(Some("a=1&fat=T"), "fat", "T"), None);
        assert_eq!(set(Some("fat=T&fat=T"), "fat", "T").as_deref(), Some("fat=T"));
    }

    #[test]
    fn names_that_merely_contain_fat_are_other_parameters() {
        assert_eq!(set(Some("format=png&fatima=1"), "fat", "T").as_deref(), Some("format=png&fatima=1&fat=T"));
        assert!(!contains("format=png", "fat"));
    }

    #[test]
    fn remove_strips_only_the_name() {
        assert_eq!(remove(Some("a=1&fat=x"), "fat"), Some(Some("a=1".into())));
        assert_eq!(remove(Some("fat=x"), "fat"), Some(None));
        assert_eq!(remove(Some("format=1"), "fat"), None);
        assert_eq!(remove(None, "fat"), None);
    }

    #[test]
    fn credentials_are_recognised() {
        for pair in
            ["fat=1", "Expires=1", "Signature=a", "Key-Pair-Id=k", "X-Amz-Date=1", "x-amz-signature=z", "sig=s", "se=d"]
        {
            assert!(is_credential(pair, Credentials::shared()), "{pair}");
        }
        for pair in ["x=1;fat=T", "FAT=1", "%66at=1", "%46AT=1", "fAt=1", "SIGNATURE=1", "x-AMZ-credential=1"] {
            assert!(is_credential(pair, Credentials::shared()), "{pair}");
        }
        for pair in ["w=100", "format=png", "expires_soon=1", "fat_=1"] {
            assert!(!is_credential(pair, Credentials::shared()), "{pair}");
        }
    }
}
