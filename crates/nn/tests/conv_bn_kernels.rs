//! The fused conv2d → batch norm → ReLU kernel (`ferroflow_nn::kernels::conv_bn`) against
//! the slow loop references (`kernels::reference`: conv2d, then batch norm with or without
//! ReLU) on random geometries (forward, statistics, and the gradients to `x`, `w`, `gamma`
//! and `beta` through candle's autograd), against the unfused kernels, its determinism,
//! and (ignored, run with `--release -- --ignored --nocapture`) a timing against the
//! unfused kernels on cifar_cnn's four conv blocks.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{between, flat, ms, time, values};
use ferroflow_nn::kernels::{self, Conv2dParams, Pool2dParams, reference};
use ferroflow_nn::ops;
use ferroflow_rng::Rng;

/// `|got - want| <= TOL + TOL * |want|`: the batch-norm tolerance (the conv output is
/// rounded to f32 on both sides, then normalised by a small standard deviation).
const TOL: f32 = 2e-4;

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    common::assert_close_tol(got, want, TOL, TOL, what);
}

/// One random block: geometry, data, parameters.
#[derive(Debug, Clone)]
struct Case {
    xs: [usize; 4],
    ws: [usize; 4],
    params: Conv2dParams,
    x: Vec<f32>,
    w: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
    epsilon: f64,
}

impl Case {
    fn ys(&self) -> [usize; 4] {
        reference::output_shape(self.xs, self.ws, &self.params)
    }
}

fn make_case(rng: &mut Rng, xs: [usize; 4], ws: [usize; 4], params: Conv2dParams) -> Case {
    let ys = reference::output_shape(xs, ws, &params);
    Case {
        xs,
        ws,
        params,
        x: values(rng, xs.iter().product(), 0.5, 1.0),
        w: values(rng, ws.iter().product(), 0.0, 1.0),
        gamma: values(rng, ws[0], 1.0, 0.5),
        beta: values(rng, ws[0], 0.0, 0.5),
        dy: values(rng, ys.iter().product(), 0.0, 1.0),
        epsilon: [1e-3, 1e-5][rng.below(2) as usize],
    }
}

/// A random geometry with at least two values per channel (a batch norm over one value
/// has no spread to normalise): odd and even sizes and kernels, strides 1–3, dilations
/// 1–2, VALID, TF-SAME or arbitrary explicit padding, 1x1 kernels included.
fn random_case(rng: &mut Rng) -> Case {
    loop {
        let xs = [between(rng, 1, 4), between(rng, 1, 5), between(rng, 1, 11), between(rng, 1, 11)];
        let ws = [between(rng, 1, 6), xs[1], between(rng, 1, 4), between(rng, 1, 4)];
        let stride = [between(rng, 1, 3), between(rng, 1, 3)];
        let dilation = [between(rng, 1, 2), between(rng, 1, 2)];
        let (pad_before, pad_after) = match rng.below(3) {
            0 => ([0, 0], [0, 0]),
            1 => {
                let same = |a: usize| ops::same_padding(xs[2 + a], ws[2 + a], stride[a], dilation[a]);
                let (h, w) = (same(0), same(1));
                ([h.0, w.0], [h.1, w.1])
            }
            _ => ([between(rng, 0, 2), between(rng, 0, 2)], [between(rng, 0, 2), between(rng, 0, 2)]),
        };
        let params = Conv2dParams { stride, dilation, pad_before, pad_after };
        if let Some([oh, ow]) = params.output_size([xs[2], xs[3]], [ws[2], ws[3]])
            && xs[0] * oh * ow >= 2
        {
            return make_case(rng, xs, ws, params);
        }
    }
}

