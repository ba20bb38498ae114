//! Golden conformance for ferroflow-nn: convolutions, pooling, batch norm, flatten+dense
//! and the cross-entropy losses against reference outputs and gradients computed by
//! TensorFlow.
//!
//! Reads every case under `testdata/golden/cases/` (see `testdata/golden/README.md` for the
//! format and tolerances) and under each directory in `FERROFLOW_GOLDEN_DIR`
//! (`:`-separated, scanned recursively). Ops of other crates are only counted here; a case
//! with an op nobody knows is a failure, never a silent skip. For each case the forward
//! values *and* every gradient the case holds are checked (gradients of `sum(y * dy)`;
//! for the losses, of the mean loss), and a case tensor the harness does not check is a
//! failure too. Every case is checked and every failure listed before the test fails.
//!
//! TF's layouts (NHWC images, HWIO conv kernels, `[h, w, out, in]` conv2d_transpose
//! kernels) are converted to ferroflow's (NCHW, OIHW, `[in, out, h, w]`) here, at the test
//! boundary only.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use ferroflow_golden::{Case, Harness, all, compare_close, err};
use ferroflow_nn::ops::{
    Padding, avg_pool2d, batch_norm_count, batch_norm_eval, batch_norm_train, conv2d, conv2d_transpose, dense, flatten,
    max_pool2d, moving_average_update, smoothed_one_hot, softmax_cross_entropy, sparse_softmax_cross_entropy,
    unbiased_variance,
};
use serde_json::Value;

/// README tolerances: `(atol, rtol)` under `|got - want| <= atol + rtol * |want|`.
const TOL_CONV: (f64, f64) = (1e-4, 1e-4);
const TOL_POOL: (f64, f64) = (1e-5, 1e-5);
const TOL_BATCH_NORM: (f64, f64) = (1e-4, 1e-4);
const TOL_DENSE: (f64, f64) = (1e-4, 1e-4);
const TOL_XENT: (f64, f64) = (1e-5, 1e-5);

/// What one check found: the worst `|got - want|` per tensor name.
type Worst = BTreeMap<String, f64>;

/// The case's tensors and params the way this harness reads them.
trait NnCase {
    fn f32_tensor(&self, name: &str) -> Result<Tensor, String>;
    fn i64_tensor(&self, name: &str) -> Result<Tensor, String>;
    fn nchw(&self, name: &str) -> Result<Tensor, String>;
    fn pair_param(&self, key: &str) -> Result<[usize; 2], String>;
    fn padding_param(&self) -> Result<Padding, String>;
    fn mean_reduction(&self) -> Result<(), String>;
}

impl NnCase for Case {
    /// A float32 tensor of the case, in its stored (TF) layout.
    fn f32_tensor(&self, name: &str) -> Result<Tensor, String> {
        let (shape, values) = self.f32(name)?;
        Tensor::from_vec(values.to_vec(), shape, &ferroflow_golden::case_device()).map_err(err(name))
    }

    /// An int64 tensor of the case.
    fn i64_tensor(&self, name: &str) -> Result<Tensor, String> {
        let (shape, values) = self.i64(name)?;
        Tensor::from_vec(values.to_vec(), shape, &ferroflow_golden::case_device()).map_err(err(name))
    }

    /// An NHWC float32 tensor of the case as NCHW.
    fn nchw(&self, name: &str) -> Result<Tensor, String> {
        let t = self.f32_tensor(name)?;
        if t.rank() != 4 {
            return Err(format!("tensor `{name}` has shape {:?}, expected NHWC (rank 4)", t.dims()));
        }
        t.permute((0, 3, 1, 2)).and_then(|t| t.contiguous()).map_err(err(name))
    }

    fn pair_param(&self, key: &str) -> Result<[usize; 2], String> {
        match self.sizes_param(key).as_deref() {
            Some(&[a, b]) => Ok([a, b]),
            _ => Err(format!("params has no `{key}` [h, w]")),
        }
    }

    fn padding_param(&self) -> Result<Padding, String> {
        match self.str_param("padding")? {
            "SAME" => Ok(Padding::Same),
            "VALID" => Ok(Padding::Valid),
            other => Err(format!("unknown padding `{other}`")),
        }
    }

    /// Requires `params.reduction`, when present, to be "mean" (the only one the README
    /// describes), so a case with another reduction cannot be checked against the mean.
    fn mean_reduction(&self) -> Result<(), String> {
        match self.params.get("reduction").map(|v| v.as_str()) {
            None | Some(Some("mean")) => Ok(()),
            Some(other) => Err(format!("unsupported reduction {other:?} (expected \"mean\")")),
        }
    }
}

