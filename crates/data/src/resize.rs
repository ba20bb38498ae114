//! TensorFlow-exact image resizing: `tf.image.resize` (TF2) and TF1's legacy
//! `tf.compat.v1.image.resize_bilinear`.
//!
//! Every function here reproduces the arithmetic of TensorFlow's CPU kernels
//! (same float32 scale factors, same sampling positions, same weights, same
//! order of accumulation), so results agree with TensorFlow to a few float32
//! ulps rather than merely "looking similar". The kernels mirrored are:
//!
//! | method (`tf.image.resize`) | antialias | TF kernel |
//! |---|---|---|
//! | bilinear | false | `ResizeBilinear(half_pixel_centers=True)`, `tensorflow/core/kernels/image/resize_bilinear_op.cc` |
//! | bilinear | true | `ScaleAndTranslate(kernel_type="triangle")`, `tensorflow/core/kernels/image/scale_and_translate_op.cc` |
//! | nearest | (ignored) | `ResizeNearestNeighbor(half_pixel_centers=True)`, `resize_nearest_neighbor_op.cc` |
//! | area | (ignored) | `ResizeArea`, `resize_area_op.cc` |
//! | bicubic | false | `ResizeBicubic(half_pixel_centers=True)` (Keys cubic, a = -0.5), `resize_bicubic_op.cc` |
//! | bicubic | true | `ScaleAndTranslate(kernel_type="keyscubic")` |
//! | lanczos3, lanczos5, gaussian, mitchellcubic | either | `ScaleAndTranslate` with that kernel (`sampling_kernels.h`) |
//!
//! The method → kernel dispatch is `resize_images_v2` in
//! `tensorflow/python/ops/image_ops_impl.py`; it calls `ScaleAndTranslate`
//! with `scale = new_size / old_size` (float32) and zero translation.
//!
//! All outputs are float32, as TensorFlow's (nearest returns the input dtype
//! in TF; for float input that is float32 as here).

use std::sync::OnceLock;

use crate::image::{Image, ImageF32, ImageU8};

/// The interpolation method, named as `tf.image.ResizeMethod`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ResizeMethod {
    /// Bilinear interpolation with half-pixel centres (TF2's default).
    #[default]
    Bilinear,
    /// Nearest neighbour with TF2's half-pixel-centre rounding.
    Nearest,
    /// TF's `ResizeArea`: each output pixel is the area-weighted mean of the
    /// input pixels its footprint covers.
    Area,
    /// Keys cubic convolution (a = -0.5) with half-pixel centres.
    Bicubic,
    /// Lanczos kernel of radius 3 (always through `ScaleAndTranslate`).
    Lanczos3,
    /// Lanczos kernel of radius 5 (always through `ScaleAndTranslate`).
    Lanczos5,
    /// Gaussian kernel, radius 1.5, sigma 0.5 (always through `ScaleAndTranslate`).
    Gaussian,
    /// Mitchell–Netravali cubic, B = C = 1/3 (always through `ScaleAndTranslate`).
    MitchellCubic,
}

impl ResizeMethod {
    /// Every method, in declaration order.
    pub const ALL: [ResizeMethod; 8] = [
        ResizeMethod::Bilinear,
        ResizeMethod::Nearest,
        ResizeMethod::Area,
        ResizeMethod::Bicubic,
        ResizeMethod::Lanczos3,
        ResizeMethod::Lanczos5,
        ResizeMethod::Gaussian,
        ResizeMethod::MitchellCubic,
    ];

    /// The method's name as `tf.image.ResizeMethod` spells it (`"bilinear"`,
    /// `"nearest"`, `"area"`, `"bicubic"`, `"lanczos3"`, `"lanczos5"`,
    /// `"gaussian"`, `"mitchellcubic"`).
    pub fn tf_name(self) -> &'static str {
        match self {
            ResizeMethod::Bilinear => "bilinear",
            ResizeMethod::Nearest => "nearest",
            ResizeMethod::Area => "area",
            ResizeMethod::Bicubic => "bicubic",
            ResizeMethod::Lanczos3 => "lanczos3",
            ResizeMethod::Lanczos5 => "lanczos5",
            ResizeMethod::Gaussian => "gaussian",
            ResizeMethod::MitchellCubic => "mitchellcubic",
        }
    }

    /// Parses a `tf.image.ResizeMethod` name (see [`ResizeMethod::tf_name`]).
    pub fn from_tf_name(name: &str) -> Option<ResizeMethod> {
        ResizeMethod::ALL.into_iter().find(|m| m.tf_name() == name)
    }
}

/// How [`resize`] resamples, mirroring `tf.image.resize(method=…, antialias=…)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResizeOptions {
    /// The interpolation method.
    pub method: ResizeMethod,
    /// When downscaling, widen the kernel by the downscale factor so that it
    /// low-pass filters (TF's `antialias=True`). Ignored by `Nearest` and
    /// `Area`, as in TF.
    pub antialias: bool,
}

/// Resizes `image` to `height × width` exactly as TF2's
/// `tf.image.resize(image, [height, width], method, antialias)` does on a
/// float32 image.
///
/// # Shapes
/// `image`: `[h, w, c]` → output `[height, width, c]`, float32.
///
/// # Panics
/// If `height`, `width`, `image.height` or `image.width` is zero, or the image
/// buffer does not match its shape (TF rejects these too).
pub fn resize(image: &ImageF32, height: usize, width: usize, options: &ResizeOptions) -> ImageF32 {
    resize_any(image, height, width, options)
}

/// [`resize`] for an 8-bit image, without first converting it to float: the
/// same result as `resize(&image.to_f32(), …)` (TF's kernels read uint8 the
/// same way, converting each value to float32 as they load it).
///
/// # Shapes
/// `image`: `[h, w, c]` → output `[height, width, c]`, float32.
///
/// # Panics
/// As [`resize`].
pub fn resize_u8(image: &ImageU8, height: usize, width: usize, options: &ResizeOptions) -> ImageF32 {
    resize_any(image, height, width, options)
}

