//! TensorFlow-exact `tf.image` pixel ops: standardisation, colour
//! adjustments, and crops / pads / flips.
//!
//! Each function mirrors its TF op's arithmetic (the C++ kernel where there is
//! one, else `tensorflow/python/ops/image_ops_impl.py`), in float32 like TF.
//! The colour adjustments take float images in whatever range TF would be
//! given them: `[0, 255]` for standardisation, contrast, brightness and
//! grayscale in ferroflow's pipeline, `[0, 1]` for saturation and hue (TF
//! converts integer images to `[0, 1]` floats before those).
//! Like TF on float images, no op here clamps its output.
//!
//! The geometric ops are generic over the pixel type, as TF's are.

use crate::image::{Image, ImageF32};

/// `tf.image.per_image_standardization`: `(x - mean) / max(stddev,
/// 1 / sqrt(num_elements))`, mean and (population) standard deviation taken
/// over every value of the image (all channels together), as
/// `image_ops_impl.py`.
///
/// # Shapes
/// `[h, w, c]` → `[h, w, c]`.
pub fn per_image_standardization(image: &ImageF32) -> ImageF32 {
    let n = image.data.len();
    if n == 0 {
        return image.clone();
    }
    // TF reduces in float32 with Eigen's tree reductions; accumulating in f64
    // and rounding once is at least as accurate, and agrees to ~1 ulp.
    let mean64 = image.data.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let mean = mean64 as f32;
    // reduce_std = sqrt(reduce_mean(square(x - mean))).
    let var = image
        .data
        .iter()
        .map(|&v| {
            let d = f64::from(v - mean);
            d * d
        })
        .sum::<f64>()
        / n as f64;
    let stddev = var.sqrt() as f32;
    // `min_stddev = math_ops.rsqrt(math_ops.cast(num_pixels, dtypes.float32))`.
    let min_stddev = 1.0f32 / (n as f32).sqrt();
    let adjusted = stddev.max(min_stddev);
    image.map(|v| (v - mean) / adjusted)
}

/// `tf.image.rgb_to_grayscale` on a float image: `0.2989 R + 0.5870 G +
/// 0.1140 B` (`image_ops_impl.py`), one channel out.
///
/// # Shapes
/// `[h, w, 3]` → `[h, w, 1]`.
///
/// # Panics
/// If the image does not have 3 channels.
pub fn rgb_to_grayscale(image: &ImageF32) -> ImageF32 {
    assert_eq!(image.channels, 3, "rgb_to_grayscale needs 3 channels, got {}", image.channels);
    const WEIGHTS: [f32; 3] = [0.2989, 0.5870, 0.1140];
    let data = image.data.chunks_exact(3).map(|p| p[0] * WEIGHTS[0] + p[1] * WEIGHTS[1] + p[2] * WEIGHTS[2]).collect();
    Image::new(image.height, image.width, 1, data)
}

/// `tf.image.adjust_brightness` on a float image: adds `delta` to every value
/// (no clamping, as TF for float input).
///
/// # Shapes
/// `[h, w, c]` → `[h, w, c]`.
pub fn adjust_brightness(image: &ImageF32, delta: f32) -> ImageF32 {
    image.map(|v| v + delta)
}

/// `tf.image.adjust_contrast` on a float image: per channel,
/// `(x - mean) * factor + mean`, the mean taken over the image's pixels
/// (`AdjustContrastv2`, `tensorflow/core/kernels/image/adjust_contrast_op.cc`;
/// no clamping).
///
/// # Shapes
/// `[h, w, c]` → `[h, w, c]`.
pub fn adjust_contrast(image: &ImageF32, factor: f32) -> ImageF32 {
    let c = image.channels;
    if c == 0 || image.data.is_empty() {
        return image.clone();
    }
    let means = channel_means(image);
    let data =
        image.data.chunks_exact(c).flat_map(|px| px.iter().zip(&means).map(|(&v, &m)| (v - m) * factor + m)).collect();
    Image::new(image.height, image.width, c, data)
}

