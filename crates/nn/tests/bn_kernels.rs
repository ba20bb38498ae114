//! The fused CPU batch-norm kernel (`ferroflow_nn::kernels::batch_norm`) against the slow
//! loop reference (`kernels::reference`) on random shapes (forward, statistics, and the
//! gradients through candle's autograd and through the explicit backward), its
//! determinism, and (ignored, run with `--release -- --ignored --nocapture`) a timing
//! against the candle-ops path `ops::batch_norm_train` took before the kernel.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{between, flat, ms, time, values};
use ferroflow_nn::kernels::{self, reference};
use ferroflow_nn::ops;
use ferroflow_rng::Rng;

/// Tolerance, absolute plus relative (the kernel rounds to f32 in the element-wise sweeps,
/// the reference only at the end); the golden tests' batch-norm tolerance.
const TOL: f32 = 1e-4;

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    common::assert_close_tol(got, want, TOL, TOL, what);
}

/// One random batch norm: shape, data and epsilon.
struct Case {
    xs: [usize; 4],
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
    epsilon: f64,
}

fn make_case(rng: &mut Rng, xs: [usize; 4]) -> Case {
    let n: usize = xs.iter().product();
    let (offset, scale) = match rng.below(3) {
        0 => (0.0, 1.0),
        1 => (3.0, 0.5),
        _ => (-1.0, 4.0),
    };
    Case {
        xs,
        x: values(rng, n, offset, scale),
        gamma: values(rng, xs[1], 1.0, 0.5),
        beta: values(rng, xs[1], 0.0, 1.0),
        dy: values(rng, n, 0.0, 1.0),
        epsilon: [1e-3, 1e-5][rng.below(2) as usize],
    }
}

/// N 1–4, C 1–6, H and W 1–7.
fn random_case(rng: &mut Rng) -> Case {
    let xs = [between(rng, 1, 4), between(rng, 1, 6), between(rng, 1, 7), between(rng, 1, 7)];
    make_case(rng, xs)
}

/// The kernel's `(y, mean, var)` and autograd `(dx, dgamma, dbeta)` of `Σ y · dy`, with
/// `x` given the shape `dims` (`[N, C, H, W]`, or `[N, C]` when `H = W = 1`).
fn run_kernel(case: &Case, dims: &[usize]) -> [Vec<f32>; 6] {
    let dev = Device::Cpu;
    let x = Var::from_vec(case.x.clone(), dims, &dev).expect("x");
    let gamma = Var::from_vec(case.gamma.clone(), case.xs[1], &dev).expect("gamma");
    let beta = Var::from_vec(case.beta.clone(), case.xs[1], &dev).expect("beta");
    let dy = Tensor::from_vec(case.dy.clone(), dims, &dev).expect("dy");
    let (y, mean, var) = kernels::batch_norm_train(&x, &gamma, &beta, case.epsilon).expect("forward");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let g = |v: &Var| flat(grads.get(v).expect("gradient"));
    [flat(&y), flat(&mean), flat(&var), g(&x), g(&gamma), g(&beta)]
}

fn check_case(case: &Case, what: &str) {
    let (y, mean, var) = reference::batch_norm_train(&case.x, case.xs, &case.gamma, &case.beta, case.epsilon);
    let (dx, dgamma, dbeta) =
        reference::batch_norm_train_backward(&case.x, &case.dy, case.xs, &case.gamma, case.epsilon);
    let want = [y, mean, var, dx, dgamma, dbeta];
    let names = ["y", "mean", "var", "dx", "dgamma", "dbeta"];
    let got = run_kernel(case, &case.xs);
    for ((g, w), name) in got.iter().zip(&want).zip(names) {
        assert_close(g, w, &format!("{what}: {name}"));
    }
    // The explicit backward (statistics recomputed from x) gives the same gradients.
    let dev = Device::Cpu;
    let t = |v: &[f32], dims: &[usize]| Tensor::from_vec(v.to_vec(), dims, &dev).expect("tensor");
    let (dx, dgamma, dbeta) = kernels::batch_norm_train_backward(
        &t(&case.x, &case.xs),
        &t(&case.gamma, &[case.xs[1]]),
        &t(&case.dy, &case.xs),
        case.epsilon,
    )
    .expect("explicit backward");
    for ((g, w), name) in [flat(&dx), flat(&dgamma), flat(&dbeta)].iter().zip(&got[3..]).zip(&names[3..]) {
        assert_eq!(g, w, "{what}: explicit backward {name} differs from autograd");
    }
}

