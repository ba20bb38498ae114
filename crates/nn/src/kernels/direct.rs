//! Direct convolution on AVX-512: every pass of a conv (forward, input gradient, filter
//! gradient) without an im2col matrix and without gemm's operand packing.
//!
//! Why: on resnet20's one-thread training step, the im2col copies (8%), col2im's
//! scatter-adds (6%) and gemm's packing of the copied operands (6%) cost about as much as
//! a third of the gemm micro-kernels' own time (perf, `bench/step_profile.py`), and
//! vgg_small spent 8.7% packing and 5.8% in im2col/col2im. oneDNN, which TensorFlow runs
//! on this CPU, computes these convolutions directly (its `jit_avx512_common_conv`
//! kernels); so does this module, in the same register scheme:
//!
//! - **forward** and **input gradient**: a vector holds 16 output channels of one output
//!   pixel; each input value is broadcast and multiplied into `OB` such vectors of weights,
//!   for `PX` pixels of an output row at once (`PX·OB` accumulators in registers, the
//!   reduction over `(channel, kernel row, kernel column)` never leaving them). The input
//!   gradient of a unit-stride conv is itself a unit-stride conv: of `dy` with the filter
//!   flipped and its channel axes swapped ([`Direct::plan`]).
//! - **filter gradient**: a vector holds 16 output channels of one filter tap; for each
//!   output pixel, `dy`'s `OB` channel vectors (from a pixel-major copy of `dy`) are
//!   multiplied by the broadcast input values under the 3x3 taps, for one input channel
//!   (`9·OB` accumulators), summed over every pixel of a chunk of images.
//!
//! Only the input is copied, once per image, into a zero-padded buffer, so the kernels
//! need no bounds checks. Each output element is one sequential sum in a fixed order (input
//! channel, kernel row, kernel column; or pixels in order), so the results do not depend on
//! the thread count. They differ from the gemm path's in rounding only (another summation
//! order); `tests/direct_conv.rs` checks both against [`super::reference`].
//!
//! Used per pass ([`Direct::passes`], public as [`super::direct_passes`]) when the CPU has
//! AVX-512F (detected at run time), the channels the vectors run over are a multiple of 16,
//! the kernel is larger than 1x1, the dilation is 1, the horizontal stride 1 or 2 (the
//! input gradient: stride 1), the reduction at most [`MAX_REDUCTION`] (for a unit-stride
//! forward pass also at least [`MIN_UNIT_STRIDE_REDUCTION`])
//! ([`MAX_INPUT_REDUCTION`] for the input gradient, and for the filter gradient of images
//! of at most [`SMALL_IMAGE`] pixels), and for the filter gradient a 3x3 kernel and at most
//! [`MAX_FILTER_PIXELS`] pixels; everything else takes the im2col + gemm lowerings
//! ([`super::lowering`]). The 3x3 unit-stride SAME convolutions whose channel counts are
//! multiples of 16 run as Winograd convolutions before these ([`super::winograd`];
//! `FERROFLOW_KERNELS=direct` keeps them here). `FERROFLOW_KERNELS=gemm` turns this module off
//! ([`super::choice::Kernels::Gemm`]).
//!
//! Measured (`examples/conv_passes.rs`, batch 64, one thread of a Xeon with AVX-512, ms,
//! gemm → direct): resnet20's 16-channel 3x3 at 32x32: forward 3.16 → 3.00, input
//! gradient 4.00 → 3.05, filter gradient 3.97 → 2.86; its stride-2 16 → 32: forward 3.42 →
//! 1.59, filter 3.36 → 1.33; 64 channels at 32x32: 37.3 → 35.0, 37.0 → 35.0, 39.3 → 33.8.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use super::buffers::as_uninit;
use super::choice::Kernels;
use super::conv2d::Geometry;

/// f32 lanes of an AVX-512 vector: output channels per block.
const LANES: usize = 16;

/// The longest reduction (input channels x kernel taps: `C·kh·kw`) the forward pass, and
/// the filter gradient of larger images, run here. Measured per pass at batch 64, one and
/// two threads (`examples/conv_passes.rs`): up to 64 channels of 3x3 the direct passes
/// were 1.05-2.3x faster than im2col + gemm; from 128 channels gemm's packed operands,
/// amortised over the longer reduction, were as fast or 3-9% faster.
const MAX_REDUCTION: usize = 64 * 9;

