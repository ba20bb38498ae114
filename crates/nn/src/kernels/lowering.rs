//! How one image's convolution becomes gemms: the per-image passes (forward, filter
//! gradient, input gradient) shared by the conv kernel ([`super::conv2d`]) and the fused
//! conv → batch norm kernel ([`super::conv_bn`]).
//!
//! Three lowerings, picked from the geometry:
//! - pointwise (1x1, unit stride, no padding): the image itself is the gemm operand;
//! - row shift (unit vertical stride, `kh > 1`, e.g. every 3x3 SAME conv of the benchmark
//!   CNNs): a "column" matrix over `(channel, kernel column)` only, `[C·kw, R·W_out]` with
//!   `R = H_out + (kh - 1)·dh` padded input rows, and one gemm per kernel row `a` whose
//!   operand is that matrix shifted by `a·dh` rows. It is `kh` times smaller than the full
//!   im2col matrix, so the copies (and col2im's scatter-adds) shrink by as much, while each
//!   gemm keeps a reduction of `C·kw`. (The trick of "Indirect"/"memory-efficient"
//!   convolution lowerings, e.g. Cho & Brand, "MEC: Memory-efficient Convolution for Deep
//!   Neural Network", ICML 2017.)
//! - full im2col (everything else, e.g. vertical strides): `[C·kh·kw, H_out·W_out]`.
//!
//! Perf (cifar_cnn, batch 64, one thread): im2col and col2im were 13% of the training
//! step with the full lowering.

use std::mem::MaybeUninit;

use gemm::Parallelism;

use super::buffers::zero;
use super::conv2d::{Conv2dParams, Geometry, gemm_strided, valid_range};
use super::direct::Direct;
use super::simd::simd_kernel;
use super::winograd::Winograd;

/// The smallest gemm reduction (`C·kw`) for which the row shift is used: below it, e.g.
/// the first layer of an RGB network (`3·3 = 9`), its `kh` gemms are too short to keep
/// gemm's micro-kernel busy, and one gemm over the full im2col matrix (`3·3·3 = 27`) is
/// faster (measured on cifar_cnn's first layer, batch 64).
const ROW_SHIFT_MIN_REDUCTION: usize = 32;

/// Which lowering (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pointwise,
    RowShift,
    Full,
}

/// One convolution's geometry and weights, ready for the per-image passes.
pub(super) struct Lowered<'a> {
    g: &'a Geometry,
    kind: Kind,
    /// The OIHW weights `[O, K]`.
    w: &'a [f32],
    /// Row shift: the weights regrouped per kernel row, `[kh, O, C·kw]`; else empty.
    w_rows: Vec<f32>,
    /// The passes that run as direct convolutions instead ([`super::direct`]).
    direct: Option<Direct>,
    /// The pass (forward or input gradient) when it runs as a Winograd convolution
    /// ([`super::winograd`]), before the direct kernels.
    winograd: Option<Winograd>,
    /// Whether the weights were prepared for the forward pass, else the input gradient.
    forward: bool,
    /// Whether the filter gradient runs as a Winograd one ([`super::winograd`]).
    winograd_filter: bool,
}

impl<'a> Lowered<'a> {
    /// For the filter gradient alone, which needs no weights.
    pub(super) fn without_weights(g: &'a Geometry) -> Self {
        Lowered {
            g,
            kind: Self::kind(g),
            w: &[],
            w_rows: Vec::new(),
            direct: Direct::plan(g, &[]),
            winograd: None,
            forward: false,
            winograd_filter: Winograd::passes(g)[2],
        }
    }

    fn kind(g: &Geometry) -> Kind {
        if g.is_pointwise() {
            Kind::Pointwise
        } else if g.p.stride[0] == 1 && g.kh > 1 && g.c * g.kw >= ROW_SHIFT_MIN_REDUCTION {
            Kind::RowShift
        } else {
            Kind::Full
        }
    }

