//! The shared machinery of ferroflow's golden-conformance harnesses (the `golden` tests
//! of ferroflow-data, ferroflow-nn and ferroflow-train): reading case files, finding them,
//! knowing which crate checks which op, comparing results with reference values, and
//! collecting and reporting failures.
//!
//! Cases live under `testdata/golden/cases/` (see `testdata/golden/README.md` for the
//! format and tolerances) and under each directory in `FERROFLOW_GOLDEN_DIR`
//! (`:`-separated, scanned recursively). Each harness checks its own ops and only counts
//! the other crates'; a case with an op no crate knows is a failure, never a silent skip.
//! Every case is checked and every failure listed before the test fails: see [`run`].

mod case;
mod compare;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use case::{Case, TensorData, Values};
pub use compare::{Closeness, Mismatch, compare_close, unravel};

/// The environment variable naming more case directories (`:`-separated).
pub const GOLDEN_DIR_ENV: &str = "FERROFLOW_GOLDEN_DIR";

/// A crate whose golden harness checks some of the ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// ferroflow-data: resizing, `tf.image` ops, decoding.
    Data,
    /// ferroflow-nn: convolutions, pooling, batch norm, dense, cross-entropy.
    Nn,
    /// ferroflow-train: optimizers and learning-rate schedules.
    Train,
}

impl Harness {
    /// The name the summary line shows (`golden (nn): …`).
    pub fn name(self) -> &'static str {
        match self {
            Harness::Data => "data",
            Harness::Nn => "nn",
            Harness::Train => "train",
        }
    }

    /// The ops this harness checks, in the order its summary lists them.
    pub fn ops(self) -> Vec<&'static str> {
        OPS.iter().filter(|(_, h)| *h == self).map(|(op, _)| *op).collect()
    }
}

/// Every op a case may name, with the harness that checks it.
pub const OPS: &[(&str, Harness)] = &[
    ("resize", Harness::Data),
    ("image_ops", Harness::Data),
    ("decode", Harness::Data),
    ("conv2d", Harness::Nn),
    ("conv2d_transpose", Harness::Nn),
    ("max_pool", Harness::Nn),
    ("avg_pool", Harness::Nn),
    ("batch_norm_tf1", Harness::Nn),
    ("batch_norm_keras", Harness::Nn),
    ("flatten_dense", Harness::Nn),
    ("sparse_softmax_cross_entropy", Harness::Nn),
    ("softmax_cross_entropy_label_smoothing", Harness::Nn),
    ("optimizer", Harness::Train),
    ("lr_schedule", Harness::Train),
];

/// The harness that checks `op`, if any does.
pub fn owner(op: &str) -> Option<Harness> {
    OPS.iter().find(|(name, _)| *name == op).map(|&(_, h)| h)
}

/// The repository's root directory.
///
/// A test binary carried to another machine (`scripts/gpu-check.sh`) finds the
/// checkout through `FERROFLOW_REPO_ROOT` instead of the path it was built at.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("FERROFLOW_REPO_ROOT") {
        Some(root) if !root.is_empty() => PathBuf::from(root),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(".."),
    }
}

/// The directories to read cases from: `testdata/golden/cases/` first, then each one
/// in `FERROFLOW_GOLDEN_DIR`.
pub fn golden_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![repo_root().join("testdata").join("golden").join("cases")];
    if let Ok(extra) = std::env::var(GOLDEN_DIR_ENV) {
        dirs.extend(extra.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }
    dirs
}

/// Every `*.safetensors` file under `dirs`, recursively, sorted and without repeats. A
/// directory that does not exist or cannot be listed is a failure.
pub fn discover(dirs: &[PathBuf], failures: &mut Failures) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
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
    files
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

/// Every file `manifest.json` in `cases_dir` lists must exist, so a lost case file cannot
/// silently shrink the suite. A directory without a manifest passes.
pub fn check_manifest(cases_dir: &Path, failures: &mut Failures) {
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

/// The failures of a run, kept in the order found; the test fails at the end if any.
#[derive(Debug, Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Records a failure.
    pub fn push(&mut self, failure: impl Into<String>) {
        self.0.push(failure.into());
    }

    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The failures so far.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Panics, listing every failure, if there are any.
    #[track_caller]
    pub fn assert_none(&self) {
        assert!(
            self.0.is_empty(),
            "{} golden failure(s):\n{}",
            self.0.len(),
            self.0.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
        );
    }
}

