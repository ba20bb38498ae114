//! Gradient buckets: several variables per all-reduce call (Horovod's
//! tensor fusion, PyTorch DDP's `bucket_cap_mb`), so that a model of many
//! small variables pays the per-call latency a few times, not once per
//! variable, and no call stages more than a bucket of memory.

/// Bytes per bucket: 25 MiB, PyTorch DDP's default `bucket_cap_mb`.
pub const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Splits variables of `sizes` elements (f32, in order) into consecutive
/// ranges of variables of at most `max_bytes` each; a variable larger than
/// that is a bucket of its own.
///
/// ```
/// // 4-byte floats, 40-byte buckets: 10 elements per bucket.
/// assert_eq!(ferroflow_dist::buckets(&[4, 4, 4, 20, 1], 40), vec![0..2, 2..3, 3..4, 4..5]);
/// assert!(ferroflow_dist::buckets(&[], 40).is_empty());
/// ```
pub fn buckets(sizes: &[usize], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let max = (max_bytes / 4).max(1);
    let mut out = Vec::new();
    let (mut start, mut filled) = (0usize, 0usize);
    for (i, &n) in sizes.iter().enumerate() {
        if i > start && filled + n > max {
            out.push(start..i);
            (start, filled) = (i, 0);
        }
        filled += n;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}
