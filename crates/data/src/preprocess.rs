//! Train and eval preprocessing: resize, crop, flip, colour jitter and
//! normalisation, seeded per example, producing the model's CHW float input.

use serde::{Deserialize, Serialize};

use crate::decode_planar::Decoded;
use crate::image::{ImageF32, ImageU8};
use crate::image_ops::{
    adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, central_crop, crop, flip_left_right,
    pad_to_bounding_box,
};
use crate::resize::{ResizeMethod, ResizeOptions, resize, resize_bilinear_u8, resize_bilinear_u8_into_chw};
use crate::resize_ycc::resize_ycc_into_chw;
use crate::slim_preprocess::{SlimPreprocessing, VGG_RESIZE_SIDE_MIN};
use crate::ycc::YccImage;
use ferroflow_rng::Rng;

/// How training images are cropped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Crop {
    /// No crop: resize straight to the target size.
    #[default]
    None,
    /// CIFAR style: resize to the target, zero-pad `padding` pixels on each
    /// side, and take a random target-sized crop.
    Random {
        /// Pixels of zero padding per side.
        padding: usize,
    },
    /// Inception style (`tf.image.sample_distorted_bounding_box` with
    /// TF-slim's defaults): a random box covering `scale` of the area with
    /// aspect ratio in `ratio`, resized to the target. After 10 failed draws,
    /// the central crop.
    RandomResized {
        /// Area fraction range, e.g. [0.08, 1.0].
        scale: [f32; 2],
        /// Width/height ratio range, e.g. [0.75, 1.333].
        ratio: [f32; 2],
    },
}

/// Whether colour jitter and flips run before or after resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Resize (and crop) first, then flip and jitter the small image: cheaper.
    #[default]
    ResizeFirst,
    /// Flip and jitter at full resolution, then resize (and crop).
    AugmentFirst,
}

/// Training-time augmentation. Defaults: no crop, no flip, no jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Cropping.
    pub crop: Crop,
    /// Random left-right flip with probability 0.5.
    pub flip_left_right: bool,
    /// Maximum brightness delta, 0–255 scale (`tf.image.random_brightness`).
    pub brightness: f32,
    /// Contrast factor drawn from [1 - c, 1 + c] (`tf.image.random_contrast`).
    pub contrast: f32,
    /// Saturation factor drawn from [1 - s, 1 + s] (colour images only).
    pub saturation: f32,
    /// Maximum hue delta in [0, 0.5] (colour images only).
    pub hue: f32,
    /// Order of resize and augmentation.
    pub order: Order,
}

/// Everything that turns a decoded image into model input. Defaults: bilinear
/// resize without antialiasing, no augmentation, eval without central crop,
/// mean subtraction only when a mean is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Output `[height, width]`.
    pub image_size: [usize; 2],
    /// Output channels (1 or 3).
    pub channels: usize,
    /// `tf.image.ResizeMethod` name (`bilinear`, `nearest`, `area`, `bicubic`, …).
    pub resize_method: String,
    /// `tf.image.resize(antialias=…)`.
    pub antialias: bool,
    /// Training augmentation.
    pub train: Augment,
    /// Eval: keep the central fraction before resizing (TF-slim's inception
    /// eval uses 0.875); `None` resizes the whole image.
    pub eval_central_fraction: Option<f64>,
    /// Per-channel mean to subtract (0–255 scale), e.g. from dataset.json.
    pub mean: Option<[f32; 3]>,
    /// Per-channel std to divide by after subtracting the mean.
    pub std: Option<[f32; 3]>,
    /// Multiplier applied last (e.g. 1/255 to train on [0, 1] inputs).
    pub scale: f32,
    /// TF-slim's preprocessing ([`SlimPreprocessing`]) in place of the resize,
    /// `train` augmentation, central crop and normalisation above, which must
    /// then keep their defaults. Default: none.
    pub slim: SlimPreprocessing,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            image_size: [224, 224],
            channels: 3,
            resize_method: "bilinear".into(),
            antialias: false,
            train: Augment::default(),
            eval_central_fraction: None,
            mean: None,
            std: None,
            scale: 1.0,
            slim: SlimPreprocessing::None,
        }
    }
}

