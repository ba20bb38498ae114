//! `ferroflow inspect`: the variables of a checkpoint (name, shape, dtype,
//! trainable, size) and its metadata; one variable's statistics or values;
//! `--verify`: the checksums of every checkpoint a train dir lists.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use ferroflow_train::TrainError;
use ferroflow_train::checkpoint::{
    Checkpoint, Integrity, StoredTensor, bundle_prefix, listed_checkpoints, resolve_checkpoint,
};

/// Arguments of `ferroflow inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A checkpoint file, prefix (model.ckpt-N), or train dir (its latest checkpoint); TensorFlow
    /// checkpoints (model.ckpt-N.index + .data) too, with 4-D kernels shown in ferroflow's OIHW layout.
    #[arg(value_name = "CHECKPOINT|TRAIN_DIR")]
    pub path: PathBuf,
    /// Print one variable's statistics (min, max, mean, std, norm).
    #[arg(long, value_name = "NAME")]
    pub var: Option<String>,
    /// With --var, also print its values.
    #[arg(long, requires = "var")]
    pub values: bool,
    /// Verify the checksums of the checkpoint, or of every checkpoint a train dir lists, one line
    /// each; exits 1 if any is damaged or missing.
    #[arg(long, conflicts_with = "var")]
    pub verify: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn trainable(ck: &Checkpoint, name: &str) -> bool {
    ck.meta.trainable.iter().any(|t| t == name)
}

/// "yes"/"no", or "?" for checkpoints that do not record it (TensorFlow's).
fn trainable_text(ck: &Checkpoint, name: &str) -> &'static str {
    match (ck.meta.trainable.is_empty(), trainable(ck, name)) {
        (true, _) => "?",
        (false, true) => "yes",
        (false, false) => "no",
    }
}

