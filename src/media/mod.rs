//! Photos customers send: checked by their bytes, stripped of their metadata, stored.
//!
//! [`clean`] is the one door an image passes before anything keeps it:
//!
//! 1. **Type by magic bytes** ([`Kind::sniff`]): JPEG, PNG, WebP or GIF, whatever the
//!    file was called or the client said; anything else is `unsupported_image`.
//! 2. **Size before decoding**: more than [`ImageLimits::max_bytes`] is `image_too_large`
//!    (the server stops reading a body at that limit, so a 50 MB upload is never read
//!    whole).
//! 3. **Dimensions from the header**, before a pixel is decoded: a side over
//!    [`ImageLimits::max_side`] or more than [`ImageLimits::max_pixels`] is
//!    `image_too_large_pixels` (a decompression bomb: a few KB of PNG that would decode to
//!    gigabytes). The decoder also gets the `image` crate's [`image::Limits`] (the same
//!    sides, and an allocation cap) as a second line.
//! 4. **Decoded whole**: a file whose bytes are not a whole image of its type is
//!    `bad_image`.
//! 5. **Re-encoded**: the EXIF orientation applied first (a phone's portrait photo stays
//!    upright), then written anew, JPEG (quality [`JPEG_QUALITY`]) for photos and PNG for
//!    images with transparency or from PNG and GIF files, so that nothing of the original
//!    file but its pixels survives: EXIF (GPS position, camera serial), XMP, ICC profiles,
//!    comments and PNG text chunks are gone. Larger than [`ImageLimits::max_stored_side`]
//!    on its long side, it is scaled down first.
//!
//! [`ImageStore`] keeps the result under the state directory by a random id, never a name
//! a client gave. This module imports only `dialogue` (for [`ImageRef`]); the server's
//! routes turn a [`MediaError`] into a 4xx JSON error.

pub mod store;

pub use store::{ImageMeta, ImageStore, StoreConfig, is_image_id};

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder};

pub use crate::dialogue::ImageRef;

/// The quality stored JPEGs are encoded with: photos stay sharp, a phone's 4 MB picture
/// becomes about 1 MB.
pub const JPEG_QUALITY: u8 = 85;

/// An image type kefu takes, read from the file's first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// JPEG (`FF D8 FF`).
    Jpeg,
    /// PNG (`89 50 4E 47 0D 0A 1A 0A`).
    Png,
    /// WebP (`RIFF….WEBP`).
    Webp,
    /// GIF (`GIF87a`, `GIF89a`); only the first frame is kept.
    Gif,
}

impl Kind {
    /// The type of `bytes`, by their magic number; `None` for anything else.
    pub fn sniff(bytes: &[u8]) -> Option<Kind> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Kind::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Kind::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Kind::Webp)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(Kind::Gif)
        } else {
            None
        }
    }

    /// The name in [`ImageRef::kind`], the API and the store's file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Jpeg => "jpeg",
            Kind::Png => "png",
            Kind::Webp => "webp",
            Kind::Gif => "gif",
        }
    }

    /// The kind a name stands for ([`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Jpeg, Kind::Png, Kind::Webp, Kind::Gif]
            .into_iter()
            .find(|k| k.name() == name)
    }

    /// The media type (`Content-Type`, `data:` URLs).
    pub fn mime(self) -> &'static str {
        match self {
            Kind::Jpeg => "image/jpeg",
            Kind::Png => "image/png",
            Kind::Webp => "image/webp",
            Kind::Gif => "image/gif",
        }
    }
}

/// What an image may be (`kefu serve --max-image-bytes`…).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageLimits {
    /// The most bytes one image may have as sent.
    pub max_bytes: usize,
    /// The longest side, in pixels, as the header says.
    pub max_side: u32,
    /// The most pixels (width × height), as the header says.
    pub max_pixels: u64,
    /// Images larger on their long side are scaled down to it before they are stored.
    pub max_stored_side: u32,
}

