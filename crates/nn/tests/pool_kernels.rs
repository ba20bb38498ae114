//! The fast CPU pool kernels (`ferroflow_nn::kernels::pool`) against the slow loop reference
//! (`kernels::reference`) on random geometries, against the candle-ops path of
//! `ops::max_pool2d`/`ops::avg_pool2d` (ties, NaN, infinities), their determinism, and
//! (ignored, run with `--release -- --ignored --nocapture`) a timing against that path.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use common::{between, flat, ms, time};
use ferroflow_nn::kernels::{self, Pool2dParams, reference};
use ferroflow_nn::ops::{self, Padding};
use ferroflow_rng::Rng;

/// Tolerance of the average pool and of gradients that add up overlapping windows (the
/// kernel sums in f32, the reference in f64).
const ATOL: f32 = 1e-5;

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    common::assert_close_tol(got, want, ATOL, ATOL, what);
}

/// Bitwise equal, except that any NaN equals any NaN and `-0.0` equals `0.0`.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g == w || (g.is_nan() && w.is_nan()), "{what}[{i}]: got {g}, want {w}");
    }
}

/// Uniform in [-1, 1), or (`ties`) from {-2, -1, 0, 1, 2}, where most windows hold several
/// maxima and only the first may win.
fn random_values(rng: &mut Rng, n: usize, ties: bool) -> Vec<f32> {
    (0..n).map(|_| if ties { rng.below(5) as f32 - 2.0 } else { rng.range_f32(-1.0, 1.0) }).collect()
}

/// TF's geometry for `padding` as explicit pool parameters.
fn tf_params(hw: [usize; 2], ksize: [usize; 2], stride: [usize; 2], padding: Padding) -> Option<Pool2dParams> {
    let win = |a: usize| ops::window(hw[a], ksize[a], stride[a], 1, padding).ok();
    let (h, w) = (win(0)?, win(1)?);
    Some(Pool2dParams {
        ksize,
        stride,
        pad_before: [h.pad_before, w.pad_before],
        pad_after: [h.pad_after, w.pad_after],
    })
}

/// One random pool: input shape and geometry.
#[derive(Debug, Clone, Copy)]
struct Case {
    xs: [usize; 4],
    params: Pool2dParams,
}

/// A random geometry with an output: odd and even sizes, windows 1–4 and strides 1–3
/// (independent per axis), and VALID, TF-SAME (asymmetric) or arbitrary explicit padding.
fn random_case(rng: &mut Rng) -> Case {
    loop {
        let xs = [between(rng, 1, 3), between(rng, 1, 4), between(rng, 1, 13), between(rng, 1, 13)];
        let ksize = [between(rng, 1, 4), between(rng, 1, 4)];
        let stride = [between(rng, 1, 3), between(rng, 1, 3)];
        let params = match rng.below(3) {
            0 => tf_params([xs[2], xs[3]], ksize, stride, Padding::Valid),
            1 => tf_params([xs[2], xs[3]], ksize, stride, Padding::Same),
            _ => Some(Pool2dParams {
                ksize,
                stride,
                pad_before: [between(rng, 0, 2), between(rng, 0, 2)],
                pad_after: [between(rng, 0, 2), between(rng, 0, 2)],
            }),
        };
        if let Some(params) = params.filter(|p| p.output_size([xs[2], xs[3]]).is_some()) {
            return Case { xs, params };
        }
    }
}

/// Forward, and backward through candle's autograd of `sum(y * dy)`, against the reference.
fn check_case(rng: &mut Rng, case: Case, max: bool, ties: bool, what: &str) {
    let dev = Device::Cpu;
    let Case { xs, params } = case;
    let ys = reference::pool_output_shape(xs, &params);
    let xv = random_values(rng, xs.iter().product(), ties);
    let dyv = random_values(rng, ys.iter().product(), false);
    let x = Var::from_vec(xv.clone(), &xs, &dev).expect("x");
    let y = if max { kernels::max_pool2d(&x, params) } else { kernels::avg_pool2d(&x, params) }.expect("fast pool");
    assert_eq!(y.dims(), ys, "{what}: output shape");
    let dy = Tensor::from_vec(dyv.clone(), &ys, &dev).expect("dy");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    let dx = flat(grads.get(&x).expect("dx"));
    if max {
        assert_same(&flat(&y), &reference::max_pool2d(&xv, xs, &params), &format!("{what} y"));
        assert_close(&dx, &reference::max_pool2d_backward(&xv, &dyv, xs, &params), &format!("{what} dx"));
        // Without overlapping windows every pixel gets at most one dy: exact.
        if params.stride[0] >= params.ksize[0] && params.stride[1] >= params.ksize[1] {
            assert_same(&dx, &reference::max_pool2d_backward(&xv, &dyv, xs, &params), &format!("{what} dx"));
        }
    } else {
        assert_close(&flat(&y), &reference::avg_pool2d(&xv, xs, &params), &format!("{what} y"));
        assert_close(&dx, &reference::avg_pool2d_backward(&dyv, xs, &params), &format!("{what} dx"));
    }
}

