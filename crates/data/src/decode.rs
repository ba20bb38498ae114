//! Decoding JPEG, PNG, BMP and GIF into 8-bit images of 1 or 3 channels, with
//! a pixel limit against decompression bombs, and an optional DCT-domain
//! downscaling path for JPEGs (like `tf.image.decode_jpeg(ratio=…)`).
//!
//! JPEGs are decoded by libjpeg-turbo's decoder (the copy inside MozJPEG, built
//! from C by the `mozjpeg-sys` crate) with TensorFlow's settings, so pixels
//! match `tf.io.decode_image` / `tf.io.decode_jpeg`: see [`decode_image`].
//! libjpeg's fatal errors, and its warnings about damaged or missing data,
//! become [`DecodeError`]s (see `libjpeg_errors` below). This relies on
//! unwinding, so ferroflow must not be built with `panic = "abort"`: there
//! a damaged JPEG would abort the process.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, ImageDecoder, ImageReader};
use mozjpeg::{DctMethod, Decompress, Marker};
use mozjpeg_sys::J_COLOR_SPACE::{JCS_CMYK, JCS_GRAYSCALE, JCS_RGB, JCS_YCCK};

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
            // Never used: JPEGs are decoded by libjpeg (see `decode_jpeg`).
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
    /// Fast path: for JPEGs, let libjpeg's IDCT downscale by 1/2, 1/4 or 1/8
    /// (`scale_num/scale_denom`, TF's `decode_jpeg(ratio=2|4|8)`), picking the
    /// largest reduction that keeps the result at least this `(height,
    /// width)`; without one, the image is decoded at full size. The output is
    /// then smaller than the source: resize it as usual afterwards.
    ///
    /// Accuracy cost, measured by the `dct_scaled_jpeg_is_close_after_resizing`
    /// test on the 18 photos of testdata/data/photos-mini/chelsea (about
    /// 300x400 to 480x640, so decoded at 1/4 for a minimum of 64x64) against
    /// the full decode, both then resized to 64x64: worst mean |difference|
    /// 6.78 on the 0–255 scale with plain bilinear (the pipeline's resize; most
    /// of it is aliasing in the full-size image, which bilinear shrinks 4–5x
    /// without filtering), 4.08 with antialiased bilinear.
    pub jpeg_min_size: Option<(usize, usize)>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { channels: None, max_pixels: DEFAULT_MAX_PIXELS, jpeg_min_size: None }
    }
}

#[allow(unsafe_code)] // a declaration of one C function of the linked libjpeg-turbo
unsafe extern "C" {
    // libjpeg-turbo's SIMD dispatch (`simd/x86_64/jsimd.c`): 1 when the IDCT
    // runs in SIMD on this CPU. Without nasm at build time, mozjpeg-sys
    // compiles `jsimd_none.c` instead, whose answer is always 0.
    fn jsimd_can_idct_ifast() -> std::os::raw::c_int;
}

/// True when the JPEG decoder runs libjpeg-turbo's SIMD kernels (IDCT, colour
/// conversion, upsampling) on this CPU. False when ferroflow was built
/// without `nasm` (mozjpeg-sys then warns once at build time and builds plain
/// C: the same pixels, the input pipeline of `bench/photo_set_input.py`
/// 26% slower) or on a CPU without SSE2.
#[allow(unsafe_code)]
pub fn jpeg_simd() -> bool {
    // SAFETY: a C function without arguments that only reads the CPU's
    // features (once, behind libjpeg-turbo's own lock-free init).
    unsafe { jsimd_can_idct_ifast() != 0 }
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
        return with_libjpeg(|| {
            let header = jpeg_header(bytes, false)?;
            let (width, height) = jpeg_size(&header)?;
            Ok(ImageInfo { width, height, format, grey: header.color_space() == JCS_GRAYSCALE })
        });
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
/// JPEGs are decoded as TensorFlow's `tf.io.decode_image` and
/// `tf.io.decode_jpeg` (with their default arguments) decode them: libjpeg-turbo
/// with the fast integer IDCT (`JDCT_IFAST`) and fancy (smooth) chroma
/// upsampling; `channels: Some(1)` asks libjpeg for `JCS_GRAYSCALE` (the luma
/// plane of a YCbCr JPEG), `Some(3)` for RGB, with grey sources replicated and
/// CMYK/YCCK sources decoded to CMYK and converted to RGB with TF's formula
/// (which honours an Adobe APP14 marker's inverted CMYK). One deliberate
/// difference: a CMYK JPEG decoded to 1 channel is converted to RGB and then
/// to grey with `tf.image.rgb_to_grayscale`'s weights, where TF fails (libjpeg
/// cannot convert CMYK to greyscale).
///
/// Errors: a JPEG whose data ends early is [`DecodeError::Truncated`]; one that
/// libjpeg rejects, or warns about as damaged ("Corrupt JPEG data: …"), is
/// [`DecodeError::Corrupt`]. (TF ignores libjpeg's warnings and decodes such
/// files with patched-over pixels; here they are errors.) Warnings about
/// metadata only (an unknown JFIF revision or Adobe transform, a bad ICC
/// profile marker) are ignored, as TF ignores them. The pixel limit is checked
/// against the header before any pixel buffer is allocated.
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
    if format == ImageFormat::Jpeg {
        return with_libjpeg(|| decode_jpeg(bytes, options));
    }
    let ImageInfo { width, height, .. } = image_info(bytes)?;
    check_pixels(format, width, height, options.max_pixels)?;
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

/// The pixel limit, and no empty images.
pub(crate) fn check_pixels(format: ImageFormat, width: u32, height: u32, max_pixels: u64) -> Result<(), DecodeError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(DecodeError::TooLarge { width, height, limit: max_pixels });
    }
    if pixels == 0 {
        return Err(DecodeError::Corrupt {
            format: format.name(),
            reason: format!("{width}x{height} image has no pixels"),
        });
    }
    Ok(())
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