/// Per-channel means as `ReduceMeanAcrossImage` in `adjust_contrast_op.cc`
/// computes them: the pixel plane is folded in half repeatedly (the right
/// half added onto the left) until one pixel holds the sums, which are then
/// multiplied by `1.0f / num_pixels`.
fn channel_means(image: &ImageF32) -> Vec<f32> {
    let c = image.channels;
    let plane = &image.data;
    let mut remaining = image.height * image.width;
    let right = remaining / 2;
    let left = remaining - right;
    let mut sums = vec![0.0f32; left * c];
    for i in 0..right * c {
        sums[i] = plane[left * c + i] + plane[i];
    }
    if left > right {
        // The odd middle pixel (also the whole image when it is one pixel).
        sums[right * c..left * c].copy_from_slice(&plane[right * c..left * c]);
    }
    remaining = left;
    while remaining > 1 {
        let right = remaining / 2;
        let left = remaining - right;
        for i in 0..right * c {
            sums[i] += sums[left * c + i];
        }
        remaining = left;
    }
    let scaling = 1.0f32 / (image.height * image.width) as f32;
    sums[..c].iter().map(|&s| s * scaling).collect()
}

/// `tf.image.adjust_saturation` on a `[0, 1]` float RGB image: converts each
/// pixel to HSV, multiplies S by `factor` and clamps it to `[0, 1]`, converts
/// back (`tensorflow/core/kernels/image/adjust_saturation_op.cc`).
///
/// # Shapes
/// `[h, w, 3]` → `[h, w, 3]`.
///
/// # Panics
/// If the image does not have 3 channels.
pub fn adjust_saturation(image: &ImageF32, factor: f32) -> ImageF32 {
    assert_eq!(image.channels, 3, "adjust_saturation needs 3 channels, got {}", image.channels);
    let mut out = image.clone();
    for px in out.data.chunks_exact_mut(3) {
        let (h, s, v) = rgb_to_hsv(px[0], px[1], px[2]);
        // `std::min(1.0f, std::max(0.0f, s * scale_h))`
        let s = 1.0f32.min(0.0f32.max(s * factor));
        let (r, g, b) = hsv_to_rgb(h, s, v);
        px.copy_from_slice(&[r, g, b]);
    }
    out
}

/// `internal::rgb_to_hsv` of `adjust_saturation_op.cc`: h in `[0, 1)`.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let v = r.max(g.max(b));
    let range = v - r.min(g.min(b));
    let s = if v > 0.0 { range / v } else { 0.0 };
    let norm = 1.0f32 / (6.0 * range);
    // The `+ 2.0 / 6.0` and `+ 4.0 / 6.0` are double in TF.
    let mut h = if r == v {
        norm * (g - b)
    } else if g == v {
        (f64::from(norm * (b - r)) + 2.0 / 6.0) as f32
    } else {
        (f64::from(norm * (r - g)) + 4.0 / 6.0) as f32
    };
    if range <= 0.0 {
        h = 0.0;
    }
    if h < 0.0 {
        h += 1.0;
    }
    (h, s, v)
}

/// `internal::hsv_to_rgb` of `adjust_saturation_op.cc`.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let c = s * v;
    let m = v - c;
    let dh = h * 6.0;
    let category = dh as i32;
    let mut fmodu = dh;
    if fmodu.is_finite() {
        while fmodu <= 0.0 {
            fmodu += 2.0;
        }
        while fmodu >= 2.0 {
            fmodu -= 2.0;
        }
    }
    let x = c * (1.0 - (fmodu - 1.0).abs());
    let (r, g, b) = match category {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        5 => (c, 0.0, x),
        _ => (0.0, 0.0, 0.0),
    };
    (r + m, g + m, b + m)
}

/// `tf.image.adjust_hue` on a `[0, 1]` float RGB image: rotates each pixel's
/// hue by `delta` turns (`delta` in `[-1, 1]`), keeping its min and max
/// channel values (`tensorflow/core/kernels/image/adjust_hue_op.cc`).
///
/// # Shapes
/// `[h, w, 3]` → `[h, w, 3]`.
///
/// # Panics
/// If the image does not have 3 channels.
pub fn adjust_hue(image: &ImageF32, delta: f32) -> ImageF32 {
    assert_eq!(image.channels, 3, "adjust_hue needs 3 channels, got {}", image.channels);
    const RANGE: f32 = 6.0;
    let mut out = image.clone();
    for px in out.data.chunks_exact_mut(3) {
        let (mut h, v_min, v_max) = rgb_to_hv_range(px[0], px[1], px[2]);
        h += delta * RANGE;
        if !h.is_finite() {
            h = 0.0;
        } else if h.abs() > 1e6 {
            h = h.rem_euclid(RANGE);
        }
        // TF brings h back into [0, 6) by repeated addition / subtraction.
        while h < 0.0 {
            h += RANGE;
        }
        while h >= RANGE {
            h -= RANGE;
        }
        let (r, g, b) = hv_range_to_rgb(h, v_min, v_max);
        px.copy_from_slice(&[r, g, b]);
    }
    out
}