/// The input pipeline's hot path: TF2 bilinear (half-pixel centres, no
/// antialias) straight from 8-bit pixels, equal to
/// `resize(&image.to_f32(), height, width, &ResizeOptions::default())`.
///
/// # Shapes
/// `image`: `[h, w, c]` → output `[height, width, c]`, float32.
///
/// # Panics
/// As [`resize`].
pub fn resize_bilinear_u8(image: &ImageU8, height: usize, width: usize) -> ImageF32 {
    check_sizes(image, height, width);
    bilinear(image, height, width, Sampling::HalfPixel)
}

/// TF1's `tf.compat.v1.image.resize_bilinear(image, [height, width],
/// align_corners, half_pixel_centers=False)`: the legacy sampling grid, where
/// output pixel `i` samples input position `i * in / out` (or
/// `i * (in - 1) / (out - 1)` with `align_corners`), which shifts the image by
/// half a pixel relative to TF2's `tf.image.resize`.
///
/// # Shapes
/// `image`: `[h, w, c]` → output `[height, width, c]`, float32.
///
/// # Panics
/// As [`resize`].
pub fn resize_bilinear_legacy(image: &ImageF32, height: usize, width: usize, align_corners: bool) -> ImageF32 {
    check_sizes(image, height, width);
    let sampling = if align_corners { Sampling::AlignCorners } else { Sampling::Legacy };
    bilinear(image, height, width, sampling)
}

// ---------------------------------------------------------------------------
// Shared plumbing.

/// A pixel type the kernels can read, converting to float32 on load (TF's
/// `static_cast<float>(input[...])`).
trait Sample: Copy {
    fn to_f32(self) -> f32;
}

impl Sample for u8 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

impl Sample for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

fn check_sizes<T>(image: &Image<T>, height: usize, width: usize) {
    assert!(height > 0 && width > 0, "resize: output size must be positive, got {height}x{width}");
    assert!(
        image.height > 0 && image.width > 0,
        "resize: input image must be non-empty, got {}x{}",
        image.height,
        image.width
    );
    assert_eq!(
        image.data.len(),
        image.height * image.width * image.channels,
        "resize: image buffer does not match {}x{}x{}",
        image.height,
        image.width,
        image.channels
    );
}

fn resize_any<T: Sample>(image: &Image<T>, height: usize, width: usize, options: &ResizeOptions) -> ImageF32 {
    check_sizes(image, height, width);
    let aa = options.antialias;
    // Dispatch as `resize_images_v2` in tensorflow/python/ops/image_ops_impl.py.
    match options.method {
        ResizeMethod::Bilinear if !aa => bilinear(image, height, width, Sampling::HalfPixel),
        ResizeMethod::Bilinear => scale_and_translate(image, height, width, Kernel::Triangle, true),
        ResizeMethod::Nearest => nearest(image, height, width),
        ResizeMethod::Area => area(image, height, width),
        ResizeMethod::Bicubic if !aa => bicubic(image, height, width),
        ResizeMethod::Bicubic => scale_and_translate(image, height, width, Kernel::KeysCubic, true),
        ResizeMethod::Lanczos3 => scale_and_translate(image, height, width, Kernel::Lanczos(3.0), aa),
        ResizeMethod::Lanczos5 => scale_and_translate(image, height, width, Kernel::Lanczos(5.0), aa),
        ResizeMethod::Gaussian => scale_and_translate(image, height, width, Kernel::Gaussian, aa),
        ResizeMethod::MitchellCubic => scale_and_translate(image, height, width, Kernel::MitchellCubic, aa),
    }
}

/// Where output pixel `i` samples the input, as TF's scalers in
/// `tensorflow/core/util/image_resizer_state.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// `HalfPixelScaler`: `(i + 0.5) * scale - 0.5`, `scale = in / out`.
    HalfPixel,
    /// `LegacyScaler`: `i * scale`, `scale = in / out`.
    Legacy,
    /// `LegacyScaler` with `scale = (in - 1) / (out - 1)` (`align_corners`).
    AlignCorners,
}

/// `CalculateResizeScale` from `image_resizer_state.h`, in float32 as TF.
fn resize_scale(in_size: usize, out_size: usize, align_corners: bool) -> f32 {
    if align_corners && out_size > 1 {
        (in_size - 1) as f32 / (out_size - 1) as f32
    } else {
        in_size as f32 / out_size as f32
    }
}

/// Per-output-index lists of `(source index, weight)` along one axis, stored
/// flat: output `o` reads `index[offsets[o]..offsets[o + 1]]`.
struct Taps {
    offsets: Vec<usize>,
    index: Vec<usize>,
    weight: Vec<f32>,
}

impl Taps {
    fn with_capacity(outputs: usize, taps: usize) -> Taps {
        let mut offsets = Vec::with_capacity(outputs + 1);
        offsets.push(0);
        Taps { offsets, index: Vec::with_capacity(outputs * taps), weight: Vec::with_capacity(outputs * taps) }
    }

    fn push(&mut self, index: usize, weight: f32) {
        self.index.push(index);
        self.weight.push(weight);
    }

    /// Closes the current output index's list.
    fn finish_output(&mut self) {
        self.offsets.push(self.index.len());
    }

    fn outputs(&self) -> usize {
        self.offsets.len() - 1
    }

    #[inline]
    fn get(&self, o: usize) -> (&[usize], &[f32]) {
        let range = self.offsets[o]..self.offsets[o + 1];
        (&self.index[range.clone()], &self.weight[range])
    }
}

/// Vertical pass: output row `o` is `Σ weight · row[index]` over `taps.get(o)`,
/// accumulated from zero in tap order, as `GatherRows`/`AddScaledVector` in
/// `scale_and_translate_op.cc` (and the y interpolation of `resize_bicubic_op.cc`).
///
/// # Shapes
/// `data`: `[in_rows, row_len]` → `[taps.outputs(), row_len]`.
fn gather_rows<T: Sample>(data: &[T], row_len: usize, taps: &Taps) -> Vec<f32> {
    let mut out = vec![0.0f32; taps.outputs() * row_len];
    if row_len == 0 {
        return out;
    }
    for (o, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let (index, weight) = taps.get(o);
        for (&i, &w) in index.iter().zip(weight) {
            let src = &data[i * row_len..(i + 1) * row_len];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d += w * s.to_f32();
            }
        }
    }
    out
}