#[test]
fn max_pool_random_geometries_match_the_reference() {
    let mut rng = Rng::new(0x9001);
    for i in 0..400 {
        let case = random_case(&mut rng);
        check_case(&mut rng, case, true, i % 2 == 1, &format!("case {i} {case:?}"));
    }
}

#[test]
fn avg_pool_random_geometries_match_the_reference() {
    let mut rng = Rng::new(0xa7_9001);
    for i in 0..400 {
        let case = random_case(&mut rng);
        check_case(&mut rng, case, false, i % 2 == 1, &format!("case {i} {case:?}"));
    }
}

/// Ties go to the first maximum in row-major window order, also where a window starts in
/// the padding (whose `-inf` never wins against a real value).
#[test]
fn max_pool_ties_go_to_the_first_element() {
    let dev = Device::Cpu;
    let x = Var::from_vec(vec![1f32; 16], (1, 1, 4, 4), &dev).expect("x");
    let params = Pool2dParams { ksize: [2, 2], stride: [2, 2], pad_before: [0, 0], pad_after: [0, 0] };
    let y = kernels::max_pool2d(&x, params).expect("y");
    let dx = flat(y.sum_all().and_then(|t| t.backward()).expect("backward").get(&x).expect("dx"));
    #[rustfmt::skip]
    let want = [1., 0., 1., 0.,
                0., 0., 0., 0.,
                1., 0., 1., 0.,
                0., 0., 0., 0.];
    assert_eq!(dx, want);
    // 3x3 windows from rows/columns -1 and 1: the first real pixel of each window wins.
    let x = Var::from_vec(vec![-5f32; 9], (1, 1, 3, 3), &dev).expect("x");
    let params = Pool2dParams { ksize: [3, 3], stride: [2, 2], pad_before: [1, 1], pad_after: [1, 1] };
    let y = kernels::max_pool2d(&x, params).expect("y");
    assert_eq!(flat(&y), vec![-5.0; 4]);
    let dx = flat(y.sum_all().and_then(|t| t.backward()).expect("backward").get(&x).expect("dx"));
    #[rustfmt::skip]
    let want = [1., 1., 0.,
                1., 1., 0.,
                0., 0., 0.];
    assert_eq!(dx, want);
}

