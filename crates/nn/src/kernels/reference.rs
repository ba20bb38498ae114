//! The slow, obvious conv2d: seven nested loops per pass, written straight from the
//! definition, for checking the fast kernels of [`super::conv2d`](mod@super::conv2d) (forward, input gradient,
//! filter gradient). Accumulates in f64 so that it is the more accurate side of a
//! comparison. Below it, the same for the pools of [`super::pool`] and the batch norm of
//! [`super::batch_norm`].
//!
//! Definition (per axis, `s` stride, `d` dilation, `pad` padding before):
//! `y[n, o, i, j] = Σ_{c, a, e} x[n, c, i·s_h + a·d_h - pad_h, j·s_w + e·d_w - pad_w] · w[o, c, a, e]`,
//! with `x` zero outside the image; `dx` and `dw` are the gradients of `Σ y · dy`.

use super::conv2d::Conv2dParams;
use super::pool::Pool2dParams as PoolParams;

/// The input pixel `(row, column)` tap `(a, e)` of output pixel `(i, j)` reads, or `None`
/// in the padding.
fn tap(p: &Conv2dParams, hw: [usize; 2], (i, j): (usize, usize), (a, e): (usize, usize)) -> Option<(usize, usize)> {
    let r = (i * p.stride[0] + a * p.dilation[0]).checked_sub(p.pad_before[0])?;
    let q = (j * p.stride[1] + e * p.dilation[1]).checked_sub(p.pad_before[1])?;
    (r < hw[0] && q < hw[1]).then_some((r, q))
}