/// The shortest reduction (`C·kh·kw`) a unit-stride forward pass runs here. Below it (a
/// network's first layer: 1 or 3 input channels) the kernel's per-pixel overhead (loading
/// and storing its accumulators, one input row per kernel row) is not amortised, and
/// im2col + gemm was faster (`examples/conv_passes.rs`, batch 64, ms, gemm against direct,
/// one and two threads): 3 → 64 channels 3x3 at 32x32 2.74 against 4.17, 1.83 against
/// 2.71; 1 → 32 3x3 at 28x28 0.90 against 1.27, 0.45 against 0.70; 1 → 32 5x5 1.82
/// against 2.03, 0.82 against 0.95; from 4 channels of 3x3 (36) they were even. Strided
/// first layers stay here: 3 → 64 3x3 /2 at 32x32 0.52 against 0.86 (two threads), 7x7 /2
/// at 224x224 31–36 against 43–54.
const MIN_UNIT_STRIDE_REDUCTION: usize = 32;

/// The longest reduction (`O·kh·kw`) the input gradient runs here: it stayed 5-12% faster
/// than gemm up to 256 channels, where the gemm path also scatter-adds a column matrix
/// back to the pixels (col2im).
const MAX_INPUT_REDUCTION: usize = 256 * 9;

/// Output pixels per image up to which the filter gradient runs here up to
/// [`MAX_INPUT_REDUCTION`] (else [`MAX_REDUCTION`]). It sums a chunk of images in registers
/// before each store of the gradient ([`Direct::filter_images`]), where gemm's per-image
/// product reduces over only the image's pixels: on vgg_small's 8x8 layers (256 and 128 →
/// 256 channels) the direct pass was 2-6% faster, on its 16x16 128-channel layer gemm was
/// up to 7% faster.
const SMALL_IMAGE: usize = 64;

/// The most output pixels per image the filter gradient runs here for: its sweep reads the
/// chunk's pixel-major `dy` again for every input channel, which leaves L2 beyond 32x32
/// (ResNet-50's 56x56 64-channel 3x3: 26.8 ms direct against 21.4 ms gemm, 2 threads).
const MAX_FILTER_PIXELS: usize = 32 * 32;

/// Whether this CPU runs the kernels (AVX-512F, checked once by std's feature cache).
pub(super) fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A zero-padded copy's geometry: `rows x cols` per channel, the source starting at padded
/// `(top, left)` (negative: the source's first rows/columns are not needed).
#[derive(Debug, Clone, Copy)]
struct Pad {
    rows: usize,
    cols: usize,
    top: isize,
    left: isize,
}

impl Pad {
    fn plane(&self) -> usize {
        self.rows * self.cols
    }

    /// Copies `src` `[ch, h, w]` into `dst` `[ch, rows, cols]`, zeros around.
    fn copy(&self, src: &[f32], [ch, h, w]: [usize; 3], dst: &mut [f32]) {
        let dst = &mut dst[..ch * self.plane()];
        for (c, out) in dst.chunks_exact_mut(self.plane()).enumerate() {
            let plane = &src[c * h * w..][..h * w];
            for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
                let sr = r as isize - self.top;
                if sr < 0 || sr >= h as isize {
                    row.fill(0.0);
                    continue;
                }
                let src_row = &plane[sr as usize * w..][..w];
                // Padded columns [lo, hi) come from source columns [lo - left, hi - left).
                let lo = self.left.clamp(0, self.cols as isize) as usize;
                let hi = (self.left + w as isize).clamp(0, self.cols as isize) as usize;
                row[..lo].fill(0.0);
                row[hi.max(lo)..].fill(0.0);
                if hi > lo {
                    let s0 = (lo as isize - self.left) as usize;
                    row[lo..hi].copy_from_slice(&src_row[s0..s0 + (hi - lo)]);
                }
            }
        }
    }
}

/// Which passes of one convolution run here, with the weights re-laid for them.
pub(super) struct Direct {
    forward: bool,
    input: bool,
    filter: bool,
    /// Forward weights `w[o, c, a, e]` as [`grouped`] `[O / (OB·16), C·kh·kw, OB·16]`
    /// (empty unless `forward`).
    w_fwd: Vec<f32>,
    /// Input-gradient weights, the flipped filter `w[o, c, kh-1-a, kw-1-e]` as [`grouped`]
    /// `[C / (OB·16), O·kh·kw, OB·16]` (empty unless `input`).
    w_in: Vec<f32>,
}