/// Compares `got` (already in the case's layout) with the case's tensor `name` under
/// `|got - want| <= atol + rtol * |want|`, recording the worst `|got - want|` and reporting
/// the worst element on failure. A single value matches shapes `[]` and `[1]` alike.
fn compare(case: &Case, name: &str, got: &Tensor, (atol, rtol): (f64, f64), worst: &mut Worst) -> Result<(), String> {
    let (want_shape, want_values) = case.f32(name)?;
    let scalar = got.elem_count() == 1 && want_values.len() == 1;
    if got.dims() != want_shape && !scalar {
        return Err(format!("`{name}`: shape mismatch: got {:?}, want {:?}", got.dims(), want_shape));
    }
    let got_values: Vec<f32> =
        got.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(err(name))?;
    let closeness = compare_close(&got_values, want_values, want_shape, atol, rtol);
    let entry = worst.entry(name.to_string()).or_insert(0.0);
    *entry = entry.max(closeness.max_abs);
    closeness.into_result().map(|_max_abs| ()).map_err(|e| format!("`{name}`: {e}"))
}

fn to_nhwc(t: &Tensor) -> Result<Tensor, String> {
    t.permute((0, 2, 3, 1)).map_err(err("NCHW -> NHWC"))
}

/// The gradient of `loss` for `var`, which must have reached it.
fn grad_of(grads: &candle_core::backprop::GradStore, var: &Var, name: &str) -> Result<Tensor, String> {
    grads.get(var.as_tensor()).cloned().ok_or_else(|| format!("no gradient reached `{name}`"))
}

/// `sum(y * dy)`, the scalar whose gradients the cases hold.
fn weighted_sum(y: &Tensor, dy: &Tensor) -> Result<Tensor, String> {
    (y * dy).and_then(|t| t.sum_all()).map_err(|e| format!("sum(y * dy): {e} (y {:?}, dy {:?})", y.dims(), dy.dims()))
}

fn backward(loss: &Tensor) -> Result<candle_core::backprop::GradStore, String> {
    loss.backward().map_err(err("backward"))
}

fn var(t: Tensor, name: &str) -> Result<Var, String> {
    Var::from_tensor(&t).map_err(err(name))
}

fn check_conv2d(case: &Case, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["x", "filter", "y", "dy", "dx", "dfilter"])?;
    let stride = case.pair_param("strides")?;
    let dilation = case.pair_param("dilations")?;
    let padding = case.padding_param()?;
    let x = var(case.nchw("x")?, "x")?;
    // HWIO -> OIHW.
    let filter =
        case.f32_tensor("filter")?.permute((3, 2, 0, 1)).and_then(|t| t.contiguous()).map_err(err("filter"))?;
    let filter = var(filter, "filter")?;
    let y = conv2d(&x, &filter, stride, dilation, padding).map_err(|e| e.to_string())?;
    let dy = case.nchw("dy")?;
    let grads = backward(&weighted_sum(&y, &dy)?)?;
    let dfilter = grad_of(&grads, &filter, "filter")?.permute((2, 3, 1, 0)).map_err(err("dfilter"))?;
    all(vec![
        compare(case, "y", &to_nhwc(&y)?, TOL_CONV, worst),
        compare(case, "dx", &to_nhwc(&grad_of(&grads, &x, "x")?)?, TOL_CONV, worst),
        compare(case, "dfilter", &dfilter, TOL_CONV, worst),
    ])
}

fn check_conv2d_transpose(case: &Case, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["x", "filter", "y", "dy", "dx", "dfilter"])?;
    let stride = case.pair_param("strides")?;
    let padding = case.padding_param()?;
    let out: Vec<usize> = case.sizes_param("output_shape").unwrap_or_default();
    let &[_, out_h, out_w, _] = out.as_slice() else {
        return Err(format!("params `output_shape` must be [N, H, W, C], got {out:?}"));
    };
    let x = var(case.nchw("x")?, "x")?;
    // TF's [h, w, out, in] -> candle's [in, out, h, w].
    let filter =
        case.f32_tensor("filter")?.permute((3, 2, 0, 1)).and_then(|t| t.contiguous()).map_err(err("filter"))?;
    let filter = var(filter, "filter")?;
    let y = conv2d_transpose(&x, &filter, [out_h, out_w], stride, padding).map_err(|e| e.to_string())?;
    let y_nhwc = to_nhwc(&y)?;
    if y_nhwc.dims() != out.as_slice() {
        return Err(format!("output shape {:?} differs from params `output_shape` {out:?}", y_nhwc.dims()));
    }
    let dy = case.nchw("dy")?;
    let grads = backward(&weighted_sum(&y, &dy)?)?;
    let dfilter = grad_of(&grads, &filter, "filter")?.permute((2, 3, 1, 0)).map_err(err("dfilter"))?;
    all(vec![
        compare(case, "y", &y_nhwc, TOL_CONV, worst),
        compare(case, "dx", &to_nhwc(&grad_of(&grads, &x, "x")?)?, TOL_CONV, worst),
        compare(case, "dfilter", &dfilter, TOL_CONV, worst),
    ])
}