/// Horizontal pass: output pixel `(r, o)` is `Σ weight · pixel(r, index)` over
/// `taps.get(o)`, per channel, accumulated from zero in tap order, as
/// `GatherColumns` in `scale_and_translate_op.cc`.
///
/// # Shapes
/// `data`: `[rows, in_width, channels]` → `[rows, taps.outputs(), channels]`.
fn gather_cols<T: Sample>(data: &[T], rows: usize, in_width: usize, channels: usize, taps: &Taps) -> Vec<f32> {
    let out_width = taps.outputs();
    let mut out = vec![0.0f32; rows * out_width * channels];
    if channels == 0 {
        return out;
    }
    for r in 0..rows {
        let src_row = &data[r * in_width * channels..(r + 1) * in_width * channels];
        let dst_row = &mut out[r * out_width * channels..(r + 1) * out_width * channels];
        for (o, dst) in dst_row.chunks_exact_mut(channels).enumerate() {
            let (index, weight) = taps.get(o);
            for (&i, &w) in index.iter().zip(weight) {
                let src = &src_row[i * channels..(i + 1) * channels];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d += w * s.to_f32();
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Bilinear: tensorflow/core/kernels/image/resize_bilinear_op.cc.

/// One output index's bilinear sample: `compute_interpolation_weights` in
/// `resize_bilinear_op.cc`.
#[derive(Debug, Clone, Copy)]
struct Lerp {
    lower: usize,
    upper: usize,
    frac: f32,
}

fn bilinear_axis(in_size: usize, out_size: usize, sampling: Sampling) -> Vec<Lerp> {
    let scale = resize_scale(in_size, out_size, sampling == Sampling::AlignCorners);
    let last = in_size as i64 - 1;
    (0..out_size)
        .map(|i| {
            let pos = match sampling {
                Sampling::HalfPixel => (i as f32 + 0.5) * scale - 0.5,
                Sampling::Legacy | Sampling::AlignCorners => i as f32 * scale,
            };
            let floor = pos.floor();
            // TF: lower = max(floor(in), 0), upper = min(ceil(in), in_size - 1),
            // lerp = in - floor(in). (The extra clamps only guard indexing.)
            let lower = (floor as i64).clamp(0, last) as usize;
            let upper = (pos.ceil() as i64).clamp(0, last) as usize;
            Lerp { lower, upper, frac: pos - floor }
        })
        .collect()
}

/// TF's bilinear resize: `top = tl + (tr - tl) * x_lerp`, likewise `bottom`,
/// then `top + (bottom - top) * y_lerp` (`compute_lerp`). Computed separably
/// (each needed input row is interpolated along x once), which performs
/// exactly TF's float operations.
///
/// # Shapes
/// `src`: `[h, w, c]` → `[out_h, out_w, c]`.
fn bilinear<T: Sample>(src: &Image<T>, out_h: usize, out_w: usize, sampling: Sampling) -> ImageF32 {
    let c = src.channels;
    bilinear_with(src, out_h, out_w, sampling, |ys, slot, inter, out_row| {
        let mut out = Vec::with_capacity(out_h * out_row);
        if out_row > 0 {
            for l in ys {
                let top = &inter[slot[l.lower] * out_row..(slot[l.lower] + 1) * out_row];
                let bottom = &inter[slot[l.upper] * out_row..(slot[l.upper] + 1) * out_row];
                out.extend(top.iter().zip(bottom).map(|(&t, &b)| t + (b - t) * l.frac));
            }
        }
        Image::new(out_h, out_w, c, out)
    })
}

/// TF-exact bilinear resize of an 8-bit image written straight into
/// normalised planar (CHW) output: `out[ch][y][x] = (v - mean[ch]) * scale[ch]`
/// where `v` is exactly [`resize_bilinear_u8`]'s value at `(y, x')`, with
/// `x' = width - 1 - x` when `flip`. The input pipeline's hot path: it never
/// materialises the resized image, and folds the flip and normalisation into
/// the vertical pass.
///
/// # Shapes
/// `image`: `[h, w, c]` (c ≤ 3) → `out`: `[c, height, width]`.
///
/// # Panics
/// As [`resize`], or if `out` is not `c * height * width` long.
pub fn resize_bilinear_u8_into_chw(
    image: &ImageU8,
    height: usize,
    width: usize,
    flip: bool,
    mean: [f32; 3],
    scale: [f32; 3],
    out: &mut [f32],
) {
    check_sizes(image, height, width);
    let c = image.channels;
    assert!(c <= 3 && out.len() == c * height * width, "output buffer does not match {c}x{height}x{width}");
    let plane = height * width;
    if c == 3 {
        rgb_into_chw(image, height, width, flip, mean, scale, out);
        return;
    }
    bilinear_with(image, height, width, Sampling::HalfPixel, |ys, slot, inter, out_row| {
        for (y, l) in ys.iter().enumerate() {
            let top = &inter[slot[l.lower] * out_row..(slot[l.lower] + 1) * out_row];
            let bottom = &inter[slot[l.upper] * out_row..(slot[l.upper] + 1) * out_row];
            let lerp = |i: usize| top[i] + (bottom[i] - top[i]) * l.frac;
            for x in 0..width {
                let sx = if flip { width - 1 - x } else { x };
                for ch in 0..c {
                    out[ch * plane + y * width + x] = (lerp(sx * c + ch) - mean[ch]) * scale[ch];
                }
            }
        }
    });
}

/// `a + (b - a) * f` on each of four lanes, written on whole arrays so the
/// compiler emits one SSE operation per step.
#[inline(always)]
fn lerp4(a: [f32; 4], b: [f32; 4], f: f32) -> [f32; 4] {
    [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f, a[3] + (b[3] - a[3]) * f]
}

/// [`resize_bilinear_u8_into_chw`] for 3 channels, the input pipeline's hot
/// path. Each RGB pixel is interpolated as four float lanes (its R, G, B and
/// the next pixel's R, computed and never read), so the horizontal pass, a
/// gather of two source pixels per output pixel, is one 4-wide load, lerp
/// and store per pixel; the vertical pass then runs over contiguous floats.
/// Per channel the arithmetic is exactly `bilinear_with`'s (horizontal,
/// vertical, then normalise), so the values are bit for bit the same
/// (tested against `resize` in tests/preprocess.rs).
///
/// The loops are compiled for the best instruction set the CPU has (AVX-512,
/// AVX2, or the SSE2 baseline the workspace targets) through `pulp`'s safe
/// runtime dispatch; every variant performs the same IEEE operations (no
/// FMA contraction), so the values do not depend on the CPU.
fn rgb_into_chw(
    src: &ImageU8,
    height: usize,
    width: usize,
    flip: bool,
    mean: [f32; 3],
    scale: [f32; 3],
    out: &mut [f32],
) {
    struct Kernel<'a> {
        src: &'a ImageU8,
        size: [usize; 2],
        flip: bool,
        mean: [f32; 3],
        scale: [f32; 3],
        out: &'a mut [f32],
    }
    impl pulp::WithSimd for Kernel<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            let Kernel { src, size: [height, width], flip, mean, scale, out } = self;
            rgb_into_chw_body(src, height, width, flip, mean, scale, out);
        }
    }
    pulp::Arch::new().dispatch(Kernel { src, size: [height, width], flip, mean, scale, out });
}

/// The body of [`rgb_into_chw`], inlined into each instruction-set variant.
#[inline(always)]
fn rgb_into_chw_body(
    src: &ImageU8,
    height: usize,
    width: usize,
    flip: bool,
    mean: [f32; 3],
    scale: [f32; 3],
    out: &mut [f32],
) {
    let ys = bilinear_axis(src.height, height, Sampling::HalfPixel);
    let xs = bilinear_axis(src.width, width, Sampling::HalfPixel);
    // Each output pixel's left source pixel as a lane offset (3 * source x) and
    // its weight; the right one is always the next pixel. TF's taps have `upper`
    // = `lower + 1`, or `upper` = `lower` at the edges, where TF's `p + (p - p)
    // * f` is `p`: so is `p + (q - p) * 0` for the next pixel `q` (finite
    // values), with the last pixel repeated after the row for the right edge.
    let offsets: Vec<(usize, f32)> =
        xs.iter().map(|l| (3 * l.lower, if l.upper == l.lower { 0.0 } else { l.frac })).collect();
    debug_assert!(xs.iter().all(|l| l.upper == l.lower || l.upper == l.lower + 1));
    let in_row = src.width * 3;
    let out_row = width * 4;
    thread_local! {
        static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
    }
    // Taken out of the thread-local (not used inside a closure), so the loops
    // stay in this inline body and get the dispatched instruction set.
    let (mut inter_buf, mut row_buf, mut vrow_buf) = SCRATCH.with_borrow_mut(std::mem::take);
    // The horizontal pass's rows live in a ring of two (the rows of the output
    // row being made), so they stay in L1 instead of a whole image of them
    // going through L2. The source row is followed by a copy of its last pixel
    // and one float of padding, which keeps the right edge's 4-lane load in bounds.
    for (buf, len) in [(&mut inter_buf, 2 * out_row), (&mut row_buf, in_row + 4), (&mut vrow_buf, out_row)] {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
    }
    let inter = &mut inter_buf[..2 * out_row];
    let row = &mut row_buf[..in_row + 4];
    // The input row each ring slot holds.
    let mut held = [usize::MAX; 2];
    let vrow = &mut vrow_buf[..out_row];
    let plane = height * width;
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    for (y, l) in ys.iter().enumerate() {
        // Output rows read non-decreasing input rows: a row not held goes into the
        // slot that holds neither of this output row's rows.
        for needed in [l.lower, l.upper] {
            if held.contains(&needed) {
                continue;
            }
            let slot = usize::from(held[0] == l.lower || held[0] == l.upper);
            held[slot] = needed;
            for (d, &v) in row.iter_mut().zip(&src.data[needed * in_row..(needed + 1) * in_row]) {
                *d = f32::from(v);
            }
            if in_row >= 3 {
                row.copy_within(in_row - 3..in_row, in_row);
            }
            let dst = &mut inter[slot * out_row..(slot + 1) * out_row];
            for (&(at, f), d) in offsets.iter().zip(dst.chunks_exact_mut(4)) {
                // One bounds check for both pixels (lanes 0..4 and 3..7); the row is
                // long enough for every offset (`3 * (width - 1) + 7 <= in_row + 4`).
                let Some(p) = row.get(at..at + 7) else { continue };
                d.copy_from_slice(&lerp4([p[0], p[1], p[2], p[3]], [p[3], p[4], p[5], p[6]], f));
            }
        }
        let slot_of = |r: usize| usize::from(held[0] != r);
        let (top_slot, bottom_slot) = (slot_of(l.lower), slot_of(l.upper));
        let top = &inter[top_slot * out_row..(top_slot + 1) * out_row];
        let bottom = &inter[bottom_slot * out_row..(bottom_slot + 1) * out_row];
        for ((v, &t), &b) in vrow.iter_mut().zip(top).zip(bottom) {
            *v = t + (b - t) * l.frac;
        }
        let row = y * width..(y + 1) * width;
        let planes = [&mut r_plane[row.clone()], &mut g_plane[row.clone()], &mut b_plane[row]];
        store_rgb_row(vrow.chunks_exact(4), flip, planes, |p, r, g, b| {
            *r = (p[0] - mean[0]) * scale[0];
            *g = (p[1] - mean[1]) * scale[1];
            *b = (p[2] - mean[2]) * scale[2];
        });
    }
    SCRATCH.with_borrow_mut(|held| *held = (inter_buf, row_buf, vrow_buf));
}

/// Stores one output row's pixels into that row of each CHW plane (`planes`:
/// R, G, B), from the right end when `flip` (a left-right flip folded into the
/// store). Inlined into the fused kernels' dispatched loops.
#[inline(always)]
pub(crate) fn store_rgb_row<P>(
    pixels: impl Iterator<Item = P>,
    flip: bool,
    [r, g, b]: [&mut [f32]; 3],
    mut store: impl FnMut(P, &mut f32, &mut f32, &mut f32),
) {
    if flip {
        for (((p, r), g), b) in pixels.zip(r.iter_mut().rev()).zip(g.iter_mut().rev()).zip(b.iter_mut().rev()) {
            store(p, r, g, b);
        }
    } else {
        for (((p, r), g), b) in pixels.zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
            store(p, r, g, b);
        }
    }
}

