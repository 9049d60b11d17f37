//! Built-in sample media, generated deterministically on first use, so no files are needed: six
//! named samples ([`SAMPLE_NAMES`]) and a gallery of [`GALLERY_LEN`] distinct thumbnails
//! ([`gallery_path`]).

use std::io::Cursor;
use std::sync::OnceLock;

use bytes::Bytes;
use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

/// One built-in file.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its name under `/{app_id}/media/`.
    pub name: &'static str,
    /// Its content type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: Bytes,
}

/// The names of the built-in samples.
pub const SAMPLE_NAMES: [&str; 6] = [
    "sample-640x480.png",
    "sample-1920x1080.jpg",
    "sample-256x256.webp",
    "sample-64x64.gif",
    "sample-clip.mp4",
    "bomb.png",
];

/// The width and height the bomb image's header claims.
pub const BOMB_SIDE: u32 = 100_000;

/// All samples, generated once per process.
pub fn samples() -> &'static [Sample] {
    static SAMPLES: OnceLock<Vec<Sample>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        vec![
            sample(SAMPLE_NAMES[0], "image/png", encode_rgb(640, 480, ImageFormat::Png)),
            sample(SAMPLE_NAMES[1], "image/jpeg", encode_rgb(1920, 1080, ImageFormat::Jpeg)),
            sample(SAMPLE_NAMES[2], "image/webp", encode_rgba(256, 256, ImageFormat::WebP)),
            sample(SAMPLE_NAMES[3], "image/gif", encode_rgba(64, 64, ImageFormat::Gif)),
            sample(SAMPLE_NAMES[4], "video/mp4", mp4_like(512 * 1024)),
            sample(SAMPLE_NAMES[5], "image/png", png_bomb(BOMB_SIDE)),
        ]
    })
}

/// How many gallery thumbnails are built in: `gallery/0000.png` to `gallery/0999.png` under
/// `/{app_id}/media/`, enough for a 500-image gallery with room to scroll past it.
pub const GALLERY_LEN: usize = 1000;

/// The width and height of a gallery thumbnail, in pixels.
pub const GALLERY_SIDE: u32 = 64;

// Each thumbnail draws its index's 16 low bits (see `gallery_pixel`), which keeps them distinct.
const _: () = assert!(GALLERY_LEN <= 1 << 16);

/// The media path of gallery thumbnail `index`: four digits, `gallery/0042.png`. Thumbnails exist
/// for `index < GALLERY_LEN`; a path past them, or another spelling (`gallery/42.png`), is a 404.
///
/// ```
/// use secure_media_server::{gallery_path, GALLERY_LEN};
///
/// assert_eq!(gallery_path(0), "gallery/0000.png");
/// assert_eq!(gallery_path(GALLERY_LEN - 1), "gallery/0999.png");
/// ```
pub fn gallery_path(index: usize) -> String {
    format!("gallery/{index:04}.png")
}

/// The PNG of gallery thumbnail `index` (a [`GALLERY_SIDE`]-pixel square: a colour of its own
/// above its index drawn as 16 black or white blocks), made on first use and kept for the
/// process; `None` from [`GALLERY_LEN`] on. Made one by one as they are asked for, so starting a
/// server costs nothing and the first request for each pays one small encode (about 25 µs
/// optimised).
///
/// ```
/// use secure_media_server::{gallery_image, GALLERY_LEN};
///
/// let first = gallery_image(0).unwrap();
/// assert!(first.starts_with(b"\x89PNG"));
/// assert_ne!(first, gallery_image(1).unwrap());
/// assert!(gallery_image(GALLERY_LEN).is_none());
/// ```
pub fn gallery_image(index: usize) -> Option<Bytes> {
    static GALLERY: [OnceLock<Bytes>; GALLERY_LEN] = [const { OnceLock::new() }; GALLERY_LEN];
    let slot = GALLERY.get(index)?;
    Some(slot.get_or_init(|| Bytes::from(encode_thumbnail(index))).clone())
}

/// The built-in file called `name` (a path under `/{app_id}/media/`): its bytes and content type.
pub(crate) fn built_in(name: &str) -> Option<(Bytes, &'static str)> {
    if let Some(index) = gallery_index(name) {
        return gallery_image(index).map(|bytes| (bytes, "image/png"));
    }
    samples().iter().find(|s| s.name == name).map(|s| (s.bytes.clone(), s.content_type))
}

/// The index in `gallery/NNNN.png`, spelled exactly as [`gallery_path`] spells it.
fn gallery_index(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("gallery/")?.strip_suffix(".png")?;
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&index| index < GALLERY_LEN)
}

fn encode_thumbnail(index: usize) -> Vec<u8> {
    let image = RgbImage::from_fn(GALLERY_SIDE, GALLERY_SIDE, |x, y| Rgb(gallery_pixel(index, x, y)));
    let mut out = Cursor::new(Vec::new());
    // As in `encode_rgb`: a valid in-memory image encodes into a Vec.
    image.write_to(&mut out, ImageFormat::Png).unwrap_or_default();
    out.into_inner()
}