/// The kernels agree with the candle-ops path of `ops::max_pool2d`/`ops::avg_pool2d` (TF
/// SAME/VALID), gradients too, including NaN and infinite inputs for the max-pool.
/// `ops::*_pool2d` take the fast kernels themselves for f32 on CPU, so the candle path runs
/// here in f64.
#[test]
fn matches_candle_path_of_ops_pools() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(3);
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    for i in 0..120 {
        let xs = [between(&mut rng, 1, 2), between(&mut rng, 1, 3), between(&mut rng, 1, 9), between(&mut rng, 1, 9)];
        let ksize = [between(&mut rng, 1, 4), between(&mut rng, 1, 4)];
        let stride = [between(&mut rng, 1, 3), between(&mut rng, 1, 3)];
        let padding = if i % 2 == 0 { Padding::Same } else { Padding::Valid };
        let Some(params) = tf_params([xs[2], xs[3]], ksize, stride, padding) else { continue };
        let what = format!("{i}: x {xs:?} ksize {ksize:?} stride {stride:?} {padding}");
        let plain = random_values(&mut rng, xs.iter().product(), i % 3 == 0);
        for max in [true, false] {
            let mut xv = plain.clone();
            if max && i % 4 == 1 {
                // Sprinkle NaN and infinities (the avg-pool has no special rule for them).
                for _ in 0..xv.len().div_ceil(4) {
                    let at = rng.below(xv.len() as u64) as usize;
                    xv[at] = special[rng.below(3) as usize];
                }
            }
            let x = Var::from_vec(xv.clone(), &xs, &dev).expect("x");
            let x64 = Var::from_tensor(&x.to_dtype(DType::F64).expect("f64")).expect("var");
            let (fast, stock) = if max {
                (kernels::max_pool2d(&x, params), ops::max_pool2d(&x64, ksize, stride, padding).expect("stock"))
            } else {
                (kernels::avg_pool2d(&x, params), ops::avg_pool2d(&x64, ksize, stride, padding).expect("stock"))
            };
            let fast = fast.expect("fast");
            assert_eq!(fast.dims(), stock.dims(), "{what}");
            let dy =
                Tensor::from_vec(random_values(&mut rng, fast.elem_count(), false), fast.dims(), &dev).expect("dy");
            let dy64 = dy.to_dtype(DType::F64).expect("f64");
            let g_fast = (&fast * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("fast bwd");
            let g_stock = (&stock * &dy64).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("stock bwd");
            let (dx, dx64) = (flat(g_fast.get(&x).expect("dx")), flat(g_stock.get(&x64).expect("dx64")));
            let what = format!("{what} max {max}");
            if max {
                assert_same(&flat(&fast), &flat(&stock), &format!("{what} y"));
                assert_close(&dx, &dx64, &format!("{what} dx"));
            } else {
                assert_close(&flat(&fast), &flat(&stock), &format!("{what} y"));
                assert_close(&dx, &dx64, &format!("{what} dx"));
            }
        }
    }
}

/// A NaN in a window's first cell sticks and gives 0 with no gradient; a NaN anywhere else
/// is ignored (as `ops::max_pool2d`'s candle path does).
#[test]
fn max_pool_nan_rule() {
    let dev = Device::Cpu;
    let nan = f32::NAN;
    #[rustfmt::skip]
    let xv = vec![nan, 3., 1., 2.,
                  1.,  1., 1., nan];
    let x = Var::from_vec(xv.clone(), (1, 1, 2, 4), &dev).expect("x");
    let params = Pool2dParams { ksize: [2, 2], stride: [2, 2], pad_before: [0, 0], pad_after: [0, 0] };
    let y = kernels::max_pool2d(&x, params).expect("y");
    assert_eq!(flat(&y), [0.0, 2.0]);
    let dx = flat(y.sum_all().and_then(|t| t.backward()).expect("backward").get(&x).expect("dx"));
    assert_eq!(dx, [0., 0., 0., 1., 0., 0., 0., 0.]);
    let x64 = x.to_dtype(DType::F64).expect("f64");
    assert_eq!(flat(&ops::max_pool2d(&x64, [2, 2], [2, 2], Padding::Valid).expect("stock")), [0.0, 2.0]);
}

/// Same inputs → bitwise-identical y and dx, across rayon thread counts; the backward that
/// recomputes the winners from `x` agrees bitwise with the one that reuses the forward's.
#[test]
fn pools_are_deterministic() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(99);
    for (xs, k, s, padding) in [
        ([64, 8, 16, 16], [3, 3], [1, 1], Padding::Same),
        ([3, 5, 11, 9], [3, 2], [2, 1], Padding::Same),
        ([20, 4, 8, 8], [2, 2], [2, 2], Padding::Valid),
    ] {
        let params = tf_params([xs[2], xs[3]], k, s, padding).expect("params");
        let x = Var::from_vec(random_values(&mut rng, xs.iter().product(), true), &xs, &dev).expect("x");
        let ys = reference::pool_output_shape(xs, &params);
        let dy = Tensor::from_vec(random_values(&mut rng, ys.iter().product(), false), &ys, &dev).expect("dy");
        let run = || {
            let backward = |y: &Tensor| {
                let g = (y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
                flat(g.get(&x).expect("dx"))
            };
            let max = kernels::max_pool2d(&x, params).expect("max");
            let avg = kernels::avg_pool2d(&x, params).expect("avg");
            let recomputed = flat(&kernels::max_pool2d_backward(&x, &dy, params).expect("dx"));
            [flat(&max), backward(&max), recomputed, flat(&avg), backward(&avg)]
        };
        let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
        let first = run();
        assert!(bits(&first[1]) == bits(&first[2]), "{xs:?}: recomputed max-pool dx differs");
        for threads in [1, 3] {
            let again = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool").install(run);
            for (k, (a, b)) in first.iter().zip(&again).enumerate() {
                assert!(bits(a) == bits(b), "{xs:?}: output {k} differs on rerun ({threads} threads)");
            }
        }
        let dx = flat(&kernels::avg_pool2d_backward(&dy, [xs[2], xs[3]], params).expect("avg dx"));
        assert_close(&dx, &reference::avg_pool2d_backward(&flat(&dy), xs, &params), &format!("{xs:?} avg dx"));
    }
}

