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
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use ferroflow_nn::ops::{
    Padding, avg_pool2d, batch_norm_count, batch_norm_eval, batch_norm_train, conv2d, conv2d_transpose, dense, flatten,
    max_pool2d, moving_average_update, smoothed_one_hot, softmax_cross_entropy, sparse_softmax_cross_entropy,
    unbiased_variance,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Test output is captured unless a test fails, but the count of checked
/// cases should show on every run, so it is written to stderr directly.
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// Ops whose cases another crate's golden harness checks.
const OTHER_CRATES_OPS: &[&str] = &["resize", "image_ops", "decode", "optimizer", "lr_schedule"];

/// Ops this harness checks, in the order the summary lists them.
const NN_OPS: &[&str] = &[
    "conv2d",
    "conv2d_transpose",
    "max_pool",
    "avg_pool",
    "batch_norm_tf1",
    "batch_norm_keras",
    "flatten_dense",
    "sparse_softmax_cross_entropy",
    "softmax_cross_entropy_label_smoothing",
];

/// README tolerances: `(atol, rtol)` under `|got - want| <= atol + rtol * |want|`.
const TOL_CONV: (f64, f64) = (1e-4, 1e-4);
const TOL_POOL: (f64, f64) = (1e-5, 1e-5);
const TOL_BATCH_NORM: (f64, f64) = (1e-4, 1e-4);
const TOL_DENSE: (f64, f64) = (1e-4, 1e-4);
const TOL_XENT: (f64, f64) = (1e-5, 1e-5);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// A case file's tensors and metadata.
struct Case {
    op: String,
    params: Value,
    tensors: BTreeMap<String, Data>,
}

#[derive(Debug, Clone)]
struct Data {
    shape: Vec<usize>,
    values: Values,
}

#[derive(Debug, Clone)]
enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
    Other(String),
}

impl Data {
    fn dtype(&self) -> &str {
        match &self.values {
            Values::F32(_) => "float32",
            Values::I64(_) => "int64",
            Values::Other(name) => name,
        }
    }
}

fn load_case(path: &Path) -> Result<Case, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let op = meta.get("op").ok_or("metadata has no `op`")?.clone();
    let params = match meta.get("params") {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("metadata `params` is not JSON: {e}"))?,
        None => Value::Object(Default::default()),
    };
    if !meta.contains_key("tf_version") {
        return Err("metadata has no `tf_version`".into());
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let values = match view.dtype() {
            Dtype::F32 => {
                Values::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
            Dtype::I64 => Values::I64(
                raw.chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ),
            other => Values::Other(format!("{other:?}")),
        };
        tensors.insert(name, Data { shape: view.shape().to_vec(), values });
    }
    Ok(Case { op, params, tensors })
}

/// What one check found: the worst `|got - want|` per tensor name.
type Worst = BTreeMap<String, f64>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Case {
    fn data(&self, name: &str) -> Result<&Data, String> {
        self.tensors.get(name).ok_or_else(|| format!("case has no tensor `{name}`"))
    }

    /// A float32 tensor of the case, in its stored (TF) layout.
    fn f32(&self, name: &str) -> Result<Tensor, String> {
        let d = self.data(name)?;
        match &d.values {
            Values::F32(v) => Tensor::from_vec(v.clone(), d.shape.as_slice(), &Device::Cpu).map_err(err(name)),
            _ => Err(format!("tensor `{name}` is {}, expected float32", d.dtype())),
        }
    }

    /// An int64 tensor of the case.
    fn i64(&self, name: &str) -> Result<Tensor, String> {
        let d = self.data(name)?;
        match &d.values {
            Values::I64(v) => Tensor::from_vec(v.clone(), d.shape.as_slice(), &Device::Cpu).map_err(err(name)),
            _ => Err(format!("tensor `{name}` is {}, expected int64", d.dtype())),
        }
    }

    /// An NHWC float32 tensor of the case as NCHW.
    fn nchw(&self, name: &str) -> Result<Tensor, String> {
        let t = self.f32(name)?;
        if t.rank() != 4 {
            return Err(format!("tensor `{name}` has shape {:?}, expected NHWC (rank 4)", t.dims()));
        }
        t.permute((0, 3, 1, 2)).and_then(|t| t.contiguous()).map_err(err(name))
    }

    fn f64_param(&self, key: &str) -> Result<f64, String> {
        self.params.get(key).and_then(Value::as_f64).ok_or_else(|| format!("params has no number `{key}`"))
    }

    fn pair_param(&self, key: &str) -> Result<[usize; 2], String> {
        let dims: Option<Vec<usize>> = self
            .params
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_u64().map(|n| n as usize)).collect());
        match dims.as_deref() {
            Some(&[a, b]) => Ok([a, b]),
            _ => Err(format!("params has no `{key}` [h, w]")),
        }
    }

    fn padding_param(&self) -> Result<Padding, String> {
        let text = self.params.get("padding").and_then(Value::as_str).ok_or("params has no string `padding`")?;
        match text {
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

    /// Fails on tensors the op's check would not look at, so nothing a case holds is
    /// silently left unchecked.
    fn only_tensors(&self, known: &[&str]) -> Result<(), String> {
        let unknown: Vec<&str> = self.tensors.keys().map(String::as_str).filter(|k| !known.contains(k)).collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("tensor(s) {unknown:?} that the harness does not check (expected only {known:?})"))
        }
    }
}

fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut coords = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            coords[k] = index % d;
            index /= d;
        }
    }
    coords
}

/// Compares `got` (already in the case's layout) with the case's tensor `name` under
/// `|got - want| <= atol + rtol * |want|`, recording the worst `|got - want|` and reporting
/// the worst element on failure. A single value matches shapes `[]` and `[1]` alike.
fn compare(case: &Case, name: &str, got: &Tensor, (atol, rtol): (f64, f64), worst: &mut Worst) -> Result<(), String> {
    let want = case.data(name)?;
    let Values::F32(want_values) = &want.values else {
        return Err(format!("tensor `{name}` is {}, expected float32", want.dtype()));
    };
    let scalar = got.elem_count() == 1 && want_values.len() == 1;
    if got.dims() != want.shape.as_slice() && !scalar {
        return Err(format!("`{name}`: shape mismatch: got {:?}, want {:?}", got.dims(), want.shape));
    }
    let got_values: Vec<f32> =
        got.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).map_err(err(name))?;
    let mut max_abs = 0.0f64;
    let mut bad = 0usize;
    let mut worst_bad: Option<(usize, f64)> = None; // (index, excess over the tolerance)
    for (i, (&g, &w)) in got_values.iter().zip(want_values).enumerate() {
        let diff = (f64::from(g) - f64::from(w)).abs();
        let tol = atol + rtol * f64::from(w).abs();
        let ok = diff <= tol || (g.is_nan() && w.is_nan()) || g == w;
        if !diff.is_nan() {
            max_abs = max_abs.max(diff);
        } else if !ok {
            max_abs = f64::INFINITY;
        }
        if !ok {
            bad += 1;
            let excess = if diff.is_nan() { f64::INFINITY } else { diff - tol };
            if worst_bad.is_none_or(|(_, e)| excess > e) {
                worst_bad = Some((i, excess));
            }
        }
    }
    let entry = worst.entry(name.to_string()).or_insert(0.0);
    *entry = entry.max(max_abs);
    match worst_bad {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "`{name}`: {bad} of {} elements outside atol {atol} rtol {rtol}; worst at index {i} {:?}: got {}, want {} (|diff| {:.3e})",
            want_values.len(),
            unravel(i, &want.shape),
            got_values[i],
            want_values[i],
            (f64::from(got_values[i]) - f64::from(want_values[i])).abs()
        )),
    }
}

/// Runs every comparison, collecting all failures of a case into one message.
fn all(results: Vec<Result<(), String>>) -> Result<(), String> {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
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
    let filter = case.f32("filter")?.permute((3, 2, 0, 1)).and_then(|t| t.contiguous()).map_err(err("filter"))?;
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
    let out: Vec<usize> = case
        .params
        .get("output_shape")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_u64().map(|n| n as usize)).collect())
        .unwrap_or_default();
    let &[_, out_h, out_w, _] = out.as_slice() else {
        return Err(format!("params `output_shape` must be [N, H, W, C], got {out:?}"));
    };
    let x = var(case.nchw("x")?, "x")?;
    // TF's [h, w, out, in] -> candle's [in, out, h, w].
    let filter = case.f32("filter")?.permute((3, 2, 0, 1)).and_then(|t| t.contiguous()).map_err(err("filter"))?;
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
    let gamma = var(case.f32("gamma")?, "gamma")?;
    let beta = var(case.f32("beta")?, "beta")?;
    let moving_mean = case.f32("moving_mean")?;
    let moving_var = case.f32("moving_variance")?;
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
    let kernel = var(case.f32("kernel")?, "kernel")?;
    let bias = var(case.f32("bias")?, "bias")?;
    let flat = flatten(&x).map_err(|e| e.to_string())?;
    let y = dense(&flat, &kernel, Some(&bias)).map_err(|e| e.to_string())?;
    let grads = backward(&weighted_sum(&y, &case.f32("dy")?)?)?;
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
    let logits = var(case.f32("logits")?, "logits")?;
    let labels = case.i64("labels")?;
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
    let logits = var(case.f32("logits")?, "logits")?;
    let labels = case.i64("labels")?;
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