/// Calls `f(x index, w index, y index)` for every multiply of the convolution: the seven
/// loops shared by the three passes.
fn for_each_tap(xs: [usize; 4], ws: [usize; 4], p: &Conv2dParams, mut f: impl FnMut(usize, usize, usize)) {
    let [n, c, h, w] = xs;
    let [o, _, kh, kw] = ws;
    let [oh, ow] = p.output_size([h, w], [kh, kw]).expect("reference conv2d: geometry without output");
    for b in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let yi = ((b * o + oc) * oh + i) * ow + j;
                    for ic in 0..c {
                        for a in 0..kh {
                            for e in 0..kw {
                                if let Some((r, q)) = tap(p, [h, w], (i, j), (a, e)) {
                                    f(((b * c + ic) * h + r) * w + q, ((oc * c + ic) * kh + a) * kw + e, yi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The output `[N, O, H_out, W_out]` size for `x` `[N, C, H, W]` and `w` `[O, C, kh, kw]`.
///
/// # Panics
/// If the geometry has no output.
pub fn output_shape(xs: [usize; 4], ws: [usize; 4], p: &Conv2dParams) -> [usize; 4] {
    let [oh, ow] = p.output_size([xs[2], xs[3]], [ws[2], ws[3]]).expect("reference conv2d: geometry without output");
    [xs[0], ws[0], oh, ow]
}

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|a| a as f32).collect()
}

/// The forward conv.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), `w`: `[O, C, kh, kw]` (`ws`), result `[N, O, H_out, W_out]`
pub fn conv2d(x: &[f32], xs: [usize; 4], w: &[f32], ws: [usize; 4], p: &Conv2dParams) -> Vec<f32> {
    let mut y = vec![0f64; output_shape(xs, ws, p).iter().product()];
    for_each_tap(xs, ws, p, |xi, wi, yi| y[yi] += f64::from(x[xi]) * f64::from(w[wi]));
    to_f32(y)
}

/// The gradient of `Σ conv2d(x, w) · dy` with respect to `x`.
///
/// # Shapes
/// - `dy`: `[N, O, H_out, W_out]`, `w`: `[O, C, kh, kw]` (`ws`), result `[N, C, H, W]` (`xs`)
pub fn conv2d_backward_input(dy: &[f32], w: &[f32], xs: [usize; 4], ws: [usize; 4], p: &Conv2dParams) -> Vec<f32> {
    let mut dx = vec![0f64; xs.iter().product()];
    for_each_tap(xs, ws, p, |xi, wi, yi| dx[xi] += f64::from(dy[yi]) * f64::from(w[wi]));
    to_f32(dx)
}

/// The gradient of `Σ conv2d(x, w) · dy` with respect to `w`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), `dy`: `[N, O, H_out, W_out]`, result `[O, C, kh, kw]` (`ws`)
pub fn conv2d_backward_filter(x: &[f32], dy: &[f32], xs: [usize; 4], ws: [usize; 4], p: &Conv2dParams) -> Vec<f32> {
    let mut dw = vec![0f64; ws.iter().product()];
    for_each_tap(xs, ws, p, |xi, wi, yi| dw[wi] += f64::from(dy[yi]) * f64::from(x[xi]));
    to_f32(dw)
}

// The pools of [`super::pool`], per window straight from the definition:
// output `(i, j)` of a plane reads the padded-input cells
// `(i·s_h + a - pad_h, j·s_w + e - pad_w)` for `a < k_h`, `e < k_w`, in row-major order.
// - max: the padding is `-inf`; the running maximum starts at the first cell and is
//   replaced by strictly greater values only (ties to the first, NaN never replaces); a
//   NaN result gives 0 and no gradient, a padded winner no gradient (`ops::max_pool2d`);
// - avg: the mean of the real cells (padding excluded from the count), summed in f64.

/// The cells of window `(i, j)` in row-major order: the plane-local input index, or `None`
/// in the padding.
fn pool_window(p: &PoolParams, hw: [usize; 2], (i, j): (usize, usize)) -> Vec<Option<usize>> {
    let mut cells = Vec::with_capacity(p.ksize[0] * p.ksize[1]);
    for a in 0..p.ksize[0] {
        for e in 0..p.ksize[1] {
            let r = (i * p.stride[0] + a).checked_sub(p.pad_before[0]);
            let q = (j * p.stride[1] + e).checked_sub(p.pad_before[1]);
            cells.push(match (r, q) {
                (Some(r), Some(q)) if r < hw[0] && q < hw[1] => Some(r * hw[1] + q),
                _ => None,
            });
        }
    }
    cells
}

/// Calls `f(plane offset of x, y index, window cells)` for every output of the pool.
fn for_each_window(xs: [usize; 4], p: &PoolParams, mut f: impl FnMut(usize, usize, &[Option<usize>])) {
    let [n, c, h, w] = xs;
    let [_, _, oh, ow] = pool_output_shape(xs, p);
    for plane in 0..n * c {
        for i in 0..oh {
            for j in 0..ow {
                f(plane * h * w, (plane * oh + i) * ow + j, &pool_window(p, [h, w], (i, j)));
            }
        }
    }
}

/// The output `[N, C, H_out, W_out]` of a pool on `x` `[N, C, H, W]`.
///
/// # Panics
/// If the geometry has no output.
pub fn pool_output_shape(xs: [usize; 4], p: &PoolParams) -> [usize; 4] {
    let [oh, ow] = p.output_size([xs[2], xs[3]]).expect("reference pool: geometry without output");
    [xs[0], xs[1], oh, ow]
}

/// The max-pool of one window: its value and winning input index (`None` for no gradient).
fn max_window(x: &[f32], cells: &[Option<usize>]) -> (f32, Option<usize>) {
    let value = |cell: Option<usize>| cell.map_or(f32::NEG_INFINITY, |at| x[at]);
    let mut best = (value(cells[0]), cells[0]);
    for &cell in &cells[1..] {
        if best.0 < value(cell) {
            best = (value(cell), cell);
        }
    }
    if best.0.is_nan() { (0.0, None) } else { best }
}

/// The forward max-pool.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), result `[N, C, H_out, W_out]`
pub fn max_pool2d(x: &[f32], xs: [usize; 4], p: &PoolParams) -> Vec<f32> {
    let mut y = vec![0f32; pool_output_shape(xs, p).iter().product()];
    for_each_window(xs, p, |off, yi, cells| y[yi] = max_window(&x[off..], cells).0);
    y
}

/// The gradient of `Σ max_pool2d(x) · dy` with respect to `x`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), `dy`: `[N, C, H_out, W_out]`, result `[N, C, H, W]`
pub fn max_pool2d_backward(x: &[f32], dy: &[f32], xs: [usize; 4], p: &PoolParams) -> Vec<f32> {
    let mut dx = vec![0f64; xs.iter().product()];
    for_each_window(xs, p, |off, yi, cells| {
        if let Some(at) = max_window(&x[off..], cells).1 {
            dx[off + at] += f64::from(dy[yi]);
        }
    });
    to_f32(dx)
}

/// The forward average-pool.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), result `[N, C, H_out, W_out]`
pub fn avg_pool2d(x: &[f32], xs: [usize; 4], p: &PoolParams) -> Vec<f32> {
    let mut y = vec![0f64; pool_output_shape(xs, p).iter().product()];
    for_each_window(xs, p, |off, yi, cells| {
        let real: Vec<usize> = cells.iter().flatten().copied().collect();
        y[yi] = real.iter().map(|&at| f64::from(x[off + at])).sum::<f64>() / real.len() as f64;
    });
    to_f32(y)
}

/// The gradient of `Σ avg_pool2d(x) · dy` with respect to `x`.
///
/// # Shapes
/// - `dy`: `[N, C, H_out, W_out]`, result `[N, C, H, W]` (`xs`)
pub fn avg_pool2d_backward(dy: &[f32], xs: [usize; 4], p: &PoolParams) -> Vec<f32> {
    let mut dx = vec![0f64; xs.iter().product()];
    for_each_window(xs, p, |off, yi, cells| {
        let real: Vec<usize> = cells.iter().flatten().copied().collect();
        for at in &real {
            dx[off + at] += f64::from(dy[yi]) / real.len() as f64;
        }
    });
    to_f32(dx)
}

// Training-mode batch normalisation of [`super::batch_norm`], per channel straight from
// the definition in f64 over the `M = N · H · W` values of channel `c`:
// `mean = Σ x / M`, `var = Σ (x - mean)² / M` (biased), `xhat = (x - mean) / sqrt(var + ε)`,
// `y = xhat · gamma + beta`; and for `Σ y · dy`: `dbeta = Σ dy`, `dgamma = Σ dy · xhat`,
// `dx = gamma / sqrt(var + ε) · (dy - dbeta / M - xhat · dgamma / M)`.

/// The flat indices of channel `ch`'s values in an `[N, C, S]` tensor (`xs` `[N, C, H, W]`).
fn channel_indices(xs: [usize; 4], ch: usize) -> impl Iterator<Item = usize> {
    let [n, c, h, w] = xs;
    let s = h * w;
    (0..n).flat_map(move |b| (0..s).map(move |i| (b * c + ch) * s + i))
}

/// Channel `ch`'s mean and biased variance, in f64.
fn channel_stats(x: &[f32], xs: [usize; 4], ch: usize) -> (f64, f64) {
    let m = (xs[0] * xs[2] * xs[3]) as f64;
    let mean = channel_indices(xs, ch).map(|i| f64::from(x[i])).sum::<f64>() / m;
    let var = channel_indices(xs, ch).map(|i| (f64::from(x[i]) - mean).powi(2)).sum::<f64>() / m;
    (mean, var)
}

/// The training forward: `(y, batch_mean, batch_variance_biased)`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), `gamma`, `beta`: `[C]`; results `[N, C, H, W]`, `[C]`, `[C]`
pub fn batch_norm_train(
    x: &[f32],
    xs: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut y = vec![0f32; x.len()];
    let (mut means, mut vars) = (Vec::new(), Vec::new());
    for ch in 0..xs[1] {
        let (mean, var) = channel_stats(x, xs, ch);
        let inv = 1.0 / (var + epsilon).sqrt();
        for i in channel_indices(xs, ch) {
            y[i] = ((f64::from(x[i]) - mean) * inv * f64::from(gamma[ch]) + f64::from(beta[ch])) as f32;
        }
        means.push(mean as f32);
        vars.push(var as f32);
    }
    (y, means, vars)
}

/// The gradients of `Σ batch_norm_train(x).y · dy`: `(dx, dgamma, dbeta)`.
///
/// # Shapes
/// - `x`, `dy`: `[N, C, H, W]` (`xs`), `gamma`: `[C]`; results `[N, C, H, W]`, `[C]`, `[C]`
pub fn batch_norm_train_backward(
    x: &[f32],
    dy: &[f32],
    xs: [usize; 4],
    gamma: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (xs[0] * xs[2] * xs[3]) as f64;
    let mut dx = vec![0f32; x.len()];
    let (mut dgammas, mut dbetas) = (Vec::new(), Vec::new());
    for (ch, &gamma) in gamma.iter().enumerate().take(xs[1]) {
        let (mean, var) = channel_stats(x, xs, ch);
        let inv = 1.0 / (var + epsilon).sqrt();
        let xhat = |i: usize| (f64::from(x[i]) - mean) * inv;
        let dbeta = channel_indices(xs, ch).map(|i| f64::from(dy[i])).sum::<f64>();
        let dgamma = channel_indices(xs, ch).map(|i| f64::from(dy[i]) * xhat(i)).sum::<f64>();
        for i in channel_indices(xs, ch) {
            let g = f64::from(gamma) * inv * (f64::from(dy[i]) - dbeta / m - xhat(i) * dgamma / m);
            dx[i] = g as f32;
        }
        dgammas.push(dgamma as f32);
        dbetas.push(dbeta as f32);
    }
    (dx, dgammas, dbetas)
}

// ReLU of [`super::relu`] and the fused batch norm + ReLU of [`super::batch_norm`]:
// `relu(v) = v` where `v > 0`, else 0; its gradient passes `dy` where `v > 0` only (TF's
// `ReluGrad`), so the gradient of `Σ relu(bn(x)) · dy` is bn's gradient for `dy · (bn(x) > 0)`.

/// The forward ReLU.
///
/// # Shapes
/// - `x`: any (flat); result: the same
pub fn relu(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect()
}

/// The gradient of `Σ relu(x) · dy` with respect to `x`.
///
/// # Shapes
/// - `x`, `dy`: the same (flat); result: the same
pub fn relu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter().zip(dy).map(|(&v, &d)| if v > 0.0 { d } else { 0.0 }).collect()
}

/// The training forward of batch norm + ReLU: `(relu(y), batch_mean, batch_variance_biased)`.
///
/// # Shapes
/// - `x`: `[N, C, H, W]` (`xs`), `gamma`, `beta`: `[C]`; results `[N, C, H, W]`, `[C]`, `[C]`
pub fn batch_norm_relu_train(
    x: &[f32],
    xs: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (y, mean, var) = batch_norm_train(x, xs, gamma, beta, epsilon);
    (relu(&y), mean, var)
}

/// The gradients of `Σ batch_norm_relu_train(x).y · dy`: `(dx, dgamma, dbeta)`.
///
/// # Shapes
/// - `x`, `dy`: `[N, C, H, W]` (`xs`), `gamma`, `beta`: `[C]`; results `[N, C, H, W]`, `[C]`, `[C]`
pub fn batch_norm_relu_train_backward(
    x: &[f32],
    dy: &[f32],
    xs: [usize; 4],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (y, _, _) = batch_norm_train(x, xs, gamma, beta, epsilon);
    batch_norm_train_backward(x, &relu_backward(&y, dy), xs, gamma, epsilon)
}