#[test]
fn rejects_bad_inputs() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 3, 4, 4), DType::F32, &dev).expect("x");
    let p = |ksize: [usize; 2], stride: [usize; 2], pad_before: [usize; 2], pad_after: [usize; 2]| Pool2dParams {
        ksize,
        stride,
        pad_before,
        pad_after,
    };
    let e = kernels::max_pool2d(&x, p([5, 5], [1, 1], [0, 0], [0, 0])).expect_err("too large").to_string();
    assert!(e.contains("[1, 3, 4, 4]"), "{e}");
    assert!(kernels::avg_pool2d(&x, p([0, 2], [1, 1], [0, 0], [0, 0])).is_err(), "zero window");
    assert!(kernels::avg_pool2d(&x, p([2, 2], [1, 0], [0, 0], [0, 0])).is_err(), "zero stride");
    // Windows of padding only: the first (pad before >= window) or the last.
    assert!(kernels::avg_pool2d(&x, p([2, 2], [1, 1], [2, 0], [0, 0])).is_err());
    assert!(kernels::max_pool2d(&x, p([2, 2], [3, 3], [0, 0], [4, 0])).is_err());
    let x3 = Tensor::zeros((3, 4, 4), DType::F32, &dev).expect("x3");
    assert!(kernels::max_pool2d(&x3, p([2, 2], [2, 2], [0, 0], [0, 0])).is_err(), "rank 3");
    let x64 = x.to_dtype(DType::F64).expect("f64");
    assert!(!kernels::pool::supports(&x64) && kernels::pool::supports(&x));
    assert!(kernels::max_pool2d(&x64, p([2, 2], [2, 2], [0, 0], [0, 0])).is_err(), "f64");
    let dy = Tensor::zeros((1, 3, 3, 3), DType::F32, &dev).expect("dy");
    assert!(kernels::max_pool2d_backward(&x, &dy, p([2, 2], [2, 2], [0, 0], [0, 0])).is_err(), "dy shape");
    assert!(kernels::avg_pool2d_backward(&dy, [4, 4], p([2, 2], [2, 2], [0, 0], [0, 0])).is_err(), "dy shape");
}

/// `ops::max_pool2d`'s candle-ops path as it was before the kernel, for a VALID pool
/// without padding (cifar_cnn's 2x2/2): one strided slice per window offset, the first
/// maximum selected with `where_cond`.
fn candle_max_pool(x: &Tensor, k: [usize; 2], s: [usize; 2]) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (oh, ow) = ((h - k[0]) / s[0] + 1, (w - k[1]) / s[1] + 1);
    let strided = |t: &Tensor, dim: usize, start: usize, step: usize, count: usize| {
        let ids: Vec<u32> = (0..count).map(|i| (start + i * step) as u32).collect();
        t.contiguous()?.index_select(&Tensor::from_vec(ids, count, t.device())?, dim)
    };
    let mut candidates = Vec::new();
    for a in 0..k[0] {
        let rows = strided(x, 2, a, s[0], oh)?;
        for b in 0..k[1] {
            candidates.push(strided(&rows, 3, b, s[1], ow)?);
        }
    }
    let values: Vec<Tensor> = candidates.iter().map(Tensor::detach).collect();
    let mut max = values[0].clone();
    for v in &values[1..] {
        max = max.maximum(v)?;
    }
    let zeros = max.zeros_like()?;
    let mut taken = Tensor::zeros(max.dims(), DType::U8, max.device())?;
    let mut y = zeros.clone();
    for (cand, value) in candidates.iter().zip(&values) {
        let hit = value.eq(&max)?;
        let first = hit.gt(&taken)?;
        taken = taken.maximum(&hit)?;
        y = (y + first.where_cond(cand, &zeros)?)?;
    }
    Ok(y)
}