/// Output-channel blocks of 16 per tile of a conv with `oc` output channels: 2 when they
/// pair up, else 1. (Four blocks of 6 pixels, gemm's own 64x6 shape, measured 2x slower:
/// fewer pixels share each weight vector.)
fn blocks_per_tile(oc: usize) -> usize {
    if (oc / LANES).is_multiple_of(2) { 2 } else { 1 }
}

/// Weights `at(o, r)` for `oc` output channels and `rows` reduction rows, laid out as the
/// tiles read them: per group of `OB·16` output channels, `[rows, OB·16]` contiguous.
fn grouped(oc: usize, rows: usize, at: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let width = blocks_per_tile(oc) * LANES;
    let mut out = Vec::with_capacity(oc * rows);
    for o0 in (0..oc).step_by(width) {
        for r in 0..rows {
            out.extend((o0..o0 + width).map(|o| at(o, r)));
        }
    }
    out
}

impl Direct {
    /// Which passes of `g` run here: `[forward, input gradient, filter gradient]` (the first
    /// two only `with_weights`), under the kernel choice in force on this thread.
    pub(super) fn passes(g: &Geometry, with_weights: bool) -> [bool; 3] {
        if !matches!(Kernels::current(), Kernels::Fast | Kernels::Direct) || !cpu_supported() || g.p.dilation != [1, 1]
        {
            return [false; 3];
        }
        let (sw, k) = (g.p.stride[1], g.kh * g.kw);
        // 1x1 convolutions stay with gemm: without an im2col copy to save (a unit-stride
        // one is a plain matrix product of the image), the direct passes measured up to
        // 2x slower (ResNet-50's bottleneck 1x1s, `examples/conv_passes.rs`).
        let spatial = k > 1;
        let short = g.p.stride == [1, 1] && g.c * k < MIN_UNIT_STRIDE_REDUCTION;
        let forward = with_weights
            && spatial
            && !short
            && g.o.is_multiple_of(LANES)
            && (sw == 1 || sw == 2)
            && g.c * k <= MAX_REDUCTION;
        // The flipped conv needs non-negative padding: pads at most kernel - 1.
        let input = with_weights
            && spatial
            && g.c.is_multiple_of(LANES)
            && g.p.stride == [1, 1]
            && g.p.pad_before[0] < g.kh
            && g.p.pad_before[1] < g.kw
            && g.o * k <= MAX_INPUT_REDUCTION;
        // Small images: gemm's per-image product reduces over only H_out·W_out pixels and
        // reads and writes the whole filter gradient each time.
        let filter_reduction = if g.col_cols() <= SMALL_IMAGE { MAX_INPUT_REDUCTION } else { MAX_REDUCTION };
        let filter = g.o.is_multiple_of(LANES)
            && g.kh == 3
            && g.kw == 3
            && (sw == 1 || sw == 2)
            && g.col_cols() <= MAX_FILTER_PIXELS
            && g.c * k <= filter_reduction;
        [forward, input, filter]
    }

    /// The plan for `g`, or `None` when no pass runs here. `w` is the OIHW filter `[O,
    /// C·kh·kw]`, or empty when only the filter gradient is wanted.
    pub(super) fn plan(g: &Geometry, w: &[f32]) -> Option<Direct> {
        let [forward, input, filter] = Self::passes(g, !w.is_empty());
        if !(forward || input || filter) {
            return None;
        }
        let k = g.kh * g.kw;
        let w_fwd = if forward { grouped(g.o, g.c * k, |o, ck| w[o * g.c * k + ck]) } else { Vec::new() };
        // Tap t = a·kw + e of w is the flipped conv's tap k - 1 - t.
        let w_in = if input {
            grouped(g.c, g.o * k, |c, ot| w[((ot / k) * g.c + c) * k + (k - 1 - ot % k)])
        } else {
            Vec::new()
        };
        Some(Direct { forward, input, filter, w_fwd, w_in })
    }

    pub(super) fn forward(&self) -> bool {
        self.forward
    }

    pub(super) fn input(&self) -> bool {
        self.input
    }

    pub(super) fn filter(&self) -> bool {
        self.filter
    }

    /// The forward pass's padded input.
    fn forward_pad(g: &Geometry) -> Pad {
        Pad {
            rows: (g.oh - 1) * g.p.stride[0] + g.kh,
            cols: (g.ow - 1) * g.p.stride[1] + g.kw,
            top: g.p.pad_before[0] as isize,
            left: g.p.pad_before[1] as isize,
        }
    }