impl Default for ImageLimits {
    /// 10 MiB, 10,000 pixels a side, 40 megapixels, stored at most 4,096 pixels long.
    fn default() -> Self {
        ImageLimits {
            max_bytes: 10 * 1024 * 1024,
            max_side: 10_000,
            max_pixels: 40_000_000,
            max_stored_side: 4096,
        }
    }
}

/// Why an image was refused; [`MediaError::code`] is the API's `error.type`.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Not JPEG, PNG, WebP or GIF by its bytes.
    #[error("the file is not a JPEG, PNG, WebP or GIF image (its bytes were read, not its name)")]
    Unsupported,
    /// More bytes than allowed.
    #[error("the image is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// More pixels than allowed, by its header.
    #[error("the image is {width}×{height} pixels; at most {max_side} a side and {max_pixels} pixels are taken")]
    TooManyPixels {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The limit of a side.
        max_side: u32,
        /// The limit of width × height.
        max_pixels: u64,
    },
    /// Its bytes are not a whole image of its type.
    #[error("the file starts like a {kind} image but is not a whole one: {reason}")]
    Bad {
        /// The type its first bytes claim.
        kind: &'static str,
        /// What the decoder found.
        reason: String,
    },
    /// An image id that names no image of this conversation.
    #[error(
        "no image `{0}` in this conversation: upload it with POST /v1/images first (images are kept for a limited time)"
    )]
    Unknown(String),
    /// The conversation sent its images' worth for today.
    #[error("this conversation sent {limit} images today; no more are taken until tomorrow (UTC)")]
    TooManyToday {
        /// The daily limit.
        limit: u32,
    },
    /// The store could not write or read (logged with the path; not the client's fault).
    #[error("the image store: {0}")]
    Io(#[from] std::io::Error),
}

impl MediaError {
    /// The `error.type` the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::Unsupported => "unsupported_image",
            MediaError::TooLarge { .. } => "image_too_large",
            MediaError::TooManyPixels { .. } => "image_too_large_pixels",
            MediaError::Bad { .. } => "bad_image",
            MediaError::Unknown(_) => "unknown_image",
            MediaError::TooManyToday { .. } => "too_many_images_today",
            MediaError::Io(_) => "internal",
        }
    }
}

/// An image as it is stored: re-encoded pixels, nothing else of the file it came from.
#[derive(Clone, Debug)]
pub struct Cleaned {
    /// The stored type ([`Kind::Jpeg`] or [`Kind::Png`]).
    pub kind: Kind,
    /// Width in pixels, upright.
    pub width: u32,
    /// Height in pixels, upright.
    pub height: u32,
    /// The encoded bytes.
    pub bytes: Vec<u8>,
}

/// Checks `bytes` and re-encodes them without metadata (see the module's steps).
pub fn clean(bytes: &[u8], limits: &ImageLimits) -> Result<Cleaned, MediaError> {
    if bytes.len() > limits.max_bytes {
        return Err(MediaError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let kind = Kind::sniff(bytes).ok_or(MediaError::Unsupported)?;
    let bad = |e: image::ImageError| MediaError::Bad {
        kind: kind.name(),
        reason: e.to_string(),
    };
    let cursor = Cursor::new(bytes);
    let mut image = match kind {
        Kind::Jpeg => decode(
            image::codecs::jpeg::JpegDecoder::new(cursor).map_err(bad)?,
            kind,
            limits,
        )?,
        Kind::Png => decode(image::codecs::png::PngDecoder::new(cursor).map_err(bad)?, kind, limits)?,
        Kind::Webp => decode(
            image::codecs::webp::WebPDecoder::new(cursor).map_err(bad)?,
            kind,
            limits,
        )?,
        Kind::Gif => decode(image::codecs::gif::GifDecoder::new(cursor).map_err(bad)?, kind, limits)?,
    };
    let long = image.width().max(image.height());
    if long > limits.max_stored_side.max(1) {
        let side = limits.max_stored_side.max(1);
        image = image.resize(side, side, image::imageops::FilterType::Triangle);
    }
    // Photos as JPEG; what may be transparent, or was drawn (PNG screenshots, GIFs), as
    // PNG, whose lossless pixels keep text readable.
    let stored = if kind == Kind::Jpeg || (kind == Kind::Webp && !image.color().has_alpha()) {
        Kind::Jpeg
    } else {
        Kind::Png
    };
    let mut out = Vec::new();
    let encoded = match stored {
        Kind::Jpeg => {
            let rgb = DynamicImage::ImageRgb8(image.to_rgb8());
            rgb.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out,
                JPEG_QUALITY,
            ))
        }
        _ => {
            // 16-bit and float pixels are written as 8-bit: what a screen shows.
            let eight = if image.color().has_alpha() {
                DynamicImage::ImageRgba8(image.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(image.to_rgb8())
            };
            eight.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))
        }
    };
    encoded.map_err(|e| MediaError::Bad {
        kind: kind.name(),
        reason: format!("it could not be encoded again: {e}"),
    })?;
    Ok(Cleaned {
        kind: stored,
        width: image.width(),
        height: image.height(),
        bytes: out,
    })
}