fn check_pool(case: &Case, max: bool, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["x", "y", "dy", "dx"])?;
    let ksize = case.pair_param("ksize")?;
    let stride = case.pair_param("strides")?;
    let padding = case.padding_param()?;
    let x = var(case.nchw("x")?, "x")?;
    let y = if max { max_pool2d(&x, ksize, stride, padding) } else { avg_pool2d(&x, ksize, stride, padding) }
        .map_err(|e| e.to_string())?;
    let grads = backward(&weighted_sum(&y, &case.nchw("dy")?)?)?;
    all(vec![
        compare(case, "y", &to_nhwc(&y)?, TOL_POOL, worst),
        compare(case, "dx", &to_nhwc(&grad_of(&grads, &x, "x")?)?, TOL_POOL, worst),
    ])
}

/// TF1 (`tf1 == true`): the moving variance follows the unbiased batch variance, and the
/// case also holds `batch_mean` and `batch_variance_unbiased`. Keras: the biased one.
fn check_batch_norm(case: &Case, tf1: bool, worst: &mut Worst) -> Result<(), String> {
    let mut known = vec![
        "x",
        "gamma",
        "beta",
        "moving_mean",
        "moving_variance",
        "y_train",
        "new_moving_mean",
        "new_moving_variance",
        "dy",
        "dx",
        "dgamma",
        "dbeta",
        "y_eval",
    ];
    if tf1 {
        known.extend(["batch_mean", "batch_variance_unbiased"]);
    }
    case.only_tensors(&known)?;
    let epsilon = case.f64_param("epsilon")?;
    let momentum = case.f64_param("momentum")?;
    let x = var(case.nchw("x")?, "x")?;
    let gamma = var(case.f32_tensor("gamma")?, "gamma")?;
    let beta = var(case.f32_tensor("beta")?, "beta")?;
    let moving_mean = case.f32_tensor("moving_mean")?;
    let moving_var = case.f32_tensor("moving_variance")?;
    let ffe = |e: ferroflow_nn::NnError| e.to_string();

    let (y, mean, var_biased) = batch_norm_train(&x, &gamma, &beta, epsilon).map_err(ffe)?;
    let count = batch_norm_count(&x).map_err(ffe)?;
    let var_unbiased = unbiased_variance(&var_biased, count).map_err(ffe)?;
    let var_for_moving = if tf1 { &var_unbiased } else { &var_biased };
    let new_mean = moving_average_update(&moving_mean, &mean, momentum).map_err(ffe)?;
    let new_var = moving_average_update(&moving_var, var_for_moving, momentum).map_err(ffe)?;
    let y_eval = batch_norm_eval(&x, &gamma, &beta, &moving_mean, &moving_var, epsilon).map_err(ffe)?;
    let grads = backward(&weighted_sum(&y, &case.nchw("dy")?)?)?;

    let mut results = vec![
        compare(case, "y_train", &to_nhwc(&y)?, TOL_BATCH_NORM, worst),
        compare(case, "new_moving_mean", &new_mean, TOL_BATCH_NORM, worst),
        compare(case, "new_moving_variance", &new_var, TOL_BATCH_NORM, worst),
        compare(case, "y_eval", &to_nhwc(&y_eval)?, TOL_BATCH_NORM, worst),
        compare(case, "dx", &to_nhwc(&grad_of(&grads, &x, "x")?)?, TOL_BATCH_NORM, worst),
        compare(case, "dgamma", &grad_of(&grads, &gamma, "gamma")?, TOL_BATCH_NORM, worst),
        compare(case, "dbeta", &grad_of(&grads, &beta, "beta")?, TOL_BATCH_NORM, worst),
    ];
    if tf1 {
        results.push(compare(case, "batch_mean", &mean, TOL_BATCH_NORM, worst));
        results.push(compare(case, "batch_variance_unbiased", &var_unbiased, TOL_BATCH_NORM, worst));
    }
    all(results)
}

