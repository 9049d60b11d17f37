//! Built-in sample media, generated deterministically on first use, so no files are needed.

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
    fn samples_are_deterministic() {
        assert_eq!(encode_rgb(16, 16, ImageFormat::Png), encode_rgb(16, 16, ImageFormat::Png));
        assert_eq!(&samples()[4].bytes[4..8], b"ftyp");
    }
}