    /// The input gradient's padded `dy` (a unit-stride conv producing `[H, W]`).
    fn input_pad(g: &Geometry) -> Pad {
        Pad {
            rows: g.h + g.kh - 1,
            cols: g.w + g.kw - 1,
            top: (g.kh - 1) as isize - g.p.pad_before[0] as isize,
            left: (g.kw - 1) as isize - g.p.pad_before[1] as isize,
        }
    }

    /// Scratch one image's forward pass needs.
    pub(super) fn forward_scratch(g: &Geometry) -> usize {
        g.c * Self::forward_pad(g).plane()
    }

    /// Scratch one image's input gradient needs.
    pub(super) fn input_scratch(g: &Geometry) -> usize {
        g.o * Self::input_pad(g).plane()
    }

    /// Scratch one image's filter gradient needs: the padded input and `dy` pixel-major.
    pub(super) fn filter_scratch(g: &Geometry) -> usize {
        g.c * Self::forward_pad(g).plane() + g.y_image()
    }

    /// The filter-gradient accumulator's length (`[C, kh·kw, O]`).
    pub(super) fn filter_len(g: &Geometry) -> usize {
        g.o * g.col_rows()
    }

    /// One image's output `y_n` `[O, H_out, W_out]` (every element written).
    pub(super) fn forward_image(
        &self,
        g: &Geometry,
        x_n: &[f32],
        scratch: &mut [f32],
        y_n: &mut [f32],
        par: Parallelism,
    ) {
        let pad = Self::forward_pad(g);
        pad.copy(x_n, [g.c, g.h, g.w], scratch);
        let conv = Conv {
            src: &scratch[..g.c * pad.plane()],
            pad,
            ic: g.c,
            kh: g.kh,
            kw: g.kw,
            w: &self.w_fwd,
            oc: g.o,
            stride: g.p.stride,
            out_hw: [g.oh, g.ow],
        };
        conv.run(y_n, par);
    }

    /// One image's input gradient `dx_n` `[C, H, W]` (every element written).
    pub(super) fn input_image(
        &self,
        g: &Geometry,
        dy_n: &[f32],
        scratch: &mut [f32],
        dx_n: &mut [f32],
        par: Parallelism,
    ) {
        let pad = Self::input_pad(g);
        pad.copy(dy_n, [g.o, g.oh, g.ow], scratch);
        let conv = Conv {
            src: &scratch[..g.o * pad.plane()],
            pad,
            ic: g.o,
            kh: g.kh,
            kw: g.kw,
            w: &self.w_in,
            oc: g.c,
            stride: [1, 1],
            out_hw: [g.h, g.w],
        };
        conv.run(dx_n, par);
    }

    /// Adds (or, when `!accumulate`, writes) the filter gradient of `images` images into
    /// `acc` `[C, kh·kw, O]` ([`Self::filter_len`]); `scratch` holds `images` times
    /// [`Self::filter_scratch`].
    ///
    /// All the images go through the registers before `acc` is stored again: a 256-channel
    /// layer's `acc` is 2.4 MB, more than L2, and one image of 8x8 pixels is too little
    /// work per trip to memory.
    ///
    /// # Shapes
    /// - `xs`: `[images, C, H, W]`, `dys`: `[images, O, H_out·W_out]`
    pub(super) fn filter_images(
        g: &Geometry,
        images: usize,
        xs: &[f32],
        dys: &[f32],
        scratch: &mut [f32],
        acc: &mut [f32],
        accumulate: bool,
    ) {
        let pad = Self::forward_pad(g);
        let (p, per_image) = (g.col_cols(), Self::filter_scratch(g));
        let scratch = &mut scratch[..images * per_image];
        for ((slot, x_n), dy_n) in
            scratch.chunks_exact_mut(per_image).zip(xs.chunks_exact(g.x_image())).zip(dys.chunks_exact(g.y_image()))
        {
            let (xp, dyt) = slot.split_at_mut(g.c * pad.plane());
            pad.copy(x_n, [g.c, g.h, g.w], xp);
            // dy pixel-major: dyt [P, O].
            transpose(&dy_n[..g.o * p], g.o, p, dyt);
        }
        filter_sweep(g, pad, images, scratch, &mut acc[..Self::filter_len(g)], accumulate);
    }

    /// The OIHW filter gradient `[O, C·kh·kw]` from an accumulator `[C, kh·kw, O]`.
    pub(super) fn finish_filter(g: &Geometry, acc: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; g.o * g.col_rows()];
        transpose(&acc[..out.len()], g.col_rows(), g.o, &mut out);
        out
    }
}