/// `internal::rgb_to_hv_range` of `adjust_hue_op.cc`: hue in `[0, 6)` and
/// the min and max channel values.
fn rgb_to_hv_range(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let (v_max, v_mid, v_min, category) = if r < g {
        if b < r {
            (g, r, b, 1)
        } else if b > g {
            (b, g, r, 3)
        } else {
            (g, b, r, 2)
        }
    } else if b < g {
        (r, g, b, 0)
    } else if b > r {
        (b, r, g, 4)
    } else {
        (r, b, g, 5)
    };
    if v_max == v_min {
        return (0.0, v_min, v_max);
    }
    let ratio = (v_mid - v_min) / (v_max - v_min);
    let increase = category & 1 == 0;
    let h = category as f32 + if increase { ratio } else { 1.0 - ratio };
    (h, v_min, v_max)
}

/// `internal::hv_range_to_rgb` of `adjust_hue_op.cc`.
fn hv_range_to_rgb(h: f32, v_min: f32, v_max: f32) -> (f32, f32, f32) {
    let category = h as i32;
    let mut ratio = h - category as f32;
    if category & 1 != 0 {
        ratio = 1.0 - ratio;
    }
    let v_mid = v_min + ratio * (v_max - v_min);
    match category {
        0 => (v_max, v_mid, v_min),
        1 => (v_mid, v_max, v_min),
        2 => (v_min, v_max, v_mid),
        3 => (v_min, v_mid, v_max),
        4 => (v_mid, v_min, v_max),
        _ => (v_max, v_min, v_mid),
    }
}

/// The `h × w` window of `image` whose top-left pixel is `(y, x)`, like
/// `tf.image.crop_to_bounding_box`.
///
/// # Shapes
/// `[H, W, c]` → `[h, w, c]`.
///
/// # Panics
/// If the window does not lie inside the image.
pub fn crop<T: Copy + Default>(image: &Image<T>, y: usize, x: usize, h: usize, w: usize) -> Image<T> {
    assert!(
        y + h <= image.height && x + w <= image.width,
        "crop {h}x{w} at ({y}, {x}) does not fit in a {}x{} image",
        image.height,
        image.width
    );
    let c = image.channels;
    let mut data = Vec::with_capacity(h * w * c);
    for row in y..y + h {
        let start = (row * image.width + x) * c;
        data.extend_from_slice(&image.data[start..start + w * c]);
    }
    Image::new(h, w, c, data)
}

/// Places `image` at `(offset_y, offset_x)` in a `height × width` canvas of
/// `T::default()` (zero), like `tf.image.pad_to_bounding_box`.
///
/// # Shapes
/// `[h, w, c]` → `[height, width, c]`.
///
/// # Panics
/// If the image does not fit in the canvas at that offset.
pub fn pad_to_bounding_box<T: Copy + Default>(
    image: &Image<T>,
    offset_y: usize,
    offset_x: usize,
    height: usize,
    width: usize,
) -> Image<T> {
    assert!(
        offset_y + image.height <= height && offset_x + image.width <= width,
        "a {}x{} image at ({offset_y}, {offset_x}) does not fit in {height}x{width}",
        image.height,
        image.width
    );
    let c = image.channels;
    let mut out = Image::filled(height, width, c, T::default());
    let row_len = image.width * c;
    if row_len > 0 {
        for (row, src) in image.data.chunks_exact(row_len).enumerate() {
            let start = ((offset_y + row) * width + offset_x) * c;
            out.data[start..start + row_len].copy_from_slice(src);
        }
    }
    out
}