/// Runs every comparison of a case, collecting all of its failures into one message.
pub fn all(results: Vec<Result<(), String>>) -> Result<(), String> {
    let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
}

/// A `map_err` adapter that prefixes an error with `what`: `.map_err(err("filter"))`.
pub fn err<E: fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Writes a line to stderr directly: test output is captured unless a test fails, but the
/// count of checked cases should show on every run.
pub fn report(line: impl fmt::Display) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The worst `|got - want|` of a group's passing cases, as its summary line shows it.
pub trait WorstDiff: Default {
    /// Folds in one more passing case's worst differences.
    fn fold_in(&mut self, case: Self);
    /// The summary's text for it.
    fn show(&self) -> String;
}

/// One number per case.
impl WorstDiff for f64 {
    fn fold_in(&mut self, case: f64) {
        *self = self.max(case);
    }

    fn show(&self) -> String {
        format!("{self:.3e}")
    }
}

/// One number per tensor name.
impl WorstDiff for BTreeMap<String, f64> {
    fn fold_in(&mut self, case: Self) {
        for (name, max_abs) in case {
            let entry = self.entry(name).or_insert(0.0);
            *entry = entry.max(max_abs);
        }
    }

    fn show(&self) -> String {
        self.iter().map(|(name, v)| format!("{name} {v:.3e}")).collect::<Vec<_>>().join(", ")
    }
}

/// Per group: passed, failed, and the worst `|got - want|` among the passing cases.
#[derive(Debug, Default)]
pub struct GroupStats<W> {
    /// Cases that passed.
    pub passed: usize,
    /// Cases that failed.
    pub failed: usize,
    /// The worst differences of the passing cases.
    pub worst: W,
}

/// What a harness found, for [`summarize`].
#[derive(Debug)]
pub struct Summary<W> {
    /// The harness.
    pub harness: Harness,
    /// How many cases of each of its ops it checked, in its order.
    pub per_op: Vec<(&'static str, usize)>,
    /// How many directories it read.
    pub dirs: usize,
    /// How many cases belong to other crates' harnesses.
    pub other_crates: usize,
    /// Statistics per group, by group name.
    pub groups: BTreeMap<String, GroupStats<W>>,
}

impl<W> Summary<W> {
    /// How many cases the harness checked.
    pub fn checked(&self) -> usize {
        self.per_op.iter().map(|(_, n)| n).sum()
    }
}

/// Reports the summary line and one line per group, to stderr directly.
pub fn summarize<W: WorstDiff>(summary: &Summary<W>) {
    let breakdown = summary.per_op.iter().map(|(op, n)| format!("{n} {op}")).collect::<Vec<_>>().join(", ");
    report(format_args!(
        "golden ({}): checked {} cases ({breakdown}) from {} dir(s); {} cases belong to other crates",
        summary.harness.name(),
        summary.checked(),
        summary.dirs,
        summary.other_crates
    ));
    for (group, stats) in &summary.groups {
        let fail = if stats.failed > 0 { format!(", {} FAILED", stats.failed) } else { String::new() };
        report(format_args!(
            "  {group}: {} passed{fail}; worst |got - want| of the passing: {}",
            stats.passed,
            stats.worst.show()
        ));
    }
}

/// Runs a harness: reads every case of every golden directory (see [`golden_dirs`]),
/// checks the manifest, checks each case of `harness`'s ops with `check` and reports it
/// under the group `group_of` names, counts the other crates' cases, fails on an op no
/// crate knows, reports the summary, and panics listing every failure, if any (or when no
/// case of `harness` was found, with `none_found`).
#[track_caller]
pub fn run<W: WorstDiff>(
    harness: Harness,
    none_found: &str,
    group_of: impl Fn(&Case) -> String,
    mut check: impl FnMut(&Case) -> Result<W, String>,
) {
    let root = repo_root();
    let dirs = golden_dirs();
    let mut failures = Failures::default();
    let files = discover(&dirs, &mut failures);
    check_manifest(&dirs[0], &mut failures);

    let mut summary: Summary<W> = Summary {
        harness,
        per_op: harness.ops().into_iter().map(|op| (op, 0)).collect(),
        dirs: dirs.len(),
        other_crates: 0,
        groups: BTreeMap::new(),
    };
    for file in &files {
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        let case = match Case::load(file) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        match owner(&case.op) {
            Some(h) if h == harness => {}
            Some(_) => {
                summary.other_crates += 1;
                continue;
            }
            None => {
                failures.push(format!("{shown}: unknown op `{}` (no harness checks it)", case.op));
                continue;
            }
        }
        let result = check(&case);
        if let Some((_, n)) = summary.per_op.iter_mut().find(|(op, _)| *op == case.op) {
            *n += 1;
        }
        let group = summary.groups.entry(group_of(&case)).or_default();
        match result {
            Ok(worst) => {
                group.passed += 1;
                group.worst.fold_in(worst);
            }
            Err(e) => {
                group.failed += 1;
                failures.push(format!("{shown}: {e}"));
            }
        }
    }

    summarize(&summary);
    if summary.checked() == 0 {
        failures.push(none_found);
    }
    failures.assert_none();
}

/// The Python with TensorFlow 2.21 (and tf-slim) for the interop tests: `FERROFLOW_PYTHON`,
/// or the venv `scripts/test.sh` creates.
///
/// # Panics
/// When neither exists, saying how to make the venv.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROFLOW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(venv.exists(), "no Python with TensorFlow: run scripts/test.sh (it creates .venv) or set FERROFLOW_PYTHON");
    venv
}

