//! TensorFlow's `MaxPool` and `AvgPool` on NCHW tensors, any window, stride and padding.
//!
//! candle's pooling has no padding and no backward for overlapping windows, so both ops
//! are built from candle ops with autograd:
//! - max-pooling pads with `-inf` (a padded pixel never wins: every TF SAME window holds at
//!   least one real pixel), takes one strided slice of the padded input per window offset,
//!   and routes each output to the first maximum in row-major window order, as TF's CPU
//!   kernel does (`SpatialMaxPoolWithArgMaxHelper` in
//!   `tensorflow/core/kernels/maxpooling_op.cc`: strict `<` comparison, so ties go to the
//!   first element), so the gradient reaches exactly that element;
//! - average-pooling sums each window with a ones-kernel convolution over zero padding and
//!   divides by the number of real (unpadded) pixels in the window, as TF's
//!   `tensorflow/core/kernels/avgpooling_op.cc` (SAME padding is excluded from the count).
//!
//! f32 on CPU takes ferroflow's own kernels instead ([`crate::kernels::pool`]: one sweep
//! per pass, the max-pool's winners remembered for its backward), with the same semantics
//! (ties, `-inf` padding, NaN); the candle-ops path serves every other dtype and device.

use candle_core::{DType, Tensor};

use super::conv::conv2d;
use super::padding::{Padding, Window, host_tensor, pad_and_crop, strided, window};
use crate::kernels::pool::{self as kernel, Pool2dParams};
use crate::{NnError, Result};

struct Geometry {
    n: usize,
    c: usize,
    windows: [Window; 2],
    used: [usize; 2],
}

fn geometry(op: &str, x: &Tensor, ksize: [usize; 2], stride: [usize; 2], padding: Padding) -> Result<Geometry> {
    geometry_of(op, x.dims(), ksize, stride, padding)
}

/// The kernels' explicit geometry for TF's max-pool of an `[N, C, H, W]` input, validated
/// as [`max_pool2d`] does (for ops that fuse a max-pool into their own kernel).
pub(crate) fn max_pool_kernel_params(
    op: &str,
    dims: &[usize],
    ksize: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
) -> Result<Pool2dParams> {
    Ok(geometry_of(op, dims, ksize, stride, padding)?.kernel_params(ksize, stride))
}

fn geometry_of(op: &str, dims: &[usize], ksize: [usize; 2], stride: [usize; 2], padding: Padding) -> Result<Geometry> {
    let describe = || format!("x {dims:?}, ksize {ksize:?}, stride {stride:?}, padding {padding}");
    let &[n, c, h, w] = dims else {
        return Err(NnError::shape(op, format!("expected an NCHW (rank 4) input: {}", describe())));
    };
    if ksize.contains(&0) || stride.contains(&0) {
        return Err(NnError::shape(op, format!("ksize and stride must be at least 1: {}", describe())));
    }
    let win = |axis: usize, input: usize| {
        window(input, ksize[axis], stride[axis], 1, padding)
            .map_err(|e| NnError::shape(op, format!("{e}: {}", describe())))
    };
    let windows = [win(0, h)?, win(1, w)?];
    let used = [windows[0].used_len(ksize[0], stride[0], 1), windows[1].used_len(ksize[1], stride[1], 1)];
    Ok(Geometry { n, c, windows, used })
}

impl Geometry {
    /// The explicit geometry of the pool kernels.
    fn kernel_params(&self, ksize: [usize; 2], stride: [usize; 2]) -> Pool2dParams {
        let [h, w] = self.windows;
        Pool2dParams { ksize, stride, pad_before: [h.pad_before, w.pad_before], pad_after: [h.pad_after, w.pad_after] }
    }
}

