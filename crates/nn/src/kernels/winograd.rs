//! Winograd F(4x4, 3x3) convolution on AVX-512: every pass (forward, input gradient,
//! filter gradient) of 3x3, unit-stride, SAME-padded convolutions with many channels.
//!
//! Why: on vgg_small's 64-256-channel layers the direct and gemm passes both ran within a
//! few percent of the core's FMA peak (`examples/conv_passes.rs`), and convolutions were
//! 85% of its training step (perf, `bench/step_profile.py`); fewer multiplications is the
//! only way left to run them faster. Winograd's minimal filtering (Lavin & Gray, "Fast
//! Algorithms for Convolutional Neural Networks", CVPR 2016) computes each 4x4 block of
//! outputs from a 6x6 block of inputs with 36 multiplications per (input, output) channel
//! pair instead of 144:
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, with the paper's F(4x4, 3x3) matrices (interpolation
//! points 0, ±1, ±2 and ∞, the ones NNPACK and oneDNN use)
//!
//! ```text
//!      [4  0 -5  0  1  0]        [ 1/4     0     0 ]
//!      [0 -4 -4  1  1  0]        [-1/6  -1/6  -1/6 ]        [1  1  1  1  1  0]
//! Bᵀ = [0  4 -4 -1  1  0]    G = [-1/6   1/6  -1/6 ]   Aᵀ = [0  1 -1  2 -2  0]
//!      [0 -2 -1  2  1  0]        [1/24  1/12   1/6 ]        [0  1  1  4  4  0]
//!      [0  2 -1 -2  1  0]        [1/24 -1/12   1/6 ]        [0  1 -1  8 -8  1]
//!      [0  4  0 -5  0  1]        [ 0     0     1   ]
//! ```
//!
//! F(2x2, 3x3) (16 products per 4 outputs, 2.25x fewer than direct) ran here before; F(4x4,
//! 3x3) needs 1.78x fewer products again for the same transform work per output
//! (`examples/conv_passes.rs` numbers in docs/PERFORMANCE.md, issue 19's seventh session).
//!
//! Summed over input channels, the 36 element-wise products become 36 independent matrix
//! products `M[ξ] [T, O] = V[ξ] [T, C] · U[ξ] [C, O]` over the `T` tiles of a group of
//! images: those run in registers like the direct kernels' (`PX` tiles x `OB·16` output
//! channels of accumulators, each input value broadcast). The transforms run on 16
//! channels at a time, on pixel-major copies of the images with a border of zeros
//! ([`Grid`]: one 16x16-block transpose in, so that every tile reads a fixed window
//! without bounds checks), and write pixel-major outputs (one transpose out). The 36
//! planes of the transformed tiles are a cache line more than their contents apart
//! ([`PLANE_PAD`]).
//!
//! The input gradient of such a conv is itself one (of `dy`, with the filter flipped and
//! its channel axes swapped), so it runs the same code with other weights. The filter
//! gradient is the forward's adjoint: `dg = Gᵀ [Σ_t (Bᵀ d_t B) ⊙ (A dY_t Aᵀ)] G`, 36
//! products `V[ξ]ᵀ · W[ξ]` reduced over a group's tiles in registers, transformed into the
//! direct kernel's accumulator layout once per group ([`FilterPass`]).
//!
//! Rounding: the transforms scale and add up to six inputs (by up to 8) before and after
//! the products, so the results differ from a direct sum by more than the direct kernels'
//! do: about 1e-5 of the output's typical magnitude (a float32 model of the kernel's order
//! at 256 channels: at most 5.7e-4 on sums of about ±30; F(2x2, 3x3) had 4e-5). Tests
//! compare against [`super::reference`] with a tolerance for that. Each output is still
//! one fixed sequence of operations, independent of the thread count.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use super::buffers::{as_uninit, recycle, recycled, with_scratch};
use super::choice::Kernels;
use super::conv2d::Geometry;
#[cfg(target_arch = "x86_64")]
use super::direct::transpose16_to;
use super::direct::{cpu_supported, transpose_into};

/// f32 lanes of an AVX-512 vector.
const LANES: usize = 16;

/// Outputs per tile side: F(4x4, 3x3) computes 4x4 blocks.
const TILE: usize = 4;

/// Inputs per tile side: `TILE + 3 - 1`.
const SPAN: usize = TILE + 2;

/// Transform positions: the 6x6 = 36 products of a tile.
const XI: usize = SPAN * SPAN;

/// The fewest input and output channels for which the passes run here: one vector, so
/// every 3x3 SAME unit-stride convolution whose channel counts are multiples of 16.
/// Measured at batch 64 (`examples/conv_passes.rs`; `bench train`, alternating binaries;
/// docs/PERFORMANCE.md, issue 19's seventh session): with F(2x2, 3x3) the direct kernels
/// were faster below 64 channels; with F(4x4, 3x3), 32 → 32 at 16x16 runs 1.4-1.6x faster
/// than the direct kernels in every pass, 16 → 16 at 32x32 about even per pass, and
/// resnet20's and cifar_cnn's steps ran 10-30% faster with their 16- and 32-channel layers
/// here than on the direct kernels.
const MIN_CHANNELS: usize = LANES;

/// Tiles per group of images: enough that each `[C, OB·16]` block of weights, loaded
/// into L1 once per group and transform position, serves many tiles (an 8x8 image has 4
/// tiles; groups then take 16 images).
const GROUP_TILES: usize = 64;

/// Floats between the 36 planes of `V`, `M`, `W` and `dU` beyond their contents: one
/// cache line. Why: a plane of 64 tiles x 16 channels is exactly 4 KiB, so the 36 values a
/// transform stores (or loads) for one tile, one per plane, all fell in the same L1 set
/// (12 ways), evicting each other; shifting each plane by a line spreads them over 36
/// sets (perf: the input transform's stores were its hottest instructions).
const PLANE_PAD: usize = LANES;

/// The distance between consecutive planes of `per` floats (see [`PLANE_PAD`]).
fn plane_stride(per: usize) -> usize {
    per + PLANE_PAD
}

/// The tiling of one image: `th x tw` tiles of 4x4 outputs.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    h: usize,
    w: usize,
    th: usize,
    tw: usize,
}

impl Tiling {
    fn new(h: usize, w: usize) -> Self {
        Tiling { h, w, th: h.div_ceil(TILE), tw: w.div_ceil(TILE) }
    }

    fn per_image(&self) -> usize {
        self.th * self.tw
    }

    /// Images per group: enough for [`GROUP_TILES`] tiles.
    fn group(&self) -> usize {
        GROUP_TILES.div_ceil(self.per_image()).max(1)
    }

    /// The grid the input transform reads: every tile's 6x6 inputs, from one pixel above
    /// and left of the image to the last tile's bottom-right corner.
    fn input_grid(&self) -> Grid {
        Grid { rows: TILE * self.th + 2, cols: TILE * self.tw + 2, border: 1, h: self.h, w: self.w }
    }

