//! Putting a checkpoint's values back into a variable store: exactly, for a
//! resume, or selectively, for a warm start / fine-tune (TF-slim's
//! `checkpoint_exclude_scopes`, `trainable_scopes`, `ignore_missing_vars`).

use std::collections::BTreeSet;

use ferroflow_nn::{GLOBAL_STEP, VarStore, Variable};

use crate::checkpoint::file::Checkpoint;
use crate::error::{Result, TrainError};

/// True when the variable `name` is in `scope`: the scope itself or under
/// it (`logits` covers `logits/weights` but not `logits2/weights`).
///
/// ```
/// use ferroflow_train::checkpoint::in_scope;
/// assert!(in_scope("logits/weights", "logits"));
/// assert!(in_scope("block1/conv1/weights", "block1/conv1/"));
/// assert!(!in_scope("logits2/weights", "logits"));
/// ```
pub fn in_scope(name: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    !scope.is_empty() && (name == scope || name.strip_prefix(scope).is_some_and(|rest| rest.starts_with('/')))
}

fn in_any(name: &str, scopes: &[String]) -> bool {
    scopes.iter().any(|s| in_scope(name, s))
}

/// Checks that each scope names at least one of `names` (a misspelt scope
/// would silently do nothing); the error lists the top-level scopes.
pub fn check_scopes(key: &str, scopes: &[String], names: &[String]) -> Result<()> {
    for s in scopes {
        if !names.iter().any(|n| in_scope(n, s)) {
            let tops: BTreeSet<&str> = names.iter().map(|n| n.split('/').next().unwrap_or(n)).collect();
            return Err(TrainError::config(
                key,
                format!(
                    "scope {s:?} matches no variable of the model; its top-level scopes are {}",
                    tops.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Freezes every trainable variable outside `scopes` (TF-slim's
/// `trainable_scopes`; empty: everything trains). Returns the frozen names.
pub fn apply_trainable_scopes(store: &VarStore, scopes: &[String]) -> Result<Vec<String>> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    let trainable: Vec<String> = store.trainable_variables().into_iter().map(|v| v.name).collect();
    check_scopes("warm_start.trainable_scopes", scopes, &trainable)?;
    let mut frozen = Vec::new();
    for name in trainable {
        if !in_any(&name, scopes) {
            store.set_trainable(&name, false)?;
            frozen.push(name);
        }
    }
    Ok(frozen)
}

/// Restores every variable of `store` and `global_step` from `checkpoint`
/// for a resume: the checkpoint must hold exactly the store's variables
/// with the same shapes, otherwise nothing is changed and the error lists
/// every difference.
pub fn restore_exact(store: &VarStore, checkpoint: &Checkpoint, path: &str) -> Result<()> {
    let vars = store.global_variables();
    let mut problems = Vec::new();
    let missing: Vec<&str> =
        vars.iter().filter(|v| !checkpoint.tensors.contains_key(&v.name)).map(|v| v.name.as_str()).collect();
    if !missing.is_empty() {
        problems.push(format!("the checkpoint lacks {}", list(&missing)));
    }
    let extra: Vec<&str> = checkpoint
        .tensors
        .keys()
        .filter(|k| k.as_str() != GLOBAL_STEP && store.get(k).is_none())
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        problems.push(format!("the model lacks {}", list(&extra)));
    }
    for v in &vars {
        if let Some(t) = checkpoint.tensors.get(&v.name)
            && t.shape != v.var.dims()
        {
            problems.push(format!("{} is {:?} in the checkpoint but {:?} in the model", v.name, t.shape, v.var.dims()));
        }
    }
    if !problems.is_empty() {
        return Err(TrainError::Checkpoint {
            path: path.to_string(),
            reason: format!(
                "cannot resume: the model or optimizer differs from the checkpoint's: {}. Train into a new \
                 --train-dir, or fine-tune from this checkpoint with --checkpoint-path",
                problems.join("; ")
            ),
        });
    }
    for v in &vars {
        assign(store, v, checkpoint, path)?;
    }
    store.set_global_step(checkpoint.meta.global_step);
    Ok(())
}

fn list(names: &[&str]) -> String {
    const SHOWN: usize = 12;
    let mut s = names.iter().take(SHOWN).copied().collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

fn assign(store: &VarStore, v: &Variable, checkpoint: &Checkpoint, path: &str) -> Result<()> {
    let Some(t) = checkpoint.tensors.get(&v.name) else { return Ok(()) };
    let value = t.to_tensor(store.device()).map_err(TrainError::candle(format!("{path}: {}", v.name)))?;
    store.assign(&v.name, &value)?;
    Ok(())
}

/// What a warm start restored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WarmStartReport {
    /// Variables given the checkpoint's values.
    pub restored: Vec<String>,
    /// Variables left at their initial values because an exclude scope covers them.
    pub excluded: Vec<String>,
    /// Variables the checkpoint lacks, skipped by `ignore_missing_vars`.
    pub missing: Vec<String>,
}

/// Warm start (TF-slim's `_get_init_fn`): gives `variables` (the model's,
/// before optimizer slots exist) the checkpoint's values, except those in
/// `exclude_scopes`. Every shape must match (the error names the variable
/// and both shapes); a variable the checkpoint lacks is an error listing
/// all of them unless `ignore_missing_vars`. `global_step` is not restored:
/// fine-tuning starts at step 0.
pub fn warm_start(
    store: &VarStore,
    variables: &[Variable],
    checkpoint: &Checkpoint,
    path: &str,
    exclude_scopes: &[String],
    ignore_missing_vars: bool,
) -> Result<WarmStartReport> {
    // A scope that only the checkpoint has is fine to exclude (TF-slim's own command for
    // inception_v3 excludes `InceptionV3/AuxLogits`, a head ferroflow does not build).
    let mut names: Vec<String> = variables.iter().map(|v| v.name.clone()).collect();
    names.extend(checkpoint.tensors.keys().cloned());
    check_scopes("warm_start.exclude_scopes", exclude_scopes, &names)?;
    let mut report = WarmStartReport::default();
    let mut to_restore = Vec::new();
    for v in variables {
        if in_any(&v.name, exclude_scopes) {
            report.excluded.push(v.name.clone());
            continue;
        }
        match checkpoint.tensors.get(&v.name) {
            None => report.missing.push(v.name.clone()),
            Some(t) if t.shape != v.var.dims() => {
                return Err(TrainError::Checkpoint {
                    path: path.to_string(),
                    reason: format!(
                        "variable {} has shape {:?} in the checkpoint but {:?} in the model (exclude its scope \
                         with --exclude-scopes to train it from scratch; for a logits layer, model.num_classes \
                         can keep the checkpoint's classes)",
                        v.name,
                        t.shape,
                        v.var.dims()
                    ),
                });
            }
            Some(_) => to_restore.push(v),
        }
    }
    if !report.missing.is_empty() && !ignore_missing_vars {
        let missing: Vec<&str> = report.missing.iter().map(String::as_str).collect();
        return Err(TrainError::Checkpoint {
            path: path.to_string(),
            reason: format!(
                "the checkpoint lacks {} variable(s) of the model: {} (use --ignore-missing-vars to keep their \
                 initial values, or --exclude-scopes)",
                missing.len(),
                list(&missing)
            ),
        });
    }
    for v in to_restore {
        assign(store, v, checkpoint, path)?;
        report.restored.push(v.name.clone());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::file::CheckpointMeta;
    use candle_core::Device;
    use ferroflow_nn::Init;

    fn store(classes: usize, seed: u64) -> VarStore {
        let s = VarStore::new(Device::Cpu, seed);
        s.root().sub("conv1").get_variable("weights", &[4, 1, 3, 3], Init::GlorotUniform, true).unwrap();
        s.root().sub("logits").get_variable("weights", &[4, classes], Init::GlorotUniform, true).unwrap();
        s
    }

    fn values(s: &VarStore, name: &str) -> Vec<f32> {
        s.get(name).unwrap().var.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn exact_restore_and_its_errors() {
        let a = store(10, 1);
        a.set_global_step(7);
        let ck = Checkpoint::capture(&a.global_variables(), CheckpointMeta { global_step: 7, ..Default::default() })
            .unwrap();
        let b = store(10, 2);
        restore_exact(&b, &ck, "ck").unwrap();
        assert_eq!(values(&b, "conv1/weights"), values(&a, "conv1/weights"));
        assert_eq!(b.global_step(), 7);
        let c = store(5, 2);
        c.root().get_variable("extra", &[1], Init::Zeros, false).unwrap();
        let e = restore_exact(&c, &ck, "ck").unwrap_err().to_string();
        assert!(e.contains("cannot resume") && e.contains("lacks extra") && e.contains("[4, 10]"), "{e}");
    }

    #[test]
    fn warm_start_excludes_and_checks() {
        let a = store(10, 1);
        let ck = Checkpoint::capture(&a.global_variables(), CheckpointMeta::default()).unwrap();
        let b = store(5, 2);
        let before = values(&b, "logits/weights");
        let e = warm_start(&b, &b.global_variables(), &ck, "ck", &[], false).unwrap_err().to_string();
        assert!(e.contains("logits/weights") && e.contains("[4, 10]") && e.contains("[4, 5]"), "{e}");
        let r = warm_start(&b, &b.global_variables(), &ck, "ck", &["logits".into()], false).unwrap();
        assert_eq!((r.restored, r.excluded), (vec!["conv1/weights".to_string()], vec!["logits/weights".to_string()]));
        assert_eq!(values(&b, "conv1/weights"), values(&a, "conv1/weights"));
        assert_eq!(values(&b, "logits/weights"), before);
        let e = warm_start(&b, &b.global_variables(), &ck, "ck", &["logit".into()], false).unwrap_err().to_string();
        assert!(e.contains("\"logit\" matches no variable") && e.contains("conv1, global_step, logits"), "{e}");
        // A scope only the checkpoint has (TF-slim's AuxLogits, here global_step) may be excluded.
        warm_start(&b, &b.global_variables(), &ck, "ck", &["logits".into(), "global_step".into()], false).unwrap();
    }

    #[test]
    fn missing_variables_are_listed_or_ignored() {
        let a = VarStore::new(Device::Cpu, 1);
        a.root().sub("conv1").get_variable("weights", &[4, 1, 3, 3], Init::GlorotUniform, true).unwrap();
        let ck = Checkpoint::capture(&a.global_variables(), CheckpointMeta::default()).unwrap();
        let b = store(10, 2);
        let e = warm_start(&b, &b.global_variables(), &ck, "ck", &[], false).unwrap_err().to_string();
        assert!(e.contains("lacks 1 variable(s)") && e.contains("logits/weights"), "{e}");
        let r = warm_start(&b, &b.global_variables(), &ck, "ck", &[], true).unwrap();
        assert_eq!(r.missing, ["logits/weights"]);
    }

    #[test]
    fn trainable_scopes_freeze_the_rest() {
        let s = store(10, 1);
        let frozen = apply_trainable_scopes(&s, &["logits".into()]).unwrap();
        assert_eq!(frozen, ["conv1/weights"]);
        assert_eq!(s.trainable_variables().len(), 1);
        assert!(apply_trainable_scopes(&s, &["nope".into()]).is_err());
    }
}