/// A unit-dilation convolution of a padded source: `y [oc, oh, ow] = Σ_(c, a, e)
/// src[c, i·sh + a, j·sw + e] · w[c, a, e, o]`.
struct Conv<'a> {
    src: &'a [f32],
    pad: Pad,
    ic: usize,
    kh: usize,
    kw: usize,
    /// [`grouped`]: `[oc / (OB·16), ic·kh·kw, OB·16]`.
    w: &'a [f32],
    oc: usize,
    stride: [usize; 2],
    out_hw: [usize; 2],
}

/// Bytes of weights one input-channel block of a tile reads (`icb·kh·kw·OB·16` f32): half
/// of a 48 KiB L1 data cache, so that they stay there while every tile of the image reuses
/// them (with the whole reduction in one block, a 64-channel layer's 74 KiB per tile came
/// from L2 and the kernel ran at half gemm's speed).
const WEIGHT_BLOCK_BYTES: usize = 24 * 1024;

impl Conv<'_> {
    fn ob(&self) -> usize {
        blocks_per_tile(self.oc)
    }

    /// Input channels per reduction block.
    fn icb(&self) -> usize {
        (WEIGHT_BLOCK_BYTES / (self.kh * self.kw * self.ob() * LANES * 4)).clamp(1, self.ic)
    }

    fn run(&self, y: &mut [f32], par: Parallelism) {
        let [oh, ow] = self.out_hw;
        assert!(self.oc.is_multiple_of(LANES) && self.oc > 0, "direct conv: {} output channels", self.oc);
        assert_eq!(y.len(), self.oc * oh * ow, "direct conv: output length");
        assert_eq!(self.w.len(), self.ic * self.kh * self.kw * self.oc, "direct conv: weights length");
        assert_eq!(self.src.len(), self.ic * self.pad.plane(), "direct conv: source length");
        assert!(
            self.pad.rows >= (oh - 1) * self.stride[0] + self.kh
                && self.pad.cols >= (ow - 1) * self.stride[1] + self.kw,
            "direct conv: padded source {}x{} too small",
            self.pad.rows,
            self.pad.cols
        );
        assert!(cpu_supported(), "direct conv: no AVX-512F");
        let group = self.ob() * LANES * oh * ow;
        match par {
            Parallelism::Rayon(threads) if threads > 1 => {
                y.par_chunks_mut(group).enumerate().for_each(|(gi, ys)| self.group(gi, ys, &mut vec![0f32; group]));
            }
            _ => {
                let mut partial = vec![0f32; group];
                y.chunks_mut(group).enumerate().for_each(|(gi, ys)| self.group(gi, ys, &mut partial));
            }
        }
    }

    /// Output channels `[gi·OB·16, (gi + 1)·OB·16)` into `ys` `[OB·16, oh, ow]`, through
    /// `partial` `[oh·ow, OB·16]`.
    fn group(&self, gi: usize, ys: &mut [f32], partial: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            match (self.ob(), self.stride[1]) {
                (2, 1) => self.group_tiles::<2, 12, 1>(gi, ys, partial),
                (2, _) => self.group_tiles::<2, 12, 2>(gi, ys, partial),
                (_, 1) => self.group_tiles::<1, 24, 1>(gi, ys, partial),
                (_, _) => self.group_tiles::<1, 24, 2>(gi, ys, partial),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (gi, ys, partial);
            unreachable!("direct conv planned without AVX-512");
        }
    }

    /// For each block of input channels, every row of the group in tiles of `PX` pixels,
    /// then the row's rest in tiles of 8, 4, 2 and 1. The sums wait pixel-major in
    /// `partial` `[oh·ow, OB·16]`, as the registers hold them, between blocks; at the end
    /// one transpose writes them to `ys`. (Writing each tile's 16-channel vectors to 16
    /// planes element by element cost up to a tenth of the pass.)
    #[cfg(target_arch = "x86_64")]
    fn group_tiles<const OB: usize, const PX: usize, const SW: usize>(
        &self,
        gi: usize,
        ys: &mut [f32],
        partial: &mut [f32],
    ) {
        let [oh, ow] = self.out_hw;
        let k = self.kh * self.kw;
        let icb = self.icb();
        // The group's weights: [ic·kh·kw, OB·16].
        let wg = &self.w[gi * self.ic * k * OB * LANES..][..self.ic * k * OB * LANES];
        for c0 in (0..self.ic).step_by(icb) {
            let c1 = (c0 + icb).min(self.ic);
            let blk = Block { c0, c1, first: c0 == 0 };
            let w = &wg[c0 * k * OB * LANES..c1 * k * OB * LANES];
            for i in 0..oh {
                let mut j = 0;
                while j < ow {
                    let left = ow - j;
                    let x = &self.src[c0 * self.pad.plane() + (i * self.stride[0]) * self.pad.cols + j * SW..];
                    let part = &mut partial[(i * ow + j) * OB * LANES..];
                    // SAFETY (all arms): `run` checked AVX-512F, that the padded source holds
                    // every (c, i·sh + a, j·sw + e) read for the output row; `w` holds the
                    // block's `(c1 - c0)·kh·kw` rows of `OB·16` weights; the tile reads and
                    // writes `px·OB·16` sums of `part` (pixels `(i, j)` on, `j + px <= ow`).
                    #[allow(unsafe_code)]
                    let step = unsafe {
                        if left >= PX {
                            self.tile::<OB, PX, SW>(blk, x, w, part);
                            PX
                        } else if left >= 8 && PX > 8 {
                            self.tile::<OB, 8, SW>(blk, x, w, part);
                            8
                        } else if left >= 4 {
                            self.tile::<OB, 4, SW>(blk, x, w, part);
                            4
                        } else if left >= 2 {
                            self.tile::<OB, 2, SW>(blk, x, w, part);
                            2
                        } else {
                            self.tile::<OB, 1, SW>(blk, x, w, part);
                            1
                        }
                    };
                    j += step;
                }
            }
        }
        transpose(partial, oh * ow, OB * LANES, ys);
    }

    /// `PX` output pixels of one row, `OB·16` channels, input channels `[c0, c1)`: `x`
    /// starts at the tile's first input pixel (channel `c0`, padded row `i·sh`, column
    /// `j·sw`), `w` at the block's weights `[(c1 - c0)·kh·kw, OB·16]`, `part` at the tile's
    /// sums `[PX, OB·16]` (read unless the block is the first, written).
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const OB: usize, const PX: usize, const SW: usize>(
        &self,
        blk: Block,
        x: &[f32],
        w: &[f32],
        part: &mut [f32],
    ) {
        use std::arch::x86_64::{
            __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
        };
        let (plane, cols, kh, kw) = (self.pad.plane(), self.pad.cols, self.kh, self.kw);
        let (x, w, part) = (x.as_ptr(), w.as_ptr(), part.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); OB]; PX];
        // SAFETY: see `group_tiles`; every offset below is inside the checked extents.
        unsafe {
            if !blk.first {
                for (j, row) in acc.iter_mut().enumerate() {
                    for (b, s) in row.iter_mut().enumerate() {
                        *s = _mm512_loadu_ps(part.add((j * OB + b) * LANES));
                    }
                }
            }
            let mut wt = w;
            for c in 0..blk.c1 - blk.c0 {
                let xc = x.add(c * plane);
                for a in 0..kh {
                    let xa = xc.add(a * cols);
                    for e in 0..kw {
                        let xe = xa.add(e);
                        let mut wv: [__m512; OB] = [_mm512_setzero_ps(); OB];
                        for (b, v) in wv.iter_mut().enumerate() {
                            *v = _mm512_loadu_ps(wt.add(b * LANES));
                        }
                        wt = wt.add(OB * LANES);
                        for (j, row) in acc.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xe.add(j * SW));
                            for (s, v) in row.iter_mut().zip(&wv) {
                                *s = _mm512_fmadd_ps(xv, *v, *s);
                            }
                        }
                    }
                }
            }
            for (j, row) in acc.iter().enumerate() {
                for (b, s) in row.iter().enumerate() {
                    _mm512_storeu_ps(part.add((j * OB + b) * LANES), *s);
                }
            }
        }
    }
}

