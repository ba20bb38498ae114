//! TF-slim's ImageNet preprocessing (`research/slim/preprocessing/` in
//! tensorflow/models: `vgg_preprocessing.py` and `inception_preprocessing.py`,
//! `fast_mode=True`), the preprocessing TF-slim's published checkpoints were
//! trained and evaluated with. The arithmetic is TF's: TF1's legacy
//! `resize_bilinear` (`align_corners=False`, no half-pixel centres), float32
//! size computations truncated as `tf.to_int32` does, and TF's crop offsets.
//! The random draws come from ferroflow's seeded generator, so training
//! crops are distributed as TF's but are not TF's draws.
//!
//! The geometry and colour steps here produce a `[h, w, 3]` image on the
//! 0–255 scale; [`SlimPreprocessing::normalisation`] gives the per-channel
//! `(x - mean) * k` that finishes it.

use serde::{Deserialize, Serialize};

use crate::image::{ImageF32, ImageU8};
use crate::image_ops::{adjust_brightness, adjust_saturation, central_crop, crop, resize_with_crop_or_pad};
use crate::resize::resize_bilinear_legacy;
use ferroflow_rng::Rng;

/// `vgg_preprocessing.py`'s `_R_MEAN`, `_G_MEAN`, `_B_MEAN`.
pub const VGG_MEANS: [f32; 3] = [123.68, 116.78, 103.94];
/// `vgg_preprocessing.py`'s `_RESIZE_SIDE_MIN`: eval resizes the smaller side
/// to it; training draws the side from `[_RESIZE_SIDE_MIN, _RESIZE_SIDE_MAX]`.
pub const VGG_RESIZE_SIDE_MIN: usize = 256;
/// `vgg_preprocessing.py`'s `_RESIZE_SIDE_MAX`.
pub const VGG_RESIZE_SIDE_MAX: usize = 512;
/// `inception_preprocessing.preprocess_for_eval`'s `central_fraction`.
pub const INCEPTION_CENTRAL_FRACTION: f64 = 0.875;
/// `inception_preprocessing.distorted_bounding_box_crop`'s defaults.
const MIN_OBJECT_COVERED: f32 = 0.1;
const ASPECT_RATIO_RANGE: [f32; 2] = [0.75, 1.33];
const AREA_RANGE: [f32; 2] = [0.05, 1.0];
const MAX_ATTEMPTS: usize = 100;
/// `distort_color`'s `random_brightness(max_delta=32. / 255.)`, on the 0–255 scale.
const BRIGHTNESS_DELTA: f32 = 32.0;
/// `distort_color`'s `random_saturation(lower=0.5, upper=1.5)`.
const SATURATION_RANGE: [f32; 2] = [0.5, 1.5];

/// `data.preprocessing`: which TF-slim preprocessing feeds the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlimPreprocessing {
    /// ferroflow's own preprocessing (resize, `data.augment`, `data.normalize`).
    #[default]
    None,
    /// `vgg_preprocessing.py` (TF-slim's VGG and ResNet v1 checkpoints). Eval:
    /// resize the smaller side to 256 keeping the aspect ratio, central crop,
    /// subtract the ImageNet means. Training: the smaller side drawn from
    /// [256, 512], a random crop, a random left-right flip, the means.
    Vgg,
    /// `inception_preprocessing.py` (TF-slim's Inception and ResNet v2
    /// checkpoints). Eval: central crop of 0.875 of each side, bilinear resize,
    /// scale to [-1, 1]. Training: a distorted bounding-box crop
    /// (`sample_distorted_bounding_box`: at least 10% of the image, aspect
    /// ratio 0.75–1.33, 100 attempts), bilinear resize, a random flip, random
    /// brightness (±32/255) then saturation (0.5–1.5), clipped, scaled to [-1, 1].
    Inception,
}