/// The input rows some output row reads, in increasing order (lower and
/// upper are monotone in the output row), and each input row's slot among
/// them (`usize::MAX` for rows never read).
fn needed_rows(ys: &[Lerp], in_height: usize) -> (Vec<usize>, Vec<usize>) {
    let mut slot = vec![usize::MAX; in_height];
    let mut rows = Vec::with_capacity((2 * ys.len()).min(in_height));
    for l in ys {
        for r in [l.lower, l.upper] {
            if slot[r] == usize::MAX {
                slot[r] = rows.len();
                rows.push(r);
            }
        }
    }
    (slot, rows)
}

/// The horizontal pass of [`bilinear`] into per-thread scratch; `emit` gets
/// the row interpolation (`ys`), the scratch slot of each input row, the
/// horizontally interpolated rows, and their length, and does the vertical pass.
fn bilinear_with<T: Sample, R>(
    src: &Image<T>,
    out_h: usize,
    out_w: usize,
    sampling: Sampling,
    emit: impl FnOnce(&[Lerp], &[usize], &[f32], usize) -> R,
) -> R {
    let c = src.channels;
    let ys = bilinear_axis(src.height, out_h, sampling);
    let xs = bilinear_axis(src.width, out_w, sampling);

    let (slot, rows) = needed_rows(&ys, src.height);

    let in_row = src.width * c;
    let out_row = out_w * c;
    // Per-thread scratch, reused across images: the pipeline resizes
    // thousands of images per second, and zeroing fresh buffers showed up in
    // its profile.
    thread_local! {
        static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    SCRATCH.with_borrow_mut(|(inter_buf, row_buf)| {
        if inter_buf.len() < rows.len() * out_row {
            inter_buf.resize(rows.len() * out_row, 0.0);
        }
        if row_buf.len() < in_row {
            row_buf.resize(in_row, 0.0);
        }
        let inter = &mut inter_buf[..rows.len() * out_row];
        if out_row > 0 {
            // Each input row is converted to f32 once, then interpolated along x.
            // The loops are specialised for 1 and 3 channels (the hot cases), so
            // the compiler keeps the pixel in registers; the arithmetic is the
            // same `a + (b - a) * frac` in every branch.
            let row_f32 = &mut row_buf[..in_row];
            for (&r, dst) in rows.iter().zip(inter.chunks_exact_mut(out_row)) {
                for (d, &v) in row_f32.iter_mut().zip(&src.data[r * in_row..(r + 1) * in_row]) {
                    *d = v.to_f32();
                }
                let row = &row_f32[..];
                match c {
                    1 => {
                        for (l, d) in xs.iter().zip(dst.iter_mut()) {
                            let (a, b) = (row[l.lower], row[l.upper]);
                            *d = a + (b - a) * l.frac;
                        }
                    }
                    3 => {
                        for (l, d) in xs.iter().zip(dst.chunks_exact_mut(3)) {
                            let (lo, hi) = (l.lower * 3, l.upper * 3);
                            let (a, b) = (&row[lo..lo + 3], &row[hi..hi + 3]);
                            d[0] = a[0] + (b[0] - a[0]) * l.frac;
                            d[1] = a[1] + (b[1] - a[1]) * l.frac;
                            d[2] = a[2] + (b[2] - a[2]) * l.frac;
                        }
                    }
                    _ => {
                        for (l, dst_px) in xs.iter().zip(dst.chunks_exact_mut(c)) {
                            let left = &row[l.lower * c..(l.lower + 1) * c];
                            let right = &row[l.upper * c..(l.upper + 1) * c];
                            for ((d, &a), &b) in dst_px.iter_mut().zip(left).zip(right) {
                                *d = a + (b - a) * l.frac;
                            }
                        }
                    }
                }
            }
        }

        emit(&ys, &slot, inter, out_row)
    })
}

// ---------------------------------------------------------------------------
// Nearest: tensorflow/core/kernels/image/resize_nearest_neighbor_op.cc.

/// `compute_indices` with `HalfPixelScalerForNN` (`(i + 0.5) * scale`, no
/// `- 0.5`) and `floorf`, clamped to `[0, in_size - 1]`.
fn nearest_axis(in_size: usize, out_size: usize) -> Vec<usize> {
    let scale = resize_scale(in_size, out_size, false);
    let last = in_size as i64 - 1;
    (0..out_size).map(|i| (((i as f32 + 0.5) * scale).floor() as i64).clamp(0, last) as usize).collect()
}

/// # Shapes
/// `src`: `[h, w, c]` → `[out_h, out_w, c]`.
fn nearest<T: Sample>(src: &Image<T>, out_h: usize, out_w: usize) -> ImageF32 {
    let c = src.channels;
    let ys = nearest_axis(src.height, out_h);
    let xs = nearest_axis(src.width, out_w);
    let mut out = Vec::with_capacity(out_h * out_w * c);
    for &y in &ys {
        let row = &src.data[y * src.width * c..(y + 1) * src.width * c];
        for &x in &xs {
            out.extend(row[x * c..(x + 1) * c].iter().map(|v| v.to_f32()));
        }
    }
    Image::new(out_h, out_w, c, out)
}

// ---------------------------------------------------------------------------
// Area: tensorflow/core/kernels/image/resize_area_op.cc.

/// The cells of one axis that output `i` covers and how much of each:
/// `[floor(i * scale), ceil((i + 1) * scale))`, cell `v` weighted by the length
/// of its overlap with `[i * scale, (i + 1) * scale)` (the `start_scale` /
/// `end_minus_one_scale` / `scale_y` expressions of `resize_area_op.cc`),
/// indices clamped into the image (`Bound`). Returns the taps and `scale`.
fn area_axis(in_size: usize, out_size: usize) -> (Taps, f32) {
    let scale = resize_scale(in_size, out_size, false);
    let last = in_size as i64 - 1;
    let mut taps = Taps::with_capacity(out_size, scale.ceil() as usize + 1);
    for i in 0..out_size {
        let lo = i as f32 * scale;
        let hi = (i + 1) as f32 * scale;
        let start = lo.floor() as i64;
        let end = hi.ceil() as i64;
        for v in start..end {
            // (v < lo ? (v + 1 > hi ? scale : v + 1 - lo) : (v + 1 > hi ? hi - v : 1.0))
            let vf = v as f32;
            let next = (v + 1) as f32;
            let w = if vf < lo {
                if next > hi { scale } else { next - lo }
            } else if next > hi {
                hi - vf
            } else {
                1.0
            };
            taps.push(v.clamp(0, last) as usize, w);
        }
        taps.finish_output();
    }
    (taps, scale)
}

/// TF's `ResizeArea`: per input row, the x-weighted sum over each output
/// column's cells (`sum_y`); then `Σ sum_y · scale_y` over the rows; then
/// `× 1 / (height_scale · width_scale)`. Same order of operations as
/// `ComputePatchSum`.
///
/// # Shapes
/// `src`: `[h, w, c]` → `[out_h, out_w, c]`.
fn area<T: Sample>(src: &Image<T>, out_h: usize, out_w: usize) -> ImageF32 {
    let c = src.channels;
    let (ys, height_scale) = area_axis(src.height, out_h);
    let (xs, width_scale) = area_axis(src.width, out_w);
    // `float scale = 1.0 / (st.height_scale * st.width_scale);` (double division).
    let norm = (1.0f64 / f64::from(height_scale * width_scale)) as f32;
    let inter = gather_cols(&src.data, src.height, src.width, c, &xs);
    let mut out = gather_rows(&inter, out_w * c, &ys);
    for v in &mut out {
        *v *= norm;
    }
    Image::new(out_h, out_w, c, out)
}

// ---------------------------------------------------------------------------
// Bicubic: tensorflow/core/kernels/image/resize_bicubic_op.cc.

/// Entries of TF's cubic coefficient table (`kTableSize`).
const CUBIC_TABLE_SIZE: usize = 1 << 10;

/// TF's `InitCoeffsTable(-0.5)` (Keys): for `i` in `0..=1024`, with
/// `x = i / 1024`, entry `2i` is the kernel at `x` and entry `2i + 1` the
/// kernel at `x + 1`. Evaluated in double (TF's `a` is a double) and stored
/// as float, as TF. TF2's bicubic samples this table (`lrintf(delta * 1024)`)
/// instead of evaluating the polynomial, and the quantisation is visible
/// (≈1e-3 of the pixel range), so it must be reproduced.
fn keys_cubic_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let a = -0.5f64;
        let mut table = vec![0.0f32; (CUBIC_TABLE_SIZE + 1) * 2];
        for i in 0..=CUBIC_TABLE_SIZE {
            // `float x = i * 1.0 / kTableSize;`
            let mut x = (i as f64 / CUBIC_TABLE_SIZE as f64) as f32;
            let xd = f64::from(x);
            table[i * 2] = (((a + 2.0) * xd - (a + 3.0)) * xd * xd + 1.0) as f32;
            // `x += 1.0;` (float)
            x = (f64::from(x) + 1.0) as f32;
            let xd = f64::from(x);
            table[i * 2 + 1] = (((a * xd - 5.0 * a) * xd + 8.0 * a) * xd - 4.0 * a) as f32;
        }
        table
    })
}