    /// For the forward pass (`forward`) or the input gradient, and the filter gradient;
    /// `w` is the OIHW weights `[O, C·kh·kw]`.
    pub(super) fn new(g: &'a Geometry, w: &'a [f32], forward: bool) -> Self {
        let kind = Self::kind(g);
        // Winograd transforms the weights of the one pass asked for, here on the calling
        // thread (before the per-image tasks).
        let winograd = Winograd::plan(g, w, forward);
        // The direct plan prepares weights only when Winograd leaves it the pass.
        let direct = Direct::plan(g, if winograd.is_some() { &[] } else { w });
        let mut w_rows = Vec::new();
        let direct_pass = direct.as_ref().is_some_and(|d| if forward { d.forward() } else { d.input() });
        let gemm_uses_weights = winograd.is_none() && !direct_pass;
        if kind == Kind::RowShift && gemm_uses_weights {
            let kcw = g.c * g.kw;
            w_rows = vec![0f32; g.kh * g.o * kcw];
            for a in 0..g.kh {
                for o in 0..g.o {
                    for c in 0..g.c {
                        for e in 0..g.kw {
                            w_rows[(a * g.o + o) * kcw + c * g.kw + e] = w[((o * g.c + c) * g.kh + a) * g.kw + e];
                        }
                    }
                }
            }
        }
        Lowered { g, kind, w, w_rows, direct, winograd, forward, winograd_filter: Winograd::passes(g)[2] }
    }

    /// Rows of the row-shift matrix: `C·kw`.
    fn shift_rows(&self) -> usize {
        self.g.c * self.g.kw
    }

    /// Columns of the row-shift matrix: `R·W_out`, `R = H_out + (kh - 1)·dh`.
    fn shift_cols(&self) -> usize {
        (self.g.oh + (self.g.kh - 1) * self.g.p.dilation[0]) * self.g.ow
    }

    /// The scratch the pass this lowering was made for (forward or input gradient) needs
    /// for any number of images: Winograd's per group ([`Winograd::scratch`]), or per image a
    /// direct pass's padded copy or the column matrix (0 for pointwise). (The filter
    /// gradient's: [`Self::filter_col_len`].)
    pub(super) fn col_len(&self) -> usize {
        let g = self.g;
        if self.winograd.is_some() {
            return Winograd::scratch(g);
        }
        match &self.direct {
            Some(d) if self.forward && d.forward() => Direct::forward_scratch(g),
            Some(d) if !self.forward && d.input() => Direct::input_scratch(g),
            _ => self.gemm_col_len(),
        }
    }

    /// The forward pass of the images of `xs` `[images, C, H, W]` into `ys` `[images, O,
    /// P]` (every element written): Winograd's groups of images where it runs, else
    /// [`Self::forward_image`] per image.
    pub(super) fn forward_images(&self, xs: &[f32], col: &mut [f32], ys: &mut [f32], par: Parallelism) {
        assert!(self.forward && !self.w.is_empty(), "lowering: weights not prepared for the forward pass");
        let g = self.g;
        if let Some(v) = self.winograd.as_ref().filter(|v| v.forward()) {
            return v.forward_images(g, xs, ys, col, par);
        }
        for (y_n, x_n) in ys.chunks_exact_mut(g.y_image()).zip(xs.chunks_exact(g.x_image())) {
            self.forward_image(x_n, col, y_n, par);
        }
    }

    /// The input gradient of the images of `dys` `[images, O, P]` into `dxs` `[images, C, H,
    /// W]`, which must be zeros: as [`Self::forward_images`].
    pub(super) fn input_images(&self, dys: &[f32], dcol: &mut [f32], dxs: &mut [f32], par: Parallelism) {
        assert!(!self.forward && !self.w.is_empty(), "lowering: weights not prepared for the input gradient");
        let g = self.g;
        if let Some(v) = self.winograd.as_ref().filter(|v| v.input()) {
            return v.input_images(g, dys, dxs, dcol, par);
        }
        for (dx_n, dy_n) in dxs.chunks_exact_mut(g.x_image()).zip(dys.chunks_exact(g.y_image())) {
            self.input_image(dy_n, dcol, dx_n, par);
        }
    }