impl SlimPreprocessing {
    /// The name used in settings and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            SlimPreprocessing::None => "none",
            SlimPreprocessing::Vgg => "vgg",
            SlimPreprocessing::Inception => "inception",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn from_name(name: &str) -> Option<SlimPreprocessing> {
        [SlimPreprocessing::None, SlimPreprocessing::Vgg, SlimPreprocessing::Inception]
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// The per-channel `(mean, k)` of `x = (pixel - mean) * k` that ends this
    /// preprocessing, on the 0–255 scale; `None` for [`SlimPreprocessing::None`].
    /// Inception's `(x / 255 - 0.5) * 2` is `(x - 127.5) * (2 / 255)`.
    pub fn normalisation(self) -> Option<([f32; 3], [f32; 3])> {
        match self {
            SlimPreprocessing::None => None,
            SlimPreprocessing::Vgg => Some((VGG_MEANS, [1.0; 3])),
            SlimPreprocessing::Inception => Some(([127.5; 3], [2.0 / 255.0; 3])),
        }
    }

    /// The eval geometry: `image` → `[height, width, c]` floats on the 0–255 scale.
    ///
    /// # Shapes
    /// `image`: `[h, w, c]` → `[size[0], size[1], c]`.
    pub fn eval_geometry(self, image: &ImageU8, size: [usize; 2]) -> ImageF32 {
        let [h, w] = size;
        match self {
            SlimPreprocessing::None | SlimPreprocessing::Inception => {
                let cropped = if self == SlimPreprocessing::Inception {
                    central_crop(image, INCEPTION_CENTRAL_FRACTION)
                } else {
                    image.clone()
                };
                resize_bilinear_legacy(&cropped.to_f32(), h, w, false)
            }
            SlimPreprocessing::Vgg => {
                let resized = aspect_preserving_resize(image, VGG_RESIZE_SIDE_MIN);
                central_crop_to(&resized, h, w)
            }
        }
    }

    /// The training geometry and colour: `image` → `([height, width, c]` floats on
    /// the 0–255 scale, whether to flip it left-right`)`. The flip is returned, not
    /// applied, because it commutes with the per-pixel steps and the final copy
    /// can fold it in.
    ///
    /// # Shapes
    /// `image`: `[h, w, c]` → `[size[0], size[1], c]`.
    pub fn train_geometry(self, image: &ImageU8, size: [usize; 2], rng: &mut Rng) -> (ImageF32, bool) {
        let [h, w] = size;
        match self {
            SlimPreprocessing::None => (resize_bilinear_legacy(&image.to_f32(), h, w, false), false),
            SlimPreprocessing::Vgg => {
                // `tf.random_uniform([], minval=256, maxval=512 + 1, dtype=tf.int32)`.
                let span = (VGG_RESIZE_SIDE_MAX - VGG_RESIZE_SIDE_MIN + 1) as u64;
                let side = VGG_RESIZE_SIDE_MIN + rng.below(span) as usize;
                let resized = aspect_preserving_resize(image, side);
                let cropped = if resized.height >= h && resized.width >= w {
                    // `_random_crop`: offsets uniform in [0, size - crop].
                    let y = rng.below((resized.height - h + 1) as u64) as usize;
                    let x = rng.below((resized.width - w + 1) as u64) as usize;
                    crop(&resized, y, x, h, w)
                } else {
                    resize_with_crop_or_pad(&resized, h, w)
                };
                (cropped, rng.uniform_f32() < 0.5)
            }
            SlimPreprocessing::Inception => {
                let (y, x, ch, cw) = sample_distorted_bounding_box(image.height, image.width, rng);
                let cropped = crop(image, y, x, ch, cw);
                let mut resized = resize_bilinear_legacy(&cropped.to_f32(), h, w, false);
                let flip = rng.uniform_f32() < 0.5;
                // `distort_color(color_ordering=0, fast_mode=True)`: brightness, then
                // saturation, then `clip_by_value(0, 1)`.
                let delta = rng.range_f32(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA);
                let factor = rng.range_f32(SATURATION_RANGE[0], SATURATION_RANGE[1]);
                resized = adjust_brightness(&resized, delta);
                if resized.channels == 3 {
                    // TF's saturation works on [0, 1] floats; it clamps nothing itself.
                    let unit = resized.map(|v| v / 255.0);
                    resized = adjust_saturation(&unit, factor).map(|v| v * 255.0);
                }
                resized.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
                (resized, flip)
            }
        }
    }

    /// The eval steps in words (for `describe_eval` and exported models' metadata).
    pub fn describe_eval(self, size: [usize; 2]) -> String {
        let [h, w] = size;
        match self {
            SlimPreprocessing::None => String::new(),
            SlimPreprocessing::Vgg => format!(
                "TF-slim vgg_preprocessing eval: resize the smaller side to {VGG_RESIZE_SIDE_MIN} keeping the aspect \
                 ratio (tf.compat.v1.image.resize_bilinear, align_corners false, sizes truncated in float32), \
                 central crop {h}x{w} (offsets (size - crop) // 2), subtract R {} G {} B {}",
                VGG_MEANS[0], VGG_MEANS[1], VGG_MEANS[2]
            ),
            SlimPreprocessing::Inception => format!(
                "TF-slim inception_preprocessing eval: central crop of fraction {INCEPTION_CENTRAL_FRACTION} \
                 (tf.image.central_crop), resize to {h}x{w} (tf.compat.v1.image.resize_bilinear, align_corners \
                 false), x = (pixel / 255 - 0.5) * 2"
            ),
        }
    }
}

/// `_smallest_size_at_least` + `_aspect_preserving_resize`: the smaller side
/// becomes `side`; the sizes are computed in float32 and truncated, as TF does.
fn aspect_preserving_resize(image: &ImageU8, side: usize) -> ImageF32 {
    let (h, w) = (image.height as f32, image.width as f32);
    let scale = if h > w { side as f32 / w } else { side as f32 / h };
    let (nh, nw) = (((h * scale) as usize).max(1), ((w * scale) as usize).max(1));
    resize_bilinear_legacy(&image.to_f32(), nh, nw, false)
}

/// `_central_crop`: offsets `(size - crop) / 2` truncated. An image smaller
/// than the crop (only possible for crops over 256) is padded, where TF would
/// fail an assertion.
fn central_crop_to(image: &ImageF32, h: usize, w: usize) -> ImageF32 {
    if image.height < h || image.width < w {
        return resize_with_crop_or_pad(image, h, w);
    }
    crop(image, (image.height - h) / 2, (image.width - w) / 2, h, w)
}

/// `tf.image.sample_distorted_bounding_box` for the whole image as the object
/// box, with `inception_preprocessing`'s constraints, as
/// `tensorflow/core/kernels/image/sample_distorted_bounding_box_op.cc` samples:
/// an aspect ratio uniform in the range, a height uniform between the smallest
/// and the largest that fit the area range, rounding repairs, a position
/// uniform in the image; after `MAX_ATTEMPTS` failures, the whole image.
/// Returns `(y, x, height, width)`.
pub fn sample_distorted_bounding_box(height: usize, width: usize, rng: &mut Rng) -> (usize, usize, usize, usize) {
    let (oh, ow) = (height as i64, width as i64);
    let object_area = (oh * ow) as f32;
    for _ in 0..MAX_ATTEMPTS {
        let aspect = rng.uniform_f32() * (ASPECT_RATIO_RANGE[1] - ASPECT_RATIO_RANGE[0]) + ASPECT_RATIO_RANGE[0];
        if let Some((y, x, h, w)) = random_crop(ow, oh, aspect, rng) {
            // The crop lies inside the image, so it covers `area / image area` of the object.
            let area = (h * w) as f32;
            if area >= 1.0 && object_area >= 1.0 && area / object_area >= MIN_OBJECT_COVERED {
                return (y as usize, x as usize, h as usize, w as usize);
            }
        }
    }
    (0, 0, height, width)
}

/// C's `lrintf` (round half to even, the default rounding mode).
fn lrint(v: f32) -> i64 {
    v.round_ties_even() as i64
}

/// `GenerateRandomCrop` of `sample_distorted_bounding_box_op.cc`.
fn random_crop(ow: i64, oh: i64, aspect: f32, rng: &mut Rng) -> Option<(i64, i64, i64, i64)> {
    let min_area = AREA_RANGE[0] * ow as f32 * oh as f32;
    let max_area = AREA_RANGE[1] * ow as f32 * oh as f32;
    let mut height = lrint((min_area / aspect).sqrt());
    let mut max_height = lrint((max_area / aspect).sqrt());
    if lrint(max_height as f32 * aspect) > ow {
        const EPS: f64 = 0.000_000_1;
        max_height = ((ow as f64 + 0.5 - EPS) / aspect as f64) as i64;
        if lrint(max_height as f32 * aspect) > ow {
            max_height -= 1;
        }
    }
    max_height = max_height.min(oh);
    height = height.min(max_height);
    if height < max_height {
        height += rng.below((max_height - height + 1) as u64) as i64;
    }
    let mut width = lrint(height as f32 * aspect);
    let mut area = (width * height) as f32;
    if area < min_area {
        height += 1;
        width = lrint(height as f32 * aspect);
        area = (width * height) as f32;
    }
    if area > max_area {
        height -= 1;
        width = lrint(height as f32 * aspect);
        area = (width * height) as f32;
    }
    if area < min_area || area > max_area || width > ow || height > oh || width <= 0 || height <= 0 {
        return None;
    }
    let y = if height < oh { rng.below((oh - height) as u64) as i64 } else { 0 };
    let x = if width < ow { rng.below((ow - width) as u64) as i64 } else { 0 };
    Some((y, x, height, width))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: usize, w: usize) -> ImageU8 {
        let data = (0..h * w * 3).map(|i| (i * 7 % 256) as u8).collect();
        ImageU8::new(h, w, 3, data)
    }

