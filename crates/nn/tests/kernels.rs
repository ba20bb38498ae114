//! The fast CPU conv2d kernels (`ferroflow_nn::kernels`) against the slow loop reference
//! (`kernels::reference`) on random geometries, their determinism, and (ignored, run with
//! `--release -- --ignored --nocapture`) a timing against candle's stock conv2d.

mod common;

use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use common::{between, flat, ms, time};
use ferroflow_nn::kernels::{self, Conv2dParams, reference};
use ferroflow_nn::ops::{self, Padding};
use ferroflow_rng::Rng;

/// `|got - want| <= ATOL + RTOL * |want|`.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    common::assert_close_tol(got, want, ATOL, RTOL, what);
}

fn random_values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.range_f32(-1.0, 1.0)).collect()
}

/// One random conv: shapes and geometry.
#[derive(Debug, Clone, Copy)]
struct Case {
    xs: [usize; 4],
    ws: [usize; 4],
    params: Conv2dParams,
}

/// A random geometry with an output: odd and even sizes and kernels, strides 1–3 and
/// dilations 1–2 (independent per axis), and VALID, TF-SAME (asymmetric) or arbitrary
/// explicit padding.
fn random_case(rng: &mut Rng) -> Case {
    loop {
        let xs = [between(rng, 1, 3), between(rng, 1, 5), between(rng, 1, 13), between(rng, 1, 13)];
        let ws = [between(rng, 1, 5), xs[1], between(rng, 1, 4), between(rng, 1, 4)];
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
        if params.output_size([xs[2], xs[3]], [ws[2], ws[3]]).is_some() {
            return Case { xs, ws, params };
        }
    }
}

/// Forward, and backward through candle's autograd of `sum(y * dy)`, against the reference.
fn check_case(rng: &mut Rng, case: Case, x_needs_grad: bool, what: &str) {
    let dev = Device::Cpu;
    let Case { xs, ws, params } = case;
    let ys = reference::output_shape(xs, ws, &params);
    let xv = random_values(rng, xs.iter().product());
    let wv = random_values(rng, ws.iter().product());
    let dyv = random_values(rng, ys.iter().product());

    let w = Var::from_vec(wv.clone(), &ws, &dev).expect("w");
    let x_var = Var::from_vec(xv.clone(), &xs, &dev).expect("x");
    let x = if x_needs_grad { x_var.as_tensor().clone() } else { Tensor::from_vec(xv.clone(), &xs, &dev).expect("x") };
    let y = kernels::conv2d(&x, &w, params).expect("fast conv2d");
    assert_eq!(y.dims(), ys, "{what}: output shape");
    assert_close(&flat(&y), &reference::conv2d(&xv, xs, &wv, ws, &params), &format!("{what} y"));

    let dy = Tensor::from_vec(dyv.clone(), &ys, &dev).expect("dy");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let dw = grads.get(&w).expect("dw");
    assert_close(&flat(dw), &reference::conv2d_backward_filter(&xv, &dyv, xs, ws, &params), &format!("{what} dw"));
    if x_needs_grad {
        let dx = grads.get(&x).expect("dx");
        assert_close(&flat(dx), &reference::conv2d_backward_input(&dyv, &wv, xs, ws, &params), &format!("{what} dx"));
    } else {
        assert!(grads.get(&x).is_none(), "{what}: no dx for an x outside autograd");
    }
}

#[test]
fn random_geometries_match_the_reference() {
    let mut rng = Rng::new(0xc0_2d);
    for i in 0..300 {
        let case = random_case(&mut rng);
        check_case(&mut rng, case, true, &format!("case {i} {case:?}"));
    }
}

/// Random geometries wide enough (`C·kw >= 32`) for the row-shift lowering (unit vertical
/// stride, `kh > 1`; `kernels::lowering`), with every horizontal stride, dilation and
/// padding, plus vertical strides (the full im2col) for contrast.
#[test]
fn wide_random_geometries_match_the_reference() {
    let mut rng = Rng::new(0xc0_2e);
    for i in 0..60 {
        let case = loop {
            let c = between(&mut rng, 8, 17);
            let xs = [between(&mut rng, 1, 3), c, between(&mut rng, 1, 9), between(&mut rng, 1, 9)];
            let ws = [between(&mut rng, 1, 4), c, between(&mut rng, 2, 3), between(&mut rng, 2, 4)];
            let stride = [if i % 4 == 3 { 2 } else { 1 }, between(&mut rng, 1, 2)];
            let dilation = [between(&mut rng, 1, 2), between(&mut rng, 1, 2)];
            let pad_before = [between(&mut rng, 0, 2), between(&mut rng, 0, 2)];
            let pad_after = [between(&mut rng, 0, 2), between(&mut rng, 0, 2)];
            let params = Conv2dParams { stride, dilation, pad_before, pad_after };
            if params.output_size([xs[2], xs[3]], [ws[2], ws[3]]).is_some() {
                break Case { xs, ws, params };
            }
        };
        check_case(&mut rng, case, i % 5 != 0, &format!("wide case {i} {case:?}"));
    }
}