/// `tf.image.central_crop`: keeps the central `fraction` of each side, with
/// TF's offsets `int((size - size * fraction) / 2)` (Python float arithmetic,
/// truncated) and size `size - 2 * offset`.
///
/// # Shapes
/// `[h, w, c]` → `[h - 2·oy, w - 2·ox, c]`.
///
/// # Panics
/// If `fraction` is not in `(0, 1]` (TF raises `ValueError`).
pub fn central_crop<T: Copy + Default>(image: &Image<T>, fraction: f64) -> Image<T> {
    assert!(fraction > 0.0 && fraction <= 1.0, "central_fraction must be within (0, 1], got {fraction}");
    if fraction == 1.0 {
        return image.clone();
    }
    let offset = |size: usize| {
        let s = size as f64;
        ((s - s * fraction) / 2.0) as usize
    };
    let (oy, ox) = (offset(image.height), offset(image.width));
    crop(image, oy, ox, image.height - 2 * oy, image.width - 2 * ox)
}

/// `tf.image.resize_with_crop_or_pad`: centrally crops and/or zero-pads each
/// axis to the target size. Offsets as `image_ops_impl.py`: crop
/// `max(-diff // 2, 0)`, pad `max(diff // 2, 0)`, `diff = target - size`,
/// with Python's floor division (so an odd excess leaves the extra row or
/// column at the bottom/right).
///
/// # Shapes
/// `[h, w, c]` → `[height, width, c]`.
pub fn resize_with_crop_or_pad<T: Copy + Default>(image: &Image<T>, height: usize, width: usize) -> Image<T> {
    let offsets = |size: usize, target: usize| {
        let diff = target as i64 - size as i64;
        let crop = (-diff).div_euclid(2).max(0) as usize;
        let pad = diff.div_euclid(2).max(0) as usize;
        (crop, pad)
    };
    let (crop_y, pad_y) = offsets(image.height, height);
    let (crop_x, pad_x) = offsets(image.width, width);
    let cropped = crop(image, crop_y, crop_x, height.min(image.height), width.min(image.width));
    pad_to_bounding_box(&cropped, pad_y, pad_x, height, width)
}

/// `tf.image.flip_left_right`: mirrors the columns.
///
/// # Shapes
/// `[h, w, c]` → `[h, w, c]`.
pub fn flip_left_right<T: Copy + Default>(image: &Image<T>) -> Image<T> {
    let c = image.channels;
    let row_len = image.width * c;
    let mut data = Vec::with_capacity(image.data.len());
    if c > 0 && row_len > 0 {
        for row in image.data.chunks_exact(row_len) {
            for px in row.chunks_exact(c).rev() {
                data.extend_from_slice(px);
            }
        }
    }
    Image::new(image.height, image.width, c, data)
}