    /// The grid the output gradients' transform reads: every tile's 4x4 outputs.
    fn output_grid(&self) -> Grid {
        Grid { rows: TILE * self.th, cols: TILE * self.tw, border: 0, h: self.h, w: self.w }
    }
}

/// A pixel-major copy of an image with a border of zeros, `[rows, cols, channels]`:
/// pixel `(y, x)` of the `h x w` image at `(y + border, x + border)`, zeros elsewhere.
///
/// Why: with the zeros in memory, every tile's transform reads a fixed 6x6 (or 4x4)
/// window at fixed strides, without the per-pixel bounds checks and index arithmetic of
/// reading the unpadded image (perf: those were most of the input transform's 12% of
/// resnet20's step, whose 8x8 and 16x16 images have few or no interior tiles).
#[derive(Debug, Clone, Copy)]
struct Grid {
    rows: usize,
    cols: usize,
    border: usize,
    h: usize,
    w: usize,
}

impl Grid {
    /// Floats per image at `channels` channels.
    fn len(&self, channels: usize) -> usize {
        self.rows * self.cols * channels
    }

    /// Each image pixel's place in the grid (a grid pixel index), stepping along the image
    /// rows (no division per pixel): made once per pass, for [`Self::fill_images`].
    fn places(&self) -> Vec<usize> {
        let (b, cols) = (self.border, self.cols);
        (0..self.h).flat_map(|y| (0..self.w).map(move |x| (y + b) * cols + x + b)).collect()
    }

    /// Each image's grid of `dsts` `[images, rows, cols, channels]` from `srcs` `[images,
    /// channels, h·w]`, as [`Self::fill`] (`places` from [`Self::places`]).
    fn fill_images(&self, srcs: &[f32], channels: usize, dsts: &mut [f32], places: &[usize]) {
        let plane = self.h * self.w;
        for (src, dst) in srcs.chunks_exact(channels * plane).zip(dsts.chunks_exact_mut(self.len(channels))) {
            self.fill(src, channels, dst, places);
        }
    }

    /// `dst` `[rows, cols, channels]` from the image `src` `[channels, h·w]`: the pixels
    /// transposed in 16x16 blocks (16 channels by 16 consecutive pixels, which may wrap
    /// around image rows) to their `places` (grid pixels), the border zeroed.
    fn fill(&self, src: &[f32], channels: usize, dst: &mut [f32], places: &[usize]) {
        let (h, w, b, cols) = (self.h, self.w, self.border, self.cols);
        let plane = h * w;
        assert_eq!(src.len(), channels * plane, "winograd: image length");
        assert_eq!(dst.len(), self.len(channels), "winograd: grid length");
        assert!(h + b <= self.rows && w + b <= cols, "winograd: grid smaller than the image");
        assert_eq!(places.len(), plane, "winograd: grid places");
        // The border: whole rows above and below the image, and the columns either side.
        for (r, row) in dst.chunks_exact_mut(cols * channels).enumerate() {
            if r < b || r >= b + h {
                row.fill(0.0);
            } else {
                row[..b * channels].fill(0.0);
                row[(b + w) * channels..].fill(0.0);
            }
        }
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if cpu_supported() && channels.is_multiple_of(LANES) {
            done = plane / LANES * LANES;
            let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
            // Channel blocks outermost: each block reads 16 channel planes front to back, 16
            // streams at a time (pixel blocks outermost would read all the planes at once;
            // perf could not tell the two orders apart on resnet20).
            for c0 in (0..channels).step_by(LANES) {
                for (p0, block) in places[..done].chunks_exact(LANES).enumerate() {
                    // SAFETY: AVX-512F checked; rows c0..c0+16 (< channels) of pixels from
                    // 16·p0 (16 of them, <= plane) lie in `src`; each pixel's 16 channels from
                    // c0 lie in `dst` (a place is a pixel of the grid, which holds the image,
                    // asserted above).
                    #[allow(unsafe_code)]
                    unsafe {
                        transpose16_to(sp.add(c0 * plane + LANES * p0), plane, |k| dp.add(block[k] * channels + c0));
                    }
                }
            }
        }
        for c in 0..channels {
            for p in done..plane {
                dst[places[p] * channels + c] = src[c * plane + p];
            }
        }
    }
}

/// Output channels per register tile, in vectors: 2 when the channels allow it.
fn blocks_per_tile(oc: usize) -> usize {
    if (oc / LANES).is_multiple_of(2) { 2 } else { 1 }
}

/// `G x` of one column `x` of a 3x3 filter: six values, each a fixed sequence of f32
/// operations (the divisions are correctly rounded, so the transform is exact up to them).
#[inline(always)]
fn g_column([g0, g1, g2]: [f32; 3]) -> [f32; SPAN] {
    [
        0.25 * g0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        (g0 + 2.0 * g1 + 4.0 * g2) / 24.0,
        (g0 - 2.0 * g1 + 4.0 * g2) / 24.0,
        g2,
    ]
}

/// The 36 transformed taps `G g Gᵀ` of one 3x3 filter `g` (row-major): the sequence of
/// operations [`transform_weights`] runs for many filters side by side, one filter at a
/// time (the tests' reference).
#[cfg(test)]
fn transform_filter(g: [f32; 9]) -> [f32; XI] {
    // G g: 6 rows of 3, column by column.
    let mut gg = [[0f32; 3]; SPAN];
    for s in 0..3 {
        for (r, v) in g_column([g[s], g[3 + s], g[6 + s]]).into_iter().enumerate() {
            gg[r][s] = v;
        }
    }
    // (G g) Gᵀ: 6 columns per row.
    let mut u = [0f32; XI];
    for (r, row) in gg.iter().enumerate() {
        u[r * SPAN..][..SPAN].copy_from_slice(&g_column(*row));
    }
    u
}

