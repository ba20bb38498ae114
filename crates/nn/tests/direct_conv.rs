//! The direct AVX-512 convolution passes (`kernels/direct.rs`, taken by `kernels::conv2d`
//! and its gradients under `Kernels::Fast` for channel counts that are multiples of 16)
//! against the slow loop reference and against the im2col + gemm path (`Kernels::Gemm`),
//! on random geometries: tile edges (widths that no tile size divides), strides 1 and 2,
//! asymmetric and over-wide padding, 1x1 to 5x5 kernels, 16 to 64 channels. The pass
//! choice itself is checked too, so that these tests cannot pass on the gemm path alone.

#![allow(clippy::unwrap_used)]

mod common;

use common::{WINOGRAD_TOL, avx512, between};
use ferroflow_nn::kernels::{Conv2dParams, Kernels, direct_passes, reference, winograd_passes, with_kernels};
use ferroflow_nn::ops;
use ferroflow_rng::Rng;

/// `|got - want| <= TOL + TOL * |want|`: sums of up to 64·25 products of values in [-1, 1]
/// in another order than the reference's ([`WINOGRAD_TOL`] where the fast path is
/// Winograd's).
const TOL: f32 = 2e-4;

/// `n` values uniform in [-1, 1].
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    common::values(rng, n, 0.0, 1.0)
}

/// `(y, dx, dw)` of `sum(conv2d(x, w) * dy)` through candle's autograd, under `kernels`.
fn run(
    kern: Kernels,
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    dy: &[f32],
    p: Conv2dParams,
) -> [Vec<f32>; 3] {
    common::conv_grads(kern, (x, xs), (w, ws), dy, p)
}

/// One geometry through the fast, direct-only and gemm paths, each against the reference;
/// returns the passes the direct kernels take under `choice`.
fn check_under(
    choice: Kernels,
    rng: &mut Rng,
    xs: [usize; 4],
    ws: [usize; 4],
    p: Conv2dParams,
    what: &str,
) -> [bool; 3] {
    let ys = reference::output_shape(xs, ws, &p);
    let (x, w, dy) =
        (values(rng, xs.iter().product()), values(rng, ws.iter().product()), values(rng, ys.iter().product()));
    let want = common::conv_reference((&x, xs), (&w, ws), &dy, &p);
    let winograd = with_kernels(Kernels::Fast, || winograd_passes(xs, ws, p));
    for kern in [Kernels::Fast, Kernels::Direct, Kernels::Gemm] {
        let got = run(kern, &x, xs, &w, ws, &dy, p);
        for (pass, (name, (g, e))) in ["y", "dx", "dw"].iter().zip(got.iter().zip(&want)).enumerate() {
            let (atol, rtol) = if kern == Kernels::Fast && winograd[pass] { WINOGRAD_TOL } else { (TOL, TOL) };
            common::assert_close_tol(g, e, atol, rtol, &format!("{what} {kern:?} {name}"));
        }
    }
    with_kernels(choice, || direct_passes(xs, ws, p))
}

/// [`check_under`] the default choice, `Kernels::Fast`.
fn check(rng: &mut Rng, xs: [usize; 4], ws: [usize; 4], p: Conv2dParams, what: &str) -> [bool; 3] {
    check_under(Kernels::Fast, rng, xs, ws, p, what)
}

fn same(xs: [usize; 4], ws: [usize; 4], stride: usize) -> Conv2dParams {
    let pad = |a: usize| ops::same_padding(xs[2 + a], ws[2 + a], stride, 1);
    let (h, w) = (pad(0), pad(1));
    Conv2dParams { stride: [stride, stride], dilation: [1, 1], pad_before: [h.0, w.0], pad_after: [h.1, w.1] }
}

