//! Where media comes from (built-in samples or a directory), path safety, content types, Range.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::samples::built_in;

/// A file to serve (its bytes are shared: a clone is a reference count).
#[derive(Clone)]
pub(crate) struct File {
    pub(crate) bytes: Bytes,
    pub(crate) content_type: &'static str,
}

pub(crate) enum MediaStore {
    Samples,
    Dir(DirStore),
}

/// Files of a media directory, kept in memory once read: the disk is asked again only when an
/// entry is older than [`RECHECK_AFTER`] (then its length and modification time say whether to
/// read it again), so a gallery under load is served from memory, not one blocking read each.
pub(crate) struct DirStore {
    root: PathBuf,
    cached: std::sync::Mutex<std::collections::HashMap<PathBuf, Cached>>,
}

/// One file in memory, and what it looked like on disk when read.
struct Cached {
    file: File,
    checked: std::time::Instant,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

/// How long a cached file is served without asking the disk.
const RECHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Files larger than this are read each time, not kept (a video can be large).
const MAX_CACHED_FILE: u64 = 16 * 1024 * 1024;

/// At most this many bytes in memory; past it, new files are read each time.
const MAX_CACHED_BYTES: u64 = 512 * 1024 * 1024;

impl DirStore {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root, cached: std::sync::Mutex::default() }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<PathBuf, Cached>> {
        self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn get(&self, path: &Path) -> Option<File> {
        let fresh = |entry: &Cached| entry.checked.elapsed() < RECHECK_AFTER;
        if let Some(entry) = self.cached().get(path).filter(|entry| fresh(entry)) {
            return Some(entry.file.clone());
        }
        let full = tokio::fs::canonicalize(self.root.join(path)).await.ok()?;
        // A symlink out of the directory is as bad as `..`.
        if !full.starts_with(&self.root) {
            return None;
        }
        let meta = tokio::fs::metadata(&full).await.ok()?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        if let Some(entry) = self.cached().get_mut(path) {
            if entry.len == len && entry.modified == modified && modified.is_some() {
                entry.checked = std::time::Instant::now();
                return Some(entry.file.clone());
            }
        }
        let bytes = tokio::fs::read(&full).await.ok()?;
        // What was read counts, not what the metadata said a moment before (a file may grow).
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let file = File { bytes: Bytes::from(bytes), content_type: content_type_of(&full) };
        let mut cached = self.cached();
        let held: u64 = cached.values().map(|entry| entry.len).sum();
        if len <= MAX_CACHED_FILE && held + len <= MAX_CACHED_BYTES {
            let entry = Cached { file: file.clone(), checked: std::time::Instant::now(), len, modified };
            cached.insert(path.to_owned(), entry);
        } else {
            cached.remove(path);
        }
        Some(file)
    }
}

/// Why a media path was refused before looking anything up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Traversal;

/// The path as safe relative components: no `..`, `.`, empty or absolute parts, no backslashes
/// or NULs (the path arrives percent-decoded, so `%2e%2e` is already `..`).
pub(crate) fn safe_relative(path: &str) -> Result<PathBuf, Traversal> {
    if path.is_empty() || path.starts_with('/') || path.contains(['\\', '\0']) {
        return Err(Traversal);
    }
    let mut out = PathBuf::new();
    for segment in path.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(Traversal);
        }
        out.push(segment);
    }
    if out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Traversal);
    }
    Ok(out)
}

pub(crate) fn content_type_of(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl MediaStore {
    /// The file at a safe relative path, if there is one.
    pub(crate) async fn get(&self, path: &Path) -> Option<File> {
        match self {
            MediaStore::Samples => {
                let (bytes, content_type) = built_in(path.to_str()?)?;
                Some(File { bytes, content_type })
            }
            MediaStore::Dir(store) => store.get(path).await,
        }
    }
}

/// A parsed `Range: bytes=...` header for a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeAnswer {
    /// No usable single range: send everything (200).
    Full,
    /// Send `start..=end` (206).
    Partial { start: u64, end: u64 },
    /// Cannot be satisfied (416).
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, len: u64) -> RangeAnswer {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeAnswer::Full;
    };
    if spec.contains(',') {
        return RangeAnswer::Full; // multiple ranges: a full answer is allowed
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.is_empty(), end.is_empty()) {
        (true, true) => return RangeAnswer::Full,
        (true, false) => match end.parse::<u64>() {
            Ok(0) => return RangeAnswer::Unsatisfiable,
            Ok(suffix) => (len.saturating_sub(suffix), len.saturating_sub(1)),
            Err(_) => return RangeAnswer::Full,
        },
        (false, _) => {
            let Ok(first) = start.parse::<u64>() else { return RangeAnswer::Full };
            if first >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let last = if end.is_empty() { Ok(len.saturating_sub(1)) } else { end.parse::<u64>() };
            let Ok(last) = last else { return RangeAnswer::Full };
            if first > last {
                return RangeAnswer::Full;
            }
            (first, last.min(len.saturating_sub(1)))
        }
    };
    if len == 0 || range.0 >= len {
        return RangeAnswer::Unsatisfiable;
    }
    RangeAnswer::Partial { start: range.0, end: range.1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        for bad in ["", "../etc/passwd", "a/../../b", "/etc/passwd", "a//b", "./a", "a\\..\\b", "a/\0"] {
            assert_eq!(safe_relative(bad), Err(Traversal), "{bad:?}");
        }
        assert_eq!(safe_relative("a/b.png").unwrap(), PathBuf::from("a/b.png"));
        assert!(safe_relative("..a.png").is_ok());
    }

    #[test]
    fn ranges() {
        use RangeAnswer::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Partial { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=90-"), 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=-10"), 100), Partial { start: 90, end: 99 });
        assert_eq!(parse_range(Some("bytes=95-200"), 100), Partial { start: 95, end: 99 });
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=9-1"), 100), Full);
    }

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type_of(Path::new("a.JPG")), "image/jpeg");
        assert_eq!(content_type_of(Path::new("clip.mp4")), "video/mp4");
        assert_eq!(content_type_of(Path::new("x")), "application/octet-stream");
    }
}