/// `GetWeightsAndIndices<HalfPixelScaler, /*use_keys_cubic=*/true>`: the four
/// taps `floor(p) - 1 ..= floor(p) + 2` around `p = (i + 0.5) * scale - 0.5`,
/// with weights from the table; taps outside the image get weight 0 and the
/// rest are renormalised to sum to 1 (as `scale_and_translate_op.cc`).
fn bicubic_axis(in_size: usize, out_size: usize) -> Taps {
    let table = keys_cubic_table();
    let scale = resize_scale(in_size, out_size, false);
    let limit = in_size as i64;
    let mut taps = Taps::with_capacity(out_size, 4);
    for i in 0..out_size {
        let pos = (i as f32 + 0.5) * scale - 0.5;
        let base = pos.floor() as i64;
        let delta = pos - base as f32;
        // lrintf: round half to even in the default rounding mode.
        let offset =
            ((delta * CUBIC_TABLE_SIZE as f32).round_ties_even() as i64).clamp(0, CUBIC_TABLE_SIZE as i64) as usize;
        let coeffs = [
            table[offset * 2 + 1],
            table[offset * 2],
            table[(CUBIC_TABLE_SIZE - offset) * 2],
            table[(CUBIC_TABLE_SIZE - offset) * 2 + 1],
        ];
        let mut idx = [0usize; 4];
        let mut w = [0.0f32; 4];
        for k in 0..4 {
            let want = base - 1 + k as i64;
            let bounded = want.clamp(0, limit - 1);
            idx[k] = bounded as usize;
            w[k] = if bounded == want { coeffs[k] } else { 0.0 };
        }
        let sum = w[0] + w[1] + w[2] + w[3];
        if sum.abs() >= 1000.0 * f32::MIN_POSITIVE {
            let inv = 1.0f32 / sum;
            for wk in &mut w {
                *wk *= inv;
            }
        }
        for k in 0..4 {
            taps.push(idx[k], w[k]);
        }
        taps.finish_output();
    }
    taps
}

