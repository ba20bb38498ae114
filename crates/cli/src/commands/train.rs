//! `ferroflow train`: a TOML config plus flags and `--set key=value`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use ferroflow_train::{Progress, TrainConfig, train_on};
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `ferroflow train`. Flags override the config file; `--set`
/// overrides both.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A TOML config with [data], [model], [optimizer], [schedule], [train], [summary], [checkpoint] and
    /// [warm_start] sections.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override any config key, e.g. --set optimizer.kind=adam --set data.augment.flip_left_right=true.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// A dataset directory (from `ferroflow prepare`) or an image folder (data.path).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// A zoo model or a .toml model declaration (model.name).
    #[arg(long)]
    pub model: Option<String>,
    /// Where event files, config.toml and checkpoints go (train.train_dir); if it holds a checkpoint,
    /// training resumes from it.
    #[arg(long, value_name = "DIR")]
    pub train_dir: Option<PathBuf>,
    /// Examples per step (train.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Steps to train (train.steps).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Epochs to train, if --steps is not given (train.epochs).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// sgd, momentum, adagrad, adam, adamw, rmsprop, adadelta or ftrl (optimizer.kind).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Initial learning rate (schedule.learning_rate).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// Seed of initialisation, shuffling, augmentation and dropout (train.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// cpu or cuda[:N] (train.device; CUDA needs a build with --features cuda).
    #[arg(long)]
    pub device: Option<String>,
    /// Save a checkpoint every N steps (checkpoint.every_steps; also every
    /// checkpoint.every_secs, default 600, and at the end).
    #[arg(long, value_name = "N")]
    pub save_every: Option<u64>,
    /// Warm start from this checkpoint file, prefix or train dir (warm_start.checkpoint_path).
    /// Ignored when --train-dir already holds a checkpoint: training resumes from that.
    #[arg(long, value_name = "PATH")]
    pub checkpoint_path: Option<PathBuf>,
    /// Comma-separated scopes not restored by the warm start, e.g. logits (warm_start.exclude_scopes).
    #[arg(long, value_name = "SCOPES")]
    pub exclude_scopes: Option<String>,
    /// Comma-separated scopes that train; all other variables are frozen (warm_start.trainable_scopes).
    #[arg(long, value_name = "SCOPES")]
    pub trainable_scopes: Option<String>,
    /// The data's label i is the model's output i + N (model.labels_offset); 1 to keep the
    /// background output of TF-slim's 1001-class checkpoints.
    #[arg(long, value_name = "N")]
    pub labels_offset: Option<usize>,
    /// Keep the initial values of variables the warm-start checkpoint lacks (warm_start.ignore_missing_vars).
    #[arg(long)]
    pub ignore_missing_vars: bool,
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The flags as `--set` overrides, applied before the user's own `--set`s.
fn overrides(args: &TrainArgs) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(d) = &args.data {
        o.push(format!("data.path={}", toml_string(&d.display().to_string())));
    }
    if let Some(m) = &args.model {
        o.push(format!("model.name={}", toml_string(m)));
    }
    if let Some(t) = &args.train_dir {
        o.push(format!("train.train_dir={}", toml_string(&t.display().to_string())));
    }
    if let Some(b) = args.batch_size {
        o.push(format!("train.batch_size={b}"));
    }
    if let Some(s) = args.steps {
        o.push(format!("train.steps={s}"));
    }
    if let Some(e) = args.epochs {
        o.push(format!("train.epochs={e}"));
    }
    if let Some(k) = &args.optimizer {
        o.push(format!("optimizer.kind={}", toml_string(k)));
    }
    if let Some(lr) = args.learning_rate {
        o.push(format!("schedule.learning_rate={lr:?}"));
    }
    if let Some(s) = args.seed {
        o.push(format!("train.seed={s}"));
    }
    if let Some(d) = &args.device {
        o.push(format!("train.device={}", toml_string(d)));
    }
    if let Some(n) = args.save_every {
        o.push(format!("checkpoint.every_steps={n}"));
    }
    if let Some(p) = &args.checkpoint_path {
        o.push(format!("warm_start.checkpoint_path={}", toml_string(&p.display().to_string())));
    }
    if let Some(s) = &args.exclude_scopes {
        o.push(format!("warm_start.exclude_scopes={}", toml_string(s)));
    }
    if let Some(s) = &args.trainable_scopes {
        o.push(format!("warm_start.trainable_scopes={}", toml_string(s)));
    }
    if let Some(n) = args.labels_offset {
        o.push(format!("model.labels_offset={n}"));
    }
    if args.ignore_missing_vars {
        o.push("warm_start.ignore_missing_vars=true".to_string());
    }
    o.extend(args.set.iter().cloned());
    o
}

/// Resolves the config from the file, flags and `--set`s (no work is done
/// before this succeeds).
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig> {
    let text = match &args.config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the config", path.display()))?
        }
        None => String::new(),
    };
    let context = args.config.as_ref().map_or("config".to_string(), |p| p.display().to_string());
    TrainConfig::resolve(&text, &overrides(args)).with_context(|| context)
}

