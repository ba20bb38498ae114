//! `survey`: what a folder of images holds, before anything is trained on it.
//! Counts per class, size and aspect-ratio distributions, a recommended resize
//! target, per-channel mean and std, and every unreadable file with the reason.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;

use crate::decode::{DecodeOptions, decode_image, image_info};
use crate::discover::{DiscoverError, ImageEntry, Split, discover};
use crate::stats::{Bin, ChannelStats, Summary, edge_bins};

/// Aspect-ratio (width / height) bin edges: portrait on the left, square in
/// the middle bin, landscape on the right.
pub const ASPECT_EDGES: &[f64] = &[0.0, 0.5, 0.75, 0.9, 1.1, 1.34, 1.6, 2.0, f64::INFINITY];

/// Shorter sides above this are recommended to be brought down to
/// [`TYPICAL_SIDE`] (ImageNet-style CNNs take 224x224 inputs).
const LARGE_SIDE: f64 = 256.0;
const TYPICAL_SIDE: f64 = 224.0;

/// Options for [`survey`].
#[derive(Debug, Clone)]
pub struct SurveyOptions {
    /// Fully decode at most this many images (an evenly spaced sample) for
    /// mean/std and the readability check; the rest are checked from their
    /// headers only. `None` decodes every image.
    pub sample: Option<usize>,
    /// Decoding limits.
    pub decode: DecodeOptions,
}

impl Default for SurveyOptions {
    fn default() -> Self {
        SurveyOptions { sample: None, decode: DecodeOptions { channels: Some(3), ..Default::default() } }
    }
}

/// A file that could not be read as an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unreadable {
    /// The file, relative to the surveyed folder.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// What [`survey`] found. Serialises to the JSON `ferroflow survey --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct SurveyReport {
    /// The folder.
    pub root: String,
    /// Readable images.
    pub images: usize,
    /// Readable images per class (empty for a flat folder).
    pub classes: BTreeMap<String, usize>,
    /// Readable images per split, when the folder is pre-split.
    pub splits: Option<BTreeMap<String, usize>>,
    /// Files that failed, with the reason.
    pub unreadable: Vec<Unreadable>,
    /// Image counts per format.
    pub formats: BTreeMap<String, usize>,
    /// Greyscale images (the rest are colour).
    pub grey_images: usize,
    /// Widths.
    pub width: Summary,
    /// Heights.
    pub height: Summary,
    /// True when every readable image has the same size.
    pub uniform_size: bool,
    /// Width / height, binned by [`ASPECT_EDGES`].
    pub aspect_ratio: Vec<Bin>,
    /// Recommended `[height, width]` resize target.
    pub recommended_size: [usize; 2],
    /// Why that target.
    pub recommendation: String,
    /// Per-channel mean, 0–255 scale, over the decoded images (grey counts as R=G=B).
    pub mean: [f64; 3],
    /// Per-channel standard deviation, 0–255 scale.
    pub std: [f64; 3],
    /// Images decoded for mean/std.
    pub decoded: usize,
    /// Every readable image's `[width, height]`, for plots.
    #[serde(skip)]
    pub sizes: Vec<[u32; 2]>,
}

struct Probe {
    entry: usize,
    result: Result<(crate::ImageInfo, Option<ChannelStats>), String>,
}

fn probe(entry: &ImageEntry, index: usize, decode: bool, options: &DecodeOptions) -> Probe {
    let result = (|| {
        let bytes = std::fs::read(&entry.path).map_err(|e| format!("cannot read: {e}"))?;
        let info = image_info(&bytes).map_err(|e| e.to_string())?;
        let stats = if decode {
            let image = decode_image(&bytes, options).map_err(|e| e.to_string())?;
            Some(ChannelStats::of_image(&image))
        } else {
            if u64::from(info.width) * u64::from(info.height) > options.max_pixels {
                return Err(crate::DecodeError::TooLarge {
                    width: info.width,
                    height: info.height,
                    limit: options.max_pixels,
                }
                .to_string());
            }
            None
        };
        Ok((info, stats))
    })();
    Probe { entry: index, result }
}

