//! Decoding JPEG, PNG, BMP and GIF into 8-bit images of 1 or 3 channels, with
//! a pixel limit against decompression bombs, and an optional DCT-domain
//! downscaling path for JPEGs (like `tf.image.decode_jpeg(ratio=…)`).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;

use crate::image::ImageU8;

/// Default pixel limit: PIL's `MAX_IMAGE_PIXELS` (about 89.5 megapixels,
/// 1024 * 1024 * 1024 / 4 / 3), a limit image pipelines already live with.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// An encoded image format ferroflow decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// JPEG (baseline and progressive; grey, YCbCr, CMYK).
    Jpeg,
    /// PNG (any bit depth and colour type).
    Png,
    /// Windows bitmap.
    Bmp,
    /// GIF (the first frame).
    Gif,
}

impl ImageFormat {
    /// Recognises a format from its magic bytes.
    ///
    /// ```
    /// use ferroflow_data::ImageFormat;
    /// assert_eq!(ImageFormat::sniff(b"\xff\xd8\xff\xe0"), Some(ImageFormat::Jpeg));
    /// assert_eq!(ImageFormat::sniff(b"hello"), None);
    /// ```
    pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
        if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(ImageFormat::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(ImageFormat::Png)
        } else if bytes.starts_with(b"BM") {
            Some(ImageFormat::Bmp)
        } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
            Some(ImageFormat::Gif)
        } else {
            None
        }
    }

    /// The TF-slim `image/format` value (`jpeg`, `png`, `bmp`, `gif`).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Jpeg => "jpeg",
            ImageFormat::Png => "png",
            ImageFormat::Bmp => "bmp",
            ImageFormat::Gif => "gif",
        }
    }

    fn to_image_crate(self) -> image::ImageFormat {
        match self {
            // JPEGs are decoded by zune-jpeg directly (see `decode_jpeg`).
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::Bmp => image::ImageFormat::Bmp,
            ImageFormat::Gif => image::ImageFormat::Gif,
        }
    }
}

/// Why an image could not be decoded. The caller adds the file name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Zero bytes.
    #[error("empty file (0 bytes)")]
    Empty,
    /// The bytes are not JPEG, PNG, BMP or GIF.
    #[error("not a recognised image format (expected JPEG, PNG, BMP or GIF; starts with {head})")]
    UnknownFormat {
        /// The first bytes, in hex.
        head: String,
    },
    /// The header declares more pixels than allowed.
    #[error("{width}x{height} image has {} pixels, over the limit of {limit} (a decompression bomb guard; raise max_pixels to allow it)", u64::from(*width) * u64::from(*height))]
    TooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The limit.
        limit: u64,
    },
    /// The data ends early.
    #[error("truncated {format} data: {reason}")]
    Truncated {
        /// The format.
        format: &'static str,
        /// The decoder's words.
        reason: String,
    },
    /// The data is damaged or uses an unsupported feature.
    #[error("corrupt or unsupported {format} data: {reason}")]
    Corrupt {
        /// The format.
        format: &'static str,
        /// The decoder's words.
        reason: String,
    },
    /// A channel count other than 1 or 3 was asked for.
    #[error("cannot decode to {0} channels (1 or 3 are supported)")]
    Channels(usize),
}

/// How to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// `Some(1)` greyscale, `Some(3)` RGB; `None` keeps a grey source grey and
    /// makes everything else RGB. Alpha is always dropped, as TF does with
    /// `channels=3`.
    pub channels: Option<usize>,
    /// Images declaring more pixels than this are rejected before decoding.
    pub max_pixels: u64,
    /// Fast path: for JPEGs, let the IDCT downscale by 1/2, 1/4 or 1/8 as
    /// long as the result is still at least this `(height, width)`. The
    /// output is then smaller than the source; resize it as usual afterwards.
    pub jpeg_min_size: Option<(usize, usize)>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { channels: None, max_pixels: DEFAULT_MAX_PIXELS, jpeg_min_size: None }
    }
}

/// What an image header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// The format.
    pub format: ImageFormat,
    /// True for greyscale sources (with or without alpha).
    pub grey: bool,
}

/// Width, height, format and colour from the header alone (no pixel decoding).
pub fn image_info(bytes: &[u8]) -> Result<ImageInfo, DecodeError> {
    let format = sniff(bytes)?;
    if format == ImageFormat::Jpeg {
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options(None));
        decoder.decode_headers().map_err(jpeg_error)?;
        let info = decoder.info().ok_or_else(|| jpeg_error("no frame header"))?;
        let grey = matches!(decoder.input_colorspace(), Some(ColorSpace::Luma | ColorSpace::LumaA));
        return Ok(ImageInfo { width: u32::from(info.width), height: u32::from(info.height), format, grey });
    }
    let reader = ImageReader::with_format(Cursor::new(bytes), format.to_image_crate());
    let decoder = reader.into_decoder().map_err(|e| map_error(format, e))?;
    let (width, height) = decoder.dimensions();
    Ok(ImageInfo { width, height, format, grey: is_grey(decoder.color_type()) })
}