/// TF2's `ResizeBicubic(half_pixel_centers=True)`: interpolate along y first
/// (`ComputeYInterpolation`), then along x, as `interpolate_with_caching`.
///
/// # Shapes
/// `src`: `[h, w, c]` → `[out_h, out_w, c]`.
fn bicubic<T: Sample>(src: &Image<T>, out_h: usize, out_w: usize) -> ImageF32 {
    let c = src.channels;
    let ys = bicubic_axis(src.height, out_h);
    let xs = bicubic_axis(src.width, out_w);
    let inter = gather_rows(&src.data, src.width * c, &ys);
    let out = gather_cols(&inter, out_h, src.width, c, &xs);
    Image::new(out_h, out_w, c, out)
}

// ---------------------------------------------------------------------------
// ScaleAndTranslate: tensorflow/core/kernels/image/scale_and_translate_op.cc
// and sampling_kernels.h.

/// The sampling kernels of `tensorflow/core/kernels/image/sampling_kernels.h`.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    /// `TriangleKernelFunc` (radius 1).
    Triangle,
    /// `KeysCubicKernelFunc` (radius 2, a = -0.5).
    KeysCubic,
    /// `LanczosKernelFunc(radius)`.
    Lanczos(f32),
    /// `GaussianKernelFunc(1.5)`: sigma = radius / 3.
    Gaussian,
    /// `MitchellCubicKernelFunc` (radius 2).
    MitchellCubic,
}