/// The 1-D transforms of F(4x4, 3x3) on 16 channels at a time; each 2-D transform applies
/// one to the columns of a tile, then to the rows. Each is a fixed sequence of
/// operations (FMAs included), so every output is computed the same way everywhere.
#[cfg(target_arch = "x86_64")]
mod lanes {
    use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_sub_ps};

    use super::SPAN;

    /// `Bᵀ d` of six inputs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn bt(d: [__m512; SPAN]) -> [__m512; SPAN] {
        let (four, two) = (_mm512_set1_ps(4.0), _mm512_set1_ps(2.0));
        let (minus_four, minus_five) = (_mm512_set1_ps(-4.0), _mm512_set1_ps(-5.0));
        let d4_d2 = _mm512_sub_ps(d[4], d[2]);
        let d3_d1 = _mm512_sub_ps(d[3], d[1]);
        [
            _mm512_fmadd_ps(four, d[0], _mm512_fmadd_ps(minus_five, d[2], d[4])),
            _mm512_fmadd_ps(minus_four, _mm512_add_ps(d[1], d[2]), _mm512_add_ps(d[3], d[4])),
            _mm512_fmadd_ps(four, _mm512_sub_ps(d[1], d[2]), _mm512_sub_ps(d[4], d[3])),
            _mm512_fmadd_ps(two, d3_d1, d4_d2),
            _mm512_fmadd_ps(_mm512_set1_ps(-2.0), d3_d1, d4_d2),
            _mm512_fmadd_ps(four, d[1], _mm512_fmadd_ps(minus_five, d[3], d[5])),
        ]
    }

    /// `Aᵀ m` of six products: four outputs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn at(m: [__m512; SPAN]) -> [__m512; 4] {
        let (s12, d12) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
        let (s34, d34) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
        [
            _mm512_add_ps(_mm512_add_ps(m[0], s12), s34),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), d34, d12),
            _mm512_fmadd_ps(_mm512_set1_ps(4.0), s34, s12),
            _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0), d34, d12), m[5]),
        ]
    }

    /// `A y` of four output gradients (the adjoint of [`at`]): six values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn a(y: [__m512; 4]) -> [__m512; SPAN] {
        let (s02, s13) = (_mm512_add_ps(y[0], y[2]), _mm512_add_ps(y[1], y[3]));
        let four = _mm512_set1_ps(4.0);
        let (p, q) = (_mm512_fmadd_ps(four, y[2], y[0]), _mm512_fmadd_ps(four, y[3], y[1]));
        [
            y[0],
            _mm512_add_ps(s02, s13),
            _mm512_sub_ps(s02, s13),
            _mm512_fmadd_ps(_mm512_set1_ps(2.0), q, p),
            _mm512_fmadd_ps(_mm512_set1_ps(-2.0), q, p),
            y[3],
        ]
    }

    /// `Gᵀ x` of six transformed-filter gradients (the adjoint of [`super::g_column`]):
    /// three taps.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn gt(x: [__m512; SPAN]) -> [__m512; 3] {
        let (s12, d21) = (_mm512_add_ps(x[1], x[2]), _mm512_sub_ps(x[2], x[1]));
        let (s34, d34) = (_mm512_add_ps(x[3], x[4]), _mm512_sub_ps(x[3], x[4]));
        let sixth = _mm512_set1_ps(1.0 / 6.0);
        [
            _mm512_fmadd_ps(
                _mm512_set1_ps(0.25),
                x[0],
                _mm512_fmadd_ps(_mm512_set1_ps(-1.0 / 6.0), s12, _mm512_mul_ps(_mm512_set1_ps(1.0 / 24.0), s34)),
            ),
            _mm512_fmadd_ps(sixth, d21, _mm512_mul_ps(_mm512_set1_ps(1.0 / 12.0), d34)),
            _mm512_fmadd_ps(sixth, _mm512_sub_ps(s34, s12), x[5]),
        ]
    }
}

/// `U[ξ]` of every filter `filter(o, c)` (`c` in `[0, cin)`, `o` in `[0, cout)`), laid out
/// `[cout / (OB·16)][ξ][cin][OB·16]`: each register tile's weights contiguous, each group
/// of output channels built by its own rayon task.
///
/// Each filter's `G g Gᵀ` is `transform_filter`'s sequence of operations (two passes of
/// [`g_column`]), run for a register tile's `OB·16` filters side by side (loops over the lanes, which LLVM
/// vectorises) so that every store is contiguous: one filter at a time, with 36 stores
/// `cin·OB·16` floats apart, took 2% of vgg_small's step (perf).
fn transform_weights(cin: usize, cout: usize, filter: impl Fn(usize, usize) -> [f32; 9] + Sync) -> Vec<f32> {
    const MAX_WIDTH: usize = 2 * LANES;
    let width = blocks_per_tile(cout) * LANES;
    // Every element is written below; a pooled buffer saves zeroing 9.4 MB (256 → 256).
    let mut u = recycled(XI * cin * cout);
    u.par_chunks_mut(XI * cin * width).enumerate().for_each(|(gi, ug)| {
        let mut taps = [[0f32; MAX_WIDTH]; 9];
        let mut gg = [[[0f32; MAX_WIDTH]; 3]; SPAN];
        let mut out = [[0f32; MAX_WIDTH]; XI];
        for c in 0..cin {
            for (lane, oc) in (gi * width..(gi + 1) * width).enumerate() {
                for (t, tap) in filter(oc, c).into_iter().enumerate() {
                    taps[t][lane] = tap;
                }
            }
            // G g: 6 rows of 3, column by column.
            for s in 0..3 {
                for lane in 0..width {
                    let col = g_column([taps[s][lane], taps[3 + s][lane], taps[6 + s][lane]]);
                    for (row, v) in gg.iter_mut().zip(col) {
                        row[s][lane] = v;
                    }
                }
            }
            // (G g) Gᵀ: 6 columns per row, position ξ = 6r + s.
            for (r, row) in gg.iter().enumerate() {
                for lane in 0..width {
                    let col = g_column([row[0][lane], row[1][lane], row[2][lane]]);
                    for (s, v) in col.into_iter().enumerate() {
                        out[r * SPAN + s][lane] = v;
                    }
                }
            }
            for (xi, vals) in out.iter().enumerate() {
                ug[(xi * cin + c) * width..][..width].copy_from_slice(&vals[..width]);
            }
        }
    });
    u
}

/// The plan for one pass of one convolution, with its transformed weights (computed by
/// the calling thread before any parallel work; only the pass's own: a forward call never
/// needs the input gradient's, and the other way round).
pub(super) struct Winograd {
    forward: bool,
    /// `U[ξ]` ([`transform_weights`]): forward `C → O`, or the input gradient's flipped
    /// filter `O → C`.
    u: Vec<f32>,
}

impl Drop for Winograd {
    /// The transformed weights go back to the pool for the next step's plan.
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.u));
    }
}

impl Winograd {
    /// Which passes of `g` run here: `[forward, input gradient, filter gradient]`, under the
    /// kernel choice in force on this thread. All need AVX-512F, a 3x3 kernel at unit stride and
    /// dilation with one pixel of zero padding on every side (SAME), and channel counts
    /// that are multiples of 16 and at least [`MIN_CHANNELS`].
    pub(super) fn passes(g: &Geometry) -> [bool; 3] {
        let fits = Kernels::current() == Kernels::Fast
            && cpu_supported()
            && g.kh == 3
            && g.kw == 3
            && g.p.stride == [1, 1]
            && g.p.dilation == [1, 1]
            && g.p.pad_before == [1, 1]
            && g.oh == g.h
            && g.ow == g.w
            && g.c.is_multiple_of(LANES)
            && g.o.is_multiple_of(LANES)
            && g.c >= MIN_CHANNELS
            && g.o >= MIN_CHANNELS;
        [fits, fits, fits]
    }