/// `ops::avg_pool2d`'s path before the kernel, for a VALID pool: a ones-kernel conv (the
/// fast conv kernel) over every plane, divided by the window size.
fn conv_avg_pool(x: &Tensor, k: [usize; 2], s: [usize; 2]) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let ones = Tensor::ones((1, 1, k[0], k[1]), DType::F32, x.device())?;
    let params = kernels::Conv2dParams { stride: s, ..kernels::Conv2dParams::UNIT };
    let sums = kernels::conv2d(&x.reshape((n * c, 1, h, w))?, &ones, params)?;
    let (oh, ow) = (sums.dim(2)?, sums.dim(3)?);
    sums.reshape((n, c, oh, ow))? / (k[0] * k[1]) as f64
}

/// Forward + backward of cifar_cnn's two 2x2/2 max-pools (and the same average-pools) at
/// batch 64: the candle-ops path `ops::*_pool2d` took before the kernels against them.
/// `cargo test -p ferroflow-nn --release --test pool_kernels -- --ignored --nocapture`
#[test]
#[ignore = "timing; run explicitly in release"]
fn bench_cifar_cnn_pools() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(5);
    let runs: usize = std::env::var("FERROFLOW_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    eprintln!("rayon threads: {}, median of {runs} runs", rayon::current_num_threads());
    let (k, s) = ([2, 2], [2, 2]);
    let params = Pool2dParams { ksize: k, stride: s, pad_before: [0, 0], pad_after: [0, 0] };
    for xs in [[64, 32, 32, 32], [64, 64, 16, 16]] {
        let x = Var::from_vec(random_values(&mut rng, xs.iter().product(), false), &xs, &dev).expect("x");
        let ys = reference::pool_output_shape(xs, &params);
        let dy = Tensor::from_vec(random_values(&mut rng, ys.iter().product(), false), &ys, &dev).expect("dy");
        let backward = |y: Tensor| {
            let g = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            assert!(g.get(&x).is_some());
        };
        // The harness's own cost (`y * dy`, the sum and their backward), the same for all.
        let leaf = Var::zeros(ys.as_slice(), DType::F32, &dev).expect("leaf");
        let harness = time(runs, || {
            let g = (leaf.as_tensor() * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("bwd");
            assert!(g.get(&leaf).is_some());
        });
        let old_max = candle_max_pool(&x, k, s).expect("old");
        assert_eq!(flat(&old_max), flat(&kernels::max_pool2d(&x, params).expect("new")), "{xs:?}: paths differ");
        let t = [
            time(runs, || drop(candle_max_pool(&x, k, s).expect("old"))),
            time(runs, || backward(candle_max_pool(&x, k, s).expect("old"))),
            time(runs, || drop(kernels::max_pool2d(&x, params).expect("new"))),
            time(runs, || backward(kernels::max_pool2d(&x, params).expect("new"))),
            time(runs, || drop(conv_avg_pool(&x, k, s).expect("old"))),
            time(runs, || backward(conv_avg_pool(&x, k, s).expect("old"))),
            time(runs, || drop(kernels::avg_pool2d(&x, params).expect("new"))),
            time(runs, || backward(kernels::avg_pool2d(&x, params).expect("new"))),
        ];
        eprintln!("x {xs:?}, 2x2 stride 2 (harness y*dy/sum/backward: {:.1} ms, included below):", ms(harness));
        for (name, t) in [("max", &t[..4]), ("avg", &t[4..])] {
            eprintln!(
                "  {name}: old fwd {:.1} ms, fwd+bwd {:.1} ms | new fwd {:.2} ms, fwd+bwd {:.2} ms | speedup fwd {:.1}x, \
                 fwd+bwd {:.1}x (without harness {:.1}x)",
                ms(t[0]),
                ms(t[1]),
                ms(t[2]),
                ms(t[3]),
                ms(t[0]) / ms(t[2]),
                ms(t[1]) / ms(t[3]),
                (ms(t[1]) - ms(harness)) / (ms(t[3]) - ms(harness)),
            );
        }
    }
}