/// One block of the reduction's input channels, `[c0, c1)`, and whether it is the first
/// (start from zero).
#[derive(Debug, Clone, Copy)]
struct Block {
    c0: usize,
    c1: usize,
    first: bool,
}

/// Every output-channel group and input channel of the filter gradient of `images` images:
/// `acc [c, a·3 + e, o] (+)= Σ_(b, i, j) xp_b[c, i·sh + a, j·sw + e] · dyt_b[i·ow + j, o]`,
/// image `b`'s padded input `xp_b` and pixel-major `dyt_b` side by side in `scratch`.
fn filter_sweep(g: &Geometry, pad: Pad, images: usize, scratch: &[f32], acc: &mut [f32], accumulate: bool) {
    let xp_len = g.c * pad.plane();
    let per_image = xp_len + g.col_cols() * g.o;
    assert!(g.o.is_multiple_of(LANES) && g.kh == 3 && g.kw == 3, "direct filter gradient: geometry {g:?}");
    assert!(pad.rows >= (g.oh - 1) * g.p.stride[0] + 3 && pad.cols >= (g.ow - 1) * g.p.stride[1] + 3);
    assert!(images > 0 && scratch.len() == images * per_image, "direct filter gradient: scratch length");
    assert_eq!(acc.len(), g.c * 9 * g.o);
    assert!(cpu_supported(), "direct conv: no AVX-512F");
    #[cfg(target_arch = "x86_64")]
    {
        let blocks = g.o / LANES;
        let ob = [3, 2, 1].into_iter().find(|ob| blocks.is_multiple_of(*ob)).unwrap_or(1);
        let f = FilterTile {
            cols: pad.cols,
            sh: g.p.stride[0],
            oh: g.oh,
            ow: g.ow,
            oc: g.o,
            images,
            per_image,
            dy_at: xp_len,
            accumulate,
        };
        for c in 0..g.c {
            for og in 0..blocks / ob {
                let o0 = og * ob * LANES;
                let acc = &mut acc[c * 9 * g.o + o0..];
                let (x_at, dy_at) = (c * pad.plane(), o0);
                // SAFETY: the asserts above: AVX-512F; image b's padded input at `b ·
                // per_image` holds channel `c`'s rows and columns every (i·sh + a, j·sw + e)
                // reads, its `dyt` at `b · per_image + xp_len` holds `oh·ow` rows of `oc`
                // values (OB·16 read from `o0`); `acc` holds 9 rows of `oc` from `o0`.
                #[allow(unsafe_code)]
                unsafe {
                    match (ob, g.p.stride[1]) {
                        (3, 1) => f.run::<3, 1>(scratch, x_at, dy_at, acc),
                        (3, _) => f.run::<3, 2>(scratch, x_at, dy_at, acc),
                        (2, 1) => f.run::<2, 1>(scratch, x_at, dy_at, acc),
                        (2, _) => f.run::<2, 2>(scratch, x_at, dy_at, acc),
                        (_, 1) => f.run::<1, 1>(scratch, x_at, dy_at, acc),
                        (_, _) => f.run::<1, 2>(scratch, x_at, dy_at, acc),
                    }
                }
            }
        }
    }
}