/// Runs `f`, which drives libjpeg, turning libjpeg's errors (and the warnings
/// that `libjpeg_errors` escalates) into `DecodeError`s. They arrive as
/// unwinds carrying a `libjpeg_errors::Failure`; anything else that unwinds
/// out of the wrapper crate (a bug) becomes `Corrupt` too, never a panic for
/// the caller. The libjpeg object is dropped (`jpeg_destroy_decompress`)
/// during the unwind, as libjpeg's error-recovery protocol asks.
pub(crate) fn with_libjpeg<T>(f: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(match payload.downcast::<libjpeg_errors::Failure>() {
            Ok(failure) if failure.truncated => DecodeError::Truncated { format: "jpeg", reason: failure.message },
            Ok(failure) => DecodeError::Corrupt { format: "jpeg", reason: failure.message },
            Err(other) => {
                let reason = other
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| other.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_else(|| "the JPEG decoder failed".to_string());
                DecodeError::Corrupt { format: "jpeg", reason }
            }
        }),
    }
}

/// An I/O-style error from the `mozjpeg` wrapper (it reads from the slice, so
/// only "no more data" and "no image" happen).
pub(crate) fn jpeg_io_error(e: std::io::Error) -> DecodeError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        DecodeError::Truncated { format: "jpeg", reason: "the data ends before the image does".to_string() }
    } else {
        DecodeError::Corrupt { format: "jpeg", reason: e.to_string() }
    }
}

/// Reads the JPEG header (only small allocations: no pixel buffers yet).
/// Call inside `with_libjpeg`. With `app14`, keeps APP14 markers, to tell
/// Adobe's inverted CMYK as libjpeg's `saw_Adobe_marker` does.
pub(crate) fn jpeg_header(bytes: &[u8], app14: bool) -> Result<Decompress<&[u8]>, DecodeError> {
    let markers: &[Marker] = if app14 { &[Marker::APP(14)] } else { &[] };
    Decompress::builder()
        .with_err(libjpeg_errors::error_mgr())
        .with_markers(markers)
        .from_mem(bytes)
        .map_err(jpeg_io_error)
}

pub(crate) fn jpeg_size(header: &Decompress<&[u8]>) -> Result<(u32, u32), DecodeError> {
    let (w, h) = header.size();
    match (u32::try_from(w), u32::try_from(h)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(DecodeError::Corrupt { format: "jpeg", reason: format!("{w}x{h} is not a JPEG size") }),
    }
}

/// The numerator `n` of the DCT scaling `n/8` (8, 4, 2 or 1): the smallest
/// that keeps libjpeg's output, `ceil(size * n / 8)`, at least `min_size`.
pub(crate) fn jpeg_scale_eighths(width: usize, height: usize, (min_h, min_w): (usize, usize)) -> u8 {
    [1u8, 2, 4]
        .into_iter()
        .find(|&n| {
            let denom = 8 / usize::from(n);
            width.div_ceil(denom) >= min_w && height.div_ceil(denom) >= min_h
        })
        .unwrap_or(8)
}

