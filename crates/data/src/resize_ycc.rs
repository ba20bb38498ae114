//! The fast input path's resize: bilinear from a JPEG's YCbCr planes straight
//! to normalised CHW RGB at the output size, so that chroma is never
//! upsampled and colour is converted for the output's pixels only (a 224x224
//! output of a 500x375 photo converts a quarter of the pixels libjpeg would).
//!
//! Not TF-exact, by design (that is [`crate::resize_bilinear_u8_into_chw`]
//! on libjpeg's RGB): each plane is sampled at TF's half-pixel positions
//! (`(i + 0.5) * in / out - 0.5`), mapped into the plane with JFIF's centred
//! chroma siting, then converted with `jdcolor.c`'s formula and clamped to
//! 0–255. Against TF's decode + resize the difference is libjpeg's rounding of
//! RGB to 8 bits and its fancy upsampling's rounding; the accuracy cost is
//! measured in tests/decode_planar.rs.

use crate::resize::store_rgb_row;
use crate::ycc::{YccImage, plane_lerp, plane_position, ycc_to_rgb};

/// One output index's samples in a plane: `lower`, `lower + 1` and the weight
/// of the second (0 where TF's clamped `upper` equals `lower`, so the read
/// after the row's last sample is a padding copy of it, weighted 0).
#[derive(Debug, Clone, Copy)]
struct Tap {
    lower: usize,
    upper: usize,
    frac: f32,
}

/// The taps of `out` output indices in a plane of `len` samples, `step` image
/// pixels each, for an image axis of `image` pixels (TF's half-pixel grid).
fn plane_taps(image: usize, out: usize, len: usize, step: usize) -> Vec<Tap> {
    let scale = image as f32 / out as f32;
    (0..out)
        .map(|i| {
            let (lower, upper, frac) = plane_lerp(plane_position((i as f32 + 0.5) * scale - 0.5, step), len);
            Tap { lower, upper, frac: if upper == lower { 0.0 } else { frac } }
        })
        .collect()
}

/// Resizes `image`'s planes to `height x width` with bilinear sampling,
/// converts to RGB, mirrors columns when `flip`, and writes
/// `(rgb - mean) * scale` per channel in CHW order.
///
/// # Shapes
/// `image`: `[h, w]` planes → `out`: `[3, height, width]`.
///
/// # Panics
/// If `height` or `width` is zero, `out` is not `3 * height * width` long, or
/// the planes do not fit the image size (wrong sample counts, a step of 0, too
/// few bytes) or are wider than `i32::MAX` samples (planes from
/// `decode_image_planar` never are).
pub fn resize_ycc_into_chw(
    image: &YccImage,
    height: usize,
    width: usize,
    flip: bool,
    mean: [f32; 3],
    scale: [f32; 3],
    out: &mut [f32],
) {
    assert!(height > 0 && width > 0, "output size {height}x{width} must be positive");
    assert_eq!(out.len(), 3 * height * width, "output buffer does not match 3x{height}x{width}");
    image.assert_consistent();
    resize_ycc_with(image, [height, width], flip, mean, scale, out, Gather::detect());
}

/// [`resize_ycc_into_chw`] with a given horizontal gather (tests compare them).
fn resize_ycc_with(
    image: &YccImage,
    size: [usize; 2],
    flip: bool,
    mean: [f32; 3],
    scale: [f32; 3],
    out: &mut [f32],
    gather: Gather,
) {
    struct Kernel<'a> {
        image: &'a YccImage,
        size: [usize; 2],
        flip: bool,
        mean: [f32; 3],
        scale: [f32; 3],
        out: &'a mut [f32],
        gather: Gather,
    }
    impl pulp::WithSimd for Kernel<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) {
            let Kernel { image, size: [height, width], flip, mean, scale, out, gather } = self;
            body(image, height, width, flip, mean, scale, out, gather);
        }
    }
    // The vertical pass and the conversion are contiguous loops the compiler
    // vectorises for whichever instruction set `pulp` dispatches to.
    pulp::Arch::new().dispatch(Kernel { image, size, flip, mean, scale, out, gather });
}

