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

use candle_core::Tensor;
use ferroflow_golden::{Case, Harness, all, compare_close, err};
use ferroflow_nn::VarStore;
use ferroflow_train::optimizer::{BETA1_POWER, BETA2_POWER, Optimizer, OptimizerConfig};
use ferroflow_train::schedule::Schedule;
use serde_json::Value;

/// README tolerances: `(atol, rtol)` under `|got - want| <= atol + rtol * |want|`.
const TOL_OPTIMIZER: (f64, f64) = (1e-6, 1e-5);
const TOL_SCHEDULE: (f64, f64) = (1e-9, 1e-6);

/// The variable name TF's generator uses; a gradient-descent case has no slot to read it from.
const DEFAULT_VAR_NAME: &str = "var";

/// What one check found: the worst `|got - want|` per tensor name.
type Worst = BTreeMap<String, f64>;

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
    let closeness = compare_close(got, want, shape, atol, rtol);
    let entry = worst.entry(key.to_string()).or_insert(0.0);
    *entry = entry.max(closeness.max_abs);
    closeness.into_result().map(|_max_abs| ()).map_err(|e| format!("`{label}`: {e}"))
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
        // Keras's AdamW keeps Adam's slots; its cases carry a weight decay.
        Some("Adam") if case.params.get("weight_decay").is_some() => "adamw",
        Some("Adam") => "adam",
        Some("RMSProp") => "rmsprop",
        Some("Adadelta") => "adadelta",
        Some("Ftrl") => "ftrl",
        Some(other) => return Err(format!("slot variables name an unknown TF optimizer `{other}`")),
    };
    let mut hyper = case.params.as_object().cloned().ok_or("params is not an object")?;
    for key in ["learning_rate", "tf_api", "tf_slot_variable_names", "keras_slot_variable_names"] {
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

    let store = VarStore::new(ferroflow_golden::case_device(), 0);
    let init = Tensor::from_vec(var0.to_vec(), var_shape, &ferroflow_golden::case_device()).map_err(err("var0"))?;
    store.root().get_variable_from(&var_name, &init, true).map_err(err("var0"))?;
    let mut opt = Optimizer::new(&config, &store).map_err(err("Optimizer::new"))?;

    // The optimizer's variables must be exactly TF's.
    let mut want_names: BTreeSet<String> = slots.values().cloned().collect();
    if matches!(config, OptimizerConfig::Adam { .. } | OptimizerConfig::AdamW { .. }) {
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
        let g = Tensor::from_vec(grads[s * n..(s + 1) * n].to_vec(), var_shape, &ferroflow_golden::case_device())
            .map_err(err("grads"))?;
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
    if let OptimizerConfig::Adam { beta1, beta2, .. } | OptimizerConfig::AdamW { beta1, beta2, .. } = config {
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

#[test]
fn golden_train_ops() {
    run_train_cases();
}

/// The same cases through the generic path (candle's tensor ops, what CUDA runs) on the
/// CPU, at the same tolerances; no fast kernel may run.
#[test]
fn golden_train_ops_through_the_generic_path() {
    use ferroflow_nn::kernels::{Kernels, fast_kernel_runs, with_kernels};
    let before = fast_kernel_runs();
    with_kernels(Kernels::Generic, run_train_cases);
    assert_eq!(fast_kernel_runs(), before, "a fast kernel ran on the generic path");
}

fn run_train_cases() {
    ferroflow_golden::run(Harness::Train, "no optimizer / lr_schedule cases found", group_of, |case| {
        let mut worst = Worst::new();
        match case.op.as_str() {
            "optimizer" => check_optimizer(case, &mut worst),
            "lr_schedule" => check_schedule(case, &mut worst),
            op => Err(format!("the train harness has no check for op `{op}`")),
        }
        .map(|()| worst)
    });
}
