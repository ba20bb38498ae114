//! Batch norm's f64 reductions: `[Σ t₀(a, b), Σ t₁(a, b)]` over a plane, in a fixed
//! order of [`LANES`] f64 lanes, for the three kinds of terms the kernels sum
//! ([`Terms`]): the values (for the mean), the centred values and their squares (for the
//! variance), and the gradient's `[Σ dy, Σ dy · (x - mean)]` (ReLU-masked or not).
//!
//! Why a kernel of its own: written as a generic loop ([`sums2`], the reference), the
//! reductions compile to vector code that stages every converted value through the stack
//! (LLVM does not keep a per-lane f64 reduction fed by f32 conversions in registers), and
//! they took 11% of resnet20's two-thread training step (perf, `bench train --model
//! resnet20`). [`lane_sums`] runs the same IEEE operations in the same order with AVX-512
//! intrinsics, accumulators in registers, so its results are bitwise [`sums2`]'s (tested
//! below); without AVX-512F it is [`sums2`].

use super::batch_norm::normalise;

/// Independent f64 accumulators per reduction: lane `l` adds the terms of values `l, l +
/// LANES, …` in turn, then the lanes are added in order, so the order never changes.
pub(super) const LANES: usize = 8;

/// Values per block of [`sums2`]'s two phases.
const SUM_BLOCK: usize = 8 * LANES;

/// What [`lane_sums`] sums over the pairs `(a, b)` of two planes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Terms {
    /// `[Σ a, 0]` (`b` unused).
    Values,
    /// `[Σ (a - mean), Σ (a - mean)²]` in f64 (`b` unused).
    Centred(f64),
    /// `[Σ d, Σ d · (b - mean)]` with `d = a` (the gradient `dy`; `b` is `x`), or with `d`
    /// zeroed (to `+0.0`) where the ReLU after batch norm dropped the value: `relu = (m, k,
    /// β)` drops `b` when `(b - m) · k + β > 0` is false, as the forward decided.
    Gradient { mean: f64, relu: Option<(f32, f32, f32)> },
}

impl Terms {
    /// The two terms of one pair, in f64.
    #[inline(always)]
    pub(super) fn of(self, a: f32, b: f32) -> (f64, f64) {
        match self {
            Terms::Values => (f64::from(a), 0.0),
            Terms::Centred(mean) => {
                let d = f64::from(a) - mean;
                (d, d * d)
            }
            Terms::Gradient { mean, relu } => {
                // The mask as a bitwise AND (all ones or zero); a dropped value becomes +0.0.
                let keep = relu.map_or(u32::MAX, |rc| 0u32.wrapping_sub(u32::from(normalise(b, rc) > 0.0)));
                let d = f64::from(f32::from_bits(a.to_bits() & keep));
                (d, d * (f64::from(b) - mean))
            }
        }
    }
}

/// `[Σ t₀, Σ t₁]` of `terms` over `a` and `b` (to the shorter one's length), bitwise
/// [`sums2`]'s: with AVX-512F through the intrinsic kernel, otherwise [`sums2`] itself.
#[inline(always)]
pub(super) fn lane_sums(a: &[f32], b: &[f32], terms: Terms) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was just detected; the kernel reads only within both slices.
        #[allow(unsafe_code)]
        return unsafe { avx512::lane_sums(a, b, terms) };
    }
    sums2(a, b, |x, y| terms.of(x, y))
}

/// `[Σ f(a, b).0, Σ f(a, b).1]` over two slices (to the shorter one's length), in f64 over
/// [`LANES`] fixed lanes (then the tail, in order), so the order of the additions never
/// changes: the slow, obvious reference of [`lane_sums`], and its path without AVX-512.
///
/// Written in two phases per block of [`SUM_BLOCK`] values, so that it vectorises inside
/// a SIMD dispatch: `f` over the block into two arrays (a plain element-wise loop), then
/// the arrays into the lanes.
#[inline(always)]
pub(super) fn sums2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) -> [f64; 2] {
    let n = a.len().min(b.len());
    let body = n - n % LANES;
    let mut acc = [[0f64; LANES]; 2];
    let mut block = [[0f64; SUM_BLOCK]; 2];
    let mut at = 0;
    while at + SUM_BLOCK <= body {
        let (ab, bb) = (&a[at..at + SUM_BLOCK], &b[at..at + SUM_BLOCK]);
        for i in 0..SUM_BLOCK {
            (block[0][i], block[1][i]) = f(ab[i], bb[i]);
        }
        for c in 0..SUM_BLOCK / LANES {
            for l in 0..LANES {
                acc[0][l] += block[0][c * LANES + l];
                acc[1][l] += block[1][c * LANES + l];
            }
        }
        at += SUM_BLOCK;
    }
    while at < body {
        for l in 0..LANES {
            let (u, v) = f(a[at + l], b[at + l]);
            acc[0][l] += u;
            acc[1][l] += v;
        }
        at += LANES;
    }
    finish(acc, &a[body..n], &b[body..n], f)
}