/// Per-thread scratch: each plane's vertically interpolated row (plus one
/// padding sample), and each plane's horizontally interpolated output row.
#[derive(Default)]
struct Scratch {
    vertical: [Vec<f32>; 3],
    horizontal: [Vec<f32>; 3],
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Floats after each plane's vertically interpolated row: its last sample
/// repeated (read with weight 0 by the last sample's tap), then room for the
/// AVX-512 kernel's 32-float load from any block's first sample.
const ROW_PAD: usize = 33;

/// The horizontal taps of one plane as the loops below read them: output
/// `x` is `v[index[x]] + (v[index[x] + 1] - v[index[x]]) * frac[x]`, where
/// `v` is the vertically interpolated row followed by `ROW_PAD` floats.
struct RowTaps {
    index: Vec<i32>,
    frac: Vec<f32>,
    /// `v`'s length; every index + 1, and every block's first index + 32,
    /// is at most this (indices are at most the plane's width - 1).
    bound: usize,
    /// For the AVX-512 kernel, per 8 outputs: the first source index and the
    /// lanes (8 `a` then 8 `b` indices) relative to it, when every block's
    /// taps lie within 32 samples of its first (a downscale of up to about
    /// 4x); empty otherwise.
    blocks: Vec<(usize, [i32; 16])>,
}

impl RowTaps {
    /// # Panics
    /// If a tap is outside the plane, or the plane is wider than `i32::MAX`
    /// samples (JPEGs are at most 65,535 wide).
    fn new(taps: &[Tap], plane_width: usize) -> RowTaps {
        assert!(i32::try_from(plane_width).is_ok(), "a plane {plane_width} samples wide is too wide to resize");
        assert!(taps.iter().all(|t| t.lower < plane_width), "a tap outside the plane");
        // Below `plane_width`, so the casts are exact.
        let index: Vec<i32> = taps.iter().map(|t| t.lower as i32).collect();
        let mut blocks = Vec::with_capacity(taps.len() / 8);
        for chunk in taps.chunks_exact(8) {
            let base = chunk.iter().map(|t| t.lower).min().unwrap_or(0);
            let mut lanes = [0i32; 16];
            for (i, t) in chunk.iter().enumerate() {
                // At most 31 (checked below), so the casts are exact.
                lanes[i] = (t.lower - base) as i32;
                lanes[i + 8] = (t.lower - base + 1) as i32;
            }
            if lanes.iter().any(|&l| l > 31) {
                blocks.clear();
                break;
            }
            blocks.push((base, lanes));
        }
        let frac = taps.iter().map(|t| t.frac).collect();
        RowTaps { index, frac, bound: plane_width + ROW_PAD, blocks }
    }
}

/// The horizontal pass, two neighbouring samples per output: with AVX-512 a
/// permute per 8 outputs (`x86::permute_lerp_avx512`, downscales up to about
/// 4x) or 16 outputs per gather instruction pair, with AVX2 8 per gather pair
/// (the compiler makes such indexed loads scalar), otherwise
/// [`gather_lerp_scalar`].
/// Every variant computes `a + (b - a) * f` with the same IEEE operations (no
/// fused multiply-add), so the values do not depend on the CPU (tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gather {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Gather {
    /// The best this CPU has.
    fn detect() -> Gather {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Gather::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Gather::Avx2;
            }
        }
        Gather::Scalar
    }

    /// `out[x] = v[i] + (v[i + 1] - v[i]) * frac[x]` with `i = taps.index[x]`.
    ///
    /// # Panics
    /// If `v` is shorter than `taps.bound` or `out` than the taps.
    #[allow(unsafe_code)]
    fn lerp(self, v: &[f32], taps: &RowTaps, out: &mut [f32]) {
        assert!(v.len() >= taps.bound && out.len() == taps.index.len(), "gather row sizes");
        match self {
            Gather::Scalar => gather_lerp_scalar(v, &taps.index, &taps.frac, out),
            // SAFETY (all three): the feature was detected at run time
            // (`detect`); `RowTaps::new` checked every index against the
            // plane's width, so index + 1 and block start + 32 are at most
            // `taps.bound <= v.len()`; the blocks cover the first
            // `8 * blocks.len() <= out.len()` outputs.
            #[cfg(target_arch = "x86_64")]
            Gather::Avx2 => unsafe { x86::gather_lerp_avx2(v, &taps.index, &taps.frac, out) },
            #[cfg(target_arch = "x86_64")]
            Gather::Avx512 if !taps.blocks.is_empty() => unsafe {
                x86::permute_lerp_avx512(v, &taps.blocks, &taps.index, &taps.frac, out)
            },
            #[cfg(target_arch = "x86_64")]
            Gather::Avx512 => unsafe { x86::gather_lerp_avx512(v, &taps.index, &taps.frac, out) },
        }
    }
}