/// The references: `(y, mean, var, dx, dw, dgamma, dbeta)`.
fn reference_block(case: &Case, relu: bool) -> [Vec<f32>; 7] {
    let (xs, ws, p) = (case.xs, case.ws, &case.params);
    let ys = case.ys();
    let z = reference::conv2d(&case.x, xs, &case.w, ws, p);
    let (y, mean, var) = if relu {
        reference::batch_norm_relu_train(&z, ys, &case.gamma, &case.beta, case.epsilon)
    } else {
        reference::batch_norm_train(&z, ys, &case.gamma, &case.beta, case.epsilon)
    };
    let (dz, dgamma, dbeta) = if relu {
        reference::batch_norm_relu_train_backward(&z, &case.dy, ys, &case.gamma, &case.beta, case.epsilon)
    } else {
        reference::batch_norm_train_backward(&z, &case.dy, ys, &case.gamma, case.epsilon)
    };
    let dx = reference::conv2d_backward_input(&dz, &case.w, xs, ws, p);
    let dw = reference::conv2d_backward_filter(&case.x, &dz, xs, ws, p);
    [y, mean, var, dx, dw, dgamma, dbeta]
}

/// Which kernels to run: the fused one, or conv then batch norm (then ReLU) unfused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Fused,
    Unfused,
}

/// The kernels' `(y, mean, var, dx, dw, dgamma, dbeta)` of `Σ y · dy` through candle's
/// autograd; `dx` is empty when `x` is data (outside autograd).
fn run(case: &Case, relu: bool, x_needs_grad: bool, path: Path) -> [Vec<f32>; 7] {
    let dev = Device::Cpu;
    let x_var = Var::from_vec(case.x.clone(), &case.xs, &dev).expect("x");
    let x = if x_needs_grad {
        x_var.as_tensor().clone()
    } else {
        Tensor::from_vec(case.x.clone(), &case.xs, &dev).expect("x")
    };
    let w = Var::from_vec(case.w.clone(), &case.ws, &dev).expect("w");
    let gamma = Var::from_vec(case.gamma.clone(), case.ws[0], &dev).expect("gamma");
    let beta = Var::from_vec(case.beta.clone(), case.ws[0], &dev).expect("beta");
    let (y, mean, var) = match path {
        Path::Fused => kernels::conv2d_batch_norm_train(&x, &w, &gamma, &beta, case.params, case.epsilon, relu),
        Path::Unfused => kernels::conv2d(&x, &w, case.params).and_then(|z| {
            if relu {
                kernels::batch_norm_relu_train(&z, &gamma, &beta, case.epsilon)
            } else {
                kernels::batch_norm_train(&z, &gamma, &beta, case.epsilon)
            }
        }),
    }
    .expect("forward");
    let dy = Tensor::from_vec(case.dy.clone(), case.ys().as_slice(), &dev).expect("dy");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let g = |v: &Tensor| grads.get(v).map(flat).unwrap_or_default();
    [flat(&y), flat(&mean), flat(&var), g(&x), g(&w), g(&gamma), g(&beta)]
}

const NAMES: [&str; 7] = ["y", "mean", "var", "dx", "dw", "dgamma", "dbeta"];

fn check(case: &Case, relu: bool, x_needs_grad: bool, what: &str) {
    let want = reference_block(case, relu);
    let got = run(case, relu, x_needs_grad, Path::Fused);
    for (i, name) in NAMES.iter().enumerate() {
        if *name == "dx" && !x_needs_grad {
            assert!(got[i].is_empty(), "{what}: a dx for data input");
            continue;
        }
        assert_close(&got[i], &want[i], &format!("{what} relu={relu}: {name}"));
    }
}

#[test]
fn random_geometries_match_the_reference() {
    let mut rng = Rng::new(0xb10c);
    for i in 0..120 {
        let case = random_case(&mut rng);
        let what = format!("case {i} x {:?} w {:?} {:?}", case.xs, case.ws, case.params);
        check(&case, i % 2 == 0, true, &what);
    }
}