/// The device the cases run on: the CPU, or with `FERROFLOW_TEST_DEVICE=cuda` (a
/// `--features cuda` build, `scripts/gpu-check.sh`) the first GPU, at the same
/// tolerances. Opened once per process.
///
/// # Panics
/// On another value, or when `cuda` is asked for and no GPU can be opened: the
/// suite cannot run as asked.
pub fn case_device() -> candle_core::Device {
    static DEVICE: std::sync::OnceLock<candle_core::Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| match std::env::var("FERROFLOW_TEST_DEVICE").as_deref() {
            Ok("cuda") => candle_core::Device::new_cuda(0)
                .unwrap_or_else(|e| panic!("FERROFLOW_TEST_DEVICE=cuda: no usable GPU 0: {e}")),
            Ok("cpu") | Ok("") | Err(_) => candle_core::Device::Cpu,
            Ok(other) => panic!("FERROFLOW_TEST_DEVICE={other:?}: expected cpu or cuda"),
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_one_owner_and_each_harness_some_ops() {
        for (i, (op, _)) in OPS.iter().enumerate() {
            assert!(!OPS[i + 1..].iter().any(|(other, _)| other == op), "`{op}` listed twice");
        }
        for h in [Harness::Data, Harness::Nn, Harness::Train] {
            assert!(!h.ops().is_empty(), "{h:?}");
        }
        assert_eq!(owner("avg_pool"), Some(Harness::Nn));
        assert_eq!(owner("no_such_op"), None);
    }

    #[test]
    fn a_missing_directory_is_a_failure() {
        let mut failures = Failures::default();
        let files = discover(&[repo_root().join("no").join("such").join("dir")], &mut failures);
        assert!(files.is_empty());
        assert_eq!(failures.as_slice().len(), 1);
        assert!(failures.as_slice()[0].ends_with("golden directory does not exist"));
    }

    #[test]
    fn all_joins_every_failure() {
        assert_eq!(all(vec![Ok(()), Err("a".into()), Err("b".into())]), Err("a; b".into()));
        assert_eq!(all(vec![Ok(())]), Ok(()));
    }

    #[test]
    fn worst_per_tensor_merges_by_name() {
        let mut w = BTreeMap::from([("y".to_string(), 1e-6)]);
        w.fold_in(BTreeMap::from([("y".to_string(), 2e-6), ("dx".to_string(), 0.0)]));
        assert_eq!(w.show(), "dx 0.000e0, y 2.000e-6");
    }
}