/// Decodes a JPEG with libjpeg as TF does (see `decode_image`). Call inside
/// `with_libjpeg`.
fn decode_jpeg(bytes: &[u8], options: &DecodeOptions) -> Result<ImageU8, DecodeError> {
    let mut header = jpeg_header(bytes, true)?;
    let (width, height) = jpeg_size(&header)?;
    check_pixels(ImageFormat::Jpeg, width, height, options.max_pixels)?;
    let source = header.color_space();
    let channels = options.channels.unwrap_or(if source == JCS_GRAYSCALE { 1 } else { 3 });
    let cmyk = matches!(source, JCS_CMYK | JCS_YCCK);
    // libjpeg's examine_app14: an APP14 marker of at least 12 bytes starting "Adobe".
    let adobe = cmyk
        && header.markers().any(|m| m.marker == Marker::APP(14) && m.data.len() >= 12 && m.data.starts_with(b"Adobe"));
    // TF's settings (`DecodeImageV2Op`): JDCT_IFAST, fancy upsampling, and
    // for `decode_jpeg(ratio=r)` scale 1/r (here the same scale as n/8).
    header.dct_method(DctMethod::IntegerFast);
    header.do_fancy_upsampling(true);
    if let Some(min_size) = options.jpeg_min_size {
        header.scale(jpeg_scale_eighths(width as usize, height as usize, min_size));
    }
    let (out, got) = match (cmyk, channels) {
        (true, _) => (JCS_CMYK, 4),
        (false, 1) => (JCS_GRAYSCALE, 1),
        _ => (JCS_RGB, 3),
    };
    let mut started = header.to_colorspace(out).map_err(jpeg_io_error)?;
    let (w, h) = (started.width(), started.height());
    let len = w * h * got;
    // Decode into this thread's recycled buffer (see `recycle_decoded`): a
    // fresh one per image costs a page fault per 4 KiB, and the kernel's
    // page clearing was 13% of the input pipeline's profile. Only growth is
    // zero-filled; libjpeg overwrites every byte it reports.
    let mut pixels = DECODED.with_borrow_mut(std::mem::take);
    if pixels.len() < len {
        pixels.resize(len, 0);
    }
    let read = started.read_scanlines_into(&mut pixels[..len]).map_err(jpeg_io_error)?.len();
    pixels.truncate(read);
    // Reads on to the end-of-image marker: data cut short after the last scan
    // is reported here.
    started.finish().map_err(jpeg_io_error)?;
    if pixels.len() != len {
        return Err(DecodeError::Corrupt {
            format: "jpeg",
            reason: format!("decoded {} bytes for a {w}x{h}x{got} image", pixels.len()),
        });
    }
    if !cmyk {
        return Ok(ImageU8::new(h, w, channels, pixels));
    }
    let rgb: Vec<u8> = pixels.chunks_exact(4).flat_map(|p| cmyk_to_rgb(p[0], p[1], p[2], p[3], adobe)).collect();
    Ok(if channels == 3 {
        ImageU8::new(h, w, 3, rgb)
    } else {
        ImageU8::new(h, w, 1, rgb.chunks_exact(3).map(|p| rgb_to_grey(p[0], p[1], p[2])).collect())
    })
}

