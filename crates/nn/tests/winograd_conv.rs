//! The Winograd F(4x4, 3x3) passes (`kernels/winograd.rs`: every pass of 3x3 unit-stride
//! SAME convolutions whose channel counts are multiples of 16, under `Kernels::Fast` on
//! AVX-512) against the slow loop reference: vgg_small's and resnet20's layers at a
//! smaller batch, odd image sizes (tiles that hang over the edge), channel counts that
//! take one- and two-vector register tiles, groups of images that do not divide the batch.
//! The pass choice is checked too, so that these tests cannot pass on another path.

#![allow(clippy::unwrap_used)]

mod common;

use common::{WINOGRAD_TOL, avx512, between};
use ferroflow_nn::kernels::{Conv2dParams, Kernels, reference, winograd_passes, with_kernels};
use ferroflow_rng::Rng;

/// `n` values uniform in [-1, 1].
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    common::values(rng, n, 0.0, 1.0)
}

fn same() -> Conv2dParams {
    Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] }
}

/// `(y, dx, dw)` of `sum(conv2d(x, w) * dy)` through candle's autograd, fast kernels.
fn run(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], dy: &[f32]) -> [Vec<f32>; 3] {
    common::conv_grads(Kernels::Fast, (x, xs), (w, ws), dy, same())
}

/// One geometry against the reference; asserts that Winograd took all three passes.
fn check(rng: &mut Rng, xs: [usize; 4], o: usize, what: &str) {
    let ws = [o, xs[1], 3, 3];
    let p = same();
    let ys = reference::output_shape(xs, ws, &p);
    let (x, w, dy) =
        (values(rng, xs.iter().product()), values(rng, ws.iter().product()), values(rng, ys.iter().product()));
    let want = common::conv_reference((&x, xs), (&w, ws), &dy, &p);
    let got = run(&x, xs, &w, ws, &dy);
    for (name, (g, e)) in ["y", "dx", "dw"].iter().zip(got.iter().zip(&want)) {
        common::assert_close_tol(g, e, WINOGRAD_TOL.0, WINOGRAD_TOL.1, &format!("{what} {name}"));
    }
    let chosen = with_kernels(Kernels::Fast, || winograd_passes(xs, ws, p));
    assert_eq!(chosen, [avx512(); 3], "Winograd passes for {what}");
}

#[test]
fn benchmark_models_layers_match_the_reference() {
    let mut rng = Rng::new(0x0314_09ad);
    // vgg_small's 64-256-channel 3x3 layers (batch 3 instead of 64, the last two at their
    // own 8x8 size, the others smaller).
    for (xs, o) in [
        ([3, 64, 10, 10], 64),
        ([3, 64, 8, 8], 128),
        ([3, 128, 8, 8], 128),
        ([3, 128, 8, 8], 256),
        ([3, 256, 8, 8], 256),
        // resnet20's and cifar_cnn's 16- and 32-channel layers.
        ([2, 16, 12, 12], 16),
        ([2, 32, 8, 8], 32),
        ([2, 32, 8, 8], 64),
    ] {
        check(&mut rng, xs, o, &format!("x {xs:?} → {o}"));
    }
}

#[test]
fn random_geometries_match_the_reference() {
    let mut rng = Rng::new(0x0314_09ae);
    for i in 0..24 {
        // 16, 48, 80 and 112 channels out: one-vector register tiles; odd sizes: edge tiles.
        let c = [16, 32, 64, 80, 96][rng.below(5) as usize];
        let o = [16, 32, 48, 64, 80, 112, 128][rng.below(7) as usize];
        let xs = [between(&mut rng, 1, 5), c, between(&mut rng, 1, 9), between(&mut rng, 1, 11)];
        check(&mut rng, xs, o, &format!("case {i} x {xs:?} → {o}"));
    }
}

#[test]
fn each_image_is_computed_the_same_whatever_its_group() {
    // Images of 6x6 (9 tiles) go in groups of 8; a batch of 11 splits into 8 + 3. Each
    // image's outputs and input gradient must not depend on the group it fell in.
    let mut rng = Rng::new(0x0314_09af);
    let (xs, ws) = ([11, 64, 6, 6], [64, 64, 3, 3]);
    let (x, w, dy) =
        (values(&mut rng, xs.iter().product()), values(&mut rng, ws.iter().product()), values(&mut rng, 11 * 64 * 36));
    let batch = run(&x, xs, &w, ws, &dy);
    let image = 64 * 36;
    for n in [0, 7, 8, 10] {
        let one = run(&x[n * image..][..image], [1, 64, 6, 6], &w, ws, &dy[n * image..][..image]);
        assert_eq!(one[0], batch[0][n * image..][..image], "y of image {n}");
        assert_eq!(one[1], batch[1][n * image..][..image], "dx of image {n}");
    }
}

#[test]
fn winograd_passes_are_deterministic_across_thread_counts() {
    let mut rng = Rng::new(0x0314_09b0);
    // One image (its tile rows spread over the threads) and a batch.
    for xs in [[1, 64, 8, 8], [7, 64, 5, 7]] {
        let ws = [96, 64, 3, 3];
        let (x, w, dy) = (
            values(&mut rng, xs.iter().product()),
            values(&mut rng, ws.iter().product()),
            values(&mut rng, xs[0] * 96 * xs[2] * xs[3]),
        );
        let first = run(&x, xs, &w, ws, &dy);
        for threads in [1, 2, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(first, pool.install(|| run(&x, xs, &w, ws, &dy)), "{xs:?}: {threads} threads differ");
        }
    }
}

#[test]
fn other_convolutions_and_kernel_choices_do_not_take_winograd() {
    let (xs, ws) = ([2, 64, 8, 8], [64, 64, 3, 3]);
    let strided = Conv2dParams { stride: [2, 2], dilation: [1, 1], pad_before: [0, 0], pad_after: [1, 1] };
    let valid = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [0, 0], pad_after: [0, 0] };
    let dilated = Conv2dParams { stride: [1, 1], dilation: [2, 2], pad_before: [2, 2], pad_after: [2, 2] };
    with_kernels(Kernels::Fast, || {
        for p in [strided, valid, dilated] {
            assert_eq!(winograd_passes(xs, ws, p), [false; 3], "{p:?}");
        }
        // Too few channels, or not a multiple of 16, or not 3x3.
        assert_eq!(winograd_passes([2, 8, 8, 8], [64, 8, 3, 3], same()), [false; 3]);
        assert_eq!(winograd_passes([2, 64, 8, 8], [8, 64, 3, 3], same()), [false; 3]);
        assert_eq!(winograd_passes([2, 64, 8, 8], [72, 64, 3, 3], same()), [false; 3]);
        let five = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [2, 2], pad_after: [2, 2] };
        assert_eq!(winograd_passes(xs, [64, 64, 5, 5], five), [false; 3]);
    });
    assert_eq!(with_kernels(Kernels::Gemm, || winograd_passes(xs, ws, same())), [false; 3]);
    assert_eq!(with_kernels(Kernels::Generic, || winograd_passes(xs, ws, same())), [false; 3]);
}