/// An invalid preprocessing setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("preprocess.{key}: {reason}")]
pub struct PreprocessError {
    /// The setting.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Preprocess {
    /// Checks every setting, naming the first bad one.
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |key, reason: String| Err(PreprocessError { key, reason });
        if self.image_size[0] == 0 || self.image_size[1] == 0 {
            return bad("image_size", format!("must be positive, got {:?}", self.image_size));
        }
        if self.channels != 1 && self.channels != 3 {
            return bad("channels", format!("must be 1 or 3, got {}", self.channels));
        }
        if ResizeMethod::from_tf_name(&self.resize_method).is_none() {
            return bad(
                "resize_method",
                format!(
                    "unknown method {:?} (expected one of: {})",
                    self.resize_method,
                    ResizeMethod::ALL.map(|m| m.tf_name()).join(", ")
                ),
            );
        }
        if let Some(f) = self.eval_central_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return bad("eval_central_fraction", format!("must be in (0, 1], got {f}"));
        }
        let a = &self.train;
        if a.brightness < 0.0 || a.contrast < 0.0 || !(0.0..=1.0).contains(&a.saturation) {
            return bad("train", "brightness and contrast must be >= 0 and saturation in [0, 1]".into());
        }
        if !(0.0..=0.5).contains(&a.hue) {
            return bad("train.hue", format!("must be in [0, 0.5], got {}", a.hue));
        }
        if let Crop::RandomResized { scale, ratio } = a.crop
            && !(0.0 < scale[0] && scale[0] <= scale[1] && scale[1] <= 1.0 && 0.0 < ratio[0] && ratio[0] <= ratio[1])
        {
            return bad(
                "train.crop",
                format!(
                    "random_resized needs 0 < scale lo <= hi <= 1 and 0 < ratio lo <= hi, got scale {scale:?} ratio {ratio:?}"
                ),
            );
        }
        if let Some(std) = self.std
            && std.iter().any(|&s| s <= 0.0)
        {
            return bad("std", format!("must be positive, got {std:?}"));
        }
        if self.slim != SlimPreprocessing::None {
            let name = self.slim.name();
            if self.channels != 3 {
                return bad(
                    "slim",
                    format!("TF-slim's {name} preprocessing takes RGB images, got {} channel(s)", self.channels),
                );
            }
            if self.slim == SlimPreprocessing::Vgg && self.image_size.iter().any(|&s| s > VGG_RESIZE_SIDE_MIN) {
                return bad(
                    "slim",
                    format!(
                        "TF-slim's vgg preprocessing crops {:?} out of an image whose smaller side is resized to \
                         {VGG_RESIZE_SIDE_MIN}: the crop must be at most {VGG_RESIZE_SIDE_MIN} on each side",
                        self.image_size
                    ),
                );
            }
            let d = Preprocess::default();
            if self.train != d.train
                || self.eval_central_fraction.is_some()
                || self.resize_method != d.resize_method
                || self.antialias
                || self.mean.is_some()
                || self.std.is_some()
                || self.scale != 1.0
            {
                return bad(
                    "slim",
                    format!(
                        "TF-slim's {name} preprocessing does its own resizing, cropping, augmentation and \
                         normalisation; leave augment, eval_central_fraction, resize_method, antialias, mean, std \
                         and scale at their defaults"
                    ),
                );
            }
        }
        Ok(())
    }

    fn resize_options(&self) -> ResizeOptions {
        ResizeOptions {
            method: ResizeMethod::from_tf_name(&self.resize_method).unwrap_or_default(),
            antialias: self.antialias,
        }
    }

    fn resize_to(&self, image: &ImageF32, h: usize, w: usize) -> ImageF32 {
        if (image.height, image.width) == (h, w) {
            return image.clone();
        }
        resize(image, h, w, &self.resize_options())
    }

    /// Resizes an 8-bit image, on the fast path when the method allows.
    fn resize_u8(&self, image: &ImageU8, h: usize, w: usize) -> ImageF32 {
        if (image.height, image.width) == (h, w) {
            return image.to_f32();
        }
        let options = self.resize_options();
        if options.method == ResizeMethod::Bilinear && !options.antialias {
            resize_bilinear_u8(image, h, w)
        } else {
            resize(&image.to_f32(), h, w, &options)
        }
    }

    /// The eval preprocessing in words, step by step, for people and tools that must
    /// reproduce it outside ferroflow (e.g. the metadata of an exported ONNX model).
    ///
    /// ```
    /// use ferroflow_data::Preprocess;
    /// let p = Preprocess { image_size: [28, 28], channels: 1, scale: 1.0 / 255.0, ..Default::default() };
    /// assert_eq!(
    ///     p.describe_eval(),
    ///     "decode to 1 channel (grey), 8-bit; resize to 28x28 (tf.image.resize, method bilinear, \
    ///      antialias false; skipped when the size already matches); \
    ///      x = (pixel - [0.0]) * [0.003921569] per channel; \
    ///      layout [C, H, W] (NCHW in a batch)"
    /// );
    /// ```
    pub fn describe_eval(&self) -> String {
        if self.slim != SlimPreprocessing::None {
            return format!(
                "decode to 3 channels (RGB), 8-bit; {}; layout [C, H, W] (NCHW in a batch)",
                self.slim.describe_eval(self.image_size)
            );
        }
        let channels = if self.channels == 1 { "1 channel (grey)" } else { "3 channels (RGB)" };
        let crop = match self.eval_central_fraction {
            Some(f) if f < 1.0 => format!("central crop of fraction {f} (tf.image.central_crop); "),
            _ => String::new(),
        };
        let [h, w] = self.image_size;
        let (mean, k) = self.normalisation();
        let c = self.channels.min(3);
        let (mean, k) = (&mean[..c], &k[..c]);
        format!(
            "decode to {channels}, 8-bit; {crop}resize to {h}x{w} (tf.image.resize, method {}, antialias {}; \
             skipped when the size already matches); x = (pixel - {mean:?}) * {k:?} per channel; \
             layout [C, H, W] (NCHW in a batch)",
            self.resize_method, self.antialias
        )
    }

    /// Eval preprocessing: optional central crop, resize, normalise.
    ///
    /// # Shapes
    /// `image`: `[h, w, c]` (c = `self.channels`) → `[channels, height, width]` (CHW).
    pub fn eval(&self, image: &ImageU8) -> Vec<f32> {
        let mut out = vec![0.0; self.output_len()];
        self.eval_into(image, &mut out);
        out
    }

    /// [`eval`](Self::eval) writing into `out` (`channels * height * width`
    /// floats), e.g. a slice of a batch buffer.
    pub fn eval_into(&self, image: &ImageU8, out: &mut [f32]) {
        let [h, w] = self.image_size;
        if self.slim != SlimPreprocessing::None {
            self.finish(self.slim.eval_geometry(image, self.image_size), false, out);
            return;
        }
        if self.fused_resize() {
            match self.eval_central_fraction {
                Some(f) if f < 1.0 => self.resize_into_chw(&central_crop(image, f), false, out),
                _ => self.resize_into_chw(image, false, out),
            }
            return;
        }
        let resized = match self.eval_central_fraction {
            Some(f) if f < 1.0 => self.resize_u8(&central_crop(image, f), h, w),
            _ => self.resize_u8(image, h, w),
        };
        self.finish(resized, false, out);
    }

    /// Floats per preprocessed image: `channels * height * width`.
    pub fn output_len(&self) -> usize {
        self.channels * self.image_size[0] * self.image_size[1]
    }

    /// Training preprocessing with augmentation drawn from `rng`.
    ///
    /// # Shapes
    /// `image`: `[h, w, c]` (c = `self.channels`) → `[channels, height, width]` (CHW).
    pub fn train(&self, image: &ImageU8, rng: &mut Rng) -> Vec<f32> {
        let mut out = vec![0.0; self.output_len()];
        self.train_into(image, rng, &mut out);
        out
    }

    /// [`train`](Self::train) writing into `out` (`channels * height * width` floats).
    pub fn train_into(&self, image: &ImageU8, rng: &mut Rng, out: &mut [f32]) {
        let a = &self.train;
        if self.slim != SlimPreprocessing::None {
            let (image, flip) = self.slim.train_geometry(image, self.image_size, rng);
            self.finish(image, flip, out);
            return;
        }
        if self.plain_train() {
            let flip = self.plain_flip(rng);
            self.resize_into_chw(image, flip, out);
            return;
        }
        match a.order {
            Order::ResizeFirst => {
                let geometric = self.train_geometry(image, rng);
                // Flipping commutes with the per-pixel colour ops, so it is
                // folded into the final copy.
                let (jittered, flip) = self.jitter(geometric, rng, true);
                self.finish(jittered, flip, out);
            }
            Order::AugmentFirst => {
                let (jittered, _) = self.jitter(image.to_f32(), rng, false);
                let geometric = self.train_geometry_f32(&jittered, rng);
                self.finish(geometric, false, out);
            }
        }
    }

    fn train_geometry(&self, image: &ImageU8, rng: &mut Rng) -> ImageF32 {
        let [h, w] = self.image_size;
        match self.train.crop {
            Crop::None => self.resize_u8(image, h, w),
            Crop::Random { padding } => {
                let resized = self.resize_u8(image, h, w);
                random_crop_padded(&resized, padding, rng)
            }
            Crop::RandomResized { scale, ratio } => {
                let (y, x, ch, cw) = sample_box(image.height, image.width, scale, ratio, rng);
                self.resize_u8(&crop(image, y, x, ch, cw), h, w)
            }
        }
    }

    fn train_geometry_f32(&self, image: &ImageF32, rng: &mut Rng) -> ImageF32 {
        let [h, w] = self.image_size;
        match self.train.crop {
            Crop::None => self.resize_to(image, h, w),
            Crop::Random { padding } => random_crop_padded(&self.resize_to(image, h, w), padding, rng),
            Crop::RandomResized { scale, ratio } => {
                let (y, x, ch, cw) = sample_box(image.height, image.width, scale, ratio, rng);
                self.resize_to(&crop(image, y, x, ch, cw), h, w)
            }
        }
    }

    /// Flip, then TF-slim's `distort_color` order 0: brightness, saturation,
    /// hue, contrast; clipped to [0, 255] as TF-slim clips to [0, 1]. With
    /// `defer_flip` the flip is not applied but returned, for `finish`.
    fn jitter(&self, mut image: ImageF32, rng: &mut Rng, defer_flip: bool) -> (ImageF32, bool) {
        let a = &self.train;
        // Draw every random number whether or not it is used, so that turning
        // one augmentation on does not change the others' draws.
        let flip = rng.uniform_f32() < 0.5;
        let brightness = rng.range_f32(-a.brightness, a.brightness);
        let saturation = rng.range_f32(1.0 - a.saturation, 1.0 + a.saturation);
        let hue = rng.range_f32(-a.hue, a.hue);
        let contrast = rng.range_f32(1.0 - a.contrast, 1.0 + a.contrast);
        let flip = a.flip_left_right && flip;
        if flip && !defer_flip {
            image = flip_left_right(&image);
        }
        let mut touched = false;
        if a.brightness > 0.0 {
            image = adjust_brightness(&image, brightness);
            touched = true;
        }
        if image.channels == 3 && (a.saturation > 0.0 || a.hue > 0.0) {
            // TF's saturation and hue ops work on [0, 1] floats.
            let mut unit = image.map(|v| (v / 255.0).clamp(0.0, 1.0));
            if a.saturation > 0.0 {
                unit = adjust_saturation(&unit, saturation);
            }
            if a.hue > 0.0 {
                unit = adjust_hue(&unit, hue);
            }
            image = unit.map(|v| v * 255.0);
            touched = true;
        }
        if a.contrast > 0.0 {
            image = adjust_contrast(&image, contrast);
            touched = true;
        }
        if touched {
            image.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
        }
        (image, flip && defer_flip)
    }

    /// True when training preprocessing is only a bilinear resize, an optional
    /// flip and the normalisation: the fused path.
    fn plain_train(&self) -> bool {
        let a = &self.train;
        let no_colour = a.brightness == 0.0 && a.contrast == 0.0 && a.saturation == 0.0 && a.hue == 0.0;
        self.fused_resize() && a.order == Order::ResizeFirst && a.crop == Crop::None && no_colour
    }

    /// The fused path's flip: the same draws as `jitter`, so it makes the same choices.
    fn plain_flip(&self, rng: &mut Rng) -> bool {
        let flip = rng.uniform_f32() < 0.5;
        for _ in 0..4 {
            rng.uniform_f32();
        }
        self.train.flip_left_right && flip
    }

    /// True when [`train_decoded_into`](Self::train_decoded_into) (`train`) or
    /// [`eval_decoded_into`](Self::eval_decoded_into) resize a JPEG's YCbCr
    /// planes directly ([`resize_ycc_into_chw`]): 3 channels, and a plain
    /// bilinear resize + flip + normalisation (no crop or colour jitter). The
    /// input pipeline asks the decoder for planes only then.
    pub fn takes_planes(&self, train: bool) -> bool {
        self.channels == 3
            && if train {
                self.plain_train()
            } else {
                self.fused_resize() && self.eval_central_fraction.is_none_or(|f| f >= 1.0)
            }
    }

    /// [`train_into`](Self::train_into) for a [`Decoded`] image: planes go
    /// through [`resize_ycc_into_chw`] when [`takes_planes`](Self::takes_planes)
    /// (`true`) holds, with the same random draws as the pixel path; otherwise
    /// they are converted to RGB first.
    ///
    /// # Shapes
    /// `image`: `[h, w, c]` → `out`: `[channels, height, width]`.
    pub fn train_decoded_into(&self, image: &Decoded, rng: &mut Rng, out: &mut [f32]) {
        match image {
            Decoded::Ycc(ycc) if self.takes_planes(true) => {
                let flip = self.plain_flip(rng);
                self.planes_into_chw(ycc, flip, out);
            }
            Decoded::Ycc(ycc) => self.train_into(&ycc.to_rgb(), rng, out),
            Decoded::Pixels(image) => self.train_into(image, rng, out),
        }
    }

    /// [`eval_into`](Self::eval_into) for a [`Decoded`] image (see
    /// [`train_decoded_into`](Self::train_decoded_into)).
    ///
    /// # Shapes
    /// `image`: `[h, w, c]` → `out`: `[channels, height, width]`.
    pub fn eval_decoded_into(&self, image: &Decoded, out: &mut [f32]) {
        match image {
            Decoded::Ycc(ycc) if self.takes_planes(false) => self.planes_into_chw(ycc, false, out),
            Decoded::Ycc(ycc) => self.eval_into(&ycc.to_rgb(), out),
            Decoded::Pixels(image) => self.eval_into(image, out),
        }
    }

    /// [`resize_ycc_into_chw`] with this preprocessing's size and normalisation.
    fn planes_into_chw(&self, image: &YccImage, flip: bool, out: &mut [f32]) {
        let [h, w] = self.image_size;
        let (mean, k) = self.normalisation();
        resize_ycc_into_chw(image, h, w, flip, mean, k, out);
    }

    /// The per-channel mean and multiplier: `(x - mean) * k`.
    fn normalisation(&self) -> ([f32; 3], [f32; 3]) {
        if let Some(n) = self.slim.normalisation() {
            return n;
        }
        let mean = self.mean.unwrap_or([0.0; 3]);
        let inv_std = self.std.map_or([1.0; 3], |s| s.map(|v| 1.0 / v));
        (mean, inv_std.map(|v| v * self.scale))
    }

    /// True when resizing is TF bilinear without antialiasing, which has a
    /// fused resize + flip + normalise + CHW path.
    fn fused_resize(&self) -> bool {
        self.slim == SlimPreprocessing::None
            && self.resize_options() == ResizeOptions { method: ResizeMethod::Bilinear, antialias: false }
    }

    /// Resize, flip, normalise and transpose in one pass (see `finish`).
    fn resize_into_chw(&self, image: &ImageU8, flip: bool, out: &mut [f32]) {
        let [h, w] = self.image_size;
        let (mean, k) = self.normalisation();
        resize_bilinear_u8_into_chw(image, h, w, flip, mean, k, out);
    }

    /// Normalises and transposes HWC → CHW, mirroring columns when `flip`
    /// (a left-right flip folded into this copy instead of its own pass).
    fn finish(&self, image: ImageF32, flip: bool, out: &mut [f32]) {
        let (h, w, c) = (image.height, image.width, image.channels);
        let (mean, k) = self.normalisation();
        assert_eq!(out.len(), c * h * w, "output buffer does not match {c}x{h}x{w}");
        if c == 3 {
            // One pass over the pixels, three planar outputs (the hot case).
            let (r_plane, rest) = out.split_at_mut(h * w);
            let (g_plane, b_plane) = rest.split_at_mut(h * w);
            for y in 0..h {
                let src = &image.data[y * w * 3..(y + 1) * w * 3];
                let (r, g, b) = (&mut r_plane[y * w..][..w], &mut g_plane[y * w..][..w], &mut b_plane[y * w..][..w]);
                for x in 0..w {
                    let sx = if flip { w - 1 - x } else { x };
                    let px = &src[sx * 3..sx * 3 + 3];
                    r[x] = (px[0] - mean[0]) * k[0];
                    g[x] = (px[1] - mean[1]) * k[1];
                    b[x] = (px[2] - mean[2]) * k[2];
                }
            }
            return;
        }
        for ch in 0..c {
            let (m, k) = (mean[ch], k[ch]);
            let plane = &mut out[ch * h * w..(ch + 1) * h * w];
            for (y, dst) in plane.chunks_exact_mut(w).enumerate() {
                let src = &image.data[y * w * c..(y + 1) * w * c];
                for (x, v) in dst.iter_mut().enumerate() {
                    let sx = if flip { w - 1 - x } else { x };
                    *v = (src[sx * c + ch] - m) * k;
                }
            }
        }
    }
}