#[test]
fn matches_reference_on_random_shapes() {
    let mut rng = Rng::new(21);
    for i in 0..60 {
        let case = random_case(&mut rng);
        check_case(&case, &format!("case {i} {:?} eps {}", case.xs, case.epsilon));
    }
}

#[test]
fn matches_reference_on_edge_shapes() {
    let mut rng = Rng::new(22);
    // M = 1 (variance 0, y = beta, dx = 0), one channel, single rows/columns, and a plane
    // count above the kernel's task grouping.
    for xs in [[1, 1, 1, 1], [1, 5, 1, 1], [4, 1, 1, 1], [1, 3, 1, 7], [2, 2, 7, 1], [6, 4, 33, 35]] {
        let case = make_case(&mut rng, xs);
        check_case(&case, &format!("{xs:?}"));
    }
    let m1 = make_case(&mut rng, [1, 3, 1, 1]);
    let [y, _, var, dx, ..] = run_kernel(&m1, &m1.xs);
    assert_eq!(y, m1.beta, "M = 1 gives beta");
    assert!(var.iter().chain(&dx).all(|&v| v == 0.0), "M = 1: var {var:?}, dx {dx:?}");
}

#[test]
fn rank_two_input_is_channels_at_dimension_one() {
    let mut rng = Rng::new(23);
    let case = make_case(&mut rng, [5, 3, 1, 1]);
    let got = run_kernel(&case, &[5, 3]);
    let want = run_kernel(&case, &case.xs);
    assert_eq!(got, want);
}

#[test]
fn constant_channel_has_zero_variance() {
    // A large constant: the mean is exact in f64 and the variance must be exactly 0.
    let mut rng = Rng::new(24);
    let mut case = make_case(&mut rng, [3, 2, 4, 4]);
    case.x.iter_mut().for_each(|v| *v = 1234.5);
    let [y, mean, var, ..] = run_kernel(&case, &case.xs);
    assert_eq!(mean, vec![1234.5; 2]);
    assert_eq!(var, vec![0.0; 2]);
    assert!(y.iter().enumerate().all(|(i, &v)| v == case.beta[(i / 16) % 2]));
}

/// The fused BN + ReLU kernel's `(y, mean, var)` and autograd `(dx, dgamma, dbeta)` of
/// `Σ y · dy`.
fn run_relu_kernel(case: &Case) -> [Vec<f32>; 6] {
    let dev = Device::Cpu;
    let x = Var::from_vec(case.x.clone(), &case.xs, &dev).expect("x");
    let gamma = Var::from_vec(case.gamma.clone(), case.xs[1], &dev).expect("gamma");
    let beta = Var::from_vec(case.beta.clone(), case.xs[1], &dev).expect("beta");
    let dy = Tensor::from_vec(case.dy.clone(), &case.xs, &dev).expect("dy");
    let (y, mean, var) = kernels::batch_norm_relu_train(&x, &gamma, &beta, case.epsilon).expect("forward");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let g = |v: &Var| flat(grads.get(v).expect("gradient"));
    [flat(&y), flat(&mean), flat(&var), g(&x), g(&gamma), g(&beta)]
}

fn check_relu_case(case: &Case, what: &str) {
    let (y, mean, var) = reference::batch_norm_relu_train(&case.x, case.xs, &case.gamma, &case.beta, case.epsilon);
    let (dx, dgamma, dbeta) =
        reference::batch_norm_relu_train_backward(&case.x, &case.dy, case.xs, &case.gamma, &case.beta, case.epsilon);
    let want = [y, mean, var, dx, dgamma, dbeta];
    let names = ["y", "mean", "var", "dx", "dgamma", "dbeta"];
    let got = run_relu_kernel(case);
    for ((g, w), name) in got.iter().zip(&want).zip(names) {
        assert_close(g, w, &format!("{what}: relu {name}"));
    }
    assert!(got[0].iter().all(|&v| v >= 0.0), "{what}: negative output");
    // The explicit backward (statistics recomputed from x) gives the same bits.
    let dev = Device::Cpu;
    let t = |v: &[f32], dims: &[usize]| Tensor::from_vec(v.to_vec(), dims, &dev).expect("tensor");
    let c = case.xs[1];
    let (dx, dgamma, dbeta) = kernels::batch_norm_relu_train_backward(
        &t(&case.x, &case.xs),
        &t(&case.gamma, &[c]),
        &t(&case.beta, &[c]),
        &t(&case.dy, &case.xs),
        case.epsilon,
    )
    .expect("explicit backward");
    for ((g, w), name) in [flat(&dx), flat(&dgamma), flat(&dbeta)].iter().zip(&got[3..]).zip(&names[3..]) {
        assert_eq!(g, w, "{what}: explicit relu backward {name} differs from autograd");
    }
    // Bitwise the unfused pair: the BN kernel, then the ReLU kernel.
    let x = Var::from_vec(case.x.clone(), &case.xs, &dev).expect("x");
    let gamma = Var::from_vec(case.gamma.clone(), c, &dev).expect("gamma");
    let beta = Var::from_vec(case.beta.clone(), c, &dev).expect("beta");
    let (y, _, _) = kernels::batch_norm_train(&x, &gamma, &beta, case.epsilon).expect("bn");
    let y = kernels::relu(&y).expect("relu");
    assert_eq!(flat(&y), got[0], "{what}: fused y differs from BN then ReLU");
    let grads = (&y * &t(&case.dy, &case.xs)).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("bwd");
    assert_eq!(flat(grads.get(&beta).expect("dbeta")), got[5], "{what}: dbeta differs from BN then ReLU");
}

