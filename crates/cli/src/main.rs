//! The `ferroflow` binary: parse the command line, run one command, and own
//! the exit code (0 success, 1 runtime error, 2 usage error).

mod commands;
mod plot;
mod progress;
mod ranks;
mod report;
mod runtime;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed tensor and image buffers for reuse; glibc's malloc
/// returns large blocks to the OS and page-faults them back every batch
/// (measured in docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train image models the TensorFlow way, in Rust.
#[derive(Debug, Parser)]
#[command(
    name = "ferroflow",
    version,
    about,
    after_help = "Not yet built: running ONNX files (ferroflow exports them; run them with ONNX Runtime)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the records of a TFRecord file (tf.train.Example) or a TensorBoard event file.
    Records(commands::records::RecordsArgs),
    /// Survey a folder of images: classes, sizes, aspect ratios, mean/std, unreadable files.
    Survey(commands::survey::SurveyArgs),
    /// Convert an image folder into sharded TFRecords with labels.txt and dataset.json.
    Prepare(commands::prepare::PrepareArgs),
    /// Decode records back into PNG images <i>_label_<l>.png, to check a dataset by eye.
    Dump(commands::dump::DumpArgs),
    /// List the model zoo, or print one model's (zoo or TOML) layers and parameter counts.
    Models(commands::models::ModelsArgs),
    /// Train a model: TOML config plus flags and --set key=value; TensorBoard logs in the train dir.
    Train(commands::train::TrainArgs),
    /// Evaluate a checkpoint: loss, accuracy, top-5, per-class accuracy, confusion matrix.
    Eval(commands::eval::EvalArgs),
    /// Predict the top classes of images with a trained checkpoint.
    Predict(commands::predict::PredictArgs),
    /// List a checkpoint's variables and metadata, or one variable's statistics and values.
    Inspect(commands::inspect::InspectArgs),
    /// Write a checkpoint as a TensorFlow checkpoint bundle (TF's layouts and names) or an ONNX model.
    Export(commands::export::ExportArgs),
    /// Measure throughput: the input pipeline (bench input), the training step on random data
    /// (bench train), checkpoint save/restore (bench checkpoint).
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
}

fn main() -> ExitCode {
    runtime::configure();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help/version with code 0 and usage errors with code 2.
        Err(e) => e.exit(),
    };
    // FERROFLOW_KERNELS picks fast kernels or the generic path; a bad value is a usage error.
    if let Err(e) = ferroflow_nn::kernels::Kernels::from_env() {
        let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("error: {e}\n").as_bytes());
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Records(args) => commands::records::run(&args),
        Command::Survey(args) => commands::survey::run(&args),
        Command::Prepare(args) => commands::prepare::run(&args),
        Command::Dump(args) => commands::dump::run(&args),
        Command::Models(args) => commands::models::run(&args),
        Command::Train(args) => commands::train::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Predict(args) => commands::predict::run(&args),
        Command::Inspect(args) => commands::inspect::run(&args),
        Command::Export(args) => commands::export::run(&args),
        Command::Bench(command) => commands::bench::run(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One write: ranks under mpirun share stderr, and pieces would interleave.
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("error: {e:#}\n").as_bytes());
            // A bad setting (config key, flag value) is a usage error.
            ExitCode::from(if commands::is_usage_error(&e) { 2 } else { 1 })
        }
    }
}
