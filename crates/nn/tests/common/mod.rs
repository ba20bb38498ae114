//! Helpers shared by the kernel test files (`kernels.rs`, `pool_kernels.rs`,
//! `bn_kernels.rs`, `direct_conv.rs`, `winograd_conv.rs`, ...): comparison with a
//! tolerance, flattening, random values, the CPU's AVX-512, and timing for the
//! ignored micro-benchmarks.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor, Var};
use ferroflow_nn::kernels::{self, Conv2dParams, Kernels, reference, with_kernels};
use ferroflow_rng::Rng;

/// `(atol, rtol)` for the Winograd F(4x4, 3x3) passes (`kernels/winograd.rs`) on sums of up
/// to 256·9 products of values in [-1, 1] (magnitudes up to about 30): its transforms scale
/// inputs by up to 8 before the products and after, so its rounding error is a few times
/// the direct kernels' (`2e-4`); a float32 model of the kernel's order of operations at 256
/// channels gave at most 5.7e-4 (mean 1.4e-4). A wrong tap, tile or edge is off by the
/// size of a product.
pub const WINOGRAD_TOL: (f32, f32) = (1e-3, 2e-4);

/// Asserts `|got - want| <= atol + rtol * |want|` element by element.
pub fn assert_close_tol(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

/// A tensor's values, flattened, as f32 (f64 tensors are converted).
pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1::<f32>()).expect("float tensor")
}

/// Median of `runs` timings of `f`, after one warm-up call.
pub fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f();
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

/// Milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A uniform integer in `lo..=hi`.
pub fn between(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below((hi - lo + 1) as u64) as usize
}

/// `n` values uniform in `offset ± scale`: an offset far from zero checks that a
/// variance does not lose its digits to the mean.
pub fn values(rng: &mut Rng, n: usize, offset: f32, scale: f32) -> Vec<f32> {
    (0..n).map(|_| offset + scale * rng.range_f32(-1.0, 1.0)).collect()
}

/// Whether this CPU has AVX-512F (the direct and Winograd convolutions run only then).
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `[y, dx, dw]` of `sum(conv2d(x, w) * dy)` through candle's autograd, under `kern`.
pub fn conv_grads(
    kern: Kernels,
    (x, xs): (&[f32], [usize; 4]),
    (w, ws): (&[f32], [usize; 4]),
    dy: &[f32],
    p: Conv2dParams,
) -> [Vec<f32>; 3] {
    with_kernels(kern, || {
        let dev = Device::Cpu;
        let xv = Var::from_vec(x.to_vec(), &xs, &dev).expect("x");
        let wv = Var::from_vec(w.to_vec(), &ws, &dev).expect("w");
        let y = kernels::conv2d(xv.as_tensor(), wv.as_tensor(), p).expect("conv2d");
        let dyt = Tensor::from_vec(dy.to_vec(), y.dims(), &dev).expect("dy");
        let loss = (&y * &dyt).and_then(|t| t.sum_all()).expect("loss");
        let grads = loss.backward().expect("backward");
        [flat(&y), flat(grads.get(&xv).expect("dx")), flat(grads.get(&wv).expect("dw"))]
    })
}

/// `[y, dx, dw]` of the same through the slow loop reference.
pub fn conv_reference(
    (x, xs): (&[f32], [usize; 4]),
    (w, ws): (&[f32], [usize; 4]),
    dy: &[f32],
    p: &Conv2dParams,
) -> [Vec<f32>; 3] {
    [
        reference::conv2d(x, xs, w, ws, p),
        reference::conv2d_backward_input(dy, w, xs, ws, p),
        reference::conv2d_backward_filter(x, dy, xs, ws, p),
    ]
}