#[test]
fn input_gradient_is_skipped_for_data_inputs() {
    let mut rng = Rng::new(7);
    for i in 0..40 {
        let case = random_case(&mut rng);
        check_case(&mut rng, case, false, &format!("case {i} {case:?}"));
    }
}

/// Hand-picked edges: 1x1 (the no-im2col path, with and without padding/stride), a kernel
/// as large as the padded input, a single-pixel input, and a batch larger than the
/// filter-gradient chunk count.
#[test]
fn edge_geometries_match_the_reference() {
    let mut rng = Rng::new(11);
    let p = |stride: [usize; 2], dilation: [usize; 2], pad_before: [usize; 2], pad_after: [usize; 2]| Conv2dParams {
        stride,
        dilation,
        pad_before,
        pad_after,
    };
    let cases = [
        Case { xs: [2, 3, 5, 7], ws: [4, 3, 1, 1], params: Conv2dParams::UNIT },
        Case { xs: [2, 3, 5, 7], ws: [4, 3, 1, 1], params: p([2, 3], [1, 1], [0, 0], [0, 0]) },
        Case { xs: [1, 2, 4, 4], ws: [3, 2, 1, 1], params: p([1, 1], [1, 1], [1, 0], [0, 2]) },
        Case { xs: [1, 2, 3, 4], ws: [2, 2, 5, 6], params: p([1, 1], [1, 1], [1, 1], [1, 1]) },
        Case { xs: [3, 1, 1, 1], ws: [2, 1, 3, 3], params: p([2, 2], [1, 1], [1, 1], [1, 1]) },
        Case { xs: [37, 2, 6, 5], ws: [3, 2, 3, 2], params: p([1, 2], [2, 1], [2, 0], [2, 1]) },
        Case { xs: [1, 1, 9, 9], ws: [1, 1, 3, 3], params: p([3, 3], [2, 2], [0, 0], [0, 0]) },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        check_case(&mut rng, case, true, &format!("edge {i} {case:?}"));
    }
}

/// The fast kernel agrees with candle's conv path of `ops::conv2d` (TF SAME/VALID),
/// gradients too. `ops::conv2d` takes the fast kernel itself for f32 on CPU, so candle's
/// path runs here in f64.
#[test]
fn matches_candle_path_of_ops_conv2d() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(3);
    for (xs, ws, stride, dilation) in [
        ([2, 3, 9, 9], [4, 3, 4, 4], [2, 2], [1, 1]),
        ([1, 2, 12, 13], [2, 2, 4, 3], [3, 2], [1, 2]),
        ([2, 4, 8, 8], [3, 4, 3, 3], [1, 1], [1, 1]),
    ] {
        for padding in [Padding::Same, Padding::Valid] {
            let what = format!("{xs:?} {ws:?} {stride:?} {dilation:?} {padding}");
            let win = |a: usize| ops::window(xs[2 + a], ws[2 + a], stride[a], dilation[a], padding).expect("window");
            let (wh, ww) = (win(0), win(1));
            let params = Conv2dParams {
                stride,
                dilation,
                pad_before: [wh.pad_before, ww.pad_before],
                pad_after: [wh.pad_after, ww.pad_after],
            };
            let x = Var::from_vec(random_values(&mut rng, xs.iter().product()), &xs, &dev).expect("x");
            let w = Var::from_vec(random_values(&mut rng, ws.iter().product()), &ws, &dev).expect("w");
            let f64_var = |v: &Var| Var::from_tensor(&v.to_dtype(DType::F64).expect("f64")).expect("var");
            let (x64, w64) = (f64_var(&x), f64_var(&w));
            let fast = kernels::conv2d(&x, &w, params).expect("fast");
            let stock = ops::conv2d(&x64, &w64, stride, dilation, padding).expect("stock");
            let to32 = |t: &Tensor| t.to_dtype(DType::F32).expect("f32");
            assert_eq!(fast.dims(), stock.dims(), "{what}");
            assert_close(&flat(&fast), &flat(&to32(&stock)), &format!("{what} y"));
            let dy = Tensor::from_vec(random_values(&mut rng, fast.elem_count()), fast.dims(), &dev).expect("dy");
            let g_fast = (&fast * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("fast bwd");
            let dy64 = dy.to_dtype(DType::F64).expect("f64");
            let g_stock = (&stock * &dy64).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("stock bwd");
            for (v, v64, name) in [(&x, &x64, "dx"), (&w, &w64, "dw")] {
                let (a, b) = (g_fast.get(v).expect("fast grad"), g_stock.get(v64).expect("stock grad"));
                assert_close(&flat(a), &flat(&to32(b)), &format!("{what} {name}"));
            }
        }
    }
}

