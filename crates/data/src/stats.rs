//! Small statistics used by survey and prepare: min/median/max summaries,
//! binned counts, and per-channel mean and standard deviation.

use serde::{Deserialize, Serialize};

/// Minimum, median and maximum of a set of values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Smallest.
    pub min: f64,
    /// Median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Largest.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (`None` when empty).
    ///
    /// ```
    /// use ferroflow_data::Summary;
    /// let s = Summary::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
    /// assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
    /// ```
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Summary { min: v[0], median, max: v[n - 1] })
    }
}

/// One bin of a histogram: values in `[lo, hi)` (the last bin includes `hi`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower edge.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Values in the bin.
    pub count: usize,
}

/// Counts `values` into `bins` equal-width bins between their min and max.
pub fn equal_bins(values: &[f64], bins: usize) -> Vec<Bin> {
    let Some(s) = Summary::of(values) else { return Vec::new() };
    if s.min == s.max {
        return vec![Bin { lo: s.min, hi: s.max, count: values.len() }];
    }
    let width = (s.max - s.min) / bins as f64;
    let mut out: Vec<Bin> =
        (0..bins).map(|i| Bin { lo: s.min + width * i as f64, hi: s.min + width * (i + 1) as f64, count: 0 }).collect();
    for &v in values {
        let i = (((v - s.min) / width) as usize).min(bins - 1);
        out[i].count += 1;
    }
    out
}

/// Counts `values` into the bins between consecutive `edges`; values below
/// the first or above the last edge go to the end bins.
pub fn edge_bins(values: &[f64], edges: &[f64]) -> Vec<Bin> {
    let mut out: Vec<Bin> = edges.windows(2).map(|w| Bin { lo: w[0], hi: w[1], count: 0 }).collect();
    for &v in values {
        let i = edges[1..edges.len() - 1].partition_point(|&e| e <= v);
        out[i].count += 1;
    }
    out
}

/// Per-channel running sums for mean and standard deviation, in f64 and
/// merged in a fixed order, so results do not depend on thread scheduling.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChannelStats {
    /// Pixels counted.
    pub count: u64,
    /// Sum per channel.
    pub sum: [f64; 3],
    /// Sum of squares per channel.
    pub sum_sq: [f64; 3],
}

impl ChannelStats {
    /// Accumulates an 8-bit image with 1 or 3 channels (grey counts as R=G=B).
    pub fn of_image(image: &crate::ImageU8) -> Self {
        let mut s = ChannelStats::default();
        let mut sum = [0u64; 3];
        let mut sum_sq = [0u64; 3];
        if image.channels == 1 {
            for &v in &image.data {
                let v = u64::from(v);
                for c in 0..3 {
                    sum[c] += v;
                    sum_sq[c] += v * v;
                }
            }
        } else {
            for px in image.data.chunks_exact(image.channels) {
                for c in 0..3 {
                    let v = u64::from(px[c]);
                    sum[c] += v;
                    sum_sq[c] += v * v;
                }
            }
        }
        s.count = (image.height * image.width) as u64;
        for c in 0..3 {
            s.sum[c] = sum[c] as f64;
            s.sum_sq[c] = sum_sq[c] as f64;
        }
        s
    }

    /// Adds another set of sums.
    pub fn merge(&mut self, other: &ChannelStats) {
        self.count += other.count;
        for c in 0..3 {
            self.sum[c] += other.sum[c];
            self.sum_sq[c] += other.sum_sq[c];
        }
    }

    /// Per-channel mean (0–255 scale).
    pub fn mean(&self) -> [f64; 3] {
        let n = self.count.max(1) as f64;
        self.sum.map(|s| s / n)
    }

    /// Per-channel population standard deviation (0–255 scale).
    pub fn std(&self) -> [f64; 3] {
        let n = self.count.max(1) as f64;
        let mean = self.mean();
        [0, 1, 2].map(|c| (self.sum_sq[c] / n - mean[c] * mean[c]).max(0.0).sqrt())
    }
}
