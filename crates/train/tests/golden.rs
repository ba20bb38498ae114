//! Golden conformance for ferroflow-train: TF1's optimizers (every step of
//! each trajectory, and every slot under its TF name) and learning-rate
//! schedules (every global step) against reference values computed by
//! TensorFlow.
//!
//! Reads every case under `testdata/golden/cases/` (see
//! `testdata/golden/README.md` for the format and tolerances) and under each
//! directory in `FERROFLOW_GOLDEN_DIR` (`:`-separated, scanned recursively).
//! Ops of other crates are only counted here; a case with an op nobody knows
//! is a failure, never a silent skip, and so is a case tensor or parameter the
//! harness would not check. Every case is checked and every failure listed
//! before the test fails.
//!
//! An optimizer case names its optimizer only through its TF slot variables
//! (`var/Momentum`, `var/Adam_1`, …; none for gradient descent): the
//! optimizer is the one TF names so, its hyper-parameters are the case's
//! params (parsed strictly as an `OptimizerConfig`), and the set of variables
//! ferroflow creates must be exactly TF's slots (plus Adam's `beta1_power`
//! and `beta2_power`, checked against `beta^(steps + 1)`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use ferroflow_nn::VarStore;
use ferroflow_train::optimizer::{BETA1_POWER, BETA2_POWER, Optimizer, OptimizerConfig};
use ferroflow_train::schedule::Schedule;
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
const OTHER_CRATES_OPS: &[&str] = &[
    "conv2d",
    "conv2d_transpose",
    "max_pool",
    "avg_pool",
    "batch_norm_tf1",
    "batch_norm_keras",
    "flatten_dense",
    "sparse_softmax_cross_entropy",
    "softmax_cross_entropy_label_smoothing",
    "resize",
    "image_ops",
    "decode",
];

/// Ops this harness checks, in the order the summary lists them.
const TRAIN_OPS: &[&str] = &["optimizer", "lr_schedule"];

/// README tolerances: `(atol, rtol)` under `|got - want| <= atol + rtol * |want|`.
const TOL_OPTIMIZER: (f64, f64) = (1e-6, 1e-5);
const TOL_SCHEDULE: (f64, f64) = (1e-9, 1e-6);

/// The variable name TF's generator uses; a gradient-descent case has no slot to read it from.
const DEFAULT_VAR_NAME: &str = "var";

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

    /// A float32 tensor's shape and values.
    fn f32(&self, name: &str) -> Result<(&[usize], &[f32]), String> {
        let d = self.data(name)?;
        match &d.values {
            Values::F32(v) => Ok((&d.shape, v)),
            _ => Err(format!("tensor `{name}` is {}, expected float32", d.dtype())),
        }
    }

    /// An int64 tensor's shape and values.
    fn i64(&self, name: &str) -> Result<(&[usize], &[i64]), String> {
        let d = self.data(name)?;
        match &d.values {
            Values::I64(v) => Ok((&d.shape, v)),
            _ => Err(format!("tensor `{name}` is {}, expected int64", d.dtype())),
        }
    }

    fn f64_param(&self, key: &str) -> Result<f64, String> {
        self.params.get(key).and_then(Value::as_f64).ok_or_else(|| format!("params has no number `{key}`"))
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

/// Compares `got` with `want` (of shape `shape`) under `|got - want| <= atol + rtol * |want|`,
/// recording the worst `|got - want|` under `key` and reporting the worst element on failure.
fn compare(
    label: &str,
    key: &str,
    got: &[f64],
    want: &[f32],
    shape: &[usize],
    (atol, rtol): (f64, f64),
    worst: &mut Worst,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("`{label}`: {} values, want {} (shape {shape:?})", got.len(), want.len()));
    }
    let mut max_abs = 0.0f64;
    let mut bad = 0usize;
    let mut worst_bad: Option<(usize, f64)> = None; // (index, excess over the tolerance)
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let w = f64::from(w);
        let diff = (g - w).abs();
        let tol = atol + rtol * w.abs();
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
    let entry = worst.entry(key.to_string()).or_insert(0.0);
    *entry = entry.max(max_abs);
    match worst_bad {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "`{label}`: {bad} of {} elements outside atol {atol} rtol {rtol}; worst at index {i} {:?}: got {}, want {} (|diff| {:.3e})",
            want.len(),
            unravel(i, shape),
            got[i],
            want[i],
            (got[i] - f64::from(want[i])).abs()
        )),
    }
}

fn all(results: Vec<Result<(), String>>) -> Result<(), String> {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
}

