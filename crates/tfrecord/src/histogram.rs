//! Histograms with TensorFlow's default bucket limits
//! (`tensorflow/core/lib/histogram/histogram.cc`, `InitDefaultBucketsInner`),
//! so ferroflow's histograms bucket exactly like TF1's `tf.summary.histogram`.

use std::sync::OnceLock;

use crate::proto::summary::HistogramProto;

/// TensorFlow's default bucket limits: 0, ±1e-12 growing by 10% up to 1e20,
/// and ±`f64::MAX` (1551 limits in all).
///
/// ```
/// let limits = tfrecord::default_bucket_limits();
/// assert_eq!(limits.len(), 1551);
/// assert_eq!(limits[limits.len() / 2], 0.0);
/// assert_eq!(*limits.last().unwrap(), f64::MAX);
/// ```
pub fn default_bucket_limits() -> &'static [f64] {
    static LIMITS: OnceLock<Vec<f64>> = OnceLock::new();
    LIMITS.get_or_init(|| {
        let mut positive = Vec::new();
        let mut v = 1.0e-12;
        while v < 1.0e20 {
            positive.push(v);
            v *= 1.1;
        }
        positive.push(f64::MAX);
        let mut limits: Vec<f64> = positive.iter().rev().map(|&v| -v).collect();
        limits.push(0.0);
        limits.extend_from_slice(&positive);
        limits
    })
}

/// A histogram being filled, as TensorFlow's `histogram::Histogram`.
#[derive(Debug, Clone)]
pub struct Histogram {
    limits: &'static [f64],
    buckets: Vec<f64>,
    min: f64,
    max: f64,
    num: f64,
    sum: f64,
    sum_squares: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram over the default buckets.
    pub fn new() -> Self {
        let limits = default_bucket_limits();
        Histogram {
            limits,
            buckets: vec![0.0; limits.len()],
            min: f64::MAX,
            max: -f64::MAX,
            num: 0.0,
            sum: 0.0,
            sum_squares: 0.0,
        }
    }

    /// Adds one value to the first bucket whose limit is greater than it.
    pub fn add(&mut self, value: f64) {
        let b = self.limits.partition_point(|&limit| limit <= value).min(self.buckets.len() - 1);
        self.buckets[b] += 1.0;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.num += 1.0;
        self.sum += value;
        self.sum_squares += value * value;
    }

    /// The proto, with runs of empty buckets collapsed into one as
    /// `Histogram::EncodeToProto(…, preserve_zero_buckets=false)` does.
    pub fn to_proto(&self) -> HistogramProto {
        let mut proto = HistogramProto {
            min: self.min,
            max: self.max,
            num: self.num,
            sum: self.sum,
            sum_squares: self.sum_squares,
            ..Default::default()
        };
        let mut i = 0;
        while i < self.buckets.len() {
            let mut end = self.limits[i];
            let mut count = self.buckets[i];
            i += 1;
            if count <= 0.0 {
                while i < self.buckets.len() && self.buckets[i] <= 0.0 {
                    end = self.limits[i];
                    count = self.buckets[i];
                    i += 1;
                }
            }
            proto.bucket_limit.push(end);
            proto.bucket.push(count);
        }
        proto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_like_tensorflow() {
        let mut h = Histogram::new();
        for v in [-1.0, 0.0, 0.5, 0.5, 2.0] {
            h.add(v);
        }
        let p = h.to_proto();
        assert_eq!(p.num, 5.0);
        assert_eq!(p.min, -1.0);
        assert_eq!(p.max, 2.0);
        assert_eq!(p.sum, 2.0);
        assert_eq!(p.sum_squares, 1.0 + 0.25 + 0.25 + 4.0);
        assert_eq!(p.bucket.iter().sum::<f64>(), 5.0);
        // 0.0 falls in the bucket whose limit is the first one above 0 (1e-12).
        let zero_bucket = p.bucket_limit.iter().position(|&l| l == 1.0e-12).unwrap();
        assert_eq!(p.bucket[zero_bucket], 1.0);
        // Each non-empty bucket's limit is above its values and the previous limit is not.
        let i = p.bucket.iter().position(|&c| c == 2.0).unwrap();
        assert!(p.bucket_limit[i] > 0.5 && p.bucket_limit[i - 1] <= 0.5);
        // Runs of empty buckets collapse: far fewer than 1551 entries.
        assert!(p.bucket.len() < 20, "{}", p.bucket.len());
    }
}