/// One input channel and `OB·16` output channels of a 3x3 filter gradient.
struct FilterTile {
    cols: usize,
    sh: usize,
    oh: usize,
    ow: usize,
    oc: usize,
    /// Images in the scratch, each `per_image` long: the padded input, then at `dy_at` the
    /// pixel-major `dy`.
    images: usize,
    per_image: usize,
    dy_at: usize,
    accumulate: bool,
}

impl FilterTile {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const OB: usize, const SW: usize>(&self, scratch: &[f32], x_at: usize, o0: usize, acc: &mut [f32]) {
        use std::arch::x86_64::{
            _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
        };
        let (cols, oc) = (self.cols, self.oc);
        let (base, out) = (scratch.as_ptr(), acc.as_mut_ptr());
        // SAFETY: see `filter_sweep`.
        unsafe {
            let mut s = [[_mm512_setzero_ps(); OB]; 9];
            if self.accumulate {
                for (t, row) in s.iter_mut().enumerate() {
                    for (b, v) in row.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(out.add(t * oc + b * LANES));
                    }
                }
            }
            for image in 0..self.images {
                let x = base.add(image * self.per_image + x_at);
                let dy = base.add(image * self.per_image + self.dy_at + o0);
                for i in 0..self.oh {
                    let xr = x.add(i * self.sh * cols);
                    let dr = dy.add(i * self.ow * oc);
                    for j in 0..self.ow {
                        let mut dv = [_mm512_setzero_ps(); OB];
                        for (b, v) in dv.iter_mut().enumerate() {
                            *v = _mm512_loadu_ps(dr.add(j * oc + b * LANES));
                        }
                        let xj = xr.add(j * SW);
                        for (t, row) in s.iter_mut().enumerate() {
                            let xv = _mm512_set1_ps(*xj.add((t / 3) * cols + t % 3));
                            for (v, d) in row.iter_mut().zip(&dv) {
                                *v = _mm512_fmadd_ps(xv, *d, *v);
                            }
                        }
                    }
                }
            }
            for (t, row) in s.iter().enumerate() {
                for (b, v) in row.iter().enumerate() {
                    _mm512_storeu_ps(out.add(t * oc + b * LANES), *v);
                }
            }
        }
    }
}

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]`: 16 x 16 blocks in registers (AVX-512
/// unpack and shuffle steps), the edges element by element.
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    transpose_into(src, rows, cols, as_uninit(dst));
}

/// [`transpose`] into memory that need not be initialised; every element of `dst` is
/// written, so it is initialised afterwards.
pub(super) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [MaybeUninit<f32>]) {
    assert_eq!(src.len(), rows * cols, "transpose: source length");
    assert_eq!(dst.len(), rows * cols, "transpose: destination length");
    let (rb, cb) = (rows / LANES * LANES, cols / LANES * LANES);
    #[cfg(target_arch = "x86_64")]
    if cpu_supported() {
        for r0 in (0..rb).step_by(LANES) {
            for c0 in (0..cb).step_by(LANES) {
                // SAFETY: AVX-512F checked; the block's 16 rows of 16 from (r0, c0) lie inside
                // `src` (r0 + 16 <= rows, c0 + 16 <= cols), its 16 columns of 16 from (c0,
                // r0) inside `dst`, by the length asserts.
                #[allow(unsafe_code)]
                unsafe {
                    let to = dst[c0 * rows + r0..].as_mut_ptr().cast::<f32>();
                    transpose16(src[r0 * cols + c0..].as_ptr(), cols, to, rows);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let (rb, cb) = (0, 0);
    for r in 0..rows {
        let from = if r < rb { cb } else { 0 };
        for c in from..cols {
            dst[c * rows + r].write(src[r * cols + c]);
        }
    }
}

/// One 16 x 16 block: `dst[c·ds + r] = src[r·ss + c]`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    // SAFETY: the caller's: 16 rows of 16 readable at `src`, 16 of 16 writable at `dst`.
    unsafe { transpose16_to(src, ss, |c| dst.add(c * ds)) }
}

/// One 16 x 16 block with each column going where `column(c)` says: `column(c)[r] =
/// src[r·ss + c]` (e.g. the pixels of a block that wraps around an image row, into a
/// padded pixel-major layout).
///
/// # Safety
/// AVX-512F; 16 rows of 16 readable at `src` (`ss` apart); 16 writable at each
/// `column(c)`, `c < 16`.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16_to(src: *const f32, ss: usize, column: impl Fn(usize) -> *mut f32) {
    use std::arch::x86_64::{
        __m512, _mm512_loadu_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps,
        _mm512_unpackhi_ps, _mm512_unpacklo_ps,
    };
    // SAFETY: the caller's: 16 rows of 16 readable at `src`, 16 writable at each column's.
    unsafe {
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(src.add(i * ss));
        }
        // Per 128-bit lane: t[2k] = (r2k[0], r2k+1[0], r2k[1], r2k+1[1]), t[2k+1] the [2], [3].
        let mut t = [_mm512_setzero_ps(); 16];
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        // u[4k + m], lane L: rows 4k..4k+3 of column 4L + m.
        let mut u = [_mm512_setzero_ps(); 16];
        for k in 0..4 {
            u[4 * k] = _mm512_shuffle_ps::<0x44>(t[4 * k], t[4 * k + 2]);
            u[4 * k + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * k], t[4 * k + 2]);
            u[4 * k + 2] = _mm512_shuffle_ps::<0x44>(t[4 * k + 1], t[4 * k + 3]);
            u[4 * k + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * k + 1], t[4 * k + 3]);
        }
        // Gather lane L of u[m], u[4 + m], u[8 + m], u[12 + m]: column 4L + m.
        let store = |c: usize, v: __m512| _mm512_storeu_ps(column(c), v);
        for m in 0..4 {
            let a = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
            let b = _mm512_shuffle_f32x4::<0xDD>(u[m], u[4 + m]);
            let c = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
            let d = _mm512_shuffle_f32x4::<0xDD>(u[8 + m], u[12 + m]);
            store(m, _mm512_shuffle_f32x4::<0x88>(a, c));
            store(8 + m, _mm512_shuffle_f32x4::<0xDD>(a, c));
            store(4 + m, _mm512_shuffle_f32x4::<0x88>(b, d));
            store(12 + m, _mm512_shuffle_f32x4::<0xDD>(b, d));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_matches_the_index_definition() {
        for (rows, cols) in [(16, 16), (32, 48), (17, 35), (5, 3), (64, 1024), (1, 16), (40, 7)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * rows + r], src[r * cols + c], "{rows}x{cols} at ({r}, {c})");
                }
            }
        }
    }
}