/// Bad input (issue 16): `Range` values and media paths from anyone on the network. Each
/// property runs `PROPTEST_CASES` cases (2048 when unset); the long run:
/// `PROPTEST_CASES=200000 cargo test -p secure-media-server --all-features --lib media --release`.
/// Requests over loopback: `tests/parsers.rs`.
#[cfg(test)]
mod parser_props {
    use std::path::{Component, Path};

    use proptest::prelude::*;

    use super::*;

    /// `PROPTEST_CASES`, or 2048 (`ProptestConfig::with_cases` would override the variable).
    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(2048)
    }

    /// Numbers around every edge: 0, the length, `u64::MAX`, past it, signs, hex, fractions.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => (0u64..300).prop_map(|n| n.to_string()),
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => proptest::sample::select(&[
                "", "0", "00", "007", "18446744073709551615", "18446744073709551616", "99999999999999999999999",
                "-0", "+5", "0x10", "1.5", "1e3", " ", "\t", "\u{0}", "\u{e9}",
            ][..])
            .prop_map(str::to_owned),
        ]
    }

    fn spec() -> impl Strategy<Value = String> {
        let pad = || proptest::sample::select(&["", "", "", " ", "\t", "  "][..]);
        prop_oneof![
            4 => (pad(), number(), pad(), pad(), number(), pad()).prop_map(|(a, s, b, c, e, d)| format!("{a}{s}{b}-{c}{e}{d}")),
            1 => "[0-9, =-]{0,16}",
            1 => any::<String>(),
        ]
    }

    fn range_header() -> impl Strategy<Value = Option<String>> {
        let unit = proptest::sample::select(
            &["bytes=", "bytes=", "bytes=", "Bytes=", "bytes =", "items=", "bytes", "", " bytes="][..],
        );
        proptest::option::weighted(
            0.95,
            prop_oneof![
                6 => (unit, spec()).prop_map(|(unit, spec)| format!("{unit}{spec}")),
                2 => (proptest::collection::vec(spec(), 2..5), proptest::sample::select(&[",", ", ", " ,", ",,"][..]))
                    .prop_map(|(specs, sep)| format!("bytes={}", specs.join(sep))),
                1 => ("[ -~]{1,4}", 20_000usize..110_000).prop_map(|(unit, len)| format!("bytes={}", unit.repeat(len / unit.len()))),
            ],
        )
    }

    fn length() -> impl Strategy<Value = u64> {
        prop_oneof![3 => 0u64..300, 1 => any::<u64>(), 1 => Just(u64::MAX), 1 => Just(0u64), 1 => Just(1u64)]
    }

    /// The answer for a well-formed single range (RFC 9110 §14.1.2), digits only; `None` for
    /// anything else (which the server answers in full or refuses, see `parse_range_never_panics`).
    fn well_formed(header: &str, len: u64) -> Option<RangeAnswer> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        let (first, last) = spec.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let (first, last) = (first.trim(), last.trim());
        let answer = match (digits(first), digits(last), first.is_empty(), last.is_empty()) {
            (true, true, ..) => {
                let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
                if first > last {
                    return None;
                }
                if first >= len {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Partial { start: first, end: last.min(len - 1) }
                }
            }
            (true, false, _, true) => {
                let first = first.parse::<u64>().ok()?;
                if first >= len {
                    RangeAnswer::Unsatisfiable
                } else {
                    RangeAnswer::Partial { start: first, end: len - 1 }
                }
            }
            (false, true, true, _) => match last.parse::<u64>().ok()? {
                0 => RangeAnswer::Unsatisfiable,
                _ if len == 0 => RangeAnswer::Unsatisfiable,
                suffix => RangeAnswer::Partial { start: len - suffix.min(len), end: len - 1 },
            },
            _ => return None,
        };
        Some(answer)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Any `Range` value and length: an answer, never a panic; a partial answer lies within
        /// the body; several ranges get the full body; a well-formed range gets the RFC's answer.
        #[test]
        fn parse_range_never_panics(header in range_header(), len in length()) {
            let answer = parse_range(header.as_deref(), len);
            match answer {
                RangeAnswer::Partial { start, end } => prop_assert!(start <= end && end < len, "{:?}: {:?}", header, answer),
                RangeAnswer::Unsatisfiable => prop_assert!(header.as_deref().is_some_and(|h| h.trim().starts_with("bytes="))),
                RangeAnswer::Full => {}
            }
            let Some(header) = header else { return Ok(()) };
            if header.contains(',') {
                prop_assert_eq!(&answer, &RangeAnswer::Full);
            }
            if let Some(expected) = well_formed(&header, len) {
                prop_assert_eq!(&answer, &expected, "{:?} of {} bytes", header, len);
            }
        }

        /// The same range with whitespace around it and its numbers is read the same.
        #[test]
        fn whitespace_around_a_range_changes_nothing(first in 0u64..400, last in proptest::option::of(0u64..400), len in 0u64..300) {
            let last = last.map(|l| l.to_string()).unwrap_or_default();
            let tight = format!("bytes={first}-{last}");
            let loose = format!(" \tbytes= {first} -\t{last} ");
            prop_assert_eq!(parse_range(Some(&tight), len), parse_range(Some(&loose), len));
        }
    }

    /// A path of segments: dots in every spelling, empty segments, separators and NUL, names.
    fn media_path() -> impl Strategy<Value = String> {
        let segment = proptest::sample::select(
            &[
                "a",
                "b.png",
                "sample-64x64.gif",
                ".",
                "..",
                "...",
                "..a",
                "a..",
                "",
                "%2e%2e",
                "%2F",
                "\\",
                "..\\..",
                "\0",
                "a\0b",
                "C:",
                "c:\\x",
                "\u{fc}",
                " ",
                "~",
                "$HOME",
                "*",
                "\u{202e}gnp.exe",
            ][..],
        );
        prop_oneof![
            6 => (proptest::option::of(Just("/")), proptest::collection::vec(segment, 0..8))
                .prop_map(|(lead, segments)| format!("{}{}", lead.unwrap_or(""), segments.join("/"))),
            1 => any::<String>(),
            1 => ("[a-z./]{1,8}", 10_000usize..110_000).prop_map(|(unit, len)| unit.repeat(len / unit.len())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// A path is taken exactly when every segment is a plain name (no `..`, `.`, empty
        /// segment, leading `/`, backslash or NUL), and what is taken stays under any root.
        #[test]
        fn safe_relative_takes_plain_names_only(path in media_path()) {
            let plain = !path.is_empty()
                && !path.starts_with('/')
                && !path.contains(['\\', '\0'])
                && path.split('/').all(|s| !s.is_empty() && s != "." && s != "..");
            match safe_relative(&path) {
                Ok(relative) => {
                    prop_assert!(plain, "took {:?}", path);
                    prop_assert!(relative.is_relative());
                    prop_assert!(relative.components().all(|c| matches!(c, Component::Normal(_))), "{:?}", relative);
                    prop_assert_eq!(relative.components().count(), path.split('/').count());
                    let root = Path::new("/srv/media");
                    prop_assert!(root.join(&relative).starts_with(root));
                    let _ = content_type_of(&relative);
                }
                Err(Traversal) => prop_assert!(!plain, "refused {:?}", path),
            }
        }
    }

    /// Seeds kept as plain tests: the edges of the properties above.
    #[test]
    fn range_edges() {
        use RangeAnswer::*;
        for (header, len, expected) in [
            ("bytes=0-18446744073709551615", 10, Partial { start: 0, end: 9 }),
            ("bytes=18446744073709551615-", 10, Unsatisfiable),
            ("bytes=0-18446744073709551616", 10, Full),
            ("bytes=-18446744073709551615", 10, Partial { start: 0, end: 9 }),
            ("bytes=-1", 0, Unsatisfiable),
            ("bytes=0-", 0, Unsatisfiable),
            ("bytes=0-0", u64::MAX, Partial { start: 0, end: 0 }),
            ("bytes=-5", u64::MAX, Partial { start: u64::MAX - 5, end: u64::MAX - 1 }),
            ("bytes=--1", 10, Full),
            ("bytes=1-2-3", 10, Full),
            ("bytes=", 10, Full),
            ("bytes=-", 10, Full),
            ("bytes=0-1,", 10, Full),
            ("bytes=\u{e9}-1", 10, Full),
        ] {
            assert_eq!(parse_range(Some(header), len), expected, "{header:?} of {len}");
        }
    }
}