/// Wide inputs (`C·kw >= 32`, the row-shift lowering of `kernels::lowering` for unit
/// vertical strides; vertical stride 2 in every fourth case).
#[test]
fn wide_random_geometries_match_the_reference() {
    let mut rng = Rng::new(0xb115);
    let mut i = 0;
    while i < 30 {
        let c = between(&mut rng, 8, 14);
        let xs = [between(&mut rng, 1, 3), c, between(&mut rng, 2, 8), between(&mut rng, 2, 8)];
        let ws = [between(&mut rng, 1, 4), c, between(&mut rng, 2, 3), between(&mut rng, 3, 4)];
        let stride = [if i % 4 == 3 { 2 } else { 1 }, between(&mut rng, 1, 2)];
        let dilation = [between(&mut rng, 1, 2), between(&mut rng, 1, 2)];
        let params = Conv2dParams {
            stride,
            dilation,
            pad_before: [between(&mut rng, 0, 2), between(&mut rng, 0, 2)],
            pad_after: [between(&mut rng, 0, 2), between(&mut rng, 0, 2)],
        };
        let Some([oh, ow]) = params.output_size([xs[2], xs[3]], [ws[2], ws[3]]) else { continue };
        if xs[0] * oh * ow < 2 {
            continue;
        }
        let case = make_case(&mut rng, xs, ws, params);
        check(&case, i % 2 == 0, i % 3 != 0, &format!("wide case {i} x {xs:?} w {ws:?} {params:?}"));
        i += 1;
    }
}

/// Channel counts that are multiples of 16 (the direct AVX-512 passes of
/// `kernels/direct.rs`, where the CPU has them: `kernels::direct_passes`), stride 1 and 2,
/// with and without a ReLU, through the fused block; and the same block through the
/// im2col + gemm path (`Kernels::Gemm`) within the same tolerance.
#[test]
fn direct_conv_channel_counts_match_the_reference() {
    let mut rng = Rng::new(0xb1d1);
    let shapes = [
        ([2, 16, 9, 11], [16, 16, 3, 3], 1),
        ([3, 3, 8, 8], [32, 3, 3, 3], 1),
        ([2, 16, 9, 9], [32, 16, 3, 3], 2),
        ([2, 32, 6, 13], [48, 32, 3, 3], 1),
        ([2, 16, 7, 7], [32, 16, 1, 1], 2),
        // Winograd's forward and input gradient (`kernels/winograd.rs`), with the gemm
        // filter gradient (128 channels of 16x16) and the direct one (64 of 6x6).
        ([2, 128, 16, 16], [128, 128, 3, 3], 1),
        ([2, 64, 6, 6], [64, 64, 3, 3], 1),
    ];
    for (i, (xs, ws, s)) in shapes.into_iter().enumerate() {
        let pad = |a: usize| ops::same_padding(xs[2 + a], ws[2 + a], s, 1);
        let ((pt, pb), (pl, pr)) = (pad(0), pad(1));
        let params = Conv2dParams { stride: [s, s], dilation: [1, 1], pad_before: [pt, pl], pad_after: [pb, pr] };
        let case = make_case(&mut rng, xs, ws, params);
        let what = format!("x {xs:?} w {ws:?} /{s}");
        check(&case, i % 2 == 0, true, &what);
        let want = reference_block(&case, i % 2 == 0);
        let gemm = kernels::with_kernels(kernels::Kernels::Gemm, || run(&case, i % 2 == 0, true, Path::Fused));
        for (n, name) in NAMES.iter().enumerate() {
            assert_close(&gemm[n], &want[n], &format!("{what} gemm path: {name}"));
        }
    }
}

#[test]
fn input_gradient_is_skipped_for_data_inputs() {
    let mut rng = Rng::new(0xb10d);
    for i in 0..30 {
        let case = random_case(&mut rng);
        check(&case, i % 2 == 1, false, &format!("case {i} x {:?} w {:?}", case.xs, case.ws));
    }
}