/// Runs the command.
pub fn run(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let config = resolve(args)?;
    let (mut ranks, note) = crate::ranks::collective(&config)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    // Rank 0 reports; the others only say what concerns them (warnings, errors).
    let rank = ranks.rank();
    let log_every = config.train.log_every.max(1);
    let classes_hint = config.model.name.clone();
    let mut bar: Option<ProgressBar> = None;
    let tty = std::io::stderr().is_terminal();
    let mut on_progress = |p: &Progress| match p {
        Progress::Note(note) if rank > 0 => {
            if note.starts_with("warning") {
                crate::ranks::say(&format!("rank {rank}: {note}"));
            }
        }
        _ if rank > 0 => {}
        Progress::Start { total_steps, description } => {
            eprintln!("training {description} for {total_steps} steps");
            if tty {
                let b = ProgressBar::new(*total_steps);
                if let Ok(style) =
                    ProgressStyle::with_template("{wide_bar} {pos}/{len} steps  {msg}  [{elapsed_precise}, ETA {eta}]")
                {
                    b.set_style(style);
                }
                bar = Some(b);
            }
        }
        Progress::Step { step, loss, images_per_sec } => {
            if *step == 1 {
                let line = format!("first training step done after {:.2}s", started.elapsed().as_secs_f64());
                match &bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            match &bar {
                Some(b) => {
                    b.set_position(*step as u64);
                    b.set_message(format!("loss {loss:.4}  {images_per_sec:.0} images/s"));
                }
                None if (*step as u64).is_multiple_of(log_every) || *step == 1 => {
                    eprintln!(
                        "step {step}: loss {loss:.4}, {images_per_sec:.0} images/s, {:.0}s",
                        started.elapsed().as_secs_f64()
                    );
                }
                None => {}
            }
        }
        Progress::Saved { step, path } => {
            let line = format!("step {step}: saved {}", path.display());
            match &bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
        Progress::Note(note) => match &bar {
            Some(b) => b.println(note),
            None => eprintln!("{note}"),
        },
        Progress::Validation { step, report } => {
            let line = match (&report.regression, &report.reconstruction) {
                (_, Some(r)) => format!(
                    "validation at step {step}: loss {:.4}, mse {:.2} (input {:.2}), psnr {:.2} dB (input {:.2} dB) ({} examples)",
                    report.loss, r.mse, r.input_mse, r.psnr, r.input_psnr, report.count
                ),
                (None, None) => format!(
                    "validation at step {step}: loss {:.4}, accuracy {:.4}, top-5 {:.4} ({} examples)",
                    report.loss, report.accuracy, report.top5, report.count
                ),
                (Some(r), None) => format!(
                    "validation at step {step}: loss {:.4}, mse {:.6}, mae {:.6}, r2 {:.4} ({} examples)",
                    report.loss, r.mse, r.mae, r.r2, report.count
                ),
            };
            match &bar {
                Some(b) => b.println(line),
                None => eprintln!("{line}"),
            }
        }
    };
    let report = match train_on(&config, ranks.as_mut(), &mut on_progress) {
        Ok(report) => report,
        Err(e) => {
            // No MPI_Finalize: it waits for every rank, and one may be gone
            // (the launcher ends the others when this rank exits).
            std::mem::forget(ranks);
            return Err(e).with_context(|| format!("training {classes_hint}"));
        }
    };
    if let Some(digest) = report.weights_digest {
        crate::ranks::say(&format!("rank {rank} of {}: variables digest {digest:016x}", ranks.world_size()));
    }
    if rank > 0 {
        return Ok(());
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    println!(
        "trained {} steps in {:.1}s ({:.0} images/s); final loss {:.4}",
        report.steps,
        started.elapsed().as_secs_f64(),
        report.images_per_sec,
        report.final_loss
    );
    if let Some(v) = &report.validation
        && let Some(r) = &v.reconstruction
    {
        println!("validation mse (0-255 pixels): {:.2}; the model's input: {:.2}", r.mse, r.input_mse);
        println!("validation psnr: {:.2} dB; the model's input: {:.2} dB", r.psnr, r.input_psnr);
    } else if let Some(v) = &report.validation
        && let Some(r) = &v.regression
    {
        println!("validation (in the targets' units):\n{}", crate::report::regression_table(r));
        println!("validation loss: {:.4}", v.loss);
        println!("validation r2: {:.4}", r.r2);
    } else if let Some(v) = &report.validation {
        let metrics = ferroflow_train::Metrics {
            count: v.count,
            loss_sum: v.loss * v.count as f64,
            correct: 0,
            correct_top5: 0,
            confusion: v.confusion.clone(),
        };
        println!("confusion matrix (rows: label, columns: prediction):\n{}", metrics.confusion_text(&report.classes));
        println!("validation loss: {:.4}", v.loss);
        println!("validation top-5 accuracy: {:.4}", v.top5);
        println!("validation accuracy: {:.4}", v.accuracy);
    }
    if report.skipped > 0 {
        println!("skipped {} training example(s) that could not be read or decoded", report.skipped);
    }
    if let Some(mib) = crate::runtime::peak_rss_mib() {
        println!("peak memory: {mib:.0} MiB");
    }
    if let Some(step) = report.stopped_early_at {
        println!("stopped early at step {step} (train.early_stopping)");
    }
    if let Some((metric, value, step)) = &report.best {
        println!("best {metric}: {value:.6} at step {step}");
    }
    if let Some(ck) = &report.checkpoint {
        println!("checkpoint: {}", ck.display());
    }
    if let Some(best) = &report.best_checkpoint {
        println!("best checkpoint: {} (eval --best, predict --best)", best.display());
    }
    println!("TensorBoard: tensorboard --logdir {}", report.train_dir.display());
    Ok(())
}