    /// The plan for the forward pass (`forward`) or the input gradient of `g` with the
    /// OIHW weights `w` `[O, C·9]`, or `None` when the pass does not run here.
    pub(super) fn plan(g: &Geometry, w: &[f32], forward: bool) -> Option<Winograd> {
        let [fwd, input, _] = Self::passes(g);
        if w.is_empty() || !(if forward { fwd } else { input }) {
            return None;
        }
        assert_eq!(w.len(), g.o * g.c * 9, "winograd: weights length");
        let u = if forward {
            transform_weights(g.c, g.o, |o, c| {
                let k = &w[(o * g.c + c) * 9..][..9];
                std::array::from_fn(|t| k[t])
            })
        } else {
            // The flipped conv maps O → C: its filter (c ← o) is w[o, c] rotated 180°.
            transform_weights(g.o, g.c, |c, o| {
                let k = &w[(o * g.c + c) * 9..][..9];
                std::array::from_fn(|t| k[8 - t])
            })
        };
        Some(Winograd { forward, u })
    }

    pub(super) fn forward(&self) -> bool {
        self.forward
    }

    pub(super) fn input(&self) -> bool {
        !self.forward
    }

    /// Scratch the passes need for any number of images (they run in groups).
    pub(super) fn scratch(g: &Geometry) -> usize {
        let tiling = Tiling::new(g.h, g.w);
        let (images, tiles) = (tiling.group(), tiling.group() * tiling.per_image());
        // Pixel-major input and output, then V [36, T, cin] and one block of M [36, T, OB·16]
        // (the larger of the two passes').
        // (The input grid is at least the image, so this bounds either pass's.)
        let width = blocks_per_tile(g.c).max(blocks_per_tile(g.o)) * LANES;
        images * tiling.input_grid().len(g.c + g.o)
            + XI * (plane_stride(tiles * g.c.max(g.o)) + plane_stride(tiles * width))
    }

    /// Scratch [`Self::filter_images`] needs for any number of images (they run in groups).
    pub(super) fn filter_scratch(g: &Geometry) -> usize {
        let tiling = Tiling::new(g.h, g.w);
        let (images, tiles) = (tiling.group(), tiling.group() * tiling.per_image());
        // Pixel-major x and dy grids, V [36, T, C], W [36, T, O], one block of dU [36, C, OB·16].
        images * (tiling.input_grid().len(g.c) + tiling.output_grid().len(g.o))
            + XI * (plane_stride(tiles * g.c) + plane_stride(tiles * g.o))
            + XI * plane_stride(g.c * blocks_per_tile(g.o) * LANES)
    }

    /// Writes (or, when `accumulate`, adds) the filter gradient of the images of `xs`
    /// `[images, C, H, W]` and `dys` `[images, O, H, W]` into `acc` `[C, 9, O]` (the direct
    /// kernel's layout: [`super::direct::Direct::finish_filter`] turns it into OIHW).
    pub(super) fn filter_images(
        g: &Geometry,
        xs: &[f32],
        dys: &[f32],
        scratch: &mut [f32],
        acc: &mut [f32],
        accumulate: bool,
    ) {
        assert!(Self::passes(g)[2], "winograd: filter gradient of a geometry it does not take");
        FilterPass { tiling: Tiling::new(g.h, g.w), c: g.c, o: g.o }.run(xs, dys, scratch, acc, accumulate);
    }

    /// The forward pass of the images of `xs` `[images, C, H, W]` into `ys` `[images, O, H,
    /// W]` (every element written).
    pub(super) fn forward_images(
        &self,
        g: &Geometry,
        xs: &[f32],
        ys: &mut [f32],
        scratch: &mut [f32],
        par: Parallelism,
    ) {
        assert!(self.forward, "winograd: forward pass not planned");
        Pass { tiling: Tiling::new(g.h, g.w), cin: g.c, cout: g.o, u: &self.u }.run(xs, as_uninit(ys), scratch, par);
    }

    /// The input gradient of the images of `dys` `[images, O, H, W]` into `dxs` `[images, C,
    /// H, W]` (every element written).
    pub(super) fn input_images(
        &self,
        g: &Geometry,
        dys: &[f32],
        dxs: &mut [f32],
        scratch: &mut [f32],
        par: Parallelism,
    ) {
        self.input_images_into(g, dys, as_uninit(dxs), scratch, par);
    }

    /// [`Self::input_images`] into memory that need not be initialised: every element of
    /// `dxs` is written.
    pub(super) fn input_images_into(
        &self,
        g: &Geometry,
        dys: &[f32],
        dxs: &mut [MaybeUninit<f32>],
        scratch: &mut [f32],
        par: Parallelism,
    ) {
        assert!(!self.forward, "winograd: input gradient not planned");
        Pass { tiling: Tiling::new(g.h, g.w), cin: g.o, cout: g.c, u: &self.u }.run(dys, dxs, scratch, par);
    }
}

/// One SAME 3x3 convolution `cin → cout` through the transformed weights `u`.
struct Pass<'a> {
    tiling: Tiling,
    cin: usize,
    cout: usize,
    u: &'a [f32],
}

/// A band of tiles computed together: tile rows `[i0, i1)` of images `[n0, n1)` of a group
/// (several whole images, or some tile rows of one).
#[derive(Debug, Clone, Copy)]
struct Band {
    n0: usize,
    n1: usize,
    i0: usize,
    i1: usize,
}

impl Band {
    fn tiles(&self, tiling: &Tiling) -> usize {
        (self.n1 - self.n0) * (self.i1 - self.i0) * tiling.tw
    }

    /// The band's tiles in order: `(image, tile row, tile column)`.
    fn each(&self, tw: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let Band { n0, n1, i0, i1 } = *self;
        (n0..n1).flat_map(move |n| (i0..i1).flat_map(move |i| (0..tw).map(move |j| (n, i, j))))
    }

    /// The output pixels the band writes: from `(n0, 4·i0, 0)` of the group's pixel-major
    /// output, this many.
    fn pixels(&self, t: &Tiling) -> (usize, usize) {
        let first = (self.n0 * t.h + TILE * self.i0) * t.w;
        let last = if self.n1 - self.n0 > 1 || self.i1 == t.th {
            self.n1 * t.h * t.w
        } else {
            (self.n0 * t.h + TILE * self.i1) * t.w
        };
        (first, last - first)
    }
}