/// The slow, obvious horizontal pass (and the tail of the SIMD ones).
fn gather_lerp_scalar(v: &[f32], index: &[i32], frac: &[f32], out: &mut [f32]) {
    for ((o, &i), &f) in out.iter_mut().zip(index).zip(frac) {
        let (a, b) = (v[i as usize], v[i as usize + 1]);
        *o = a + (b - a) * f;
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use std::arch::x86_64::*;

    use super::gather_lerp_scalar;

    /// [`gather_lerp_scalar`], 16 outputs at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `index`, `frac` and `out` have the same length,
    /// and every `index[x]` is non-negative with `index[x] + 1 < v.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_lerp_avx512(v: &[f32], index: &[i32], frac: &[f32], out: &mut [f32]) {
        let full = out.len() / 16 * 16;
        let (base, next) = (v.as_ptr(), v[1..].as_ptr());
        for x in (0..full).step_by(16) {
            // SAFETY: x + 16 <= len for all three slices; the gathered indices
            // are in bounds of `v` (and `v[1..]`) by the caller's contract.
            unsafe {
                let i = _mm512_loadu_si512(index.as_ptr().add(x).cast());
                let a = _mm512_i32gather_ps::<4>(i, base);
                let b = _mm512_i32gather_ps::<4>(i, next);
                let f = _mm512_loadu_ps(frac.as_ptr().add(x));
                _mm512_storeu_ps(out.as_mut_ptr().add(x), _mm512_add_ps(a, _mm512_mul_ps(_mm512_sub_ps(b, a), f)));
            }
        }
        gather_lerp_scalar(v, &index[full..], &frac[full..], &mut out[full..]);
    }

    /// [`gather_lerp_scalar`] without gathers, 8 outputs at a time: the 32
    /// samples from each block's first index are loaded as two vectors and one
    /// two-source permute picks both neighbours of all 8 outputs (a gather
    /// loads each element separately, and was most of this pass's time).
    ///
    /// # Safety
    /// The CPU has AVX-512F; `index`, `frac` and `out` have the same length,
    /// at least `8 * blocks.len()`; each block's lanes are at most 31, its
    /// first index + 32 is at most `v.len()`, and every `index[x] + 1 <
    /// v.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn permute_lerp_avx512(
        v: &[f32],
        blocks: &[(usize, [i32; 16])],
        index: &[i32],
        frac: &[f32],
        out: &mut [f32],
    ) {
        for (k, (base, lanes)) in blocks.iter().enumerate() {
            // SAFETY: `v[base..base + 32]` and the block's 8 outputs are in
            // bounds by the caller's contract.
            unsafe {
                let p = v.as_ptr().add(*base);
                let (lo, hi) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
                let ab = _mm512_permutex2var_ps(lo, _mm512_loadu_si512(lanes.as_ptr().cast()), hi);
                let a = _mm512_castps512_ps256(ab);
                let b = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(ab)));
                let f = _mm256_loadu_ps(frac.as_ptr().add(8 * k));
                _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), _mm256_add_ps(a, _mm256_mul_ps(_mm256_sub_ps(b, a), f)));
            }
        }
        let done = 8 * blocks.len();
        gather_lerp_scalar(v, &index[done..], &frac[done..], &mut out[done..]);
    }

    /// [`gather_lerp_scalar`], 8 outputs at a time.
    ///
    /// # Safety
    /// As [`gather_lerp_avx512`], with AVX2 instead of AVX-512F.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gather_lerp_avx2(v: &[f32], index: &[i32], frac: &[f32], out: &mut [f32]) {
        let full = out.len() / 8 * 8;
        let (base, next) = (v.as_ptr(), v[1..].as_ptr());
        for x in (0..full).step_by(8) {
            // SAFETY: as in `gather_lerp_avx512`.
            unsafe {
                let i = _mm256_loadu_si256(index.as_ptr().add(x).cast());
                let a = _mm256_i32gather_ps::<4>(base, i);
                let b = _mm256_i32gather_ps::<4>(next, i);
                let f = _mm256_loadu_ps(frac.as_ptr().add(x));
                _mm256_storeu_ps(out.as_mut_ptr().add(x), _mm256_add_ps(a, _mm256_mul_ps(_mm256_sub_ps(b, a), f)));
            }
        }
        gather_lerp_scalar(v, &index[full..], &frac[full..], &mut out[full..]);
    }
}