/// Surveys the images under `root`; `progress(done, total)` is called as
/// images finish (from worker threads).
pub fn survey(
    root: &Path,
    options: &SurveyOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<SurveyReport, DiscoverError> {
    let found = discover(root)?;
    let total = found.images.len();
    // An evenly spaced sample is deterministic and covers every class folder.
    let stride = options.sample.map_or(1, |n| total.div_ceil(n.max(1)).max(1));
    let done = std::sync::atomic::AtomicUsize::new(0);
    let probes: Vec<Probe> = found
        .images
        .par_iter()
        .enumerate()
        .map(|(i, entry)| {
            let p = probe(entry, i, i % stride == 0, &options.decode);
            progress(done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1, total);
            p
        })
        .collect();

    let mut classes: BTreeMap<String, usize> = found.classes.iter().map(|c| (c.clone(), 0)).collect();
    let mut splits: BTreeMap<String, usize> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let mut formats = BTreeMap::new();
    let (mut widths, mut heights, mut ratios, mut sizes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut stats = ChannelStats::default();
    let (mut grey, mut decoded) = (0, 0);
    for p in probes {
        let entry = &found.images[p.entry];
        match p.result {
            Err(reason) => unreadable.push(Unreadable { path: entry.relative.clone(), reason }),
            Ok((info, image_stats)) => {
                if let Some(label) = entry.label {
                    *classes.entry(found.classes[label].clone()).or_default() += 1;
                }
                if let Some(split) = entry.split {
                    *splits.entry(split.name().to_string()).or_default() += 1;
                }
                *formats.entry(info.format.name().to_string()).or_default() += 1;
                grey += usize::from(info.grey);
                widths.push(f64::from(info.width));
                heights.push(f64::from(info.height));
                ratios.push(f64::from(info.width) / f64::from(info.height));
                sizes.push([info.width, info.height]);
                if let Some(s) = image_stats {
                    stats.merge(&s);
                    decoded += 1;
                }
            }
        }
    }
    let images = widths.len();
    let zero = Summary { min: 0.0, median: 0.0, max: 0.0 };
    let width = Summary::of(&widths).unwrap_or(zero);
    let height = Summary::of(&heights).unwrap_or(zero);
    let uniform_size = images > 0 && width.min == width.max && height.min == height.max;
    let (recommended_size, recommendation) = recommend(&widths, &heights, &ratios, uniform_size);
    if found.presplit {
        for split in [Split::Train, Split::Validation] {
            splits.entry(split.name().to_string()).or_default();
        }
    }
    Ok(SurveyReport {
        root: root.display().to_string(),
        images,
        classes,
        splits: found.presplit.then_some(splits),
        unreadable,
        formats,
        grey_images: grey,
        width,
        height,
        uniform_size,
        aspect_ratio: edge_bins(&ratios, ASPECT_EDGES),
        recommended_size,
        recommendation,
        mean: stats.mean(),
        std: stats.std(),
        decoded,
        sizes,
    })
}

fn round8(v: f64) -> usize {
    ((v / 8.0).round() as usize).max(1) * 8
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The resize target a practitioner would pick, and why.
fn recommend(widths: &[f64], heights: &[f64], ratios: &[f64], uniform: bool) -> ([usize; 2], String) {
    if widths.is_empty() {
        return ([0, 0], "no readable images".to_string());
    }
    let (h, w) = (heights[0] as usize, widths[0] as usize);
    if uniform {
        return ([h, w], format!("every image is {h}x{w} (HxW): no resizing needed"));
    }
    let (lo, hi) = (percentile(ratios, 0.1), percentile(ratios, 0.9));
    let shorter: Vec<f64> = widths.iter().zip(heights).map(|(w, h)| w.min(*h)).collect();
    let median_short = Summary::of(&shorter).map_or(0.0, |s| s.median);
    if hi / lo > 1.25 {
        let side = round8(median_short.min(TYPICAL_SIDE));
        return (
            [side, side],
            format!(
                "aspect ratios vary (10th-90th percentile {lo:.2}-{hi:.2}): resize the shorter side and centre-crop \
                 (or random-crop) to {side}x{side}; median shorter side is {median_short:.0}"
            ),
        );
    }
    let (mh, mw) = (Summary::of(heights).map_or(0.0, |s| s.median), Summary::of(widths).map_or(0.0, |s| s.median));
    let scale = if mh.min(mw) > LARGE_SIDE { TYPICAL_SIDE / mh.min(mw) } else { 1.0 };
    let (th, tw) = (round8(mh * scale), round8(mw * scale));
    let why = if scale < 1.0 {
        format!(
            "sizes differ but aspect ratios agree (10th-90th percentile {lo:.2}-{hi:.2}); the median size {mh:.0}x{mw:.0} \
             is large for a CNN, so scale it to a {TYPICAL_SIDE:.0}-pixel shorter side: {th}x{tw}"
        )
    } else {
        format!(
            "sizes differ but aspect ratios agree (10th-90th percentile {lo:.2}-{hi:.2}): resize to the median size \
             {mh:.0}x{mw:.0}, rounded to multiples of 8: {th}x{tw}"
        )
    };
    ([th, tw], why)
}