#[test]
fn relu_fusion_matches_reference_on_random_shapes() {
    let mut rng = Rng::new(28);
    for i in 0..60 {
        let case = random_case(&mut rng);
        check_relu_case(&case, &format!("case {i} {:?} eps {}", case.xs, case.epsilon));
    }
    for xs in [[1, 1, 1, 1], [4, 1, 1, 1], [2, 2, 7, 1], [6, 4, 33, 35]] {
        let case = make_case(&mut rng, xs);
        check_relu_case(&case, &format!("{xs:?}"));
    }
}

#[test]
fn relu_fusion_masks_exactly_where_the_output_is_zero() {
    // beta far below zero: every output is 0 and no gradient reaches x, gamma or beta.
    let mut rng = Rng::new(29);
    let mut case = make_case(&mut rng, [3, 2, 4, 5]);
    case.beta = vec![-100.0; 2];
    let [y, _, _, dx, dgamma, dbeta] = run_relu_kernel(&case);
    assert!(y.iter().chain(&dx).chain(&dgamma).chain(&dbeta).all(|&v| v == 0.0));
    // beta far above: the ReLU is the identity, so the gradients are plain batch norm's.
    case.beta = vec![100.0; 2];
    let got = run_relu_kernel(&case);
    let plain = run_kernel(&case, &case.xs);
    assert_eq!(got, plain);
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let mut rng = Rng::new(25);
    let case = make_case(&mut rng, [16, 6, 23, 29]);
    let first = run_kernel(&case, &case.xs);
    assert_eq!(first, run_kernel(&case, &case.xs), "two runs differ");
    let first_relu = run_relu_kernel(&case);
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        assert_eq!(first, pool.install(|| run_kernel(&case, &case.xs)), "{threads} threads differ");
        assert_eq!(first_relu, pool.install(|| run_relu_kernel(&case)), "{threads} threads differ (relu)");
    }
}

#[test]
fn ops_path_uses_the_same_numbers() {
    // `ops::batch_norm_train` (f32 on the CPU) agrees with the reference too, statistics
    // included, whichever path it takes.
    let mut rng = Rng::new(26);
    let case = make_case(&mut rng, [3, 4, 5, 6]);
    let dev = Device::Cpu;
    let x = Var::from_vec(case.x.clone(), &case.xs, &dev).expect("x");
    let gamma = Var::from_vec(case.gamma.clone(), 4, &dev).expect("gamma");
    let beta = Var::from_vec(case.beta.clone(), 4, &dev).expect("beta");
    let (y, mean, var) = ops::batch_norm_train(&x, &gamma, &beta, case.epsilon).expect("ops");
    let (wy, wmean, wvar) = reference::batch_norm_train(&case.x, case.xs, &case.gamma, &case.beta, case.epsilon);
    assert_close(&flat(&y), &wy, "y");
    assert_close(&flat(&mean), &wmean, "mean");
    assert_close(&flat(&var), &wvar, "var");
    let dy = Tensor::from_vec(case.dy.clone(), &case.xs, &dev).expect("dy");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let (dx, dgamma, dbeta) =
        reference::batch_norm_train_backward(&case.x, &case.dy, case.xs, &case.gamma, case.epsilon);
    assert_close(&flat(grads.get(&x).expect("dx")), &dx, "dx");
    assert_close(&flat(grads.get(&gamma).expect("dgamma")), &dgamma, "dgamma");
    assert_close(&flat(grads.get(&beta).expect("dbeta")), &dbeta, "dbeta");
}