/// Same inputs → bitwise-identical dw (and dx, y), also across rayon thread counts: the
/// filter gradient sums its images in chunks fixed by the batch size alone.
#[test]
fn gradients_are_deterministic() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(99);
    for (xs, ws) in [([64, 8, 16, 16], [16, 8, 3, 3]), ([3, 5, 11, 9], [4, 5, 3, 2]), ([20, 4, 8, 8], [6, 4, 1, 1])] {
        let params = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
        let params = if ws[2] == 1 { Conv2dParams::UNIT } else { params };
        let x = Tensor::from_vec(random_values(&mut rng, xs.iter().product()), &xs, &dev).expect("x");
        let w = Tensor::from_vec(random_values(&mut rng, ws.iter().product()), &ws, &dev).expect("w");
        let ys = reference::output_shape(xs, ws, &params);
        let dy = Tensor::from_vec(random_values(&mut rng, ys.iter().product()), &ys, &dev).expect("dy");
        let run = || {
            let y = flat(&kernels::conv2d(&x, &w, params).expect("y"));
            let dx = flat(&kernels::conv2d_backward_input(&dy, &w, [xs[2], xs[3]], params).expect("dx"));
            let dw = flat(&kernels::conv2d_backward_filter(&x, &dy, [ws[2], ws[3]], params).expect("dw"));
            (y, dx, dw)
        };
        let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
        let first = run();
        for threads in [0, 1, 3] {
            let again = if threads == 0 {
                run()
            } else {
                rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(run)
            };
            for (a, b, name) in [(&first.0, &again.0, "y"), (&first.1, &again.1, "dx"), (&first.2, &again.2, "dw")] {
                assert!(bits(a) == bits(b), "{xs:?} {ws:?}: {name} differs on rerun ({threads} threads)");
            }
        }
        assert_close(
            &first.2,
            &reference::conv2d_backward_filter(&flat(&x), &flat(&dy), xs, ws, &params),
            &format!("{xs:?} {ws:?} dw"),
        );
    }
}

#[test]
fn rejects_bad_inputs() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).expect("x");
    let w = Tensor::zeros((2, 2, 3, 3), DType::F32, &dev).expect("w");
    let e = kernels::conv2d(&x, &w, Conv2dParams::UNIT).expect_err("channels").to_string();
    assert!(e.contains("3 channels"), "{e}");
    let w = Tensor::zeros((2, 3, 5, 5), DType::F32, &dev).expect("w");
    assert!(kernels::conv2d(&x, &w, Conv2dParams::UNIT).is_err(), "kernel larger than the input");
    let w = Tensor::zeros((2, 3, 3, 3), DType::F64, &dev).expect("w");
    assert!(!kernels::supports(&x.to_dtype(DType::F64).expect("f64"), &w));
    assert!(kernels::conv2d(&x.to_dtype(DType::F64).expect("f64"), &w, Conv2dParams::UNIT).is_err());
    let zero_stride = Conv2dParams { stride: [0, 1], ..Conv2dParams::UNIT };
    assert!(kernels::conv2d(&x, &w.to_dtype(DType::F32).expect("f32"), zero_stride).is_err());
}