/// The body of [`resize_ycc_into_chw`], inlined into each instruction-set
/// variant. Vertical pass first (contiguous rows of each plane), then the
/// horizontal gather at the output width, then colour conversion.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn body(
    image: &YccImage,
    height: usize,
    width: usize,
    flip: bool,
    mean: [f32; 3],
    scale: [f32; 3],
    out: &mut [f32],
    gather: Gather,
) {
    let ys: [Vec<Tap>; 3] =
        std::array::from_fn(|p| plane_taps(image.height, height, image.planes[p].height, image.planes[p].step[1]));
    let xs: [RowTaps; 3] = std::array::from_fn(|p| {
        let plane = &image.planes[p];
        RowTaps::new(&plane_taps(image.width, width, plane.width, plane.step[0]), plane.width)
    });
    let mut scratch = SCRATCH.with_borrow_mut(std::mem::take);
    for p in 0..3 {
        let len = image.planes[p].width + ROW_PAD;
        if scratch.vertical[p].len() < len {
            scratch.vertical[p].resize(len, 0.0);
        }
        if scratch.horizontal[p].len() < width {
            scratch.horizontal[p].resize(width, 0.0);
        }
    }
    let plane = height * width;
    let (r_plane, rest) = out.split_at_mut(plane);
    let (g_plane, b_plane) = rest.split_at_mut(plane);
    // Index loops: zipping the planes with an array of taps built that array
    // on the stack per row, and reading it back stalled (store forwarding).
    #[allow(clippy::needless_range_loop)]
    for y in 0..height {
        for p in 0..3 {
            let (src, t) = (&image.planes[p], ys[p][y]);
            let top = &src.data[t.lower * src.stride..][..src.width];
            let bottom = &src.data[t.upper * src.stride..][..src.width];
            let v = &mut scratch.vertical[p][..src.width + ROW_PAD];
            for ((v, &a), &b) in v.iter_mut().zip(top).zip(bottom) {
                let a = f32::from(a);
                *v = a + (f32::from(b) - a) * t.frac;
            }
            // The padding sample: read (with weight 0) by the last sample's tap.
            v[src.width] = v[src.width - 1];
            gather.lerp(v, &xs[p], &mut scratch.horizontal[p][..width]);
        }
        let row = y * width..(y + 1) * width;
        let planes = [&mut r_plane[row.clone()], &mut g_plane[row.clone()], &mut b_plane[row]];
        let [ly, lcb, lcr] = &scratch.horizontal;
        let pixels = ly[..width].iter().zip(&lcb[..width]).zip(&lcr[..width]);
        store_rgb_row(pixels, flip, planes, |((&l, &cb), &cr), r, g, b| {
            let [red, green, blue] = ycc_to_rgb(l, cb - 128.0, cr - 128.0);
            *r = (red.clamp(0.0, 255.0) - mean[0]) * scale[0];
            *g = (green.clamp(0.0, 255.0) - mean[1]) * scale[1];
            *b = (blue.clamp(0.0, 255.0) - mean[2]) * scale[2];
        });
    }
    SCRATCH.with_borrow_mut(|held| *held = scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ycc::YccPlane;

    /// A deterministic pseudo-random plane.
    fn plane(width: usize, height: usize, step: [usize; 2], seed: u64) -> YccPlane {
        let stride = width.div_ceil(8) * 8;
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let data = (0..stride * height)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        YccPlane { data, stride, width, height, step }
    }

    fn image(width: usize, height: usize, step: [usize; 2]) -> YccImage {
        let (cw, ch) = (width.div_ceil(step[0]), height.div_ceil(step[1]));
        YccImage {
            width,
            height,
            planes: [plane(width, height, [1, 1], 1), plane(cw, ch, step, 2), plane(cw, ch, step, 3)],
        }
    }

    /// The slow, obvious path: each output pixel sampled from each plane
    /// (`YccImage::sample`) at TF's half-pixel position, converted, clamped,
    /// normalised, in CHW order.
    fn reference(img: &YccImage, height: usize, width: usize, flip: bool, mean: [f32; 3], k: [f32; 3]) -> Vec<f32> {
        let mut out = vec![0.0; 3 * height * width];
        let (sy, sx) = (img.height as f32 / height as f32, img.width as f32 / width as f32);
        for y in 0..height {
            for x in 0..width {
                let (v, u) = ((y as f32 + 0.5) * sy - 0.5, (x as f32 + 0.5) * sx - 0.5);
                let rgb = ycc_to_rgb(img.sample(0, v, u), img.sample(1, v, u) - 128.0, img.sample(2, v, u) - 128.0);
                let ox = if flip { width - 1 - x } else { x };
                for c in 0..3 {
                    out[c * height * width + y * width + ox] = (rgb[c].clamp(0.0, 255.0) - mean[c]) * k[c];
                }
            }
        }
        out
    }

    #[test]
    fn fused_kernel_matches_the_per_pixel_reference() {
        let mean = [123.68, 116.78, 103.94];
        let k = [1.0 / 58.0, 1.0 / 57.0, 1.0 / 57.5];
        // 4:2:0, 4:2:2, 4:4:4; odd sizes; up- and downscaling; 1-pixel edges.
        let cases = [
            (37, 23, [2, 2], 16, 16),
            (40, 30, [2, 1], 7, 51),
            (17, 19, [1, 1], 24, 9),
            (1, 1, [2, 2], 3, 4),
            (64, 1, [2, 2], 2, 5),
            (1, 33, [2, 2], 5, 1),
            (500, 375, [2, 2], 224, 224),
        ];
        for (w, h, step, oh, ow) in cases {
            let img = image(w, h, step);
            for flip in [false, true] {
                let mut got = vec![0.0; 3 * oh * ow];
                resize_ycc_into_chw(&img, oh, ow, flip, mean, k, &mut got);
                let want = reference(&img, oh, ow, flip, mean, k);
                // Vertical-first against the reference's horizontal-first
                // order: a few float32 roundings apart, on values up to ~4.5.
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(worst < 1e-4, "{w}x{h} {step:?} -> {oh}x{ow} flip {flip}: worst difference {worst}");
            }
        }
    }

    #[test]
    fn simd_gathers_match_the_scalar_loop_bit_for_bit() {
        let mut variants = vec![Gather::detect()];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            variants.push(Gather::Avx2);
        }
        let mean = [120.0, 110.0, 100.0];
        let k = [0.02, 0.03, 0.04];
        // Output widths around the 16- and 8-lane blocks, with tails; the
        // AVX-512 permute (downscales up to about 4x) and its gather fallback.
        for (w, h, oh, ow) in [(501, 37, 13, 224), (40, 30, 5, 17), (9, 9, 3, 8), (3, 2, 2, 31), (1500, 9, 3, 100)] {
            let img = image(w, h, [2, 2]);
            let mut want = vec![0.0; 3 * oh * ow];
            resize_ycc_with(&img, [oh, ow], true, mean, k, &mut want, Gather::Scalar);
            for &gather in &variants {
                let mut got = vec![0.0; 3 * oh * ow];
                resize_ycc_with(&img, [oh, ow], true, mean, k, &mut got, gather);
                let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{gather:?} differs from the scalar loop for {w}x{h} -> {oh}x{ow}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "plane 1 of a 37x23 image: 19x12 samples, step [0, 2]")]
    fn inconsistent_planes_are_refused() {
        let mut img = image(37, 23, [2, 2]);
        img.planes[1].step = [0, 2];
        let mut out = vec![0.0; 3 * 4 * 4];
        resize_ycc_into_chw(&img, 4, 4, false, [0.0; 3], [1.0; 3], &mut out);
    }

    #[test]
    fn permute_blocks_cover_downscales_up_to_about_4x() {
        let blocks = |w: usize, out: usize| RowTaps::new(&plane_taps(w, out, w, 1), w).blocks.len();
        assert_eq!(blocks(501, 224), 28);
        assert_eq!(blocks(896, 224), 28);
        assert_eq!(blocks(1500, 100), 0);
        assert_eq!(blocks(30, 7), 0); // fewer than 8 outputs
    }

    #[test]
    fn taps_follow_tf_on_the_luma_plane() {
        // Luma (step 1) taps equal TF's half-pixel bilinear weights.
        let taps = plane_taps(5, 2, 5, 1);
        // scale 2.5: positions 0.75 and 3.25.
        assert_eq!((taps[0].lower, taps[0].upper, taps[0].frac), (0, 1, 0.75));
        assert_eq!((taps[1].lower, taps[1].upper, taps[1].frac), (3, 4, 0.25));
        // Upscaling: the first output sits before sample 0 and clamps to it.
        let taps = plane_taps(2, 8, 2, 1);
        assert_eq!((taps[0].lower, taps[0].upper, taps[0].frac), (0, 0, 0.0));
        assert_eq!((taps[7].lower, taps[7].upper, taps[7].frac), (1, 1, 0.0));
    }
}