fn is_grey(color: image::ColorType) -> bool {
    matches!(color, image::ColorType::L8 | image::ColorType::L16 | image::ColorType::La8 | image::ColorType::La16)
}

fn sniff(bytes: &[u8]) -> Result<ImageFormat, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    ImageFormat::sniff(bytes).ok_or_else(|| DecodeError::UnknownFormat {
        head: bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
    })
}

fn map_error(format: ImageFormat, e: image::ImageError) -> DecodeError {
    let reason = e.to_string();
    let truncated = matches!(&e, image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
        || reason.to_lowercase().contains("eof")
        || reason.to_lowercase().contains("end of file")
        || reason.to_lowercase().contains("unexpected end");
    if truncated {
        DecodeError::Truncated { format: format.name(), reason }
    } else {
        DecodeError::Corrupt { format: format.name(), reason }
    }
}

/// Decodes an image.
///
/// ```
/// use ferroflow_data::{decode_image, DecodeOptions, DecodeError};
/// let err = decode_image(b"plain text", &DecodeOptions::default()).unwrap_err();
/// assert!(matches!(err, DecodeError::UnknownFormat { .. }));
/// ```
pub fn decode_image(bytes: &[u8], options: &DecodeOptions) -> Result<ImageU8, DecodeError> {
    if let Some(c) = options.channels
        && c != 1
        && c != 3
    {
        return Err(DecodeError::Channels(c));
    }
    let format = sniff(bytes)?;
    let ImageInfo { width, height, .. } = image_info(bytes)?;
    let pixels = u64::from(width) * u64::from(height);
    if pixels > options.max_pixels {
        return Err(DecodeError::TooLarge { width, height, limit: options.max_pixels });
    }
    if pixels == 0 {
        return Err(DecodeError::Corrupt {
            format: format.name(),
            reason: format!("{width}x{height} image has no pixels"),
        });
    }
    if format == ImageFormat::Jpeg
        && let Some(min_size) = options.jpeg_min_size
    {
        return decode_jpeg_scaled(bytes, min_size, options.channels);
    }
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, options.channels);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.to_image_crate());
    let mut limits = image::Limits::default();
    // Room for the largest decoded form (16-bit RGBA) of an allowed image.
    limits.max_alloc = Some(options.max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| map_error(format, e))?;
    let grey_source = is_grey(decoder.color_type());
    let dynamic = DynamicImage::from_decoder(decoder).map_err(|e| map_error(format, e))?;
    let channels = options.channels.unwrap_or(if grey_source { 1 } else { 3 });
    Ok(to_channels(dynamic, channels, grey_source))
}

/// Converts to 1 or 3 channels. Grey to RGB replicates; RGB to grey uses
/// `tf.image.rgb_to_grayscale`'s weights, rounded.
fn to_channels(dynamic: DynamicImage, channels: usize, grey_source: bool) -> ImageU8 {
    let (w, h) = (dynamic.width() as usize, dynamic.height() as usize);
    if channels == 3 {
        return ImageU8::new(h, w, 3, dynamic.into_rgb8().into_raw());
    }
    if grey_source {
        return ImageU8::new(h, w, 1, dynamic.into_luma8().into_raw());
    }
    let rgb = dynamic.into_rgb8().into_raw();
    ImageU8::new(h, w, 1, rgb.chunks_exact(3).map(|p| rgb_to_grey(p[0], p[1], p[2])).collect())
}

/// `tf.image.rgb_to_grayscale` weights (`image_ops_impl.py`), rounded to 8 bits.
fn rgb_to_grey(r: u8, g: u8, b: u8) -> u8 {
    (0.2989 * f32::from(r) + 0.5870 * f32::from(g) + 0.1140 * f32::from(b)).round().clamp(0.0, 255.0) as u8
}

/// zune-jpeg in strict mode: damaged entropy-coded data is an error rather
/// than silently patched-over pixels (TF reports such files too).
fn jpeg_options(out: Option<ColorSpace>) -> zune_jpeg::zune_core::options::DecoderOptions {
    let o = zune_jpeg::zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    match out {
        Some(c) => o.jpeg_set_out_colorspace(c),
        None => o,
    }
}