/// The top three quarters: a hue of the thumbnail's own (the golden angle apart from its
/// neighbour's), shaded left to right and top to bottom. The bottom quarter: two rows of eight
/// blocks, bit `k` of `index` black when set, white when not.
fn gallery_pixel(index: usize, x: u32, y: u32) -> [u8; 3] {
    let side = GALLERY_SIDE;
    let block = side / 8;
    if y >= side - 2 * block {
        let bit = (y - (side - 2 * block)) / block * 8 + x / block;
        return if index >> bit & 1 == 1 { [0, 0, 0] } else { [255, 255, 255] };
    }
    // Hue on a wheel of 6 * 256 steps; 949 / 1536 is close to the golden ratio's fraction.
    let hue = index * 949 % 1536;
    let (sector, rise) = (hue / 256, (hue % 256) as u32);
    let fall = 255 - rise;
    let [r, g, b] = match sector {
        0 => [255, rise, 0],
        1 => [fall, 255, 0],
        2 => [0, 255, rise],
        3 => [0, fall, 255],
        4 => [rise, 0, 255],
        _ => [255, 0, fall],
    };
    // From full colour at the top left to about half at the bottom right.
    let shade = 2 * side - (x + y) / 2;
    [r, g, b].map(|c| (c * shade / (2 * side)) as u8)
}

fn sample(name: &'static str, content_type: &'static str, bytes: Vec<u8>) -> Sample {
    Sample { name, content_type, bytes: Bytes::from(bytes) }
}

fn pattern(x: u32, y: u32) -> [u8; 3] {
    [(x % 256) as u8, (y % 256) as u8, ((x / 4 + y / 4) % 256) as u8]
}

fn encode_rgb(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| Rgb(pattern(x, y)));
    let mut out = Cursor::new(Vec::new());
    // Encoding an in-memory image of a fixed, valid size into a Vec cannot fail.
    image.write_to(&mut out, format).unwrap_or_default();
    out.into_inner()
}

fn encode_rgba(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| {
        let [r, g, b] = pattern(x * 3, y * 3);
        Rgba([r, g, b, 255])
    });
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap_or_default();
    out.into_inner()
}

/// An `ftyp` box and deterministic bytes: enough for Range tests and content sniffing.
fn mp4_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0, 0, 0, 0x18]);
    out.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    let mut state: u32 = 0x1234_5678;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        out.push((state >> 24) as u8);
    }
    out
}

/// A valid PNG whose header claims `side` x `side` RGBA pixels (40 GB decoded) with almost no data.
fn png_bomb(side: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        // Chunks here are a few bytes long; a PNG chunk length is a u32.
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        out.extend_from_slice(&crc.finalize().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream of one empty stored block: the decoder runs out of data long before the end.
    chunk(&mut out, b"IDAT", &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_decode_to_their_declared_sizes() {
        for (name, w, h) in [
            ("sample-640x480.png", 640, 480),
            ("sample-1920x1080.jpg", 1920, 1080),
            ("sample-256x256.webp", 256, 256),
            ("sample-64x64.gif", 64, 64),
        ] {
            let s = samples().iter().find(|s| s.name == name).unwrap();
            let image = image::load_from_memory(&s.bytes).unwrap();
            assert_eq!((image.width(), image.height()), (w, h), "{name}");
        }
    }

    #[test]
    fn the_bomb_claims_a_huge_size_in_a_tiny_file() {
        let bomb = samples().iter().find(|s| s.name == "bomb.png").unwrap();
        assert!(bomb.bytes.len() < 100);
        let reader = image::ImageReader::new(Cursor::new(&bomb.bytes[..])).with_guessed_format().unwrap();
        assert_eq!(reader.into_dimensions().unwrap(), (BOMB_SIDE, BOMB_SIDE));
    }

    #[test]
    fn every_gallery_thumbnail_is_a_distinct_png_of_its_side() {
        let mut seen = std::collections::HashSet::new();
        for index in 0..GALLERY_LEN {
            let png = gallery_image(index).unwrap();
            assert!(seen.insert(png.clone()), "thumbnail {index} repeats another");
            assert!(png.len() < 4096, "thumbnail {index}: {} bytes", png.len());
        }
        for index in [0, 1, 255, 256, GALLERY_LEN - 1] {
            let image = image::load_from_memory_with_format(&gallery_image(index).unwrap(), ImageFormat::Png).unwrap();
            assert_eq!((image.width(), image.height()), (GALLERY_SIDE, GALLERY_SIDE), "{index}");
        }
        assert_eq!(gallery_image(3), gallery_image(3), "kept, not made again");
        assert!(gallery_image(GALLERY_LEN).is_none() && gallery_image(usize::MAX).is_none());
    }

    #[test]
    fn gallery_names_have_one_spelling() {
        assert_eq!(gallery_index(&gallery_path(42)), Some(42));
        assert_eq!(gallery_index(&gallery_path(GALLERY_LEN - 1)), Some(GALLERY_LEN - 1));
        for name in [
            "gallery/42.png",
            "gallery/00042.png",
            "gallery/1000.png",
            "gallery/9999.png",
            "gallery/+042.png",
            "gallery/0042.PNG",
            "gallery/0042.jpg",
            "Gallery/0042.png",
            "gallery/0042.png/x",
            "gallery/٠٠٤٢.png",
            "gallery/.png",
            "0042.png",
        ] {
            assert_eq!(gallery_index(name), None, "{name}");
        }
        let (bytes, content_type) = built_in("gallery/0007.png").unwrap();
        assert_eq!((bytes, content_type), (gallery_image(7).unwrap(), "image/png"));
        assert_eq!(built_in("sample-64x64.gif").unwrap().1, "image/gif");
        assert!(built_in("gallery/1000.png").is_none() && built_in("nothing.png").is_none());
    }

    #[test]
    fn samples_are_deterministic() {
        assert_eq!(encode_rgb(16, 16, ImageFormat::Png), encode_rgb(16, 16, ImageFormat::Png));
        assert_eq!(&samples()[4].bytes[4..8], b"ftyp");
    }
}