#[test]
fn rejects_what_it_does_not_handle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 2, 2), DType::F32, &dev).expect("x");
    let bad = Tensor::zeros(4, DType::F32, &dev).expect("gamma");
    let e = kernels::batch_norm_train(&x, &bad, &bad, 1e-3).expect_err("wrong gamma").to_string();
    assert!(e.contains("gamma must be [3]"), "{e}");
    let g = Tensor::zeros(3, DType::F32, &dev).expect("gamma");
    let e = kernels::batch_norm_train(&x.to_dtype(DType::F64).expect("f64"), &g, &g, 1e-3).expect_err("f64");
    assert!(e.to_string().contains("f32"), "{e}");
    let empty = Tensor::zeros((0, 3, 2, 2), DType::F32, &dev).expect("empty");
    assert!(kernels::batch_norm_train(&empty, &g, &g, 1e-3).is_err());
}

/// `ops::batch_norm_train`'s candle-ops path as it was before the kernel (f32).
fn candle_batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, epsilon: f64) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    let reduce = [0, 2, 3];
    let mean = x.mean_keepdim(reduce.as_slice())?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(reduce.as_slice())?;
    let inv = (var + epsilon)?.sqrt()?.recip()?;
    let scale = inv.broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?;
    centered.broadcast_mul(&scale)?.broadcast_add(&beta.reshape((1, c, 1, 1))?)
}

/// Forward + backward of batch norm on cifar_cnn-sized activations at batch 64: the
/// candle-ops path against the kernel.
/// `cargo test -p ferroflow-nn --release --test bn_kernels -- --ignored --nocapture`
#[test]
#[ignore = "timing; run explicitly in release"]
fn bench_batch_norm() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(27);
    let runs: usize = std::env::var("FERROFLOW_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    eprintln!("rayon threads: {}, median of {runs} runs", rayon::current_num_threads());
    for xs in [[64, 32, 28, 28], [64, 64, 14, 14]] {
        let case = make_case(&mut rng, xs);
        let x = Var::from_vec(case.x.clone(), &xs, &dev).expect("x");
        let gamma = Var::from_vec(case.gamma.clone(), xs[1], &dev).expect("gamma");
        let beta = Var::from_vec(case.beta.clone(), xs[1], &dev).expect("beta");
        let dy = Tensor::from_vec(case.dy.clone(), &xs, &dev).expect("dy");
        let backward = |y: Tensor| {
            let g = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            assert!(g.get(&x).is_some() && g.get(&gamma).is_some());
        };
        let old = || candle_batch_norm(&x, &gamma, &beta, 1e-3).expect("old");
        let new = || kernels::batch_norm_train(&x, &gamma, &beta, 1e-3).expect("new").0;
        assert_close(&flat(&new()), &flat(&old()), &format!("{xs:?}: paths differ"));
        // Accuracy of both paths against the f64 reference (the cancellation in `dx` shows
        // the f32 reductions of the candle path).
        let (want_dx, want_dgamma, _) = reference::batch_norm_train_backward(&case.x, &case.dy, xs, &case.gamma, 1e-3);
        let worst = |y: Tensor| {
            let g = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            let err = |v: &Var, want: &[f32]| {
                let got = flat(g.get(v).expect("gradient"));
                got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
            };
            (err(&x, &want_dx), err(&gamma, &want_dgamma))
        };
        let (old_err, new_err) = (worst(old()), worst(new()));
        eprintln!("x {xs:?}: worst |error| vs f64 reference (dx, dgamma): old {old_err:?}, new {new_err:?}");
        let t = [
            time(runs, || drop(old())),
            time(runs, || backward(old())),
            time(runs, || drop(new())),
            time(runs, || backward(new())),
        ];
        eprintln!(
            "x {xs:?}: old fwd {:.1} ms, fwd+bwd {:.1} ms | new fwd {:.2} ms, fwd+bwd {:.2} ms | speedup fwd {:.1}x, \
             fwd+bwd {:.1}x",
            ms(t[0]),
            ms(t[1]),
            ms(t[2]),
            ms(t[3]),
            ms(t[0]) / ms(t[2]),
            ms(t[1]) / ms(t[3]),
        );
    }
}