/// cifar_cnn's geometry at a small batch, a batch above the filter-gradient chunk count,
/// 1x1 kernels (the no-im2col path) with and without stride, and a one-channel input.
#[test]
fn edge_geometries_match_the_reference() {
    let mut rng = Rng::new(0xb10e);
    let same3 = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let strided = Conv2dParams { stride: [2, 2], ..Conv2dParams::UNIT };
    for (xs, ws, p) in [
        ([3, 4, 8, 8], [5, 4, 3, 3], same3),
        ([37, 2, 3, 3], [3, 2, 3, 3], same3),
        ([3, 4, 5, 6], [5, 4, 1, 1], Conv2dParams::UNIT),
        ([3, 4, 5, 6], [5, 4, 1, 1], strided),
        ([2, 1, 9, 7], [4, 1, 2, 2], strided),
    ] {
        let case = make_case(&mut rng, xs, ws, p);
        for relu in [false, true] {
            check(&case, relu, true, &format!("x {xs:?} w {ws:?} {p:?}"));
        }
    }
}

#[test]
fn agrees_with_the_unfused_kernels() {
    // Statistics are summed differently (per image, merged), so allow rounding; the
    // autograd graph differs too (one node instead of two or three).
    let mut rng = Rng::new(0xb10f);
    for i in 0..20 {
        let case = random_case(&mut rng);
        let relu = i % 2 == 0;
        let fused = run(&case, relu, true, Path::Fused);
        let unfused = run(&case, relu, true, Path::Unfused);
        for (k, name) in NAMES.iter().enumerate() {
            assert_close(&fused[k], &unfused[k], &format!("case {i} relu={relu}: {name}"));
        }
    }
}

#[test]
fn constant_conv_output_has_zero_variance() {
    // A zero filter: z = 0 everywhere, so mean and variance are exactly 0 and y = beta
    // (relu(beta) with the ReLU).
    let mut rng = Rng::new(0xb110);
    let mut case = make_case(&mut rng, [3, 2, 5, 5], [4, 2, 3, 3], Conv2dParams::UNIT);
    case.w.iter_mut().for_each(|v| *v = 0.0);
    for relu in [false, true] {
        let [y, mean, var, ..] = run(&case, relu, true, Path::Fused);
        assert_eq!(mean, vec![0.0; 4]);
        assert_eq!(var, vec![0.0; 4]);
        let plane = 9;
        for (i, &v) in y.iter().enumerate() {
            let b = case.beta[(i / plane) % 4];
            assert_eq!(v, if relu { b.max(0.0) } else { b }, "y[{i}]");
        }
    }
}

#[test]
fn deterministic_across_runs_and_thread_counts() {
    let mut rng = Rng::new(0xb111);
    let same3 = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let case = make_case(&mut rng, [19, 5, 9, 11], [6, 5, 3, 3], same3);
    let first = run(&case, true, true, Path::Fused);
    assert_eq!(first, run(&case, true, true, Path::Fused), "two runs differ");
    for threads in [1, 3, 4] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        assert_eq!(first, pool.install(|| run(&case, true, true, Path::Fused)), "{threads} threads differ");
    }
}

#[test]
fn rejects_what_it_does_not_handle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4, 4), candle_core::DType::F32, &dev).expect("x");
    let w = Tensor::zeros((5, 3, 3, 3), candle_core::DType::F32, &dev).expect("w");
    let g4 = Tensor::zeros(4, candle_core::DType::F32, &dev).expect("gamma");
    let e = kernels::conv2d_batch_norm_train(&x, &w, &g4, &g4, Conv2dParams::UNIT, 1e-3, true)
        .expect_err("wrong gamma")
        .to_string();
    assert!(e.contains("gamma and beta must be [5]"), "{e}");
    let g5 = Tensor::zeros(5, candle_core::DType::F32, &dev).expect("gamma");
    let x64 = x.to_dtype(candle_core::DType::F64).expect("f64");
    assert!(kernels::conv2d_batch_norm_train(&x64, &w, &g5, &g5, Conv2dParams::UNIT, 1e-3, true).is_err());
    let w2 = Tensor::zeros((5, 2, 3, 3), candle_core::DType::F32, &dev).expect("w");
    assert!(kernels::conv2d_batch_norm_train(&x, &w2, &g5, &g5, Conv2dParams::UNIT, 1e-3, true).is_err());
}

