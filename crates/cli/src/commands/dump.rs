//! `ferroflow dump FILE|DATASET_DIR --out DIR`: records back to PNG files.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Arguments of `ferroflow dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// A TFRecord file, or a dataset directory from `ferroflow prepare` (each split to its own sub-folder).
    pub input: PathBuf,
    /// Where to write `<i>_label_<l>.png` files.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Write at most N images (per split for a dataset directory).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

/// Runs the command.
pub fn run(args: &DumpArgs) -> Result<()> {
    let n = ferroflow_data::dump(&args.input, &args.out, args.limit)?;
    println!("wrote {n} image(s) to {}", args.out.display());
    Ok(())
}