fn random_crop_padded(image: &ImageF32, padding: usize, rng: &mut Rng) -> ImageF32 {
    let (h, w) = (image.height, image.width);
    let padded = pad_to_bounding_box(image, padding, padding, h + 2 * padding, w + 2 * padding);
    let y = rng.below(2 * padding as u64 + 1) as usize;
    let x = rng.below(2 * padding as u64 + 1) as usize;
    crop(&padded, y, x, h, w)
}

/// A random box `(y, x, h, w)` as Inception's random-resized-crop draws it.
fn sample_box(
    height: usize,
    width: usize,
    scale: [f32; 2],
    ratio: [f32; 2],
    rng: &mut Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f32;
    let (log_lo, log_hi) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.range_f32(scale[0], scale[1]);
        let aspect = rng.range_f32(log_lo, log_hi).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w >= 1 && h >= 1 && w <= width && h <= height {
            let y = rng.below((height - h + 1) as u64) as usize;
            let x = rng.below((width - w + 1) as u64) as usize;
            return (y, x, h, w);
        }
    }
    // Fallback: the largest central box within the ratio range.
    let in_ratio = width as f32 / height as f32;
    let (h, w) = if in_ratio < ratio[0] {
        (((width as f32) / ratio[0]).round() as usize, width)
    } else if in_ratio > ratio[1] {
        (height, ((height as f32) * ratio[1]).round() as usize)
    } else {
        (height, width)
    };
    let (h, w) = (h.clamp(1, height), w.clamp(1, width));
    ((height - h) / 2, (width - w) / 2, h, w)
}