/// TF's `MaxPool` (`tf.nn.max_pool2d`) on NCHW input.
///
/// SAME pads with `-inf`, so padding never wins. The gradient of each output goes to the
/// first maximal element of its window in row-major order (TF's CPU tie rule) and
/// accumulates where windows overlap.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - result: `[N, C, H_out, W_out]` with TF's output size (see [`super::padding`])
///
/// # Errors
/// A rank other than 4, a zero window or stride, or a VALID window larger than the input.
pub fn max_pool2d(x: &Tensor, ksize: [usize; 2], stride: [usize; 2], padding: Padding) -> Result<Tensor> {
    const OP: &str = "max_pool2d";
    let g = geometry(OP, x, ksize, stride, padding)?;
    if kernel::supports(x) {
        return kernel::max_pool2d(x, g.kernel_params(ksize, stride)).map_err(NnError::candle(OP));
    }
    max_pool_impl(x, &g, ksize, stride).map_err(NnError::candle(OP))
}

fn max_pool_impl(x: &Tensor, g: &Geometry, ksize: [usize; 2], stride: [usize; 2]) -> candle_core::Result<Tensor> {
    let [oh, ow] = [g.windows[0].output, g.windows[1].output];
    let xp = pad_and_crop(x, g.windows, g.used, f64::NEG_INFINITY)?;
    // One strided slice per window offset (a, b): candidate[a, b][i, j] = xp[i*sh + a, j*sw + b].
    let mut candidates = Vec::with_capacity(ksize[0] * ksize[1]);
    for a in 0..ksize[0] {
        let rows = strided(&xp, 2, a, stride[0], oh)?;
        for b in 0..ksize[1] {
            candidates.push(strided(&rows, 3, b, stride[1], ow)?);
        }
    }
    let values: Vec<Tensor> = candidates.iter().map(Tensor::detach).collect();
    let mut max = values[0].clone();
    for v in &values[1..] {
        max = max.maximum(v)?;
    }
    // The first candidate equal to the max wins; it alone gets the gradient (where_cond
    // passes it to the selected branch only). The sum adds exact zeros to the winner.
    let zeros = max.zeros_like()?;
    let mut taken = Tensor::zeros(max.dims(), DType::U8, max.device())?;
    let mut y: Option<Tensor> = None;
    for (cand, value) in candidates.iter().zip(&values) {
        let hit = value.eq(&max)?;
        let first = hit.gt(&taken)?;
        taken = taken.maximum(&hit)?;
        let term = first.where_cond(cand, &zeros)?;
        y = Some(match y {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    let y = y.unwrap_or(zeros);
    debug_assert_eq!(y.dims(), &[g.n, g.c, oh, ow]);
    Ok(y)
}

/// TF's `AvgPool` (`tf.nn.avg_pool2d`) on NCHW input.
///
/// Each output is the sum of the real pixels of its window divided by their number: SAME
/// padding is excluded from the count (`avgpooling_op.cc`). The gradient spreads `dy / count`
/// over each window, accumulating where windows overlap.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - result: `[N, C, H_out, W_out]` with TF's output size (see [`super::padding`])
///
/// # Errors
/// A rank other than 4, a zero window or stride, or a VALID window larger than the input.
pub fn avg_pool2d(x: &Tensor, ksize: [usize; 2], stride: [usize; 2], padding: Padding) -> Result<Tensor> {
    const OP: &str = "avg_pool2d";
    let g = geometry(OP, x, ksize, stride, padding)?;
    if kernel::supports(x) {
        return kernel::avg_pool2d(x, g.kernel_params(ksize, stride)).map_err(NnError::candle(OP));
    }
    let [oh, ow] = [g.windows[0].output, g.windows[1].output];
    let [h, w] = [x.dim(2).map_err(NnError::candle(OP))?, x.dim(3).map_err(NnError::candle(OP))?];
    // The number of real pixels of each window, per axis (the count is their product).
    let real = |win: &Window, input: usize, k: usize, s: usize| -> Vec<usize> {
        (0..win.output)
            .map(|i| {
                let start = (i * s) as isize - win.pad_before as isize;
                let end = (start + k as isize).min(input as isize);
                (end - start.max(0)) as usize
            })
            .collect()
    };
    let rows = real(&g.windows[0], h, ksize[0], stride[0]);
    let cols = real(&g.windows[1], w, ksize[1], stride[1]);
    let counts: Vec<f32> = rows.iter().flat_map(|&r| cols.iter().map(move |&c| (r * c) as f32)).collect();

    let xp = pad_and_crop(x, g.windows, g.used, 0.0).map_err(NnError::candle(OP))?;
    let (hp, wp) = (g.used[0], g.used[1]);
    let planes = xp.contiguous().and_then(|t| t.reshape((g.n * g.c, 1, hp, wp))).map_err(NnError::candle(OP))?;
    let ones = Tensor::ones((1, 1, ksize[0], ksize[1]), x.dtype(), x.device()).map_err(NnError::candle(OP))?;
    // `xp` spans exactly the rows the windows read, so VALID gives TF's output size.
    let sums = conv2d(&planes, &ones, stride, [1, 1], Padding::Valid)?;
    let count = host_tensor(counts, &[1, 1, oh, ow], x).map_err(NnError::candle(OP))?;
    sums.reshape((g.n, g.c, oh, ow)).and_then(|s| s.broadcast_div(&count)).map_err(NnError::candle(OP))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Loop reference for both pools on one [H, W] plane: (y, dx) for `sum(y * dy)`.
    fn reference(
        x: &[f32],
        [h, w]: [usize; 2],
        k: [usize; 2],
        s: [usize; 2],
        same: bool,
        dy: &[f32],
        max: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let dim = |input: usize, k: usize, s: usize| {
            if same {
                let out = input.div_ceil(s);
                let total = ((out - 1) * s + k).saturating_sub(input);
                (out, total / 2)
            } else {
                ((input - k) / s + 1, 0)
            }
        };
        let (oh, pt) = dim(h, k[0], s[0]);
        let (ow, pl) = dim(w, k[1], s[1]);
        let mut y = vec![0f32; oh * ow];
        let mut dx = vec![0f32; h * w];
        for i in 0..oh {
            for j in 0..ow {
                let mut cells = Vec::new();
                for a in 0..k[0] {
                    for b in 0..k[1] {
                        let r = (i * s[0] + a) as isize - pt as isize;
                        let c = (j * s[1] + b) as isize - pl as isize;
                        if r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w {
                            cells.push(r as usize * w + c as usize);
                        }
                    }
                }
                let g = dy[i * ow + j];
                if max {
                    let mut best = cells[0];
                    for &cell in &cells {
                        if x[cell] > x[best] {
                            best = cell;
                        }
                    }
                    y[i * ow + j] = x[best];
                    dx[best] += g;
                } else {
                    y[i * ow + j] = cells.iter().map(|&c| x[c]).sum::<f32>() / cells.len() as f32;
                    for &cell in &cells {
                        dx[cell] += g / cells.len() as f32;
                    }
                }
            }
        }
        (y, dx)
    }

    fn check(max: bool) {
        let dev = Device::Cpu;
        let configs: &[([usize; 2], [usize; 2], [usize; 2])] = &[
            ([7, 7], [3, 3], [2, 2]),
            ([5, 9], [2, 2], [2, 2]),
            ([9, 5], [3, 2], [2, 1]),
            ([5, 5], [3, 3], [3, 3]),
            ([7, 6], [4, 3], [1, 2]),
            ([3, 3], [5, 5], [1, 1]),
            ([11, 10], [3, 3], [4, 3]),
            ([10, 11], [3, 3], [2, 2]),
            ([6, 9], [4, 2], [3, 2]),
            ([4, 4], [5, 5], [1, 1]),
        ];
        for (seed, &(hw, k, s)) in configs.iter().enumerate() {
            for padding in [Padding::Same, Padding::Valid] {
                if padding == Padding::Valid && (hw[0] < k[0] || hw[1] < k[1]) {
                    continue;
                }
                let (n, c) = (2, 3);
                let xv = values(n * c * hw[0] * hw[1], seed as u64 + 11);
                let x = Var::from_vec(xv.clone(), (n, c, hw[0], hw[1]), &dev).unwrap();
                let y = if max { max_pool2d(&x, k, s, padding) } else { avg_pool2d(&x, k, s, padding) }.unwrap();
                let dyv = values(y.elem_count(), seed as u64 + 99);
                let dy = Tensor::from_vec(dyv.clone(), y.dims(), &dev).unwrap();
                let dx = (&y * &dy).unwrap().sum_all().unwrap().backward().unwrap().get(&x).unwrap().clone();
                let (yv, dxv) = (
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    dx.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                );
                let (plane_in, plane_out) = (hw[0] * hw[1], y.dim(2).unwrap() * y.dim(3).unwrap());
                for p in 0..n * c {
                    let (ry, rdx) = reference(
                        &xv[p * plane_in..(p + 1) * plane_in],
                        hw,
                        k,
                        s,
                        padding == Padding::Same,
                        &dyv[p * plane_out..(p + 1) * plane_out],
                        max,
                    );
                    let what = format!("max {max} hw {hw:?} k {k:?} s {s:?} {padding} plane {p}");
                    assert_eq!(ry.len(), plane_out, "{what}");
                    for (g, w) in yv[p * plane_out..(p + 1) * plane_out].iter().zip(&ry) {
                        assert!((g - w).abs() <= 1e-6, "{what} y: {g} vs {w}");
                    }
                    for (g, w) in dxv[p * plane_in..(p + 1) * plane_in].iter().zip(&rdx) {
                        assert!((g - w).abs() <= 1e-6, "{what} dx: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn max_pool_matches_loop_reference_incl_same_on_odd_sizes() {
        check(true);
    }

    #[test]
    fn avg_pool_matches_loop_reference_incl_same_on_odd_sizes() {
        check(false);
    }

    #[test]
    fn same_avg_pool_excludes_padding_from_count() {
        let dev = Device::Cpu;
        let x = Tensor::ones((1, 1, 3, 3), DType::F32, &dev).unwrap();
        // 2x2 windows stride 2 on 3x3, SAME: out 2x2, pad (0, 1): all averages of ones are 1.
        let y = avg_pool2d(&x, [2, 2], [2, 2], Padding::Same).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    }

    #[test]
    fn max_pool_ties_go_to_the_first_element() {
        let dev = Device::Cpu;
        let x = Var::from_vec(vec![1f32; 16], (1, 1, 4, 4), &dev).unwrap();
        let y = max_pool2d(&x, [2, 2], [2, 2], Padding::Valid).unwrap();
        let dx =
            y.sum_all().unwrap().backward().unwrap().get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        #[rustfmt::skip]
        let want = [1., 0., 1., 0.,
                    0., 0., 0., 0.,
                    1., 0., 1., 0.,
                    0., 0., 0., 0.];
        assert_eq!(dx, want);
        // SAME with -inf padding: padding never wins even against negative inputs.
        let x = Tensor::full(-5f32, (1, 1, 3, 3), &dev).unwrap();
        let y = max_pool2d(&x, [2, 2], [2, 2], Padding::Same).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![-5.0; 4]);
    }

    #[test]
    fn pool_rejects_bad_configs() {
        let x = Tensor::zeros((1, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let e = max_pool2d(&x, [4, 4], [1, 1], Padding::Valid).unwrap_err().to_string();
        assert!(e.contains("max_pool2d") && e.contains("[1, 1, 3, 3]"), "{e}");
        assert!(avg_pool2d(&x, [0, 2], [1, 1], Padding::Same).is_err());
        let x3 = Tensor::zeros((1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(avg_pool2d(&x3, [2, 2], [1, 1], Padding::Same).is_err());
    }
}