/// Runs the command.
pub fn run(args: &InspectArgs) -> Result<()> {
    if args.verify {
        return verify(args);
    }
    let mut out = std::io::stdout().lock();
    let path = resolve_checkpoint(&args.path)?;
    let ck = Checkpoint::load(&path).with_context(|| format!("inspecting {}", args.path.display()))?;
    if let Some(notice) = ck.integrity_notice(&path) {
        eprintln!("{notice}");
    }
    if let Some(name) = &args.var {
        let Some(t) = ck.get(name) else {
            let close: Vec<&str> = ck
                .tensors
                .keys()
                .filter(|k| k.contains(name.as_str()) || name.contains(k.as_str()))
                .map(String::as_str)
                .collect();
            bail!(TrainError::config(
                "--var",
                format!(
                    "{name:?} is not in {}{}",
                    path.display(),
                    if close.is_empty() { String::new() } else { format!("; similar: {}", close.join(", ")) }
                )
            ));
        };
        return print_var(&ck, name, t, args);
    }
    if args.json {
        let vars: Vec<_> = ck
            .tensors
            .iter()
            .map(|(name, t)| {
                serde_json::json!({
                    "name": name, "shape": t.shape, "dtype": t.values.dtype_name(),
                    "trainable": trainable(&ck, name), "size": t.len(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "checkpoint": path,
            "variables": vars,
            "metadata": ck.meta.entries(),
            "other_metadata": ck.other_metadata,
            "verified": ck.integrity == Integrity::Verified,
        });
        writeln!(out, "{json}")?;
        return Ok(());
    }
    writeln!(out, "{}", path.display())?;
    let width = ck.tensors.keys().map(String::len).max().unwrap_or(4).max(4);
    writeln!(out, "{:<width$}  {:<18}  {:<7}  {:<9}  {:>10}", "name", "shape", "dtype", "trainable", "size")?;
    let mut total = 0usize;
    let mut trained = 0usize;
    for (name, t) in &ck.tensors {
        let tr = trainable(&ck, name);
        total += t.len();
        if tr {
            trained += t.len();
        }
        writeln!(
            out,
            "{name:<width$}  {:<18}  {:<7}  {:<9}  {:>10}",
            format!("{:?}", t.shape),
            t.values.dtype_name(),
            trainable_text(&ck, name),
            t.len()
        )?;
    }
    writeln!(out, "{} variables, {total} values ({trained} trainable)", ck.tensors.len())?;
    writeln!(out, "checksums: {}", integrity_text(&ck, &path))?;
    writeln!(out, "metadata:")?;
    for (k, v) in ck.meta.entries().iter().chain(&ck.other_metadata) {
        if k == "ferroflow.config" {
            writeln!(out, "  {k}: ({} lines of TOML; see config.toml in the train dir)", v.lines().count())?;
        } else {
            writeln!(out, "  {k}: {v}")?;
        }
    }
    Ok(())
}

fn integrity_text(ck: &Checkpoint, path: &Path) -> &'static str {
    let bundle = bundle_prefix(path).is_some();
    match ck.integrity {
        Integrity::Verified if bundle => {
            "verified (TF bundle: crc32c of every tensor and index block, and of ferroflow's side file when it has one)"
        }
        Integrity::Verified => "verified (crc32c of every tensor and of the header)",
        Integrity::NoChecksums => "none stored (written before ferroflow stored checksums, or by another tool)",
    }
}

/// `inspect --verify`: loads (and so verifies) the checkpoint, or every one
/// a train dir lists, newest first; an error when any is damaged.
fn verify(args: &InspectArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let paths = if args.path.is_dir() {
        let listed = listed_checkpoints(&args.path)?;
        if listed.is_empty() {
            bail!(TrainError::Checkpoint {
                path: args.path.display().to_string(),
                reason: "holds no checkpoint (no `checkpoint` state file), so there is nothing to verify".into(),
            });
        }
        listed
    } else {
        vec![resolve_checkpoint(&args.path)?]
    };
    let mut damaged = 0;
    for path in &paths {
        let loaded = Checkpoint::load(path);
        if args.json {
            let json = match &loaded {
                Ok(ck) => serde_json::json!({
                    "checkpoint": path, "ok": true, "step": ck.meta.global_step, "tensors": ck.tensors.len(),
                    "verified": ck.integrity == Integrity::Verified,
                }),
                Err(e) => serde_json::json!({"checkpoint": path, "ok": false, "error": e.to_string()}),
            };
            writeln!(out, "{json}")?;
        } else {
            match &loaded {
                Ok(ck) => writeln!(
                    out,
                    "ok       {}: step {}, {} tensors, checksums {}",
                    path.display(),
                    ck.meta.global_step,
                    ck.tensors.len(),
                    integrity_text(ck, path)
                )?,
                Err(e) => writeln!(out, "DAMAGED  {e}")?,
            }
        }
        damaged += usize::from(loaded.is_err());
    }
    out.flush()?;
    if damaged > 0 {
        bail!("{}: {damaged} of {} checkpoint(s) damaged or missing", args.path.display(), paths.len());
    }
    Ok(())
}

fn print_var(ck: &Checkpoint, name: &str, t: &StoredTensor, args: &InspectArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let s = t.stats();
    if args.json {
        let mut json = serde_json::json!({
            "name": name, "shape": t.shape, "dtype": t.values.dtype_name(), "trainable": trainable(ck, name),
            "size": t.len(), "stats": s,
        });
        if args.values {
            json["values"] = serde_json::json!(t.values.to_f64());
        }
        writeln!(out, "{json}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{name}: shape {:?}, {}, {} values, {}",
        t.shape,
        t.values.dtype_name(),
        t.len(),
        if trainable(ck, name) { "trainable" } else { "not trainable" }
    )?;
    writeln!(
        out,
        "min {:.6}  max {:.6}  mean {:.6}  std {:.6}  norm {:.6}{}",
        s.min,
        s.max,
        s.mean,
        s.std,
        s.norm,
        if s.non_finite > 0 { format!("  ({} non-finite)", s.non_finite) } else { String::new() }
    )?;
    if args.values {
        // Row by row over the last dimension, as numpy prints.
        let values = t.values.to_f64();
        let row = t.shape.last().copied().filter(|&n| n > 0).unwrap_or(1);
        for chunk in values.chunks(row) {
            let line: Vec<String> = chunk.iter().map(|v| format!("{v}")).collect();
            writeln!(out, "{}", line.join(" "))?;
        }
    }
    Ok(())
}
