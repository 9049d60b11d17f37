//! Where media comes from (built-in samples or a directory), path safety, content types, Range.

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use crate::samples::samples;

/// A file to serve.
pub(crate) struct File {
    pub(crate) bytes: Bytes,
    pub(crate) content_type: &'static str,
}

pub(crate) enum MediaStore {
    Samples,
    Dir(PathBuf),
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
                let name = path.to_str()?;
                samples()
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| File { bytes: s.bytes.clone(), content_type: s.content_type })
            }
            MediaStore::Dir(root) => {
                let full = tokio::fs::canonicalize(root.join(path)).await.ok()?;
                // A symlink out of the directory is as bad as `..`.
                if !full.starts_with(root) {
                    return None;
                }
                let bytes = tokio::fs::read(&full).await.ok()?;
                Some(File { bytes: Bytes::from(bytes), content_type: content_type_of(&full) })
            }
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