    /// [`Self::input_images`] into memory that need not be initialised: zeroed first, unless
    /// the pass writes every element itself (Winograd). Returns `dxs`, initialised.
    pub(super) fn input_images_into<'d>(
        &self,
        dys: &[f32],
        dcol: &mut [f32],
        dxs: &'d mut [MaybeUninit<f32>],
        par: Parallelism,
    ) -> &'d mut [f32] {
        assert!(!self.forward && !self.w.is_empty(), "lowering: weights not prepared for the input gradient");
        if let Some(v) = self.winograd.as_ref().filter(|v| v.input()) {
            v.input_images_into(self.g, dys, dxs, dcol, par);
            // SAFETY: the Winograd pass wrote every element of `dxs` (`Pass::run`), with f32
            // values; same layout.
            #[allow(unsafe_code)]
            return unsafe { &mut *(std::ptr::from_mut::<[MaybeUninit<f32>]>(dxs) as *mut [f32]) };
        }
        let dxs = zero(dxs);
        self.input_images(dys, dcol, dxs, par);
        dxs
    }

    /// The column matrix's length (0 for pointwise): the gemm passes take exactly this much
    /// of the scratch [`Self::col_len`] gives.
    fn gemm_col_len(&self) -> usize {
        match self.kind {
            Kind::Pointwise => 0,
            Kind::RowShift => self.shift_rows() * self.shift_cols(),
            Kind::Full => self.g.col_rows() * self.g.col_cols(),
        }
    }

    /// The length of the filter-gradient accumulator [`Self::filter_images`] adds into
    /// (`O·K`, in a lowering-specific layout that [`Self::finish_filter`] undoes).
    pub(super) fn filter_len(&self) -> usize {
        self.g.o * self.g.col_rows()
    }

    /// One image's output: `y_n [O, P] = w ⋆ x_n` (every element written), never through
    /// Winograd (see [`Self::forward_images`]).
    fn forward_image(&self, x_n: &[f32], col: &mut [f32], y_n: &mut [f32], par: Parallelism) {
        let g = self.g;
        if let Some(d) = self.direct.as_ref().filter(|d| d.forward()) {
            return d.forward_image(g, x_n, col, y_n, par);
        }
        let col = &mut col[..self.gemm_col_len()];
        let (k, p) = (g.col_rows(), g.col_cols());
        match self.kind {
            Kind::Pointwise => matmul(y_n, p, false, [g.o, p, k], (self.w, k, 1), (x_n, p, 1), par),
            Kind::Full => {
                super::conv2d::im2col(g, x_n, col);
                matmul(y_n, p, false, [g.o, p, k], (self.w, k, 1), (col, p, 1), par);
            }
            Kind::RowShift => {
                let (kcw, l) = (self.shift_rows(), self.shift_cols());
                im2col_rows(g, x_n, col, l);
                for a in 0..g.kh {
                    // y_n [O, P] (+)= w_a [O, C·kw] · col shifted by a·dh rows [C·kw, P]
                    let w_a = &self.w_rows[a * g.o * kcw..][..g.o * kcw];
                    let shifted = &col[a * g.p.dilation[0] * g.ow..];
                    matmul(y_n, p, a > 0, [g.o, p, kcw], (w_a, kcw, 1), (shifted, l, 1), par);
                }
            }
        }
    }

    /// The scratch [`Self::filter_images`] needs for `images` images.
    pub(super) fn filter_col_len(&self, images: usize) -> usize {
        if self.winograd_filter {
            Winograd::filter_scratch(self.g)
        } else if self.direct.as_ref().is_some_and(Direct::filter) {
            images * Direct::filter_scratch(self.g)
        } else {
            self.gemm_col_len()
        }
    }

    /// Adds (or, when `!accumulate`, writes) the filter gradient `Σ_n dy_n · x_nᵀ` of the
    /// `images` images of `xs` `[images, C, H, W]` and `dys` `[images, O, P]` into `acc`
    /// ([`Self::filter_len`] long); `col` is [`Self::filter_col_len`] long.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn filter_images(
        &self,
        images: usize,
        xs: &[f32],
        dys: &[f32],
        col: &mut [f32],
        acc: &mut [f32],
        accumulate: bool,
        par: Parallelism,
    ) {
        let g = self.g;
        if self.winograd_filter {
            let (xs, dys) = (&xs[..images * g.x_image()], &dys[..images * g.y_image()]);
            return Winograd::filter_images(g, xs, dys, col, &mut acc[..self.filter_len()], accumulate);
        }
        if self.direct.as_ref().is_some_and(Direct::filter) {
            return Direct::filter_images(g, images, xs, dys, col, acc, accumulate);
        }
        let (xs, dys) = (xs.chunks_exact(g.x_image()), dys.chunks_exact(g.y_image()));
        for (i, (x_n, dy_n)) in xs.zip(dys).take(images).enumerate() {
            self.filter_image(x_n, dy_n, col, acc, accumulate || i > 0, par);
        }
    }

    /// One image's filter gradient through im2col + gemm, as [`Self::filter_images`].
    fn filter_image(
        &self,
        x_n: &[f32],
        dy_n: &[f32],
        col: &mut [f32],
        acc: &mut [f32],
        accumulate: bool,
        par: Parallelism,
    ) {
        let g = self.g;
        let col = &mut col[..self.gemm_col_len()];
        let (k, p) = (g.col_rows(), g.col_cols());
        // The gradient is written column-major ([K, O] row-major): gemm runs 1.3–2.3x faster
        // so than into a row-major [O, K] (it then needs no transposing repack of the
        // column matrix; measured with gemm 0.19's AVX-512 kernels on cifar_cnn's shapes,
        // e.g. [32 x 1024] · [1024 x 288]: 0.26 → 0.11 ms).
        match self.kind {
            Kind::Pointwise => matmul_col_major(acc, accumulate, [g.o, k, p], (dy_n, p, 1), (x_n, 1, p), par),
            Kind::Full => {
                super::conv2d::im2col(g, x_n, col);
                matmul_col_major(acc, accumulate, [g.o, k, p], (dy_n, p, 1), (col, 1, p), par);
            }
            Kind::RowShift => {
                let (kcw, l) = (self.shift_rows(), self.shift_cols());
                im2col_rows(g, x_n, col, l);
                for a in 0..g.kh {
                    // dw_a [O, C·kw] (+)= dy_n [O, P] · (col shifted by a·dh rows)ᵀ [P, C·kw]
                    let shifted = &col[a * g.p.dilation[0] * g.ow..];
                    let acc_a = &mut acc[a * kcw * g.o..][..kcw * g.o];
                    matmul_col_major(acc_a, accumulate, [g.o, kcw, p], (dy_n, p, 1), (shifted, 1, l), par);
                }
            }
        }
    }

    /// The OIHW filter gradient `[O, C·kh·kw]` from an accumulator of
    /// [`Self::filter_images`].
    pub(super) fn finish_filter(&self, acc: &[f32]) -> Vec<f32> {
        let g = self.g;
        // Winograd's accumulator has the direct kernel's layout, [C, kh·kw, O].
        if self.winograd_filter || self.direct.as_ref().is_some_and(Direct::filter) {
            return Direct::finish_filter(g, acc);
        }
        match self.kind {
            Kind::Pointwise | Kind::Full => {
                // [K, O] → [O, K]
                let k = g.col_rows();
                (0..g.o).flat_map(|o| (0..k).map(move |kk| acc[kk * g.o + o])).collect()
            }
            Kind::RowShift => {
                // [kh, C·kw, O] → [O, C, kh, kw]
                let kcw = self.shift_rows();
                let mut out = vec![0f32; acc.len()];
                for a in 0..g.kh {
                    for c in 0..g.c {
                        for e in 0..g.kw {
                            for o in 0..g.o {
                                out[((o * g.c + c) * g.kh + a) * g.kw + e] = acc[(a * kcw + c * g.kw + e) * g.o + o];
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// One image's input gradient into `dx_n` `[C, H, W]`, which must be zeros, never
    /// through Winograd (see [`Self::input_images`]).
    fn input_image(&self, dy_n: &[f32], dcol: &mut [f32], dx_n: &mut [f32], par: Parallelism) {
        let g = self.g;
        if let Some(d) = self.direct.as_ref().filter(|d| d.input()) {
            return d.input_image(g, dy_n, dcol, dx_n, par);
        }
        let dcol = &mut dcol[..self.gemm_col_len()];
        let (k, p) = (g.col_rows(), g.col_cols());
        match self.kind {
            // The col matrix is the image: write the gemm straight into dx.
            Kind::Pointwise => matmul(dx_n, p, false, [k, p, g.o], (self.w, 1, k), (dy_n, p, 1), par),
            Kind::Full => {
                // dcol [K, P] = wᵀ [K, O] · dy_n [O, P], then scatter-add back to the pixels.
                matmul(dcol, p, false, [k, p, g.o], (self.w, 1, k), (dy_n, p, 1), par);
                super::conv2d::col2im(g, dcol, dx_n);
            }
            Kind::RowShift => {
                let (kcw, l) = (self.shift_rows(), self.shift_cols());
                // Kernel row 0 writes columns [0, P) of every row; zero the rest, which
                // the other kernel rows add into.
                for row in dcol.chunks_exact_mut(l) {
                    row[p..].fill(0.0);
                }
                for a in 0..g.kh {
                    // (dcol shifted by a·dh rows) [C·kw, P] (+)= w_aᵀ [C·kw, O] · dy_n [O, P]
                    let w_a = &self.w_rows[a * g.o * kcw..][..g.o * kcw];
                    let shifted = &mut dcol[a * g.p.dilation[0] * g.ow..];
                    matmul(shifted, l, a > 0, [kcw, p, g.o], (w_a, 1, kcw), (dy_n, p, 1), par);
                }
                col2im_rows(g, dcol, dx_n, l);
            }
        }
    }
}

/// `dst [m, n] (row stride dst_rs) = (accumulate ? dst : 0) + lhs · rhs`.
fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    mnk: [usize; 3],
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    par: Parallelism,
) {
    gemm_strided(dst, (dst_rs, 1), accumulate, mnk, lhs, rhs, par);
}

/// `dst [m, n]` column-major (the row-major `[n, m]` transpose) `= (accumulate ? dst : 0) +
/// lhs · rhs`.
fn matmul_col_major(
    dst: &mut [f32],
    accumulate: bool,
    [m, n, k]: [usize; 3],
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    par: Parallelism,
) {
    gemm_strided(dst, (1, m), accumulate, [m, n, k], lhs, rhs, par);
}

simd_kernel! {
/// The row-shift column matrix of one image: `col [(c, e), r·W_out + j]` is the input pixel
/// `(r - pad_top, j·sw + e·dw - pad_left)` of channel `c`, zero in the padding, for the
/// `R` padded rows `r` (`l = R·W_out` columns).
///
/// # Shapes
/// - `x`: `[C, H, W]` (one image), `col`: `[C·kw, R·W_out]`
fn im2col_rows<'a>(g: &'a Geometry, x: &'a [f32], col: &'a mut [f32], l: usize) -> () {
    let Conv2dParams { stride: [_, sw], dilation: [_, dw], pad_before: [pt, pl], .. } = g.p;
    let rows = l / g.ow;
    // Input rows `r - pt` that exist: padded rows `[rlo, rhi)`.
    let (rlo, rhi) = (pt.min(rows), (pt + g.h).min(rows));
    for (ce, out) in col.chunks_exact_mut(l).enumerate() {
        let (c, e) = (ce / g.kw, ce % g.kw);
        let plane = &x[c * g.h * g.w..][..g.h * g.w];
        let (j0, j1) = valid_range(g.ow, g.w, e * dw, sw, pl);
        out[..rlo * g.ow].fill(0.0);
        out[rhi * g.ow..].fill(0.0);
        if rlo == rhi {
            continue;
        }
        if j0 < j1 && sw == 1 && g.ow == g.w {
            // Output `(r, j)` reads plane index `(r - pt)·w + j + e·dw - pl`: one copy from
            // the first valid pixel to the last, then zero the columns that wrapped.
            let (first, last) = (rlo * g.ow + j0, (rhi - 1) * g.ow + j1);
            let src = first + e * dw - pt * g.w - pl;
            out[first..last].copy_from_slice(&plane[src..src + (last - first)]);
            for r in rlo..rhi {
                let row = &mut out[r * g.ow..(r + 1) * g.ow];
                row[..j0].fill(0.0);
                row[j1..].fill(0.0);
            }
            continue;
        }
        for r in rlo..rhi {
            let src = &plane[(r - pt) * g.w..(r - pt + 1) * g.w];
            let row = &mut out[r * g.ow..(r + 1) * g.ow];
            row[..j0].fill(0.0);
            row[j1..].fill(0.0);
            if j0 == j1 {
                continue;
            }
            let q0 = j0 * sw + e * dw - pl;
            for (d, s) in row[j0..j1].iter_mut().zip(src[q0..].iter().step_by(sw)) {
                *d = *s;
            }
        }
    }
}
}

simd_kernel! {
/// The adjoint of [`im2col_rows`]: adds each entry of `col` to the input pixel it was read
/// from (padding dropped). `x` must be zeros.
///
/// # Shapes
/// - `col`: `[C·kw, R·W_out]`, `x`: `[C, H, W]` (one image)
fn col2im_rows<'a>(g: &'a Geometry, col: &'a [f32], x: &'a mut [f32], l: usize) -> () {
    let Conv2dParams { stride: [_, sw], dilation: [_, dw], pad_before: [pt, pl], .. } = g.p;
    let rows = l / g.ow;
    let (rlo, rhi) = (pt.min(rows), (pt + g.h).min(rows));
    for (ce, src) in col.chunks_exact(l).enumerate() {
        let (c, e) = (ce / g.kw, ce % g.kw);
        let plane = &mut x[c * g.h * g.w..][..g.h * g.w];
        let (j0, j1) = valid_range(g.ow, g.w, e * dw, sw, pl);
        if j0 == j1 {
            continue;
        }
        let q0 = j0 * sw + e * dw - pl;
        for r in rlo..rhi {
            let dst = &mut plane[(r - pt) * g.w..(r - pt + 1) * g.w];
            let row = &src[r * g.ow + j0..r * g.ow + j1];
            if sw == 1 {
                for (d, s) in dst[q0..q0 + row.len()].iter_mut().zip(row) {
                    *d += s;
                }
            } else {
                for (d, s) in dst[q0..].iter_mut().step_by(sw).zip(row) {
                    *d += s;
                }
            }
        }
    }
}
}