impl Kernel {
    fn radius(self) -> f32 {
        match self {
            Kernel::Triangle => 1.0,
            Kernel::KeysCubic | Kernel::MitchellCubic => 2.0,
            Kernel::Lanczos(r) => r,
            Kernel::Gaussian => 1.5,
        }
    }

    /// The kernel at `x` (TF evaluates it at `|x|`).
    fn eval(self, x: f32) -> f32 {
        let x = x.abs();
        match self {
            Kernel::Triangle => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Kernel::KeysCubic => {
                if x >= 2.0 {
                    0.0
                } else if x >= 1.0 {
                    ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
                } else {
                    ((1.5 * x - 2.5) * x) * x + 1.0
                }
            }
            Kernel::Lanczos(radius) => {
                // TF's `constexpr float kPI = 3.14159265359;` rounds to the
                // same float32 as `f32::consts::PI`.
                const PI: f32 = std::f32::consts::PI;
                if x > radius {
                    0.0
                } else if x <= 1e-3 {
                    1.0
                } else {
                    radius * (PI * x).sin() * (PI * x / radius).sin() / (PI * PI * x * x)
                }
            }
            Kernel::Gaussian => {
                const RADIUS: f32 = 1.5;
                const SIGMA: f32 = RADIUS / 3.0;
                if x >= RADIUS {
                    0.0
                } else {
                    // `std::exp(-x * x / (2.0 * sigma * sigma))`, in double.
                    let s = f64::from(SIGMA);
                    (f64::from(-x * x) / (2.0 * s * s)).exp() as f32
                }
            }
            Kernel::MitchellCubic => {
                if x >= 2.0 {
                    0.0
                } else if x >= 1.0 {
                    (((-7.0 / 18.0) * x + 2.0) * x - 10.0 / 3.0) * x + 16.0 / 9.0
                } else {
                    (((7.0 / 6.0) * x - 2.0) * x) * x + 8.0 / 9.0
                }
            }
        }
    }
}

/// `ComputeSpansCore` for `scale = out / in` (float32, as `resize_images_v2`
/// computes it) and the given translation (`tf.image.resize` passes 0): output `i` samples input position
/// `(i + 0.5) / scale` (in pixel-edge coordinates), over the inputs whose
/// centres lie within the kernel's radius, which with `antialias` is widened
/// by `max(1 / scale, 1)`; the weights are normalised to sum to 1.
fn scale_and_translate_axis(kernel: Kernel, in_size: usize, out_size: usize, translate: f32, antialias: bool) -> Taps {
    let scale = out_size as f32 / in_size as f32;
    // `const float inv_scale = 1.0 / scale;` (double division).
    let inv_scale = (1.0f64 / f64::from(scale)) as f32;
    let inv_translate = -inv_scale * translate;
    let kernel_scale = if antialias { inv_scale.max(1.0) } else { 1.0 };
    let one_over_kernel_scale = 1.0f32 / kernel_scale;
    let reach = kernel.radius() * kernel_scale;
    let last = in_size as i64 - 1;
    let span = (2 * (reach.ceil() as usize) + 1).min(in_size);
    let mut taps = Taps::with_capacity(out_size, span);
    let mut weights = Vec::with_capacity(span);
    for i in 0..out_size {
        let sample = (i as f32 + 0.5) * inv_scale + inv_translate;
        // "Don't sample when the sampling location is outside the source image."
        if sample < 0.0 || sample > in_size as f32 {
            taps.finish_output();
            continue;
        }
        let start = ((sample - reach - 0.5).ceil() as i64).clamp(0, last);
        let end = ((sample + reach - 0.5).floor() as i64).clamp(0, last) + 1;
        weights.clear();
        let mut total = 0.0f32;
        for source in start..end {
            let pos = source as f32 + 0.5 - sample;
            let w = kernel.eval((pos * one_over_kernel_scale).abs());
            total += w;
            weights.push(w);
        }
        if total.abs() >= 1000.0 * f32::MIN_POSITIVE {
            let inv_total = 1.0f32 / total;
            for (source, &w) in (start..end).zip(&weights) {
                taps.push(source as usize, w * inv_total);
            }
        }
        taps.finish_output();
    }
    taps
}