/// A random max-pool that has an output on a `[oh, ow]` input: windows 1–3, strides 1–3,
/// padding before below the window (as TF's SAME gives) and after up to 2.
fn random_pool(rng: &mut Rng, hw: [usize; 2]) -> Option<Pool2dParams> {
    for _ in 0..20 {
        let ksize = [between(rng, 1, 3), between(rng, 1, 3)];
        let stride = [between(rng, 1, 3), between(rng, 1, 3)];
        let pad_before = [rng.below(ksize[0] as u64) as usize, rng.below(ksize[1] as u64) as usize];
        let pad_after = [between(rng, 0, 2), between(rng, 0, 2)];
        let p = Pool2dParams { ksize, stride, pad_before, pad_after };
        if p.output_size(hw).is_some() {
            return Some(p);
        }
    }
    None
}

/// The references for conv → BN → ReLU → max-pool: `(y, mean, var, dx, dw, dgamma, dbeta)`
/// for the pooled gradient `dy`.
fn reference_pooled_block(case: &Case, pool: &Pool2dParams, dy: &[f32]) -> [Vec<f32>; 7] {
    let (xs, ws, p) = (case.xs, case.ws, &case.params);
    let ys = case.ys();
    let z = reference::conv2d(&case.x, xs, &case.w, ws, p);
    let (act, mean, var) = reference::batch_norm_relu_train(&z, ys, &case.gamma, &case.beta, case.epsilon);
    let y = reference::max_pool2d(&act, ys, pool);
    let dact = reference::max_pool2d_backward(&act, dy, ys, pool);
    let (dz, dgamma, dbeta) =
        reference::batch_norm_relu_train_backward(&z, &dact, ys, &case.gamma, &case.beta, case.epsilon);
    let dx = reference::conv2d_backward_input(&dz, &case.w, xs, ws, p);
    let dw = reference::conv2d_backward_filter(&case.x, &dz, xs, ws, p);
    [y, mean, var, dx, dw, dgamma, dbeta]
}

/// The pooled kernel (`fused`) or the conv + BN + ReLU kernel then the max-pool kernel:
/// `(y, mean, var, dx, dw, dgamma, dbeta)` of `Σ y · dy`.
fn run_pooled(case: &Case, pool: Pool2dParams, dy: &[f32], fused: bool) -> [Vec<f32>; 7] {
    let dev = Device::Cpu;
    let x = Var::from_vec(case.x.clone(), &case.xs, &dev).expect("x");
    let w = Var::from_vec(case.w.clone(), &case.ws, &dev).expect("w");
    let gamma = Var::from_vec(case.gamma.clone(), case.ws[0], &dev).expect("gamma");
    let beta = Var::from_vec(case.beta.clone(), case.ws[0], &dev).expect("beta");
    let (y, mean, var) = if fused {
        kernels::conv2d_batch_norm_relu_max_pool_train(&x, &w, &gamma, &beta, case.params, pool, case.epsilon)
    } else {
        kernels::conv2d_batch_norm_train(&x, &w, &gamma, &beta, case.params, case.epsilon, true)
            .and_then(|(y, m, v)| Ok((kernels::max_pool2d(&y, pool)?, m, v)))
    }
    .expect("forward");
    let dy = Tensor::from_vec(dy.to_vec(), y.dims(), &dev).expect("dy");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let g = |v: &Var| grads.get(v).map(flat).unwrap_or_default();
    [flat(&y), flat(&mean), flat(&var), g(&x), g(&w), g(&gamma), g(&beta)]
}