    #[test]
    fn vgg_eval_resizes_the_smaller_side_to_256_then_crops_the_centre() {
        let out = SlimPreprocessing::Vgg.eval_geometry(&image(480, 640), [224, 224]);
        assert_eq!((out.height, out.width, out.channels), (224, 224, 3));
        // 480x640 → 256x341 (float32 truncation), crop offsets (16, 58).
        let resized = aspect_preserving_resize(&image(480, 640), 256);
        assert_eq!((resized.height, resized.width), (256, 341));
        assert_eq!(out, crop(&resized, 16, 58, 224, 224));
    }

    #[test]
    fn distorted_boxes_satisfy_tf_slims_constraints() {
        let mut rng = Rng::new(7);
        let (h, w) = (300, 500);
        let mut whole = 0;
        for _ in 0..2000 {
            let (y, x, ch, cw) = sample_distorted_bounding_box(h, w, &mut rng);
            assert!(y + ch <= h && x + cw <= w && ch > 0 && cw > 0);
            if (ch, cw) == (h, w) {
                whole += 1;
                continue;
            }
            let area = (ch * cw) as f32 / (h * w) as f32;
            assert!(area >= 0.1 - 1e-6, "area {area}");
            let aspect = cw as f32 / ch as f32;
            // Width is rounded from height * aspect, so the ratio may stray by a pixel.
            assert!((0.75 - 1.0 / ch as f32..=1.33 + 1.0 / ch as f32).contains(&aspect), "aspect {aspect}");
        }
        assert!(whole < 200, "the fallback should be rare, got {whole} of 2000");
    }

    #[test]
    fn inception_training_output_stays_in_range_and_has_the_size() {
        let mut rng = Rng::new(1);
        for _ in 0..20 {
            let (out, _) = SlimPreprocessing::Inception.train_geometry(&image(120, 90), [64, 48], &mut rng);
            assert_eq!((out.height, out.width), (64, 48));
            assert!(out.data.iter().all(|v| (0.0..=255.0).contains(v)));
        }
    }
}