/// TF's `ScaleAndTranslate` as `tf.image.resize` calls it: rows first
/// (`GatherRows` into a `[out_h, in_w, c]` float buffer), then columns
/// (`GatherColumns`).
///
/// # Shapes
/// `src`: `[h, w, c]` → `[out_h, out_w, c]`.
fn scale_and_translate<T: Sample>(
    src: &Image<T>,
    out_h: usize,
    out_w: usize,
    kernel: Kernel,
    antialias: bool,
) -> ImageF32 {
    let c = src.channels;
    let ys = scale_and_translate_axis(kernel, src.height, out_h, 0.0, antialias);
    let xs = scale_and_translate_axis(kernel, src.width, out_w, 0.0, antialias);
    let inter = gather_rows(&src.data, src.width * c, &ys);
    let out = gather_cols(&inter, out_h, src.width, c, &xs);
    Image::new(out_h, out_w, c, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(method: ResizeMethod, antialias: bool) -> ResizeOptions {
        ResizeOptions { method, antialias }
    }

    /// A small deterministic generator (xorshift64*), so the tests need no
    /// extra dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_u8(rng: &mut Rng, h: usize, w: usize, c: usize) -> ImageU8 {
        Image::new(h, w, c, (0..h * w * c).map(|_| rng.next() as u8).collect())
    }

    fn row(values: &[f32]) -> ImageF32 {
        Image::new(1, values.len(), 1, values.to_vec())
    }

    fn assert_close(got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "element {i}: got {g}, want {w} (all: {got:?})");
        }
    }

    #[test]
    fn one_pixel_upscaled_is_constant() {
        let image = Image::new(1, 1, 3, vec![7.0f32, 100.0, 255.0]);
        for method in ResizeMethod::ALL {
            for antialias in [false, true] {
                let out = resize(&image, 3, 5, &opts(method, antialias));
                assert_eq!(out.shape(), [3, 5, 3]);
                for px in out.data.chunks_exact(3) {
                    assert_close(px, &image.data, 1e-4);
                }
            }
        }
    }

    #[test]
    fn identity_resize_is_exact() {
        let mut rng = Rng(0x1234_5678);
        let image = random_u8(&mut rng, 9, 13, 3).to_f32();
        for method in [ResizeMethod::Bilinear, ResizeMethod::Nearest, ResizeMethod::Area, ResizeMethod::Bicubic] {
            for antialias in [false, true] {
                let out = resize(&image, 9, 13, &opts(method, antialias));
                assert_eq!(out, image, "{method:?} antialias={antialias}");
            }
        }
        for align in [false, true] {
            assert_eq!(resize_bilinear_legacy(&image, 9, 13, align), image);
        }
    }

    #[test]
    fn bilinear_matches_hand_computed_values() {
        // TF2: positions (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25.
        let out = resize(&row(&[0.0, 10.0]), 1, 4, &ResizeOptions::default());
        assert_close(&out.data, &[0.0, 2.5, 7.5, 10.0], 1e-6);
        // TF1 legacy: positions i / 2 = 0, 0.5, 1, 1.5.
        let out = resize_bilinear_legacy(&row(&[0.0, 10.0]), 1, 4, false);
        assert_close(&out.data, &[0.0, 5.0, 10.0, 10.0], 1e-6);
        // align_corners: positions i / 3.
        let out = resize_bilinear_legacy(&row(&[0.0, 10.0]), 1, 4, true);
        assert_close(&out.data, &[0.0, 10.0 / 3.0, 20.0 / 3.0, 10.0], 1e-5);
    }

    #[test]
    fn nearest_uses_half_pixel_floor() {
        // scale 1.5: floor(0.75) = 0, floor(2.25) = 2.
        let out = resize(&row(&[0.0, 10.0, 20.0]), 1, 2, &opts(ResizeMethod::Nearest, false));
        assert_eq!(out.data, vec![0.0, 20.0]);
        // Upscaling 2 -> 5: floor((i + 0.5) * 0.4) = 0, 0, 1, 1, 1.
        let out = resize(&row(&[0.0, 10.0]), 1, 5, &opts(ResizeMethod::Nearest, false));
        assert_eq!(out.data, vec![0.0, 0.0, 10.0, 10.0, 10.0]);
    }

    #[test]
    fn area_averages_footprints() {
        let out = resize(&row(&[0.0, 2.0, 4.0, 6.0]), 1, 2, &opts(ResizeMethod::Area, false));
        assert_close(&out.data, &[1.0, 5.0], 1e-6);
        // TF's own example: 4 -> 3 covers in[0] + in[1]/3, 2/3 in[1] + 2/3 in[2], ...
        let out = resize(&row(&[3.0, 6.0, 9.0, 12.0]), 1, 3, &opts(ResizeMethod::Area, false));
        assert_close(
            &out.data,
            &[(3.0 + 6.0 / 3.0) * 0.75, (6.0 + 9.0) * 2.0 / 3.0 * 0.75, (9.0 / 3.0 + 12.0) * 0.75],
            1e-5,
        );
    }

    #[test]
    fn bicubic_table_is_keys_cubic() {
        let table = keys_cubic_table();
        assert_eq!(table.len(), 2 * (CUBIC_TABLE_SIZE + 1));
        assert_eq!(table[0], 1.0);
        assert_eq!(table[1], 0.0);
        // At x = 0.5: 1.5 x^3 - 2.5 x^2 + 1 = 0.5625; at 1.5: -0.0625.
        assert!((table[CUBIC_TABLE_SIZE] - 0.5625).abs() < 1e-7);
        assert!((table[CUBIC_TABLE_SIZE + 1] + 0.0625).abs() < 1e-7);
    }

    #[test]
    fn antialias_upscale_matches_plain_bilinear() {
        let mut rng = Rng(99);
        let image = random_u8(&mut rng, 7, 11, 2).to_f32();
        let plain = resize(&image, 17, 23, &opts(ResizeMethod::Bilinear, false));
        let aa = resize(&image, 17, 23, &opts(ResizeMethod::Bilinear, true));
        assert_close(&aa.data, &plain.data, 1e-3);
    }

    #[test]
    fn u8_fast_path_matches_general_path() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..60 {
            let (h, w, c) = (1 + rng.below(40), 1 + rng.below(40), 1 + rng.below(4));
            let (oh, ow) = (1 + rng.below(60), 1 + rng.below(60));
            let image = random_u8(&mut rng, h, w, c);
            let fast = resize_bilinear_u8(&image, oh, ow);
            let slow = resize(&image.to_f32(), oh, ow, &ResizeOptions::default());
            assert_eq!(fast.shape(), [oh, ow, c]);
            assert_close(&fast.data, &slow.data, 1e-4);
            for method in ResizeMethod::ALL {
                let o = opts(method, rng.below(2) == 1);
                assert_close(&resize_u8(&image, oh, ow, &o).data, &resize(&image.to_f32(), oh, ow, &o).data, 1e-4);
            }
        }
    }

    #[test]
    fn method_names_round_trip() {
        for method in ResizeMethod::ALL {
            assert_eq!(ResizeMethod::from_tf_name(method.tf_name()), Some(method));
        }
        assert_eq!(ResizeMethod::from_tf_name("cubic"), None);
    }

    #[test]
    #[should_panic(expected = "output size must be positive")]
    fn zero_output_size_panics() {
        let _ = resize(&row(&[1.0]), 0, 3, &ResizeOptions::default());
    }
}