#[test]
fn max_pool_fusion_matches_the_reference_and_the_unfused_kernels() {
    let mut rng = Rng::new(0xb113);
    let mut checked = 0;
    while checked < 80 {
        let case = random_case(&mut rng);
        let ys = case.ys();
        let Some(pool) = random_pool(&mut rng, [ys[2], ys[3]]) else { continue };
        let Some([ph, pw]) = pool.output_size([ys[2], ys[3]]) else { continue };
        let dy = values(&mut rng, ys[0] * ys[1] * ph * pw, 0.0, 1.0);
        let what = format!("case {checked} x {:?} w {:?} {:?} {pool:?}", case.xs, case.ws, case.params);
        let want = reference_pooled_block(&case, &pool, &dy);
        let got = run_pooled(&case, pool, &dy, true);
        for (i, name) in NAMES.iter().enumerate() {
            assert_close(&got[i], &want[i], &format!("{what}: {name}"));
        }
        // The same op as the unfused kernels: the values bit for bit, the gradients to
        // rounding (batch norm's sums run over the pooled gradient instead of the
        // scattered one).
        let unfused = run_pooled(&case, pool, &dy, false);
        assert_eq!(got[..3], unfused[..3], "{what}: forward differs from the unfused kernels");
        for (i, name) in NAMES.iter().enumerate().skip(3) {
            assert_close(&got[i], &unfused[i], &format!("{what}: {name} vs unfused"));
        }
        checked += 1;
    }
}

#[test]
fn max_pool_fusion_is_deterministic_across_thread_counts() {
    let mut rng = Rng::new(0xb114);
    let same3 = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let case = make_case(&mut rng, [19, 5, 10, 12], [6, 5, 3, 3], same3);
    let pool = Pool2dParams { ksize: [2, 2], stride: [2, 2], pad_before: [0, 0], pad_after: [0, 0] };
    let dy = values(&mut rng, 19 * 6 * 5 * 6, 0.0, 1.0);
    let first = run_pooled(&case, pool, &dy, true);
    for threads in [1, 3, 4] {
        let tp = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        assert_eq!(first, tp.install(|| run_pooled(&case, pool, &dy, true)), "{threads} threads differ");
    }
}

/// `Model::forward_t` fuses each conv → BN → ReLU layer with the max-pool layer after it
/// (cifar_cnn has two such pairs); running the layers one by one instead gives the same
/// logits bit for bit, the same moving statistics, and the same gradients to rounding.
#[test]
fn model_forward_fuses_the_max_pools_to_the_same_result() {
    let dev = Device::Cpu;
    let mut spec = ferroflow_nn::zoo_model("cifar_cnn", 10).expect("zoo");
    spec.input = [12, 12, 3];
    let run = |fused: bool| {
        let store = ferroflow_nn::VarStore::new(dev.clone(), 5);
        let model = spec.build(&store, 5).expect("build");
        let mut rng = Rng::new(9);
        let x = Tensor::from_vec(values(&mut rng, 4 * 3 * 12 * 12, 0.0, 1.0), (4, 3, 12, 12), &dev).expect("x");
        let logits = if fused {
            model.forward_t(&x, true).expect("forward")
        } else {
            let mut y = x.clone();
            for layer in model.layers() {
                y = layer.forward_t(&y, true).expect("layer");
            }
            y
        };
        let labels = Tensor::new(&[1u32, 2, 3, 4], &dev).expect("labels");
        let loss = ops::sparse_softmax_cross_entropy(&logits, &labels).expect("loss").mean_all().expect("mean");
        let grads = loss.backward().expect("backward");
        let vars = store.global_variables();
        let grad_values: Vec<Vec<f32>> =
            store.trainable_variables().iter().map(|v| grads.get(&v.var).map(flat).expect("gradient")).collect();
        let var_values: Vec<Vec<f32>> = vars.iter().map(|v| flat(&v.var)).collect();
        (flat(&logits), var_values, grad_values)
    };
    let (fused_logits, fused_vars, fused_grads) = run(true);
    let (plain_logits, plain_vars, plain_grads) = run(false);
    assert_eq!(fused_logits, plain_logits, "logits");
    assert_eq!(fused_vars, plain_vars, "variables (moving statistics)");
    for (i, (f, p)) in fused_grads.iter().zip(&plain_grads).enumerate() {
        assert_close(f, p, &format!("gradient of trainable variable {i}"));
    }
}