impl Pass<'_> {
    /// Output channels per register tile.
    fn width(&self) -> usize {
        blocks_per_tile(self.cout) * LANES
    }

    /// Scratch one band of up to `tiles` tiles needs: `V [36, T, cin]` and one block of `M
    /// [36, T, OB·16]` (planes [`plane_stride`] apart).
    fn band_scratch(&self, tiles: usize) -> [usize; 2] {
        [XI * plane_stride(tiles * self.cin), XI * plane_stride(tiles * self.width())]
    }

    /// Every element of `dst` is written.
    ///
    /// # Shapes
    /// - `src`: `[images, cin, H, W]`, `dst`: `[images, cout, H, W]`
    fn run(&self, src: &[f32], dst: &mut [MaybeUninit<f32>], scratch: &mut [f32], par: Parallelism) {
        let Tiling { h, w, .. } = self.tiling;
        let (plane, cin, cout) = (h * w, self.cin, self.cout);
        assert!(cpu_supported(), "winograd: no AVX-512F");
        assert!(cin.is_multiple_of(LANES) && cout.is_multiple_of(LANES), "winograd: {cin} → {cout} channels");
        assert_eq!(src.len() % (cin * plane), 0, "winograd: source length");
        let images = src.len() / (cin * plane);
        assert_eq!(dst.len(), images * cout * plane, "winograd: destination length");
        assert_eq!(self.u.len(), XI * cin * cout, "winograd: weights length");
        let group = self.tiling.group();
        let places = self.tiling.input_grid().places();
        for (srcs, dsts) in src.chunks(group * cin * plane).zip(dst.chunks_mut(group * cout * plane)) {
            self.group(srcs, dsts, scratch, &places, par);
        }
    }

    /// One group of at most [`Tiling::group`] images: pixel-major copies in (padded,
    /// [`Tiling::input_grid`]), one band (or,
    /// with threads to spare, one band per tile row), pixel-major outputs back to planes.
    /// Each tile's outputs are the same sums whatever band it is in, so the bits do not
    /// depend on the thread count.
    fn group(
        &self,
        src: &[f32],
        dst: &mut [MaybeUninit<f32>],
        scratch: &mut [f32],
        places: &[usize],
        par: Parallelism,
    ) {
        let tiling = self.tiling;
        let (plane, cin, cout) = (tiling.h * tiling.w, self.cin, self.cout);
        let images = src.len() / (cin * plane);
        let grid = tiling.input_grid();
        let (xh, rest) = scratch.split_at_mut(images * grid.len(cin));
        let (yh, rest) = rest.split_at_mut(images * plane * cout);
        grid.fill_images(src, cin, xh, places);
        let xh = &*xh;
        match par {
            Parallelism::Rayon(threads) if threads > 1 => {
                // Small batches: tile rows in parallel, each band writing its own rows.
                let bands: Vec<Band> = (0..images)
                    .flat_map(|n| (0..tiling.th).map(move |i| Band { n0: n, n1: n + 1, i0: i, i1: i + 1 }))
                    .collect();
                let mut outs = Vec::with_capacity(bands.len());
                let mut left = &mut *yh;
                for band in &bands {
                    let (_, len) = band.pixels(&tiling);
                    let (out, tail) = left.split_at_mut(len * cout);
                    outs.push(out);
                    left = tail;
                }
                bands.into_par_iter().zip(outs).for_each(|(band, out)| {
                    with_scratch(self.band_scratch(band.tiles(&tiling)), |[v, m]| self.band(band, xh, out, v, m));
                });
            }
            _ => {
                let band = Band { n0: 0, n1: images, i0: 0, i1: tiling.th };
                let [vl, ml] = self.band_scratch(band.tiles(&tiling));
                let (v, rest) = rest.split_at_mut(vl);
                self.band(band, xh, yh, v, &mut rest[..ml]);
            }
        }
        for (yh_n, y_n) in yh.chunks_exact(plane * cout).zip(dst.chunks_exact_mut(cout * plane)) {
            transpose_into(yh_n, plane, cout, y_n);
        }
    }

    /// One band: its tiles' `V`, then per block of `OB·16` output channels the 36 products
    /// `M[ξ] = V[ξ] · U[ξ]` for the block and their output transform, so that `V` stays in
    /// L2 while each block's weights (`16 x cin x OB·16`) are read once.
    ///
    /// # Shapes
    /// - `xh`: the group's input grids `[images, rows, cols, cin]`; `out`: the band's output
    ///   pixels `[., cout]`
    fn band(&self, band: Band, xh: &[f32], out: &mut [f32], v: &mut [f32], m: &mut [f32]) {
        let (cin, cout, width) = (self.cin, self.cout, self.width());
        let tiles = band.tiles(&self.tiling);
        assert_eq!(out.len(), band.pixels(&self.tiling).1 * cout, "winograd: band output length");
        let (vs, ms) = (plane_stride(tiles * cin), plane_stride(tiles * width));
        let (v, m) = (&mut v[..XI * vs], &mut m[..XI * ms]);
        // SAFETY: AVX-512F checked in `run`; the transforms index inside the extents that
        // the band and their arguments' lengths give (asserted there).
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        unsafe {
            self.input_transform(band, xh, v);
        }
        for gi in 0..cout / width {
            for (xi, m_xi) in m.chunks_exact_mut(ms).enumerate() {
                let (v_xi, m_xi) = (&v[xi * vs..][..tiles * cin], &mut m_xi[..tiles * width]);
                let u_xi = &self.u[(gi * XI + xi) * cin * width..][..cin * width];
                self.product(v_xi, u_xi, m_xi, tiles);
            }
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            unsafe {
                self.output_transform(band, m, gi * width, out);
            }
        }
    }

    /// `V[ξ, t, c] = (Bᵀ d B)[ξ]` of the band's tiles `t` (in [`Band::each`] order) and every
    /// channel, `d` the tile's 6x6 input pixels from `(4i - 1, 4j - 1)`, zero outside the
    /// image (read from the zero-padded grid).
    ///
    /// # Shapes
    /// - `xh`: the group's input grids `[images, rows, cols, cin]`, `v`: `[36, T, cin]`
    ///   (planes [`plane_stride`] apart)
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn input_transform(&self, band: Band, xh: &[f32], v: &mut [f32]) {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        let tw = self.tiling.tw;
        let grid = self.tiling.input_grid();
        let cin = self.cin;
        let tiles = band.tiles(&self.tiling);
        assert!(xh.len() >= band.n1 * grid.len(cin), "winograd: input grid length");
        assert!(grid.rows >= TILE * self.tiling.th + 2 && grid.cols >= TILE * tw + 2, "winograd: input grid size");
        let vs = plane_stride(tiles * cin);
        assert_eq!(v.len(), XI * vs, "winograd: V length");
        let (xp, vp) = (xh.as_ptr(), v.as_mut_ptr());
        let (row, col) = (grid.cols * cin, cin);
        for (t, (n, i, j)) in band.each(tw).enumerate() {
            // SAFETY: the tile's 6x6 window from grid (4i, 4j) lies inside image n's grid
            // (4i + 6 <= 4·th + 2 = rows, likewise columns), n < n1, 16 channels from c <
            // cin (a multiple of 16); V's row (ξ, t) has cin entries from c, t < tiles.
            unsafe {
                let corner = xp.add(((n * grid.rows + TILE * i) * grid.cols + TILE * j) * cin);
                for c in (0..cin).step_by(LANES) {
                    let at = corner.add(c);
                    // Bᵀ d: combine rows, column by column.
                    let e: [[_; SPAN]; SPAN] = std::array::from_fn(|b| {
                        lanes::bt(std::array::from_fn(|a| _mm512_loadu_ps(at.add(a * row + b * col))))
                    });
                    // (Bᵀ d) B: combine columns, row by row (`e[b][a]` is row a, column b).
                    let rows: [[_; SPAN]; SPAN] = std::array::from_fn(|a| std::array::from_fn(|b| e[b][a]));
                    for (a, row) in rows.into_iter().enumerate() {
                        for (b, val) in lanes::bt(row).into_iter().enumerate() {
                            _mm512_storeu_ps(vp.add((a * SPAN + b) * vs + t * cin + c), val);
                        }
                    }
                }
            }
        }
    }

    /// Output channels `[o0, o0 + OB·16)` of the band's pixels from one block of `M`: each
    /// tile's 4x4 outputs `Aᵀ M A` (those inside the image).
    ///
    /// # Shapes
    /// - `m`: `[36, T, OB·16]` (planes [`plane_stride`] apart), `out`: the band's output pixels `[., cout]`
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_transform(&self, band: Band, m: &[f32], o0: usize, out: &mut [f32]) {
        use std::arch::x86_64::{__m512, _mm512_loadu_ps, _mm512_storeu_ps};
        let tiling = self.tiling;
        let Tiling { h, w, tw, .. } = tiling;
        let (cout, width) = (self.cout, self.width());
        let tiles = band.tiles(&tiling);
        let (first, pixels) = band.pixels(&tiling);
        let ms = plane_stride(tiles * width);
        assert_eq!(m.len(), XI * ms, "winograd: M block length");
        assert_eq!(out.len(), pixels * cout, "winograd: band output length");
        assert!(o0 + width <= cout, "winograd: output channels");
        let (mp, yp) = (m.as_ptr(), out.as_mut_ptr());
        for (t, (n, i, j)) in band.each(tw).enumerate() {
            for o in (0..width).step_by(LANES) {
                // SAFETY: M's rows (ξ, t) have `width` entries from o; outputs are written
                // only inside the image (y < h, x < w), at pixels of the band's rows,
                // channels o0 + o + [0, 16) < cout.
                unsafe {
                    // Aᵀ M, column by column: `cols[b]` is column b's four values.
                    let cols: [[__m512; TILE]; SPAN] = std::array::from_fn(|b| {
                        lanes::at(std::array::from_fn(|a| _mm512_loadu_ps(mp.add((a * SPAN + b) * ms + t * width + o))))
                    });
                    // (Aᵀ M) A: four outputs per row.
                    let rows: [[__m512; SPAN]; TILE] = std::array::from_fn(|a| std::array::from_fn(|b| cols[b][a]));
                    for (a, row) in rows.into_iter().enumerate() {
                        let y = TILE * i + a;
                        if y >= h {
                            break;
                        }
                        for (b, val) in lanes::at(row).into_iter().enumerate() {
                            let x = TILE * j + b;
                            if x < w {
                                let pixel = (n * h + y) * w + x - first;
                                _mm512_storeu_ps(yp.add(pixel * cout + o0 + o), val);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `m [T, OB·16] = v [T, cin] · u [cin, OB·16]` in register tiles of `PX` tiles, each sum
    /// over `cin` in order.
    fn product(&self, v: &[f32], u: &[f32], m: &mut [f32], tiles: usize) {
        let (cin, width) = (self.cin, self.width());
        assert_eq!(v.len(), tiles * cin, "winograd: V[ξ] length");
        assert_eq!(u.len(), cin * width, "winograd: U[ξ] block length");
        assert_eq!(m.len(), tiles * width, "winograd: M[ξ] block length");
        let shape = Strided { rows: tiles, k: cin, a_row: cin, a_k: 1, b_k: width, m_row: width };
        products(width / LANES, shape, v, u, m);
    }
}

/// The shape of a register-tiled product `m[j·m_row + (0..OB·16)] = Σ_(k' < k) a[j·a_row +
/// k'·a_k] · b[k'·b_k + (0..OB·16)]` for rows `j < rows`: the forward pass's `V · U` (rows:
/// tiles) and the filter gradient's `Vᵀ · W` (rows: input channels, reduced over tiles).
#[derive(Debug, Clone, Copy)]
struct Strided {
    rows: usize,
    k: usize,
    a_row: usize,
    a_k: usize,
    b_k: usize,
    m_row: usize,
}

/// [`Strided`]'s product for `ob` (1 or 2) vectors of columns, each sum over `k` in order.
fn products(ob: usize, s: Strided, a: &[f32], b: &[f32], m: &mut [f32]) {
    if s.rows == 0 {
        return;
    }
    let width = ob * LANES;
    assert!(ob == 1 || ob == 2, "winograd: {ob} vectors per tile");
    assert!(s.k > 0, "winograd: empty reduction");
    assert!(a.len() > (s.rows - 1) * s.a_row + (s.k - 1) * s.a_k, "winograd: product's left operand");
    assert!(b.len() >= (s.k - 1) * s.b_k + width, "winograd: product's right operand");
    assert!(m.len() >= (s.rows - 1) * s.m_row + width, "winograd: product's output");
    assert!(cpu_supported(), "winograd: no AVX-512F");
    #[cfg(target_arch = "x86_64")]
    {
        if ob == 2 {
            product_tiles::<2, 12>(s, a, b, m);
        } else {
            product_tiles::<1, 24>(s, a, b, m);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("winograd planned without AVX-512");
}

/// [`products`] in tiles of `PX` rows, then 8, 4, 2, 1.
#[cfg(target_arch = "x86_64")]
fn product_tiles<const OB: usize, const PX: usize>(s: Strided, a: &[f32], b: &[f32], m: &mut [f32]) {
    let mut j = 0;
    while j < s.rows {
        let left = s.rows - j;
        let (aj, mj) = (&a[j * s.a_row..], &mut m[j * s.m_row..]);
        // SAFETY (every arm): AVX-512F and the operands' extents for all `rows` rows were
        // checked in `products`; the tile covers rows `[j, j + px)`, `j + px <= rows`.
        #[allow(unsafe_code)]
        let step = unsafe {
            if left >= PX {
                tile::<OB, PX>(s, aj, b, mj);
                PX
            } else if left >= 8 && PX > 8 {
                tile::<OB, 8>(s, aj, b, mj);
                8
            } else if left >= 4 {
                tile::<OB, 4>(s, aj, b, mj);
                4
            } else if left >= 2 {
                tile::<OB, 2>(s, aj, b, mj);
                2
            } else {
                tile::<OB, 1>(s, aj, b, mj);
                1
            }
        };
        j += step;
    }
}

/// `PX` rows of [`Strided`]'s product from `a`'s and `m`'s first row: each input value
/// broadcast, `OB` vectors of `b` per reduction step, `PX·OB` sums in registers.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const OB: usize, const PX: usize>(s: Strided, a: &[f32], b: &[f32], m: &mut [f32]) {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    let (ap, bp, mp) = (a.as_ptr(), b.as_ptr(), m.as_mut_ptr());
    let mut acc = [[_mm512_setzero_ps(); OB]; PX];
    // SAFETY: the caller's (see `product_tiles`).
    unsafe {
        for k in 0..s.k {
            let mut bv: [__m512; OB] = [_mm512_setzero_ps(); OB];
            for (v, val) in bv.iter_mut().enumerate() {
                *val = _mm512_loadu_ps(bp.add(k * s.b_k + v * LANES));
            }
            let ak = ap.add(k * s.a_k);
            for (j, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*ak.add(j * s.a_row));
                for (sum, val) in row.iter_mut().zip(&bv) {
                    *sum = _mm512_fmadd_ps(x, *val, *sum);
                }
            }
        }
        for (j, row) in acc.iter().enumerate() {
            for (v, sum) in row.iter().enumerate() {
                _mm512_storeu_ps(mp.add(j * s.m_row + v * LANES), *sum);
            }
        }
    }
}

/// The filter gradient of one SAME 3x3 convolution `C → O`:
/// `dg[c, o] = Gᵀ [Σ_t (Bᵀ d_t B) ⊙ (A dY_t Aᵀ)] G`, the sum over every tile `t` of the
/// images (`d_t` its 6x6 input pixels, `dY_t` its 4x4 output gradients), which is the
/// adjoint of the forward pass's `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`.
struct FilterPass {
    tiling: Tiling,
    c: usize,
    o: usize,
}

impl FilterPass {
    /// Output channels per register tile.
    fn width(&self) -> usize {
        blocks_per_tile(self.o) * LANES
    }

    /// # Shapes
    /// - `xs`: `[images, C, H, W]`, `dys`: `[images, O, H, W]`, `acc`: `[C, 9, O]`
    fn run(&self, xs: &[f32], dys: &[f32], scratch: &mut [f32], acc: &mut [f32], accumulate: bool) {
        let Tiling { h, w, .. } = self.tiling;
        let (plane, c, o) = (h * w, self.c, self.o);
        assert!(cpu_supported(), "winograd: no AVX-512F");
        assert!(c.is_multiple_of(LANES) && o.is_multiple_of(LANES), "winograd: {c} → {o} channels");
        assert_eq!(xs.len() % (c * plane), 0, "winograd: input length");
        let images = xs.len() / (c * plane);
        assert_eq!(dys.len(), images * o * plane, "winograd: dy length");
        assert_eq!(acc.len(), c * 9 * o, "winograd: filter gradient length");
        if images == 0 && !accumulate {
            acc.fill(0.0);
        }
        let group = self.tiling.group();
        let places = [self.tiling.input_grid().places(), self.tiling.output_grid().places()];
        for (gi, (xg, dyg)) in xs.chunks(group * c * plane).zip(dys.chunks(group * o * plane)).enumerate() {
            self.group(xg, dyg, scratch, &places, acc, accumulate || gi > 0);
        }
    }

    /// One group of images: pixel-major copies (padded grids, [`Tiling::input_grid`] and
    /// [`Tiling::output_grid`]), `V` and `W = A dY Aᵀ` of its tiles, then
    /// per block of `OB·16` output channels the 36 products `dU[ξ] = V[ξ]ᵀ · W[ξ]` (summed
    /// over the group's tiles in order) and their transform into `acc`.
    fn group(
        &self,
        xs: &[f32],
        dys: &[f32],
        scratch: &mut [f32],
        [x_places, dy_places]: &[Vec<usize>; 2],
        acc: &mut [f32],
        accumulate: bool,
    ) {
        let tiling = self.tiling;
        let (plane, c, o, width) = (tiling.h * tiling.w, self.c, self.o, self.width());
        let images = xs.len() / (c * plane);
        let band = Band { n0: 0, n1: images, i0: 0, i1: tiling.th };
        let tiles = band.tiles(&tiling);
        let (x_grid, dy_grid) = (tiling.input_grid(), tiling.output_grid());
        let (xh, rest) = scratch.split_at_mut(images * x_grid.len(c));
        let (dyh, rest) = rest.split_at_mut(images * dy_grid.len(o));
        let (vs, ws, us) = (plane_stride(tiles * c), plane_stride(tiles * o), plane_stride(c * width));
        let (v, rest) = rest.split_at_mut(XI * vs);
        let (wv, rest) = rest.split_at_mut(XI * ws);
        let du = &mut rest[..XI * us];
        x_grid.fill_images(xs, c, xh, x_places);
        dy_grid.fill_images(dys, o, dyh, dy_places);
        let input = Pass { tiling, cin: c, cout: o, u: &[] };
        // SAFETY: AVX-512F checked in `run`; the transforms index inside the extents that
        // the band and their arguments' lengths give (asserted there).
        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code)]
        unsafe {
            input.input_transform(band, xh, v);
            self.dy_transform(band, dyh, wv);
        }
        for gi in 0..o / width {
            for (xi, du_xi) in du.chunks_exact_mut(us).enumerate() {
                let shape = Strided { rows: c, k: tiles, a_row: 1, a_k: c, b_k: o, m_row: width };
                products(
                    width / LANES,
                    shape,
                    &v[xi * vs..][..tiles * c],
                    &wv[xi * ws + gi * width..][..tiles * o - gi * width],
                    &mut du_xi[..c * width],
                );
            }
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            #[allow(unsafe_code)]
            unsafe {
                self.filter_transform(du, gi * width, acc, accumulate);
            }
        }
    }

    /// `W[ξ, t, o] = (A dY Aᵀ)[ξ]` of the band's tiles, `dY` the tile's 4x4 output gradients
    /// from `(4i, 4j)`, zero outside the image (read from the zero-padded grid; `A`:
    /// [`lanes::a`]).
    ///
    /// # Shapes
    /// - `dyh`: the group's output-gradient grids `[images, rows, cols, O]`, `wv`: `[36, T, O]`
    ///   (planes [`plane_stride`] apart)
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn dy_transform(&self, band: Band, dyh: &[f32], wv: &mut [f32]) {
        use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
        let tw = self.tiling.tw;
        let grid = self.tiling.output_grid();
        let o = self.o;
        let tiles = band.tiles(&self.tiling);
        assert!(dyh.len() >= band.n1 * grid.len(o), "winograd: output-gradient grid length");
        assert!(grid.rows >= TILE * self.tiling.th && grid.cols >= TILE * tw, "winograd: output-gradient grid size");
        let ws = plane_stride(tiles * o);
        assert_eq!(wv.len(), XI * ws, "winograd: W length");
        let (dp, wp) = (dyh.as_ptr(), wv.as_mut_ptr());
        let (row, col) = (grid.cols * o, o);
        for (t, (n, i, j)) in band.each(tw).enumerate() {
            // SAFETY: the tile's 4x4 window from grid (4i, 4j) lies inside image n's grid
            // (4i + 4 <= 4·th = rows, likewise columns), n < n1, 16 channels from oc < o (a
            // multiple of 16); W's rows (ξ, t) have o entries.
            unsafe {
                let corner = dp.add(((n * grid.rows + TILE * i) * grid.cols + TILE * j) * o);
                for oc in (0..o).step_by(LANES) {
                    let at = corner.add(oc);
                    // A dY: 6 rows of 4, column by column (`cols[b][a]` is row a, column b).
                    let cols: [[_; SPAN]; TILE] = std::array::from_fn(|b| {
                        lanes::a(std::array::from_fn(|a| _mm512_loadu_ps(at.add(a * row + b * col))))
                    });
                    // (A dY) Aᵀ: six values per row.
                    let rows: [[_; TILE]; SPAN] = std::array::from_fn(|a| std::array::from_fn(|b| cols[b][a]));
                    for (a, row) in rows.into_iter().enumerate() {
                        for (b, val) in lanes::a(row).into_iter().enumerate() {
                            _mm512_storeu_ps(wp.add((a * SPAN + b) * ws + t * o + oc), val);
                        }
                    }
                }
            }
        }
    }

    /// Output channels `[o0, o0 + OB·16)` of the filter gradient from one block of `dU`:
    /// `Gᵀ dU G` per input channel, written (or added, when `accumulate`) into `acc`.
    ///
    /// # Shapes
    /// - `du`: `[36, C, OB·16]` (planes [`plane_stride`] apart), `acc`: `[C, 9, O]`
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    #[target_feature(enable = "avx512f")]
    unsafe fn filter_transform(&self, du: &[f32], o0: usize, acc: &mut [f32], accumulate: bool) {
        use std::arch::x86_64::{__m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_storeu_ps};
        let (c, o, width) = (self.c, self.o, self.width());
        let us = plane_stride(c * width);
        assert_eq!(du.len(), XI * us, "winograd: dU block length");
        assert_eq!(acc.len(), c * 9 * o, "winograd: filter gradient length");
        assert!(o0 + width <= o, "winograd: output channels");
        let (up, ap) = (du.as_ptr(), acc.as_mut_ptr());
        for ci in 0..c {
            for oc in (0..width).step_by(LANES) {
                // SAFETY: dU's rows (ξ, ci) have `width` entries from oc; acc's rows (ci, tap)
                // have o entries from o0 + oc + 16 <= o.
                unsafe {
                    // Gᵀ dU, column by column: `cols[b]` is column b's three values.
                    let cols: [[__m512; 3]; SPAN] = std::array::from_fn(|b| {
                        lanes::gt(std::array::from_fn(|a| {
                            _mm512_loadu_ps(up.add((a * SPAN + b) * us + ci * width + oc))
                        }))
                    });
                    // (Gᵀ dU) G: three taps per row.
                    let rows: [[__m512; SPAN]; 3] = std::array::from_fn(|a| std::array::from_fn(|b| cols[b][a]));
                    for (a, row) in rows.into_iter().enumerate() {
                        for (b, val) in lanes::gt(row).into_iter().enumerate() {
                            let at = ap.add((ci * 9 + a * 3 + b) * o + o0 + oc);
                            let val = if accumulate { _mm512_add_ps(_mm512_loadu_ps(at), val) } else { val };
                            _mm512_storeu_ps(at, val);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The module doc's matrices.
    const BT: [[f32; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const AT: [[f32; 6]; 4] = [
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ];
    const G: [[f32; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];

    fn close(got: f32, want: f32, what: &str) {
        assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{what}: {got} against {want}");
    }

    /// `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` with the matrices equals the 4x4 correlation of `d`
    /// with `g`, which is what makes F(4x4, 3x3) a convolution; `transform_filter` is `G g
    /// Gᵀ`.
    #[test]
    fn one_tile_is_the_correlation() {
        let g: [f32; 9] = std::array::from_fn(|k| (k as f32 * 0.37).sin());
        let d: [[f32; 6]; 6] = std::array::from_fn(|r| std::array::from_fn(|s| ((r * 6 + s) as f32 * 0.71).cos()));
        let u = transform_filter(g);
        for r in 0..6 {
            for s in 0..6 {
                let want: f32 = (0..3)
                    .flat_map(|k| (0..3).map(move |l| (k, l)))
                    .map(|(k, l)| G[r][k] * g[k * 3 + l] * G[s][l])
                    .sum();
                close(u[r * 6 + s], want, &format!("U[{r}][{s}]"));
            }
        }
        let mut v = [[0f32; 6]; 6];
        for (r, row) in v.iter_mut().enumerate() {
            for (s, val) in row.iter_mut().enumerate() {
                let btdb: f32 =
                    (0..6).flat_map(|k| (0..6).map(move |l| (k, l))).map(|(k, l)| BT[r][k] * d[k][l] * BT[s][l]).sum();
                *val = btdb * u[r * 6 + s];
            }
        }
        for a in 0..4 {
            for b in 0..4 {
                let y: f32 =
                    (0..6).flat_map(|r| (0..6).map(move |s| (r, s))).map(|(r, s)| AT[a][r] * v[r][s] * AT[b][s]).sum();
                let want: f32 =
                    (0..3).flat_map(|r| (0..3).map(move |s| (r, s))).map(|(r, s)| d[a + r][b + s] * g[r * 3 + s]).sum();
                close(y, want, &format!("output ({a}, {b})"));
            }
        }
    }

    /// The vector transforms are the matrices: `bt` is `Bᵀ`, `at` is `Aᵀ`, `a` is `A` and
    /// `gt` is `Gᵀ`, lane by lane.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn the_lane_transforms_are_the_matrices() {
        use std::arch::x86_64::{__m512, _mm512_loadu_ps, _mm512_storeu_ps};
        if !cpu_supported() {
            return;
        }
        let value = |k: usize, lane: usize| ((k * 16 + lane) as f32 * 0.61).sin();
        // SAFETY: AVX-512F checked above; every load and store is of one 16-float array.
        let (load, store) = unsafe {
            (
                |k: usize| -> __m512 {
                    let x: [f32; 16] = std::array::from_fn(|lane| value(k, lane));
                    _mm512_loadu_ps(x.as_ptr())
                },
                |v: __m512| -> [f32; 16] {
                    let mut x = [0f32; 16];
                    _mm512_storeu_ps(x.as_mut_ptr(), v);
                    x
                },
            )
        };
        let check = |got: &[__m512], matrix: &dyn Fn(usize, usize) -> f32, inputs: usize, what: &str| {
            for (r, v) in got.iter().enumerate() {
                for (lane, g) in store(*v).into_iter().enumerate() {
                    let want: f32 = (0..inputs).map(|k| matrix(r, k) * value(k, lane)).sum();
                    close(g, want, &format!("{what} row {r} lane {lane}"));
                }
            }
        };
        // SAFETY: AVX-512F checked above.
        unsafe {
            check(&lanes::bt(std::array::from_fn(load)), &|r, k| BT[r][k], 6, "Bᵀ");
            check(&lanes::at(std::array::from_fn(load)), &|r, k| AT[r][k], 6, "Aᵀ");
            check(&lanes::a(std::array::from_fn(load)), &|r, k| AT[k][r], 4, "A");
            check(&lanes::gt(std::array::from_fn(load)), &|r, k| G[k][r], 6, "Gᵀ");
        }
    }
}