#[test]
fn the_benchmark_models_convolutions_match_the_reference() {
    let mut rng = Rng::new(0xd1_7ec7);
    // resnet20's and cifar_cnn's 3x3 SAME convolutions (smaller batch and images: the
    // reference is slow), the stride-2 stage entries and the 1x1 projections.
    let shapes = [
        // A 3-channel first layer's forward at unit stride: gemm (a short reduction).
        ([2, 3, 12, 12], [16, 3, 3, 3], 1, [false, false, true]),
        ([2, 4, 12, 12], [16, 4, 3, 3], 1, [true, false, true]),
        ([2, 3, 12, 12], [16, 3, 3, 3], 2, [true, false, true]),
        ([2, 16, 13, 13], [32, 16, 3, 3], 2, [true, false, true]),
        ([2, 16, 13, 13], [32, 16, 1, 1], 2, [false, false, false]),
        ([2, 32, 5, 5], [32, 32, 1, 1], 1, [false, false, false]),
        ([1, 3, 21, 21], [64, 3, 7, 7], 2, [true, false, false]),
        // SAME 3x3 with channels in multiples of 16: Winograd under `Kernels::Fast`
        // (`tests/winograd_conv.rs`); the direct kernels' choice is checked below.
        ([1, 16, 33, 33], [16, 16, 3, 3], 1, [false, false, false]),
        ([3, 32, 7, 9], [32, 32, 3, 3], 1, [false, false, false]),
        ([2, 32, 8, 8], [64, 32, 3, 3], 1, [false, false, false]),
        ([2, 64, 5, 5], [64, 64, 3, 3], 1, [false, false, false]),
        ([1, 128, 4, 4], [128, 128, 3, 3], 1, [false, false, false]),
        ([1, 256, 4, 4], [256, 256, 3, 3], 1, [false, false, false]),
        ([1, 288, 3, 3], [288, 288, 3, 3], 1, [false, false, false]),
        ([1, 128, 9, 9], [128, 128, 3, 3], 1, [false, false, false]),
    ];
    for (xs, ws, stride, expect) in shapes {
        let chosen = check(&mut rng, xs, ws, same(xs, ws, stride), &format!("x {xs:?} w {ws:?} /{stride}"));
        let expect = if avx512() { expect } else { [false; 3] };
        assert_eq!(chosen, expect, "passes taken directly for x {xs:?} w {ws:?} /{stride}");
    }
    // The same unit-stride layers under `Kernels::Direct` (Winograd off): direct.
    let direct_only = [
        ([2, 16, 12, 12], [16, 16, 3, 3], [true, true, true]),
        ([1, 16, 33, 33], [16, 16, 3, 3], [true, true, false]),
        ([3, 32, 7, 9], [32, 32, 3, 3], [true, true, true]),
        ([2, 32, 8, 8], [64, 32, 3, 3], [true, true, true]),
    ];
    for (xs, ws, expect) in direct_only {
        let what = format!("x {xs:?} w {ws:?} /1 (direct only)");
        let chosen = check_under(Kernels::Direct, &mut rng, xs, ws, same(xs, ws, 1), &what);
        let expect = if avx512() { expect } else { [false; 3] };
        assert_eq!(chosen, expect, "passes taken directly for {what}");
    }
}

#[test]
fn random_geometries_match_the_reference() {
    let mut rng = Rng::new(0xd1_2ec7);
    let mut direct = [0usize; 3];
    for i in 0..80 {
        let c = [1, 3, 16, 32, 48][rng.below(5) as usize];
        let o = [16, 32, 48, 64][rng.below(4) as usize];
        let xs = [between(&mut rng, 1, 2), c, between(&mut rng, 1, 11), between(&mut rng, 1, 30)];
        // Half 3x3 (the filter gradient's kernel), half anything from 1x1 to 5x5.
        let k = if i % 2 == 0 { [3, 3] } else { [between(&mut rng, 1, 5), between(&mut rng, 1, 5)] };
        let ws = [o, c, k[0], k[1]];
        // Half unit stride (the input gradient's), half any of 1-2 down and 1-3 across.
        let stride = if i % 4 < 2 { [1, 1] } else { [between(&mut rng, 1, 2), between(&mut rng, 1, 3)] };
        // Pads up to the kernel's reach mostly, beyond it (the gemm path) in every fifth.
        let reach = if i % 5 == 4 { 4 } else { 2 };
        let p = Conv2dParams {
            stride,
            dilation: [1, 1],
            pad_before: [between(&mut rng, 0, reach), between(&mut rng, 0, reach)],
            pad_after: [between(&mut rng, 0, reach), between(&mut rng, 0, reach)],
        };
        if p.output_size([xs[2], xs[3]], [ws[2], ws[3]]).is_none() {
            continue;
        }
        let chosen = check(&mut rng, xs, ws, p, &format!("case {i} x {xs:?} w {ws:?} {p:?}"));
        for (n, c) in direct.iter_mut().zip(chosen) {
            *n += usize::from(c);
        }
    }
    if avx512() {
        assert!(direct.iter().all(|&n| n >= 10), "too few cases took the direct passes: {direct:?}");
    }
}

#[test]
fn direct_passes_are_deterministic_across_thread_counts() {
    let mut rng = Rng::new(0xd1_3ec7);
    let (xs, ws) = ([9, 16, 10, 14], [32, 16, 3, 3]);
    let p = same(xs, ws, 1);
    let ys = reference::output_shape(xs, ws, &p);
    let (x, w, dy) = (
        values(&mut rng, xs.iter().product()),
        values(&mut rng, ws.iter().product()),
        values(&mut rng, ys.iter().product()),
    );
    // `Kernels::Direct`: under `Fast` this SAME layer takes Winograd (tested there).
    assert_eq!(with_kernels(Kernels::Direct, || direct_passes(xs, ws, p)), [avx512(); 3]);
    let first = run(Kernels::Direct, &x, xs, &w, ws, &dy, p);
    for threads in [1, 2, 3, 5] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        assert_eq!(first, pool.install(|| run(Kernels::Direct, &x, xs, &w, ws, &dy, p)), "{threads} threads differ");
    }
}

#[test]
fn the_gemm_choice_turns_the_direct_passes_off() {
    let (xs, ws) = ([2, 16, 8, 8], [16, 16, 3, 3]);
    let p = same(xs, ws, 1);
    assert_eq!(with_kernels(Kernels::Gemm, || direct_passes(xs, ws, p)), [false; 3]);
    assert_eq!(with_kernels(Kernels::Generic, || direct_passes(xs, ws, p)), [false; 3]);
    assert_eq!(Kernels::parse("gemm").unwrap(), Kernels::Gemm);
}