thread_local! {
    /// A decoded-pixel buffer handed back by [`recycle_decoded`] for the
    /// next JPEG this thread decodes.
    static DECODED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands a decoded image's buffer back for the next decode on this thread
/// (the input pipeline does, once an image is preprocessed). The larger of
/// it and the buffer held already is kept.
///
/// ```
/// use ferroflow_data::{DecodeOptions, decode_image, recycle_decoded};
/// let jpeg = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/data/photos-mini/chelsea/00001.jpg")).unwrap();
/// let first = decode_image(&jpeg, &DecodeOptions::default()).unwrap();
/// let pixels = first.data.clone();
/// recycle_decoded(first);
/// assert_eq!(decode_image(&jpeg, &DecodeOptions::default()).unwrap().data, pixels);
/// ```
pub fn recycle_decoded(image: ImageU8) {
    let data = image.data;
    DECODED.with_borrow_mut(|held| {
        if data.capacity() > held.capacity() {
            *held = data;
        }
    });
}

/// TF's CMYK to RGB (`jpeg_mem.cc`): Adobe's CMYK is stored inverted.
fn cmyk_to_rgb(c: u8, m: u8, y: u8, k: u8, adobe: bool) -> [u8; 3] {
    let k = u32::from(k);
    // Both products are at most 255 * 255, so the quotients fit in a u8.
    [c, m, y].map(|v| {
        let v = u32::from(v);
        (if adobe { k * v / 255 } else { (255 - k) * (255 - v) / 255 }) as u8
    })
}

/// libjpeg's error manager, set up to report through unwinding.
///
/// libjpeg calls `error_exit` on a fatal error and expects it not to return
/// (C programs `longjmp` out of it); it calls `emit_message(-1)` on a warning
/// and carries on, patching over what it could not read. Here both hand a
/// [`Failure`] to `std::panic::resume_unwind`, which `with_libjpeg` catches.
/// Unwinding through libjpeg's C frames is defined: the callbacks are
/// `extern "C-unwind"`, and `mozjpeg-sys`'s `unwinding` feature compiles the
/// C code with `-fexceptions`. `resume_unwind` skips the panic hook, so
/// nothing is printed.
///
/// Unsafe code: reading the message code and text from
/// the error manager that libjpeg passes to these callbacks.
#[allow(unsafe_code)]
mod libjpeg_errors {
    use std::ffi::c_int;

    use mozjpeg_sys::{
        JERR_FILE_READ, JERR_INPUT_EMPTY, JERR_INPUT_EOF, JWRN_ADOBE_XFORM, JWRN_BOGUS_ICC, JWRN_JFIF_MAJOR,
        JWRN_JPEG_EOF, jpeg_common_struct, jpeg_error_mgr,
    };

    /// What libjpeg reported.
    pub(super) struct Failure {
        /// The data ended early.
        pub(super) truncated: bool,
        /// libjpeg's message.
        pub(super) message: String,
    }

    /// libjpeg's standard error manager with our `error_exit` and
    /// `emit_message`.
    pub(super) fn error_mgr() -> jpeg_error_mgr {
        let mut err = jpeg_error_mgr {
            error_exit: None,
            emit_message: None,
            output_message: None,
            format_message: None,
            reset_error_mgr: None,
            msg_code: 0,
            msg_parm: Default::default(),
            trace_level: 0,
            num_warnings: 0,
            jpeg_message_table: std::ptr::null(),
            last_jpeg_message: 0,
            addon_message_table: std::ptr::null(),
            first_addon_message: 0,
            last_addon_message: 0,
        };
        // SAFETY: jpeg_std_error only fills in the fields of the struct it is
        // given (with pointers to libjpeg's static functions and message
        // table) and keeps no pointer to it, so the struct may move afterwards.
        unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        err
    }

    extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
        std::panic::resume_unwind(Box::new(failure(cinfo)));
    }

    extern "C-unwind" fn emit_message(cinfo: &mut jpeg_common_struct, msg_level: c_int) {
        // -1 is a warning; 0 and up are advisory and trace messages.
        if msg_level >= 0 {
            return;
        }
        // Warnings about metadata only: the pixels are what TF gets too.
        if matches!(code(cinfo), Some(JWRN_JFIF_MAJOR | JWRN_ADOBE_XFORM | JWRN_BOGUS_ICC)) {
            return;
        }
        std::panic::resume_unwind(Box::new(failure(cinfo)));
    }

    fn code(cinfo: &jpeg_common_struct) -> Option<c_int> {
        // SAFETY: libjpeg calls the error manager's methods with `cinfo.err`
        // pointing at that error manager, which the `mozjpeg::Decompress`
        // owns (boxed) for as long as libjpeg can call it.
        unsafe { cinfo.err.as_ref() }.map(|err| err.msg_code)
    }

    fn failure(cinfo: &mut jpeg_common_struct) -> Failure {
        let code = code(cinfo);
        let truncated = matches!(code, Some(JWRN_JPEG_EOF | JERR_INPUT_EOF | JERR_INPUT_EMPTY | JERR_FILE_READ));
        Failure { truncated, message: message(cinfo).unwrap_or_else(|| format!("libjpeg message code {code:?}")) }
    }

    /// libjpeg's own text for the current message (`format_message`).
    fn message(cinfo: &mut jpeg_common_struct) -> Option<String> {
        // SAFETY: as in `code`.
        let format = unsafe { cinfo.err.as_ref() }?.format_message?;
        // libjpeg's JMSG_LENGTH_MAX: format_message writes at most this many
        // bytes, NUL included.
        let mut buffer = [0u8; 80];
        // SAFETY: the binding declares the buffer `&[u8; 80]`, but libjpeg
        // writes the message into it, so it is called with the signature it
        // has in C (`char *buffer`); the two reference types have the same ABI.
        let format = unsafe {
            std::mem::transmute::<
                unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]),
                unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &mut [u8; 80]),
            >(format)
        };
        // SAFETY: `cinfo` and its error manager are libjpeg's live objects
        // (see `code`), and `buffer` has the room format_message needs.
        unsafe { format(cinfo, &mut buffer) };
        let len = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        let text = String::from_utf8_lossy(&buffer[..len]).trim().to_string();
        (!text.is_empty()).then_some(text)
    }
}