fn jpeg_error(e: impl std::fmt::Display) -> DecodeError {
    let reason = e.to_string();
    let lower = reason.to_lowercase();
    if lower.contains("eof")
        || lower.contains("end of")
        || lower.contains("no more bytes")
        || lower.contains("exhausted")
    {
        DecodeError::Truncated { format: "jpeg", reason }
    } else {
        DecodeError::Corrupt { format: "jpeg", reason }
    }
}

/// Decodes a JPEG with zune-jpeg: YCbCr, grey, CMYK and YCCK sources,
/// output as RGB or as luma (the Y channel, as libjpeg gives for grey output).
fn decode_jpeg(bytes: &[u8], channels: Option<usize>) -> Result<ImageU8, DecodeError> {
    // A JPEG must end with an EOI marker; one that does not was cut short.
    // (Decoders pad missing data with grey; TF's decode_jpeg fails instead.)
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if !bytes[..end].ends_with(&[0xff, 0xd9]) {
        return Err(DecodeError::Truncated {
            format: "jpeg",
            reason: format!("no end-of-image marker (FF D9) after {} bytes: the file is cut short", bytes.len()),
        });
    }
    let mut probe = JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options(None));
    probe.decode_headers().map_err(jpeg_error)?;
    let grey_source = matches!(probe.input_colorspace(), Some(ColorSpace::Luma | ColorSpace::LumaA));
    let channels = channels.unwrap_or(if grey_source { 1 } else { 3 });
    let out = if channels == 1 { ColorSpace::Luma } else { ColorSpace::RGB };
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options(Some(out)));
    let pixels = decoder.decode().map_err(jpeg_error)?;
    let info = decoder.info().ok_or_else(|| jpeg_error("no frame header"))?;
    let (w, h) = (usize::from(info.width), usize::from(info.height));
    if pixels.len() != w * h * channels {
        return Err(jpeg_error(format!("decoded {} bytes for a {w}x{h}x{channels} image", pixels.len())));
    }
    Ok(ImageU8::new(h, w, channels, pixels))
}

fn decode_jpeg_scaled(bytes: &[u8], min_size: (usize, usize), channels: Option<usize>) -> Result<ImageU8, DecodeError> {
    let corrupt = |e: jpeg_decoder::Error| {
        let reason = e.to_string();
        if reason.to_lowercase().contains("eof") || reason.to_lowercase().contains("end of") {
            DecodeError::Truncated { format: "jpeg", reason }
        } else {
            DecodeError::Corrupt { format: "jpeg", reason }
        }
    };
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    decoder.read_info().map_err(corrupt)?;
    let clamp = |v: usize| v.clamp(1, usize::from(u16::MAX)) as u16;
    let (w, h) = decoder.scale(clamp(min_size.1), clamp(min_size.0)).map_err(corrupt)?;
    let pixels = decoder.decode().map_err(corrupt)?;
    let info =
        decoder.info().ok_or_else(|| DecodeError::Corrupt { format: "jpeg", reason: "no frame header".into() })?;
    let (w, h) = (usize::from(w), usize::from(h));
    use jpeg_decoder::PixelFormat;
    let (grey_source, rgb): (bool, Vec<u8>) = match info.pixel_format {
        PixelFormat::L8 => (true, pixels),
        PixelFormat::L16 => (true, pixels.chunks_exact(2).map(|p| p[0]).collect()),
        PixelFormat::RGB24 => (false, pixels),
        // jpeg-decoder returns Adobe CMYK already un-inverted; convert as libjpeg's users do.
        PixelFormat::CMYK32 => (
            false,
            pixels
                .chunks_exact(4)
                .flat_map(|p| {
                    let k = u16::from(p[3]);
                    [p[0], p[1], p[2]].map(|c| (u16::from(255 - c) * (255 - k) / 255) as u8)
                })
                .collect(),
        ),
    };
    let channels = channels.unwrap_or(if grey_source { 1 } else { 3 });
    if rgb.len() != w * h * if grey_source { 1 } else { 3 } {
        return Err(DecodeError::Corrupt {
            format: "jpeg",
            reason: format!("decoded {} bytes for {w}x{h}", rgb.len()),
        });
    }
    Ok(match (grey_source, channels) {
        (true, 1) | (false, 3) => ImageU8::new(h, w, channels, rgb),
        (true, _) => ImageU8::new(h, w, 3, rgb.iter().flat_map(|&v| [v, v, v]).collect()),
        (false, _) => ImageU8::new(h, w, 1, rgb.chunks_exact(3).map(|p| rgb_to_grey(p[0], p[1], p[2])).collect()),
    })
}