/// Forward + backward of cifar_cnn's four 3x3 SAME convs at batch 64: candle's stock path
/// (the candle ops `ops::conv2d` used before the fast kernel) against the fast kernel. The first layer's input is data (no dx).
/// `cargo test -p ferroflow-nn --release --test kernels -- --ignored --nocapture`
#[test]
#[ignore = "timing; run explicitly in release"]
fn bench_cifar_cnn_convs() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(5);
    let layers = [
        ([64, 3, 32, 32], [32, 3, 3, 3]),
        ([64, 32, 32, 32], [32, 32, 3, 3]),
        ([64, 32, 16, 16], [64, 32, 3, 3]),
        ([64, 64, 16, 16], [64, 64, 3, 3]),
    ];
    let runs: usize = std::env::var("FERROFLOW_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    eprintln!("rayon threads: {}, median of {runs} runs", rayon::current_num_threads());
    let mut totals = [Duration::ZERO; 5];
    for (i, (xs, ws)) in layers.into_iter().enumerate() {
        let xv = random_values(&mut rng, xs.iter().product());
        let x = if i == 0 {
            Tensor::from_vec(xv, &xs, &dev).expect("x")
        } else {
            Var::from_vec(xv, &xs, &dev).expect("x").as_tensor().clone()
        };
        let w = Var::from_vec(random_values(&mut rng, ws.iter().product()), &ws, &dev).expect("w");
        let params = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
        let ys = reference::output_shape(xs, ws, &params);
        let dy = Tensor::from_vec(random_values(&mut rng, ys.iter().product()), &ys, &dev).expect("dy");
        // candle's path exactly as `ops::conv2d` took it before the fast kernel (for a 3x3
        // stride-1 SAME conv: pad 1 on each side, then candle's conv at padding 0); today
        // `ops::conv2d` itself takes the fast kernel for f32 on CPU.
        let stock = || {
            x.pad_with_zeros(2, 1, 1)
                .and_then(|x| x.pad_with_zeros(3, 1, 1))
                .and_then(|x| x.conv2d(&w, 0, 1, 1, 1))
                .expect("stock")
        };
        let fast = || kernels::conv2d(&x, &w, params).expect("fast");
        // Backpropagates `sum(y * dy)` and checks that `leaf` got its gradient.
        let backward = |y: Tensor, leaf: &Tensor| {
            let g = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            assert!(g.get(leaf).is_some());
        };
        // The harness's own cost, the same for both paths: `y * dy`, the sum and their
        // backward (a broadcast gradient), measured on a leaf of the output's shape.
        let leaf = Var::zeros(ys.as_slice(), DType::F32, &dev).expect("leaf");
        let t = [
            time(runs, || drop(stock())),
            time(runs, || backward(stock(), &w)),
            time(runs, || drop(fast())),
            time(runs, || backward(fast(), &w)),
            time(runs, || backward(leaf.as_tensor().clone(), &leaf)),
        ];
        // The fast backward's parts, without any autograd bookkeeping.
        let dx = time(runs, || drop(kernels::conv2d_backward_input(&dy, &w, [xs[2], xs[3]], params).expect("dx")));
        let dw = time(runs, || drop(kernels::conv2d_backward_filter(&x, &dy, [ws[2], ws[3]], params).expect("dw")));
        eprintln!("x {xs:?} w {ws:?}:");
        report("  ", t);
        eprintln!("  fast kernels alone: dx {:.1} ms, dw {:.1} ms", ms(dx), ms(dw));
        for (total, t) in totals.iter_mut().zip(t) {
            *total += t;
        }
    }
    eprintln!("all four layers:");
    report("  ", totals);
}

/// Prints `[stock fwd, stock fwd+bwd, fast fwd, fast fwd+bwd, harness]` timings.
fn report(indent: &str, [sf, sfb, ff, ffb, harness]: [Duration; 5]) {
    eprintln!(
        "{indent}stock: fwd {:.1} ms, fwd+bwd {:.1} ms | fast: fwd {:.1} ms, fwd+bwd {:.1} ms | speedup fwd {:.1}x, fwd+bwd {:.1}x",
        ms(sf),
        ms(sfb),
        ms(ff),
        ms(ffb),
        ms(sf) / ms(ff),
        ms(sfb) / ms(ffb),
    );
    let (s, f) = (ms(sfb) - ms(harness), ms(ffb) - ms(harness));
    eprintln!(
        "{indent}without the harness's y*dy/sum/backward ({:.1} ms): stock {s:.1} ms, fast {f:.1} ms, speedup {:.1}x",
        ms(harness),
        s / f
    );
}

/// `ops::avg_pool2d` sums its windows with a conv of a ones kernel over every (image,
/// channel) plane: many tiny images (cifar_cnn's 2x2/2 pools at batch 64). Checks that the
/// fast kernel's per-image gemm calls are no slower than candle's conv there.
/// `cargo test -p ferroflow-nn --release --test kernels -- --ignored --nocapture`
#[test]
#[ignore = "timing; run explicitly in release"]
fn bench_avg_pool_planes() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(6);
    let runs: usize = std::env::var("FERROFLOW_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    for xs in [[64 * 32, 1, 32, 32], [64 * 64, 1, 16, 16]] {
        let x = Var::from_vec(random_values(&mut rng, xs.iter().product()), &xs, &dev).expect("x");
        let ones = Tensor::ones((1, 1, 2, 2), DType::F32, &dev).expect("ones");
        let params = Conv2dParams { stride: [2, 2], ..Conv2dParams::UNIT };
        let ys = reference::output_shape(xs, [1, 1, 2, 2], &params);
        let dy = Tensor::from_vec(random_values(&mut rng, ys.iter().product()), &ys, &dev).expect("dy");
        let backward = |y: Tensor| {
            let g = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            assert!(g.get(&x).is_some());
        };
        let stock = time(runs, || backward(x.conv2d(&ones, 0, 2, 1, 1).expect("stock")));
        let fast = time(runs, || backward(kernels::conv2d(&x, &ones, params).expect("fast")));
        eprintln!(
            "planes {xs:?}, 2x2 ones kernel, stride 2: fwd+bwd stock {:.1} ms, fast {:.1} ms",
            ms(stock),
            ms(fast)
        );
    }
}