/// TF's batch-norm golden cases (`testdata/golden/cases/batch_norm_*`, TF 2.21) through
/// the fused kernel, as `ops::conv2d_batch_norm_train` takes it: a 1x1 identity conv, so
/// the block is batch norm alone and TF's outputs, statistics and gradients apply as they
/// are (the conv half of the kernel shares its gemm lowering with `kernels::conv2d`, which
/// the conv2d golden cases check). Tolerance: the golden README's batch-norm one.
#[test]
fn golden_batch_norm_cases_through_the_fused_kernel() {
    use ferroflow_golden::{Case, Failures, compare_close, discover, golden_dirs};
    const GOLDEN_TOL: f64 = 1e-4;
    let mut failures = Failures::default();
    let files = discover(&golden_dirs(), &mut failures);
    let mut checked = 0;
    for file in files {
        let Ok(case) = Case::load(&file) else { continue };
        let tf1 = match case.op.as_str() {
            "batch_norm_tf1" => true,
            "batch_norm_keras" => false,
            _ => continue,
        };
        let shown = file.display().to_string();
        let result = (|| -> Result<(), String> {
            let dev = Device::Cpu;
            let t = |name: &str| -> Result<Tensor, String> {
                let (shape, values) = case.f32(name)?;
                Tensor::from_vec(values.to_vec(), shape, &dev).map_err(|e| e.to_string())
            };
            let nchw =
                |name: &str| t(name)?.permute((0, 3, 1, 2)).and_then(|t| t.contiguous()).map_err(|e| e.to_string());
            let epsilon = case.f64_param("epsilon")?;
            let x = Var::from_tensor(&nchw("x")?).map_err(|e| e.to_string())?;
            let gamma = Var::from_tensor(&t("gamma")?).map_err(|e| e.to_string())?;
            let beta = Var::from_tensor(&t("beta")?).map_err(|e| e.to_string())?;
            let c = x.dim(1).map_err(|e| e.to_string())?;
            let identity = Tensor::eye(c, candle_core::DType::F32, &dev)
                .and_then(|i| i.reshape((c, c, 1, 1)))
                .map_err(|e| e.to_string())?;
            let w = Var::from_tensor(&identity).map_err(|e| e.to_string())?;
            let (y, mean, var) = ops::conv2d_batch_norm_train(
                &x,
                &w,
                &gamma,
                &beta,
                [1, 1],
                [1, 1],
                ops::Padding::Valid,
                epsilon,
                false,
            )
            .map_err(|e| e.to_string())?;
            let grads =
                (&y * &nchw("dy")?).and_then(|t| t.sum_all()).and_then(|t| t.backward()).map_err(|e| e.to_string())?;
            let nhwc = |t: &Tensor| t.permute((0, 2, 3, 1)).map(|t| flat(&t)).map_err(|e| e.to_string());
            let grad = |v: &Var| grads.get(v).map(flat).ok_or("no gradient".to_string());
            let mut checks = vec![
                ("y_train", nhwc(&y)?),
                ("dx", nhwc(grads.get(&x).ok_or("no dx")?)?),
                ("dgamma", grad(&gamma)?),
                ("dbeta", grad(&beta)?),
            ];
            if tf1 {
                let count = (y.elem_count() / c) as f32;
                let unbiased = flat(&var).iter().map(|v| v * count / (count - 1.0)).collect();
                checks.push(("batch_mean", flat(&mean)));
                checks.push(("batch_variance_unbiased", unbiased));
            }
            for (name, got) in checks {
                let (shape, want) = case.f32(name)?;
                compare_close(&got, want, shape, GOLDEN_TOL, GOLDEN_TOL)
                    .into_result()
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            Ok(())
        })();
        checked += 1;
        if let Err(e) = result {
            failures.push(format!("{shown}: {e}"));
        }
    }
    assert!(checked > 0, "no batch-norm golden cases found");
    failures.assert_none();
}

/// Forward and forward + backward of cifar_cnn's four conv → BN → ReLU blocks at batch 64:
/// the unfused kernels (conv, then the BN + ReLU kernel) against the fused one.
/// `cargo test -p ferroflow-nn --release --test conv_bn_kernels -- --ignored --nocapture`
#[test]
#[ignore = "timing; run explicitly in release"]
fn bench_cifar_cnn_blocks() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(0xb112);
    let runs: usize = std::env::var("FERROFLOW_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    eprintln!("rayon threads: {}, median of {runs} runs", rayon::current_num_threads());
    let same3 = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let mut totals = [0.0; 4];
    for (i, (xs, ws)) in [
        ([64, 3, 32, 32], [32, 3, 3, 3]),
        ([64, 32, 32, 32], [32, 32, 3, 3]),
        ([64, 32, 16, 16], [64, 32, 3, 3]),
        ([64, 64, 16, 16], [64, 64, 3, 3]),
    ]
    .into_iter()
    .enumerate()
    {
        let case = make_case(&mut rng, xs, ws, same3);
        let x = if i == 0 {
            Tensor::from_vec(case.x.clone(), &xs, &dev).expect("x")
        } else {
            Var::from_vec(case.x.clone(), &xs, &dev).expect("x").as_tensor().clone()
        };
        let w = Var::from_vec(case.w.clone(), &ws, &dev).expect("w");
        let gamma = Var::from_vec(case.gamma.clone(), ws[0], &dev).expect("gamma");
        let beta = Var::from_vec(case.beta.clone(), ws[0], &dev).expect("beta");
        let dy = Tensor::from_vec(case.dy.clone(), case.ys().as_slice(), &dev).expect("dy");
        let unfused = || {
            let z = kernels::conv2d(&x, &w, case.params).expect("conv");
            kernels::batch_norm_relu_train(&z, &gamma, &beta, 1e-3).expect("bn").0
        };
        let fused = || kernels::conv2d_batch_norm_train(&x, &w, &gamma, &beta, case.params, 1e-3, true).expect("f").0;
        let backward = |y: Tensor| {
            let g = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            assert!(g.get(&w).is_some());
        };
        let t = [
            ms(time(runs, || drop(unfused()))),
            ms(time(runs, || backward(unfused()))),
            ms(time(runs, || drop(fused()))),
            ms(time(runs, || backward(fused()))),
        ];
        eprintln!(
            "x {xs:?} w {ws:?}: unfused fwd {:.1} ms, fwd+bwd {:.1} ms | fused fwd {:.1} ms, fwd+bwd {:.1} ms",
            t[0], t[1], t[2], t[3]
        );
        for (total, t) in totals.iter_mut().zip(t) {
            *total += t;
        }
    }
    eprintln!(
        "all four: unfused fwd {:.1} ms, fwd+bwd {:.1} ms | fused fwd {:.1} ms, fwd+bwd {:.1} ms",
        totals[0], totals[1], totals[2], totals[3]
    );
}

/// The pooled block with Winograd's forward and input gradient (`kernels/winograd.rs`):
/// vgg_small's 128-channel 16x16 layer (gemm filter gradient) and a 64-channel 8x8 one
/// (direct filter gradient), both against the reference.
#[test]
fn max_pool_fusion_with_winograd_matches_the_reference() {
    let mut rng = Rng::new(0xb115);
    let same3 = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let pool = Pool2dParams { ksize: [2, 2], stride: [2, 2], pad_before: [0, 0], pad_after: [0, 0] };
    for (xs, o) in [([2, 128, 16, 16], 128), ([3, 64, 8, 8], 64)] {
        let case = make_case(&mut rng, xs, [o, xs[1], 3, 3], same3);
        let dy = values(&mut rng, xs[0] * o * (xs[2] / 2) * (xs[3] / 2), 0.0, 1.0);
        let want = reference_pooled_block(&case, &pool, &dy);
        let got = run_pooled(&case, pool, &dy, true);
        for (i, name) in NAMES.iter().enumerate() {
            assert_close(&got[i], &want[i], &format!("x {xs:?} → {o}: {name}"));
        }
    }
}
