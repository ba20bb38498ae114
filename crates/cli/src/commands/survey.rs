//! `ferroflow survey DIR`: what a folder of images holds.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferroflow_data::{Bin, SurveyOptions, SurveyReport, equal_bins, survey};

use crate::progress::Progress;

/// Arguments of `ferroflow survey`.
#[derive(Debug, Args)]
pub struct SurveyArgs {
    /// A folder of class sub-folders (optionally under train/ and val/), or of images.
    pub dir: PathBuf,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// Fully decode only about N evenly spaced images (for mean/std and the
    /// readability check); the others are checked from their headers.
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Also draw the size and aspect-ratio histograms into this PNG file.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
}

/// Runs the command.
pub fn run(args: &SurveyArgs) -> Result<()> {
    let options = SurveyOptions { sample: args.sample, ..Default::default() };
    let progress = Progress::new("survey", 0);
    let report = survey(&args.dir, &options, &|done, total| progress.update(done as u64, total as u64))?;
    progress.finish(report.images as u64 + report.unreadable.len() as u64);
    if let Some(plot) = &args.plot {
        crate::plot::survey_plot(&report, plot)
            .with_context(|| format!("{}: cannot write the plot", plot.display()))?;
        eprintln!("plot written to {}", plot.display());
    }
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write_text(&mut out, &report)?;
    }
    Ok(())
}

fn bar(count: usize, max: usize, width: usize) -> String {
    let n = if max == 0 { 0 } else { (count * width).div_ceil(max) };
    "#".repeat(n)
}

fn write_bins(out: &mut impl Write, title: &str, bins: &[Bin], integer: bool) -> io::Result<()> {
    writeln!(out, "{title}:")?;
    let max = bins.iter().map(|b| b.count).max().unwrap_or(0);
    for b in bins {
        let range = if integer {
            format!("{:>6.0} - {:<6.0}", b.lo, b.hi)
        } else if b.hi.is_infinite() {
            format!("{:>6.2} - {:<6}", b.lo, "inf")
        } else {
            format!("{:>6.2} - {:<6.2}", b.lo, b.hi)
        };
        writeln!(out, "  {range} {:>7}  {}", b.count, bar(b.count, max, 40))?;
    }
    Ok(())
}

fn write_text(out: &mut impl Write, r: &SurveyReport) -> io::Result<()> {
    writeln!(out, "{}: {} readable image(s), {} unreadable", r.root, r.images, r.unreadable.len())?;
    if !r.classes.is_empty() {
        writeln!(out, "classes ({}):", r.classes.len())?;
        let width = r.classes.keys().map(|k| k.len()).max().unwrap_or(0);
        for (name, count) in &r.classes {
            writeln!(out, "  {name:<width$}  {count}")?;
        }
    }
    if let Some(splits) = &r.splits {
        let parts: Vec<String> = splits.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "existing split: {}", parts.join(", "))?;
    }
    let formats: Vec<String> = r.formats.iter().map(|(k, v)| format!("{k} {v}")).collect();
    writeln!(out, "formats: {}; greyscale: {}", formats.join(", "), r.grey_images)?;
    writeln!(
        out,
        "width:  min {} / median {} / max {}\nheight: min {} / median {} / max {}",
        r.width.min, r.width.median, r.width.max, r.height.min, r.height.median, r.height.max
    )?;
    if !r.uniform_size {
        let widths: Vec<f64> = r.sizes.iter().map(|s| f64::from(s[0])).collect();
        let heights: Vec<f64> = r.sizes.iter().map(|s| f64::from(s[1])).collect();
        write_bins(out, "width distribution", &equal_bins(&widths, 8), true)?;
        write_bins(out, "height distribution", &equal_bins(&heights, 8), true)?;
    }
    write_bins(out, "aspect ratio (width / height)", &r.aspect_ratio, false)?;
    writeln!(out, "recommended size: {}x{} (HxW): {}", r.recommended_size[0], r.recommended_size[1], r.recommendation)?;
    writeln!(
        out,
        "mean (0-255, RGB): [{:.2}, {:.2}, {:.2}]\nstd  (0-255, RGB): [{:.2}, {:.2}, {:.2}]   (over {} decoded image(s))",
        r.mean[0], r.mean[1], r.mean[2], r.std[0], r.std[1], r.std[2], r.decoded
    )?;
    if !r.unreadable.is_empty() {
        writeln!(out, "unreadable:")?;
        for u in &r.unreadable {
            writeln!(out, "  {}: {}", u.path, u.reason)?;
        }
    }
    Ok(())
}