/// `tf.image.flip_up_down`: mirrors the rows.
///
/// # Shapes
/// `[h, w, c]` → `[h, w, c]`.
pub fn flip_up_down<T: Copy + Default>(image: &Image<T>) -> Image<T> {
    let row_len = image.width * image.channels;
    let mut data = Vec::with_capacity(image.data.len());
    if row_len > 0 {
        for row in image.data.chunks_exact(row_len).rev() {
            data.extend_from_slice(row);
        }
    }
    Image::new(image.height, image.width, image.channels, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting(h: usize, w: usize, c: usize) -> Image<u32> {
        Image::new(h, w, c, (0..(h * w * c) as u32).collect())
    }

    #[test]
    fn central_crop_uses_truncated_offsets() {
        // 25 x 33 at 0.7: (25 - 17.5) / 2 = 3.75 -> 3, size 19; (33 - 23.1) / 2 = 4.95 -> 4, size 25.
        let image = counting(25, 33, 1);
        let out = central_crop(&image, 0.7);
        assert_eq!(out.shape(), [19, 25, 1]);
        assert_eq!(out.at(0, 0, 0), image.at(3, 4, 0));
        assert_eq!(out.at(18, 24, 0), image.at(21, 28, 0));
        assert_eq!(central_crop(&image, 1.0), image);
    }

    #[test]
    fn crop_or_pad_with_odd_differences() {
        // Pad 3 rows (1 above, 2 below) and crop 3 columns (1 left, 2 right).
        let image = counting(4, 6, 2);
        let out = resize_with_crop_or_pad(&image, 7, 3);
        assert_eq!(out.shape(), [7, 3, 2]);
        for y in 0..7 {
            for x in 0..3 {
                for c in 0..2 {
                    let want = if (1..5).contains(&y) { image.at(y - 1, x + 1, c) } else { 0 };
                    assert_eq!(out.at(y, x, c), want, "({y}, {x}, {c})");
                }
            }
        }
        // Crop 5 rows: offset 5 // 2 = 2.
        let out = resize_with_crop_or_pad(&image, 1, 6);
        assert_eq!(out.data, crop(&image, 1, 0, 1, 6).data);
        assert_eq!(resize_with_crop_or_pad(&image, 4, 6), image);
    }

    #[test]
    fn crop_odd_offsets_and_flip() {
        let image = counting(5, 7, 3);
        let out = crop(&image, 1, 3, 3, 3);
        assert_eq!(out.at(0, 0, 2), image.at(1, 3, 2));
        assert_eq!(out.at(2, 2, 0), image.at(3, 5, 0));
        let flipped = flip_left_right(&image);
        assert_eq!(flipped.at(2, 0, 1), image.at(2, 6, 1));
        assert_eq!(flip_left_right(&flipped), image);
        assert_eq!(flip_up_down(&image).at(0, 3, 2), image.at(4, 3, 2));
    }

    #[test]
    fn standardization_of_uniform_image_is_zero() {
        let image = Image::filled(3, 3, 3, 42.0f32);
        assert!(per_image_standardization(&image).data.iter().all(|&v| v == 0.0));
        let image = Image::new(1, 2, 1, vec![0.0f32, 2.0]);
        assert_eq!(per_image_standardization(&image).data, vec![-1.0, 1.0]);
    }

    #[test]
    fn contrast_means_fold_like_tf() {
        // 5 pixels exercise the odd-middle copy in the first fold.
        let image = Image::new(1, 5, 2, vec![1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0, 5.0, 50.0]);
        assert_eq!(channel_means(&image), vec![3.0, 30.0]);
        let out = adjust_contrast(&image, 2.0);
        assert_eq!(out.data, vec![-1.0, -10.0, 1.0, 10.0, 3.0, 30.0, 5.0, 50.0, 7.0, 70.0]);
        let one = Image::new(1, 1, 3, vec![1.0f32, 2.0, 3.0]);
        assert_eq!(adjust_contrast(&one, 3.0), one);
    }

    #[test]
    fn hue_and_saturation_fixed_points() {
        let image = Image::new(1, 3, 3, vec![0.2f32, 0.4, 0.9, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0]);
        let same = adjust_hue(&image, 0.0);
        for (a, b) in same.data.iter().zip(&image.data) {
            assert!((a - b).abs() < 1e-6);
        }
        // A full turn of hue is the identity too.
        for (a, b) in adjust_hue(&image, 1.0).data.iter().zip(&image.data) {
            assert!((a - b).abs() < 1e-6);
        }
        // Pure red rotated by a third of a turn is pure green.
        let red = Image::new(1, 1, 3, vec![1.0f32, 0.0, 0.0]);
        let green = adjust_hue(&red, 1.0 / 3.0);
        assert!((green.data[0]).abs() < 1e-6 && (green.data[1] - 1.0).abs() < 1e-6 && green.data[2].abs() < 1e-6);
        for (a, b) in adjust_saturation(&image, 1.0).data.iter().zip(&image.data) {
            assert!((a - b).abs() < 1e-6);
        }
        // Saturation 0 gives grey at the max channel value.
        let grey = adjust_saturation(&image, 0.0);
        assert_eq!(&grey.data[..3], &[0.9, 0.9, 0.9]);
        // Saturation clamps at 1.
        let vivid = adjust_saturation(&image, 100.0);
        assert!(vivid.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn grayscale_weights() {
        let image = Image::new(1, 1, 3, vec![100.0f32, 100.0, 100.0]);
        let out = rgb_to_grayscale(&image);
        assert_eq!(out.shape(), [1, 1, 1]);
        assert!((out.data[0] - 99.99).abs() < 1e-3);
        assert_eq!(adjust_brightness(&image, -0.5).data, vec![99.5; 3]);
    }
}
