//! The fast input path's decoder: JPEGs as libjpeg's raw YCbCr planes
//! (`raw_data_out`), skipping its chroma upsampling and colour conversion,
//! which the fused resize does at the (smaller) output size instead.
//!
//! Measured on the 54 JPEGs of testdata/data/photos-mini decoded at full size
//! (one thread; `cargo run --release -p ferroflow-data --example
//! jpeg_decode_cost`): 382–403 µs per photo as planes against 506–555 µs as
//! RGB, and 77–79 µs against 129–140 µs for the resize to 224x224 that follows.

use mozjpeg::DctMethod;
use mozjpeg_sys::J_COLOR_SPACE::JCS_YCbCr;

use crate::decode::{
    DecodeError, DecodeOptions, ImageFormat, check_pixels, decode_image, jpeg_header, jpeg_io_error,
    jpeg_scale_eighths, jpeg_size, recycle_decoded, with_libjpeg,
};
use crate::image::ImageU8;
use crate::ycc::{YccImage, YccPlane};

/// A decoded image as the fast input path takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Pixels, as [`decode_image`] returns them.
    Pixels(ImageU8),
    /// A colour JPEG's YCbCr planes, not yet upsampled or converted.
    Ycc(YccImage),
}

impl Decoded {
    /// `(height, width)` of the decoded image.
    pub fn size(&self) -> (usize, usize) {
        match self {
            Decoded::Pixels(image) => (image.height, image.width),
            Decoded::Ycc(ycc) => (ycc.height, ycc.width),
        }
    }

    /// The RGB (or grey) pixels, converting planes with [`YccImage::to_rgb`].
    pub fn into_pixels(self) -> ImageU8 {
        match self {
            Decoded::Pixels(image) => image,
            Decoded::Ycc(ycc) => ycc.to_rgb(),
        }
    }
}

/// [`decode_image`], except that a 3-channel decode of a YCbCr JPEG returns
/// its planes ([`Decoded::Ycc`]) when libjpeg would decode it at full scale
/// (no `jpeg_min_size`, or one the DCT scaling cannot shrink to: scaled
/// decodes are cheaper as RGB). The planes are the samples libjpeg's RGB
/// decode starts from (same IDCT, `JDCT_IFAST`); errors are `decode_image`'s.
///
/// ```
/// use ferroflow_data::{Decoded, DecodeOptions, decode_image, decode_image_planar};
/// let jpeg = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/data/photos-mini/chelsea/00001.jpg")).unwrap();
/// let options = DecodeOptions { channels: Some(3), ..Default::default() };
/// let Decoded::Ycc(planes) = decode_image_planar(&jpeg, &options).unwrap() else { panic!("a 4:2:0 JPEG") };
/// let rgb = decode_image(&jpeg, &options).unwrap();
/// assert_eq!((planes.height, planes.width), (rgb.height, rgb.width));
/// assert_eq!(planes.planes[1].step, [2, 2]);
/// ```
pub fn decode_image_planar(bytes: &[u8], options: &DecodeOptions) -> Result<Decoded, DecodeError> {
    if options.channels == Some(3)
        && ImageFormat::sniff(bytes) == Some(ImageFormat::Jpeg)
        && let Some(planes) = with_libjpeg(|| decode_jpeg_ycc(bytes, options))?
    {
        return Ok(Decoded::Ycc(planes));
    }
    decode_image(bytes, options).map(Decoded::Pixels)
}

/// Hands a decoded image's buffers back for the next decode on this thread
/// (see [`recycle_decoded`]).
pub fn recycle_planar(image: Decoded) {
    match image {
        Decoded::Pixels(image) => recycle_decoded(image),
        Decoded::Ycc(ycc) => PLANES.with_borrow_mut(|held| {
            for (held, plane) in held.iter_mut().zip(ycc.planes) {
                if plane.data.capacity() > held.capacity() {
                    *held = plane.data;
                }
            }
        }),
    }
}