/// x (NHWC) flattened row-major, then `x @ kernel + bias`. ferroflow holds x as NCHW and
/// `flatten` reproduces TF's NHWC element order, so the TF kernel applies unchanged.
fn check_flatten_dense(case: &Case, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["x", "kernel", "bias", "y", "dy", "dx", "dkernel", "dbias"])?;
    let x = var(case.nchw("x")?, "x")?;
    let kernel = var(case.f32_tensor("kernel")?, "kernel")?;
    let bias = var(case.f32_tensor("bias")?, "bias")?;
    let flat = flatten(&x).map_err(|e| e.to_string())?;
    let y = dense(&flat, &kernel, Some(&bias)).map_err(|e| e.to_string())?;
    let grads = backward(&weighted_sum(&y, &case.f32_tensor("dy")?)?)?;
    all(vec![
        compare(case, "y", &y, TOL_DENSE, worst),
        compare(case, "dx", &to_nhwc(&grad_of(&grads, &x, "x")?)?, TOL_DENSE, worst),
        compare(case, "dkernel", &grad_of(&grads, &kernel, "kernel")?, TOL_DENSE, worst),
        compare(case, "dbias", &grad_of(&grads, &bias, "bias")?, TOL_DENSE, worst),
    ])
}

fn check_sparse_xent(case: &Case, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["logits", "labels", "loss_per_example", "loss_mean", "dlogits"])?;
    case.mean_reduction()?;
    let logits = var(case.f32_tensor("logits")?, "logits")?;
    let labels = case.i64_tensor("labels")?;
    let per = sparse_softmax_cross_entropy(&logits, &labels).map_err(|e| e.to_string())?;
    let mean = per.mean_all().map_err(err("mean"))?;
    let grads = backward(&mean)?;
    all(vec![
        compare(case, "loss_per_example", &per, TOL_XENT, worst),
        compare(case, "loss_mean", &mean, TOL_XENT, worst),
        compare(case, "dlogits", &grad_of(&grads, &logits, "logits")?, TOL_XENT, worst),
    ])
}

fn check_smoothed_xent(case: &Case, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["logits", "labels", "loss_mean", "dlogits"])?;
    case.mean_reduction()?;
    let smoothing = case.f64_param("label_smoothing")?;
    let logits = var(case.f32_tensor("logits")?, "logits")?;
    let labels = case.i64_tensor("labels")?;
    let classes = logits.dim(1).map_err(err("logits"))?;
    let targets = smoothed_one_hot(&labels, classes, smoothing).map_err(|e| e.to_string())?;
    let per = softmax_cross_entropy(&logits, &targets).map_err(|e| e.to_string())?;
    let mean = per.mean_all().map_err(err("mean"))?;
    let grads = backward(&mean)?;
    all(vec![
        compare(case, "loss_mean", &mean, TOL_XENT, worst),
        compare(case, "dlogits", &grad_of(&grads, &logits, "logits")?, TOL_XENT, worst),
    ])
}

/// The group a case's statistics are reported under: the op, with its padding where it has one.
fn group_of(case: &Case) -> String {
    match case.params.get("padding").and_then(Value::as_str) {
        Some(padding) => format!("{} {padding}", case.op),
        None => case.op.clone(),
    }
}

#[test]
fn golden_nn_ops() {
    run_nn_cases();
}

/// The same cases through the generic path (candle's tensor ops, what CUDA runs) on the
/// CPU, at the same tolerances; no fast kernel may run.
#[test]
fn golden_nn_ops_through_the_generic_path() {
    use ferroflow_nn::kernels::{Kernels, fast_kernel_runs, with_kernels};
    let before = fast_kernel_runs();
    with_kernels(Kernels::Generic, run_nn_cases);
    assert_eq!(fast_kernel_runs(), before, "a fast kernel ran on the generic path");
}

fn run_nn_cases() {
    ferroflow_golden::run(
        Harness::Nn,
        "no conv / pool / batch norm / dense / cross-entropy cases found",
        group_of,
        |case| {
            let mut worst = Worst::new();
            match case.op.as_str() {
                "conv2d" => check_conv2d(case, &mut worst),
                "conv2d_transpose" => check_conv2d_transpose(case, &mut worst),
                "max_pool" => check_pool(case, true, &mut worst),
                "avg_pool" => check_pool(case, false, &mut worst),
                "batch_norm_tf1" => check_batch_norm(case, true, &mut worst),
                "batch_norm_keras" => check_batch_norm(case, false, &mut worst),
                "flatten_dense" => check_flatten_dense(case, &mut worst),
                "sparse_softmax_cross_entropy" => check_sparse_xent(case, &mut worst),
                "softmax_cross_entropy_label_smoothing" => check_smoothed_xent(case, &mut worst),
                op => Err(format!("the nn harness has no check for op `{op}`")),
            }
            .map(|()| worst)
        },
    );
}