/// Every `*.safetensors` file under `dir`, recursively.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: cannot list: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every file `manifest.json` lists must exist, so a lost case file cannot
/// silently shrink the suite.
fn check_manifest(cases_dir: &Path, failures: &mut Vec<String>) {
    let path = cases_dir.join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let manifest: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("{}: not JSON: {e}", path.display()));
            return;
        }
    };
    for entry in manifest.get("cases").and_then(Value::as_array).into_iter().flatten() {
        match entry.get("file").and_then(Value::as_str) {
            Some(file) if !cases_dir.join(file).is_file() => {
                failures.push(format!("{}: listed in manifest.json but missing", cases_dir.join(file).display()));
            }
            Some(_) => {}
            None => failures.push(format!("{}: a case entry has no `file`", path.display())),
        }
    }
}

/// Per group: passed, failed, and the worst `|got - want|` per tensor among the passing cases.
#[derive(Default)]
struct GroupStats {
    passed: usize,
    failed: usize,
    worst: Worst,
}

#[test]
fn golden_nn_ops() {
    let root = repo_root();
    let mut dirs = vec![root.join("testdata").join("golden").join("cases")];
    if let Ok(extra) = std::env::var("FERROFLOW_GOLDEN_DIR") {
        dirs.extend(extra.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }

    let mut failures = Vec::new();
    let mut files = Vec::new();
    for dir in &dirs {
        if !dir.is_dir() {
            failures.push(format!("{}: golden directory does not exist", dir.display()));
            continue;
        }
        if let Err(e) = collect(dir, &mut files) {
            failures.push(e);
        }
    }
    files.sort();
    files.dedup();
    check_manifest(&dirs[0], &mut failures);

    let mut per_op: Vec<(&str, usize)> = NN_OPS.iter().map(|&op| (op, 0)).collect();
    let mut other_crates = 0usize;
    let mut groups: BTreeMap<String, GroupStats> = BTreeMap::new();
    for file in &files {
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        let case = match load_case(file) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let mut worst = Worst::new();
        let result = match case.op.as_str() {
            "conv2d" => check_conv2d(&case, &mut worst),
            "conv2d_transpose" => check_conv2d_transpose(&case, &mut worst),
            "max_pool" => check_pool(&case, true, &mut worst),
            "avg_pool" => check_pool(&case, false, &mut worst),
            "batch_norm_tf1" => check_batch_norm(&case, true, &mut worst),
            "batch_norm_keras" => check_batch_norm(&case, false, &mut worst),
            "flatten_dense" => check_flatten_dense(&case, &mut worst),
            "sparse_softmax_cross_entropy" => check_sparse_xent(&case, &mut worst),
            "softmax_cross_entropy_label_smoothing" => check_smoothed_xent(&case, &mut worst),
            op if OTHER_CRATES_OPS.contains(&op) => {
                other_crates += 1;
                continue;
            }
            op => {
                failures.push(format!("{shown}: unknown op `{op}` (no harness checks it)"));
                continue;
            }
        };
        if let Some((_, n)) = per_op.iter_mut().find(|(op, _)| *op == case.op) {
            *n += 1;
        }
        let group = groups.entry(group_of(&case)).or_default();
        match result {
            Ok(()) => {
                group.passed += 1;
                for (name, max_abs) in worst {
                    let entry = group.worst.entry(name).or_insert(0.0);
                    *entry = entry.max(max_abs);
                }
            }
            Err(e) => {
                group.failed += 1;
                failures.push(format!("{shown}: {e}"));
            }
        }
    }

    let checked: usize = per_op.iter().map(|(_, n)| n).sum();
    let breakdown = per_op.iter().map(|(op, n)| format!("{n} {op}")).collect::<Vec<_>>().join(", ");
    report!(
        "golden (nn): checked {checked} cases ({breakdown}) from {} dir(s); {other_crates} cases belong to other crates",
        dirs.len()
    );
    for (group, stats) in &groups {
        let fail = if stats.failed > 0 { format!(", {} FAILED", stats.failed) } else { String::new() };
        let worst = stats.worst.iter().map(|(name, v)| format!("{name} {v:.3e}")).collect::<Vec<_>>().join(", ");
        report!("  {group}: {} passed{fail}; worst |got - want| of the passing: {worst}", stats.passed);
    }
    if checked == 0 {
        failures.push("no conv / pool / batch norm / dense / cross-entropy cases found".into());
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n{}",
        failures.len(),
        failures.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    );
}