thread_local! {
    /// Plane buffers handed back by [`recycle_planar`], reused so that each
    /// image does not page-fault fresh memory (as `decode::DECODED`).
    static PLANES: std::cell::RefCell<[Vec<u8>; 3]> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// The planes of a YCbCr JPEG, or `None` when it is not one this path takes
/// (another colour space, unusual sampling factors, or a DCT-scaled decode).
/// Call inside `with_libjpeg`.
fn decode_jpeg_ycc(bytes: &[u8], options: &DecodeOptions) -> Result<Option<YccImage>, DecodeError> {
    let mut header = jpeg_header(bytes, false)?;
    let (width, height) = jpeg_size(&header)?;
    check_pixels(ImageFormat::Jpeg, width, height, options.max_pixels)?;
    let (width, height) = (width as usize, height as usize);
    if header.color_space() != JCS_YCbCr {
        return Ok(None);
    }
    if options.jpeg_min_size.is_some_and(|min| jpeg_scale_eighths(width, height, min) != 8) {
        return Ok(None);
    }
    let sampling: Vec<(usize, usize)> =
        header.components().iter().map(|c| (c.h_samp_factor as usize, c.v_samp_factor as usize)).collect();
    let [luma, _, _] = sampling[..] else { return Ok(None) };
    // Every chroma factor must divide luma's, so luma is the full-resolution
    // plane and each chroma plane a whole subsampling of it (chroma sampled
    // more finely than luma, or by a factor that does not divide luma's, is
    // left to the RGB decode); the wrapper reads at most 16 rows per call
    // (vertical factors up to 2).
    if luma.1 > 2 || sampling.iter().any(|&(h, v)| h == 0 || v == 0 || luma.0 % h != 0 || luma.1 % v != 0) {
        return Ok(None);
    }
    header.dct_method(DctMethod::IntegerFast);
    let mut started = header.raw().map_err(jpeg_io_error)?;
    let strides: Vec<usize> = started.components().iter().map(|c| c.width_in_blocks as usize * 8).collect();
    // The wrapper appends whole iMCU rows (`v * 8` rows of each plane per
    // call) into each buffer's spare capacity and marks them filled, but
    // libjpeg leaves the block rows below the image unwritten. So each buffer
    // gets, before decoding, initialised memory for every row the wrapper will
    // mark (it then never reallocates), and is cut to the plane's rows after:
    // every byte left was written by libjpeg in this decode.
    let imcu_rows = height.div_ceil(luma.1 * 8);
    let mut buffers = PLANES.with_borrow_mut(std::mem::take);
    for ((b, &stride), &(_, v)) in buffers.iter_mut().zip(&strides).zip(&sampling) {
        let need = stride * v * 8 * imcu_rows;
        if b.capacity() < need {
            *b = vec![0; need];
        }
        b.clear();
    }
    {
        let [y, cb, cr] = &mut buffers;
        started.read_raw_data(&mut [y, cb, cr]);
    }
    started.finish().map_err(jpeg_io_error)?;
    let plane = |data: Vec<u8>, (h, v): (usize, usize), stride: usize| {
        let step = [luma.0 / h, luma.1 / v];
        YccPlane { data, stride, width: width.div_ceil(step[0]), height: height.div_ceil(step[1]), step }
    };
    let [y, cb, cr] = buffers;
    let mut planes =
        [plane(y, sampling[0], strides[0]), plane(cb, sampling[1], strides[1]), plane(cr, sampling[2], strides[2])];
    for p in &mut planes {
        if p.stride < p.width || p.data.len() < p.stride * p.height {
            return Err(DecodeError::Corrupt {
                format: "jpeg",
                reason: format!("decoded {} bytes for a {}x{} plane", p.data.len(), p.width, p.height),
            });
        }
        p.data.truncate(p.stride * p.height);
    }
    Ok(Some(YccImage { width, height, planes }))
}