/// `params.tf_slot_variable_names`: case tensor name → TF variable name.
fn slot_names(case: &Case) -> Result<BTreeMap<String, String>, String> {
    let map = case
        .params
        .get("tf_slot_variable_names")
        .and_then(Value::as_object)
        .ok_or("params has no object `tf_slot_variable_names`")?;
    map.iter()
        .map(|(k, v)| match v.as_str() {
            Some(name) => Ok((k.clone(), name.to_string())),
            None => Err(format!("tf_slot_variable_names.{k} is not a string")),
        })
        .collect()
}

/// The variable and the optimizer's TF name, from TF's slot names
/// (`<var>/<Name>` or `<var>/<Name>_<k>`); gradient descent has none.
fn var_and_optimizer(slots: &BTreeMap<String, String>) -> Result<(String, Option<String>), String> {
    let mut found: Option<(String, String)> = None;
    for full in slots.values() {
        let (var, last) = full.rsplit_once('/').ok_or_else(|| format!("slot variable `{full}` has no `/`"))?;
        let name = match last.rsplit_once('_') {
            Some((stem, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => stem,
            _ => last,
        };
        match &found {
            None => found = Some((var.to_string(), name.to_string())),
            Some((v, n)) if v == var && n == name => {}
            Some((v, n)) => return Err(format!("slot variables disagree: `{v}/{n}…` and `{full}`")),
        }
    }
    Ok(match found {
        Some((var, name)) => (var, Some(name)),
        None => (DEFAULT_VAR_NAME.to_string(), None),
    })
}

/// The case's optimizer: the kind TF's slot names imply, with the case's hyper-parameters.
fn optimizer_config(case: &Case, tf_name: Option<&str>) -> Result<OptimizerConfig, String> {
    let kind = match tf_name {
        None => "sgd",
        Some("Momentum") => "momentum",
        Some("Adagrad") => "adagrad",
        Some("Adam") => "adam",
        Some("RMSProp") => "rmsprop",
        Some("Adadelta") => "adadelta",
        Some("Ftrl") => "ftrl",
        Some(other) => return Err(format!("slot variables name an unknown TF optimizer `{other}`")),
    };
    let mut hyper = case.params.as_object().cloned().ok_or("params is not an object")?;
    for key in ["learning_rate", "tf_api", "tf_slot_variable_names"] {
        hyper.remove(key);
    }
    hyper.insert("kind".into(), Value::String(kind.into()));
    let config: OptimizerConfig = serde_json::from_value(Value::Object(hyper.clone()))
        .map_err(|e| format!("params {} are not a valid `{kind}` optimizer: {e}", Value::Object(hyper)))?;
    if tf_name.is_some_and(|n| n != config.tf_name()) {
        return Err(format!("the slots name `{tf_name:?}`, the config is `{}`", config.tf_name()));
    }
    Ok(config)
}

fn values_of(store: &VarStore, name: &str) -> Result<Vec<f64>, String> {
    let var = store.get(name).ok_or_else(|| format!("the store has no variable `{name}`"))?;
    let values: Vec<f32> = var.var.flatten_all().and_then(|t| t.to_vec1()).map_err(err(name))?;
    Ok(values.into_iter().map(f64::from).collect())
}

fn check_optimizer(case: &Case, worst: &mut Worst) -> Result<(), String> {
    let slots = slot_names(case)?;
    let mut known = vec!["var0", "grads", "var_after_each_step"];
    known.extend(slots.keys().map(String::as_str));
    case.only_tensors(&known)?;
    let (var_name, tf_name) = var_and_optimizer(&slots)?;
    let config = optimizer_config(case, tf_name.as_deref())?;
    let lr = case.f64_param("learning_rate")?;

    let (var_shape, var0) = case.f32("var0")?;
    let (grads_shape, grads) = case.f32("grads")?;
    let (after_shape, after) = case.f32("var_after_each_step")?;
    let n = var0.len();
    let steps = grads_shape.first().copied().unwrap_or(0);
    if grads_shape.get(1..) != Some(var_shape) || after_shape != grads_shape || steps == 0 {
        return Err(format!(
            "shapes: var0 {var_shape:?}, grads {grads_shape:?}, var_after_each_step {after_shape:?} (expected [steps, ...var0])"
        ));
    }

    let store = VarStore::new(Device::Cpu, 0);
    let init = Tensor::from_vec(var0.to_vec(), var_shape, &Device::Cpu).map_err(err("var0"))?;
    store.root().get_variable_from(&var_name, &init, true).map_err(err("var0"))?;
    let mut opt = Optimizer::new(&config, &store).map_err(err("Optimizer::new"))?;

    // The optimizer's variables must be exactly TF's.
    let mut want_names: BTreeSet<String> = slots.values().cloned().collect();
    if matches!(config, OptimizerConfig::Adam { .. }) {
        want_names.extend([BETA1_POWER.to_string(), BETA2_POWER.to_string()]);
    }
    let created: BTreeSet<String> = opt.variable_names().into_iter().collect();
    let in_store: BTreeSet<String> =
        store.global_variables().into_iter().map(|v| v.name).filter(|name| *name != var_name).collect();
    if created != want_names || in_store != want_names {
        return Err(format!(
            "variables: TF has {want_names:?}; the optimizer created {created:?}; the store holds {in_store:?} besides `{var_name}`"
        ));
    }
    for name in &want_names {
        if store.get(name).is_some_and(|v| v.trainable) {
            return Err(format!("slot `{name}` is trainable"));
        }
    }

    let mut results = Vec::new();
    for s in 0..steps {
        let g = Tensor::from_vec(grads[s * n..(s + 1) * n].to_vec(), var_shape, &Device::Cpu).map_err(err("grads"))?;
        opt.apply(&[(var_name.as_str(), g)], lr).map_err(err(&format!("step {s}")))?;
        let got = values_of(&store, &var_name)?;
        let label = format!("var_after_each_step[{s}]");
        results.push(compare(
            &label,
            "var_after_each_step",
            &got,
            &after[s * n..(s + 1) * n],
            var_shape,
            TOL_OPTIMIZER,
            worst,
        ));
    }
    for (key, tf_var) in &slots {
        let (shape, want) = case.f32(key)?;
        let got = values_of(&store, tf_var)?;
        results.push(compare(&format!("{key} ({tf_var})"), key, &got, want, shape, TOL_OPTIMIZER, worst));
    }
    if let OptimizerConfig::Adam { beta1, beta2, .. } = config {
        // TF starts them at beta and multiplies after every step: beta^(steps + 1).
        for (name, beta) in [(BETA1_POWER, beta1), (BETA2_POWER, beta2)] {
            let want = [beta.powi(steps as i32 + 1) as f32];
            results.push(compare(name, name, &values_of(&store, name)?, &want, &[], TOL_OPTIMIZER, worst));
        }
    }
    all(results)
}

fn check_schedule(case: &Case, worst: &mut Worst) -> Result<(), String> {
    case.only_tensors(&["global_step", "learning_rate"])?;
    let schedule: Schedule = serde_json::from_value(case.params.clone())
        .map_err(|e| format!("params {} are not a valid schedule: {e}", case.params))?;
    schedule.validate().map_err(err("Schedule::validate"))?;
    let (step_shape, steps) = case.i64("global_step")?;
    let (lr_shape, want) = case.f32("learning_rate")?;
    if step_shape != lr_shape {
        return Err(format!("shapes: global_step {step_shape:?}, learning_rate {lr_shape:?}"));
    }
    let got: Vec<f64> = steps.iter().map(|&s| schedule.learning_rate(s)).collect();
    compare("learning_rate", "learning_rate", &got, want, lr_shape, TOL_SCHEDULE, worst)
}

/// The group a case's statistics are reported under: the optimizer's TF name
/// (with Nesterov / centred) or the schedule's kind.
fn group_of(case: &Case) -> String {
    let param = |k: &str| case.params.get(k).and_then(Value::as_bool).unwrap_or(false);
    match case.op.as_str() {
        "optimizer" => {
            let name = slot_names(case)
                .ok()
                .and_then(|s| var_and_optimizer(&s).ok())
                .map(|(_, n)| n.unwrap_or_else(|| "GradientDescent".into()))
                .unwrap_or_else(|| "?".into());
            let extra = if param("use_nesterov") {
                " nesterov"
            } else if param("centered") {
                " centered"
            } else {
                ""
            };
            format!("optimizer {name}{extra}")
        }
        _ => match case.params.get("kind").and_then(Value::as_str) {
            Some(kind) => format!("{} {kind}", case.op),
            None => case.op.clone(),
        },
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
fn golden_train_ops() {
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

    let mut per_op: Vec<(&str, usize)> = TRAIN_OPS.iter().map(|&op| (op, 0)).collect();
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
            "optimizer" => check_optimizer(&case, &mut worst),
            "lr_schedule" => check_schedule(&case, &mut worst),
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
        "golden (train): checked {checked} cases ({breakdown}) from {} dir(s); {other_crates} cases belong to other crates",
        dirs.len()
    );
    for (group, stats) in &groups {
        let fail = if stats.failed > 0 { format!(", {} FAILED", stats.failed) } else { String::new() };
        let worst = stats.worst.iter().map(|(name, v)| format!("{name} {v:.3e}")).collect::<Vec<_>>().join(", ");
        report!("  {group}: {} passed{fail}; worst |got - want| of the passing: {worst}", stats.passed);
    }
    if checked == 0 {
        failures.push("no optimizer / lr_schedule cases found".into());
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n{}",
        failures.len(),
        failures.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    );
}