/// The lanes added in order, then the tail's terms in order.
#[inline(always)]
fn finish(acc: [[f64; LANES]; 2], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f64, f64)) -> [f64; 2] {
    let mut out = [acc[0].iter().sum::<f64>(), acc[1].iter().sum::<f64>()];
    for (&x, &y) in a.iter().zip(b) {
        let (u, v) = f(x, y);
        out[0] += u;
        out[1] += v;
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::{
        _CMP_GT_OQ, _mm256_add_ps, _mm256_and_ps, _mm256_cmp_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps,
        _mm256_setzero_ps, _mm256_sub_ps, _mm512_add_pd, _mm512_cvtps_pd, _mm512_mul_pd, _mm512_set1_pd,
        _mm512_setzero_pd, _mm512_storeu_pd, _mm512_sub_pd,
    };

    use super::{LANES, Terms, finish};

    /// [`super::lane_sums`] with the accumulators in two registers: per [`LANES`] values,
    /// eight f32 loaded, converted to f64 and combined exactly as [`Terms::of`] does, one
    /// vector add per accumulator. (Straight-line loops rather than closures, which would
    /// not be compiled with this function's target features.)
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn lane_sums(a: &[f32], b: &[f32], terms: Terms) -> [f64; 2] {
        let n = a.len().min(b.len());
        let body = n - n % LANES;
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        // SAFETY (every load below): `at + LANES <= body <= n`, within both slices.
        match terms {
            Terms::Values => {
                for at in (0..body).step_by(LANES) {
                    let v = unsafe { _mm256_loadu_ps(pa.add(at)) };
                    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(v));
                }
            }
            Terms::Centred(mean) => {
                let m = _mm512_set1_pd(mean);
                for at in (0..body).step_by(LANES) {
                    let v = unsafe { _mm256_loadu_ps(pa.add(at)) };
                    let d = _mm512_sub_pd(_mm512_cvtps_pd(v), m);
                    s0 = _mm512_add_pd(s0, d);
                    s1 = _mm512_add_pd(s1, _mm512_mul_pd(d, d));
                }
            }
            Terms::Gradient { mean, relu } => {
                let m = _mm512_set1_pd(mean);
                // Without a ReLU nothing is masked (these constants go unused).
                let (rm, rk, rb) = relu.unwrap_or((0.0, 0.0, 0.0));
                let (rm, rk, rb) = (_mm256_set1_ps(rm), _mm256_set1_ps(rk), _mm256_set1_ps(rb));
                let masked = relu.is_some();
                for at in (0..body).step_by(LANES) {
                    let (mut d, v) = unsafe { (_mm256_loadu_ps(pa.add(at)), _mm256_loadu_ps(pb.add(at))) };
                    if masked {
                        // `normalise(v) > 0.0` with the same f32 operations (no FMA), as an
                        // all-ones or zero mask ANDed into `d`, as `Terms::of` does.
                        let y = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v, rm), rk), rb);
                        d = _mm256_and_ps(d, _mm256_cmp_ps::<_CMP_GT_OQ>(y, _mm256_setzero_ps()));
                    }
                    let d = _mm512_cvtps_pd(d);
                    let c = _mm512_sub_pd(_mm512_cvtps_pd(v), m);
                    s0 = _mm512_add_pd(s0, d);
                    s1 = _mm512_add_pd(s1, _mm512_mul_pd(d, c));
                }
            }
        }
        let mut acc = [[0f64; LANES]; 2];
        // SAFETY: each array holds LANES = 8 f64, one register.
        unsafe {
            _mm512_storeu_pd(acc[0].as_mut_ptr(), s0);
            _mm512_storeu_pd(acc[1].as_mut_ptr(), s1);
        }
        finish(acc, &a[body..n], &b[body..n], |x, y| terms.of(x, y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values with a spread of magnitudes and signs, some exact zeros, a
    /// negative zero and a subnormal.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match i % 37 {
                    5 => 0.0,
                    11 => -0.0,
                    17 => 1e-40,
                    _ => u * 10f32.powi((i % 7) as i32 - 3),
                }
            })
            .collect()
    }

    #[test]
    fn the_kernel_is_bitwise_the_reference() {
        let kinds = [
            Terms::Values,
            Terms::Centred(0.125),
            Terms::Centred(-3.7),
            Terms::Gradient { mean: 0.3, relu: None },
            Terms::Gradient { mean: -0.01, relu: Some((0.02, 1.7, 0.05)) },
            Terms::Gradient { mean: 0.0, relu: Some((0.0, -0.5, 0.0)) },
        ];
        // Lengths around the block, the lanes and the tail.
        for n in [0, 1, 7, 8, 9, 63, 64, 65, 100, 1024, 1031, 4096 + 5] {
            let (a, b) = (values(n, n as u64 + 1), values(n + 3, n as u64 + 99));
            for terms in kinds {
                let want = sums2(&a, &b, |x, y| terms.of(x, y));
                let got = lane_sums(&a, &b, terms);
                assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{terms:?} over {n} values");
            }
        }
    }

    #[test]
    fn the_sums_are_what_they_say() {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        let b = [0.5f32, -1.0, 2.0, -3.0, 4.0, 0.0, 1.0, -1.0, 2.0, 3.0];
        assert_eq!(lane_sums(&a, &b, Terms::Values), [55.0, 0.0]);
        assert_eq!(lane_sums(&a, &b, Terms::Centred(5.5)), [0.0, 82.5]);
        let [d, dx] = lane_sums(&a, &b, Terms::Gradient { mean: 1.0, relu: None });
        let want_dx: f64 = a.iter().zip(&b).map(|(&d, &v)| f64::from(d) * (f64::from(v) - 1.0)).sum();
        assert_eq!((d, dx), (55.0, want_dx));
        // The ReLU keeps the values whose normalised `b` is positive: here `b > 0`.
        let [kept, _] = lane_sums(&a, &b, Terms::Gradient { mean: 0.0, relu: Some((0.0, 1.0, 0.0)) });
        let want: f32 = a.iter().zip(&b).filter(|&(_, &v)| v > 0.0).map(|(&d, _)| d).sum();
        assert_eq!(kept, f64::from(want));
    }
}
