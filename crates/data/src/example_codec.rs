//! Reading images and labels back out of `tf.train.Example`s in either
//! encoding `prepare` writes (and in the TF-slim or notes' style TensorFlow
//! scripts write).

use tfrecord::{Example, FeatureError};

use crate::dataset::Encoding;
use crate::decode::{DecodeError, DecodeOptions, decode_image};
use crate::decode_planar::{Decoded, decode_image_planar};
use crate::image::ImageU8;

/// An example's image and label.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedExample<I = ImageU8> {
    /// The pixels ([`ImageU8`]), or for [`decode_example_planar`] a
    /// [`Decoded`] image.
    pub image: I,
    /// The class label, for classification records.
    pub label: Option<i64>,
    /// The float targets, for regression records.
    pub target: Vec<f32>,
}

/// Why an Example could not be read as an image record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExampleError {
    /// A missing or mistyped feature.
    #[error(transparent)]
    Feature(#[from] FeatureError),
    /// The image bytes do not decode.
    #[error("image/encoded: {0}")]
    Decode(#[from] DecodeError),
    /// Raw pixels that do not match height × width × channels.
    #[error("img_raw has {got} bytes, but height {height} x width {width} x channels {channels} = {expected}")]
    RawSize {
        /// Height.
        height: i64,
        /// Width.
        width: i64,
        /// Channels.
        channels: i64,
        /// Bytes expected.
        expected: i64,
        /// Bytes present.
        got: usize,
    },
    /// Raw pixels without height/width features, and not a square image.
    #[error("img_raw has {0} bytes and no height/width features, and is not a square RGB or grey image")]
    NoShape(usize),
    /// Neither `image/encoded` nor `img_raw`.
    #[error("neither image/encoded (original encoding) nor img_raw (raw encoding) is present (keys: {0})")]
    NoImage(String),
}

/// The encoding an Example uses, from its keys.
pub fn detect_encoding(example: &Example) -> Option<Encoding> {
    let has = |k| example.feature(k).is_ok();
    if has("image/encoded") {
        Some(Encoding::Original)
    } else if has("img_raw") {
        Some(Encoding::Raw)
    } else {
        None
    }
}

fn optional_floats(example: &Example, key: &str) -> Result<Vec<f32>, FeatureError> {
    match example.floats(key) {
        Ok(v) => Ok(v.to_vec()),
        Err(FeatureError::Missing { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn optional_int(example: &Example, key: &str) -> Result<Option<i64>, FeatureError> {
    match example.int64(key) {
        Ok(v) => Ok(Some(v)),
        Err(FeatureError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `(side, side, channels)` for a square RGB (preferred) or grey image of `len` bytes.
fn square_shape(len: usize) -> Option<(i64, i64, i64)> {
    let side = |n: usize| {
        let s = (n as f64).sqrt().round() as usize;
        (s > 0 && s * s == n).then_some(s as i64)
    };
    if len.is_multiple_of(3)
        && let Some(s) = side(len / 3)
    {
        return Some((s, s, 3));
    }
    side(len).map(|s| (s, s, 1))
}

/// Decodes an Example's image (with `options`) and its label or targets.
///
/// Raw records need `height`, `width` and (unless 1-or-3 can be inferred from
/// the byte count) `channels`; their pixels are converted to the channel
/// count `options.channels` asks for.
pub fn decode_example(example: &Example, options: &DecodeOptions) -> Result<DecodedExample, ExampleError> {
    decode_example_with(example, options, decode_image, |image| image)
}

/// [`decode_example`] through [`decode_image_planar`]: a colour JPEG in the
/// original encoding may come back as its YCbCr planes (the fast input path).
pub fn decode_example_planar(
    example: &Example,
    options: &DecodeOptions,
) -> Result<DecodedExample<Decoded>, ExampleError> {
    decode_example_with(example, options, decode_image_planar, Decoded::Pixels)
}

/// [`decode_example`] with `decode` for encoded images and `wrap` for raw pixels.
fn decode_example_with<I>(
    example: &Example,
    options: &DecodeOptions,
    decode: impl FnOnce(&[u8], &DecodeOptions) -> Result<I, DecodeError>,
    wrap: impl FnOnce(ImageU8) -> I,
) -> Result<DecodedExample<I>, ExampleError> {
    match detect_encoding(example) {
        Some(Encoding::Original) => {
            let image = decode(example.bytes("image/encoded")?, options)?;
            Ok(DecodedExample {
                image,
                label: optional_int(example, "image/class/label")?,
                target: optional_floats(example, "image/target")?,
            })
        }
        Some(Encoding::Raw) => {
            let raw = example.bytes("img_raw")?;
            let (h, w, c) = match (optional_int(example, "height")?, optional_int(example, "width")?) {
                (Some(h), Some(w)) => {
                    let c = match optional_int(example, "channels")? {
                        Some(c) => c,
                        None if h > 0 && w > 0 => raw.len() as i64 / (h * w),
                        None => 0,
                    };
                    (h, w, c)
                }
                // The notes' records carry no shape: accept square RGB or grey.
                _ => square_shape(raw.len()).ok_or(ExampleError::NoShape(raw.len()))?,
            };
            let expected = h.saturating_mul(w).saturating_mul(c);
            if h <= 0 || w <= 0 || !(c == 1 || c == 3) || expected != raw.len() as i64 {
                return Err(ExampleError::RawSize { height: h, width: w, channels: c, expected, got: raw.len() });
            }
            let mut image = ImageU8::new(h as usize, w as usize, c as usize, raw.to_vec());
            image = match (c, options.channels) {
                (1, Some(3)) => {
                    ImageU8::new(image.height, image.width, 3, image.data.iter().flat_map(|&v| [v; 3]).collect())
                }
                (3, Some(1)) => crate::image_ops::rgb_to_grayscale(&image.to_f32()).to_u8(),
                _ => image,
            };
            Ok(DecodedExample {
                image: wrap(image),
                label: optional_int(example, "label")?,
                target: optional_floats(example, "target")?,
            })
        }
        None => Err(ExampleError::NoImage(example.features().map(|(k, _)| k).collect::<Vec<_>>().join(", "))),
    }
}