/// Dimensions checked from the header, then decoded under `image`'s limits, upright.
fn decode(mut decoder: impl ImageDecoder, kind: Kind, limits: &ImageLimits) -> Result<DynamicImage, MediaError> {
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_side || height > limits.max_side || pixels > limits.max_pixels {
        return Err(MediaError::TooManyPixels {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    if width == 0 || height == 0 {
        return Err(MediaError::Bad {
            kind: kind.name(),
            reason: "it has no pixels".into(),
        });
    }
    let mut decoding = image::Limits::default();
    decoding.max_image_width = Some(limits.max_side);
    decoding.max_image_height = Some(limits.max_side);
    // The decoded pixels (at most 16 bytes each, RGBA of 32-bit floats) and the decoder's
    // own buffers.
    decoding.max_alloc = Some(limits.max_pixels.saturating_mul(16).saturating_add(64 << 20));
    let bad = |e: image::ImageError| MediaError::Bad {
        kind: kind.name(),
        reason: e.to_string(),
    };
    decoder.set_limits(decoding).map_err(bad)?;
    // A broken EXIF block is no reason to refuse the photo: it is dropped anyway.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(bad)?;
    image.apply_orientation(orientation);
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::new_rgb8(width, height)
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn types_are_read_from_the_bytes() {
        assert_eq!(Kind::sniff(&png(2, 2)), Some(Kind::Png));
        assert_eq!(Kind::sniff(b"\xFF\xD8\xFF\xE0rest"), Some(Kind::Jpeg));
        assert_eq!(Kind::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Kind::Webp));
        assert_eq!(Kind::sniff(b"GIF89a...."), Some(Kind::Gif));
        assert_eq!(Kind::sniff(b"this is text named photo.jpg"), None);
        assert_eq!(Kind::sniff(b""), None);
        assert_eq!(Kind::from_name("webp"), Some(Kind::Webp));
    }

    #[test]
    fn refusals_have_their_codes() {
        let limits = ImageLimits::default();
        assert_eq!(clean(b"hello", &limits).unwrap_err().code(), "unsupported_image");
        assert_eq!(
            clean(b"\xFF\xD8\xFF\xE0garbage garbage", &limits).unwrap_err().code(),
            "bad_image"
        );
        let small = ImageLimits {
            max_bytes: 10,
            ..ImageLimits::default()
        };
        assert_eq!(clean(&png(2, 2), &small).unwrap_err().code(), "image_too_large");
        let narrow = ImageLimits {
            max_side: 3,
            ..ImageLimits::default()
        };
        assert_eq!(clean(&png(4, 2), &narrow).unwrap_err().code(), "image_too_large_pixels");
    }

    #[test]
    fn large_images_are_scaled_down_to_the_stored_side() {
        let limits = ImageLimits {
            max_stored_side: 50,
            ..ImageLimits::default()
        };
        let cleaned = clean(&png(200, 100), &limits).unwrap();
        assert_eq!((cleaned.width, cleaned.height, cleaned.kind), (50, 25, Kind::Png));
    }
}
