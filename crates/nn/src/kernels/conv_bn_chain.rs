//! Several conv → batch norm (→ ReLU) (→ max-pool) blocks in a row as one candle op, so
//! the activations between them, and their gradients, never become tensors.
//!
//! Why: candle's autograd gave every op input a gradient that it first zero-filled and
//! then added into (`GradStore::or_insert` + `add` in `candle-core`'s `backprop.rs`), on
//! the calling thread (the vendored candle-core now stores a first gradient as it is,
//! `vendor/README.md`; an activation between two ops still is a tensor, and one with two
//! consumers still gets a serial `add`). Between two [`super::conv_bn`] ops that input is a whole
//! activation (8 MiB for cifar_cnn's first block at batch 64): the zero-fill and the add
//! were 6.3% of the training step's CPU time, all of it serial, with the rayon workers
//! waiting. Here the blocks run one after the other inside one op; block `k`'s input
//! gradient is block `k - 1`'s output gradient directly. Each block's arithmetic is
//! [`super::conv_bn`]'s ([`forward_block`], [`backward_block`]), so the values are the
//! same as with one op per block (the gradients up to the sign of zeros: candle's `0 +
//! -0` is `+0`).
//!
//! One autograd node over `(x, w_all, gamma_beta_all)`: the blocks' filters flattened and
//! concatenated, and their `[gamma; beta]` likewise (candle's `cat` hands each variable
//! its slice of the gradient).

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, bail};

use rayon::prelude::*;

use super::batch_norm as bn;
use super::buffers::{recycle, recycled};
use super::conv_bn::{Block, BlockOperands, Gradients, Saved, backward_block, forward_block, run_backward, supports};
use super::conv2d::Conv2dParams;
use super::pool::Pool2dParams;
use super::simd::simd_kernel;

/// One block of [`conv2d_batch_norm_chain_train`].
#[derive(Debug, Clone, Copy)]
pub struct ChainLink<'a> {
    /// `[O, C, kh, kw]`.
    pub w: &'a Tensor,
    /// `[O]`.
    pub gamma: &'a Tensor,
    /// `[O]`.
    pub beta: &'a Tensor,
    /// The conv's geometry.
    pub params: Conv2dParams,
    /// Batch norm's epsilon.
    pub epsilon: f64,
    /// A ReLU after batch norm.
    pub relu: bool,
    /// A max-pool after the ReLU (only with `relu`).
    pub pool: Option<Pool2dParams>,
}

/// Whether [`conv2d_batch_norm_chain_train`] takes `x` through these blocks: f32 CPU
/// tensors whose channels chain (block `k`'s filters take block `k - 1`'s outputs), a
/// max-pool only after a ReLU, and at least one block.
pub fn supports_chain(x: &Tensor, links: &[ChainLink<'_>]) -> bool {
    let mut channels = x.dims().get(1).copied();
    !links.is_empty()
        && links.iter().all(|l| {
            let ok = supports(x, l.w, l.gamma, l.beta)
                && l.w.dims().get(1).copied() == channels
                && l.gamma.dims() == [l.w.dims()[0]]
                && l.beta.dims() == l.gamma.dims()
                && (l.relu || l.pool.is_none());
            channels = l.w.dims().first().copied();
            ok
        })
}

/// The blocks `links` applied to `x` in order, as one op on candle's CPU device in f32,
/// with gradients to `x` (skipped when `x` is outside autograd, as for a network's first
/// layer) and to every block's `w`, `gamma` and `beta`.
///
/// Returns the last block's output and, per block, `(batch_mean,
/// batch_variance_biased)` of its conv output (detached), for the moving statistics.
///
/// # Shapes
/// - `x`: `[N, C, H, W]`
/// - block `k`: `w` `[O_k, O_(k-1), kh, kw]` (`O_(-1) = C`), `gamma`, `beta` `[O_k]`
/// - result: the last block's output `[N, O_last, H', W']`; statistics `[O_k]`
///
/// # Errors
/// Operands [`supports_chain`] refuses, or a geometry without output.
pub fn conv2d_batch_norm_chain_train(
    x: &Tensor,
    links: &[ChainLink<'_>],
) -> candle_core::Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    chain_train(x, links, false)
}

/// A residual unit with an identity shortcut, `relu(chain(x) + x)`, as one op: the
/// blocks as [`conv2d_batch_norm_chain_train`], the last one (without ReLU or pool)
/// adding `x` and rectifying in its normalising sweep.
///
/// Why: as the chain and [`super::add_relu`], the sum and its ReLU are a separate pass
/// over the unit's output and a second autograd node, and `x` has two gradients, which
/// candle adds into one (a serial `add` on the calling thread; before the vendored patch,
/// `GradStore::or_insert` zero-filled it first); here the
/// backward masks `dy` once and adds it to the chain's input gradient in the op. The
/// values are those of the two ops (the gradient up to the sign of zeros).
///
/// # Shapes
/// - as [`conv2d_batch_norm_chain_train`], with the output's shape equal to `x`'s
///
/// # Errors
/// As [`conv2d_batch_norm_chain_train`]; also a last block with a ReLU or a pool, or an
/// output whose shape is not `x`'s.
pub fn conv2d_batch_norm_residual_train(
    x: &Tensor,
    links: &[ChainLink<'_>],
) -> candle_core::Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    if links.last().is_some_and(|l| l.relu || l.pool.is_some()) {
        bail!(
            "ferroflow residual chain kernel: the last block adds the shortcut before its ReLU, so it has neither ReLU nor pool"
        );
    }
    chain_train(x, links, true)
}

fn chain_train(
    x: &Tensor,
    links: &[ChainLink<'_>],
    residual: bool,
) -> candle_core::Result<(Tensor, Vec<(Tensor, Tensor)>)> {
    if !supports_chain(x, links) {
        bail!(
            "ferroflow conv2d+batch_norm chain kernel: f32 CPU tensors whose channels chain, max-pools after ReLUs \
             only (x {:?} on {:?}, {} blocks)",
            x.dims(),
            x.device().location(),
            links.len()
        );
    }
    let flat = |t: &Tensor| t.flatten_all();
    let w_all = Tensor::cat(&links.iter().map(|l| flat(l.w)).collect::<candle_core::Result<Vec<_>>>()?, 0)?;
    let gb_parts: Vec<Tensor> = links.iter().flat_map(|l| [l.gamma.clone(), l.beta.clone()]).collect();
    let gamma_beta_all = Tensor::cat(&gb_parts, 0)?;
    let blocks = links
        .iter()
        .map(|l| ChainBlock {
            block: Block { params: l.params, epsilon: l.epsilon, relu: l.relu, pool: l.pool },
            w_dims: l.w.dims().to_vec(),
        })
        .collect();
    let saved = Arc::new(OnceLock::new());
    let op = ChainOp { blocks, residual, saved: Arc::clone(&saved) };
    let y = x.contiguous()?.apply_op3(&w_all, &gamma_beta_all, op)?;
    let Some(saved) = saved.get() else { bail!("conv2d+batch_norm chain: the forward pass left no statistics") };
    let stats = saved
        .blocks
        .iter()
        .map(|b| {
            let (mean, var) = b.stats.as_f32();
            let c = mean.len();
            Ok((Tensor::from_vec(mean, c, x.device())?, Tensor::from_vec(var, c, x.device())?))
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok((y, stats))
}

/// A block of the chain and its filter's shape.
#[derive(Debug, Clone)]
struct ChainBlock {
    block: Block,
    w_dims: Vec<usize>,
}

impl ChainBlock {
    fn w_len(&self) -> usize {
        self.w_dims.iter().product()
    }

    fn channels_out(&self) -> usize {
        self.w_dims[0]
    }
}

/// What the forward pass keeps: each block's [`Saved`], and the inputs of blocks `1..`
/// (the earlier blocks' outputs, which their filter gradients read) with their dims.
struct ChainSaved {
    blocks: Vec<Saved>,
    inputs: Vec<(Vec<f32>, [usize; 4])>,
}

/// The candle custom op over `(x, w_all, gamma_beta_all)`.
struct ChainOp {
    blocks: Vec<ChainBlock>,
    /// The output is `relu(last block + x)` ([`conv2d_batch_norm_residual_train`]).
    residual: bool,
    saved: Arc<OnceLock<ChainSaved>>,
}

/// Each block's slice of `all`, `len(block)` values each, in order.
fn split<'a>(
    all: &'a [f32],
    blocks: &[ChainBlock],
    len: impl Fn(&ChainBlock) -> usize,
    what: &str,
) -> candle_core::Result<Vec<&'a [f32]>> {
    let total: usize = blocks.iter().map(&len).sum();
    if all.len() != total {
        bail!("ferroflow conv2d+batch_norm chain kernel: {what} has {} values, the blocks take {total}", all.len());
    }
    let mut rest = all;
    Ok(blocks
        .iter()
        .map(|b| {
            let (head, tail) = rest.split_at(len(b));
            rest = tail;
            head
        })
        .collect())
}

impl CustomOp3 for ChainOp {
    fn name(&self) -> &'static str {
        "ferroflow-conv2d-batch-norm-chain"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        const OP: &str = "conv2d+batch_norm chain";
        let x = super::f32_contiguous(s1, l1, OP, "x")?;
        let ws = split(super::f32_contiguous(s2, l2, OP, "w_all")?, &self.blocks, ChainBlock::w_len, "w_all")?;
        let gbs = split(
            super::f32_contiguous(s3, l3, OP, "gamma_beta_all")?,
            &self.blocks,
            |b| 2 * b.channels_out(),
            "gamma_beta_all",
        )?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        let mut inputs: Vec<(Vec<f32>, [usize; 4])> = Vec::with_capacity(self.blocks.len());
        let Ok(x_dims) = <[usize; 4]>::try_from(l1.dims()) else { bail!("{OP}: x must be NCHW, got {:?}", l1.dims()) };
        let mut current: Option<(Vec<f32>, [usize; 4])> = None;
        let last = self.blocks.len().saturating_sub(1);
        for (k, ((b, w), gb)) in self.blocks.iter().zip(&ws).zip(&gbs).enumerate() {
            let (input, dims) = match &current {
                None => (x, x_dims),
                Some((y, dims)) => (y.as_slice(), *dims),
            };
            let (gamma, beta) = gb.split_at(b.channels_out());
            let residual = (self.residual && k == last).then_some(x);
            let (y, y_dims, saved) = forward_block(&b.block, input, &dims, w, &b.w_dims, gamma, beta, residual)?;
            if residual.is_some() && y_dims != x_dims {
                bail!("{OP}: the residual unit's output {y_dims:?} is not its input's shape {x_dims:?}");
            }
            blocks.push(saved);
            if let Some(previous) = current.replace((y, y_dims)) {
                inputs.push(previous);
            }
        }
        let Some((y, y_dims)) = current else { bail!("{OP}: no blocks") };
        let _ = self.saved.set(ChainSaved { blocks, inputs });
        Ok((CpuStorage::F32(y), Shape::from_dims(&y_dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w_all: &Tensor,
        gamma_beta_all: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // As the single-block op: no input gradient for data, no filter
        // gradients for filters outside autograd.
        let (need_dx, need_dw) = (x.track_op(), w_all.track_op());
        let out = Arc::new(Mutex::new(None));
        let op = ChainBackward {
            blocks: self.blocks.clone(),
            residual: self.residual,
            need_dx,
            need_dw,
            saved: Arc::clone(&self.saved),
            out: Arc::clone(&out),
        };
        run_backward(&op, &out, [x, dy, w_all, gamma_beta_all], need_dw, "conv2d+batch_norm chain")
    }
}

/// The backward op over `(x, dy, w_all)`: returns `dw_all` and leaves `(dx,
/// dgamma_beta_all)` in `out`.
struct ChainBackward {
    blocks: Vec<ChainBlock>,
    residual: bool,
    need_dx: bool,
    need_dw: bool,
    saved: Arc<OnceLock<ChainSaved>>,
    out: Arc<Mutex<Option<Gradients>>>,
}

impl CustomOp3 for ChainBackward {
    fn name(&self) -> &'static str {
        "ferroflow-conv2d-batch-norm-chain-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        const OP: &str = "conv2d+batch_norm chain backward";
        let Some(saved) = self.saved.get() else { bail!("{OP}: the forward pass left nothing") };
        let x = super::f32_contiguous(s1, l1, OP, "x")?;
        let dy = super::f32_contiguous(s2, l2, OP, "dy")?;
        let ws = split(super::f32_contiguous(s3, l3, OP, "w_all")?, &self.blocks, ChainBlock::w_len, "w_all")?;
        let k = self.blocks.len();
        if saved.blocks.len() != k || saved.inputs.len() + 1 != k {
            bail!("{OP}: the forward pass had another chain");
        }
        let mut dws: Vec<Vec<f32>> = vec![Vec::new(); k];
        let mut dgbs: Vec<Vec<f32>> = vec![Vec::new(); k];
        // A residual unit: `dy` masked by the unit's ReLU is the last block's output
        // gradient and the shortcut's.
        let masked = if self.residual {
            let last = &saved.blocks[k - 1];
            if l1.dims() != l2.dims() || l1.dims().len() != 4 || last.z.len() != dy.len() {
                bail!("{OP}: dy {:?} is not the residual unit's input shape {:?}", l2.dims(), l1.dims());
            }
            Some(residual_mask(last, x, dy, l1.dims()))
        } else {
            None
        };
        let dy = masked.as_deref().unwrap_or(dy);
        // The gradient flowing into the block being processed, and its dims.
        let mut grad: Option<Vec<f32>> = None;
        let mut grad_dims = l2.dims().to_vec();
        for i in (0..k).rev() {
            let (input, input_dims): (&[f32], &[usize]) = match i {
                0 => (x, l1.dims()),
                _ => (&saved.inputs[i - 1].0, &saved.inputs[i - 1].1),
            };
            let b = &self.blocks[i];
            let dy_i = grad.as_deref().unwrap_or(dy);
            let ops = BlockOperands {
                x: input,
                x_dims: input_dims,
                w: ws[i],
                w_dims: &b.w_dims,
                dy: dy_i,
                dy_dims: &grad_dims,
            };
            let (dx, dw, dgb) = backward_block(&b.block, &saved.blocks[i], ops, i > 0 || self.need_dx, self.need_dw)?;
            dws[i] = dw;
            dgbs[i] = dgb;
            grad = dx;
            grad_dims = input_dims.to_vec();
        }
        if let (Some(dx), Some(shortcut)) = (grad.as_mut(), &masked) {
            add_into(dx, shortcut);
        }
        if let Some(m) = masked {
            recycle(m);
        }
        let dgamma_beta: Vec<f32> = dgbs.concat();
        *self.out.lock().map_err(|_| candle_core::Error::Msg(format!("{OP}: poisoned")))? = Some((grad, dgamma_beta));
        let dw_all = dws.concat();
        let n = dw_all.len();
        Ok((CpuStorage::F32(dw_all), Shape::from_dims(&[n])))
    }
}

/// A residual unit's `dy` masked by its ReLU, recomputing the forward's `normalise(z) +
/// x > 0` from the last block's saved `z`.
///
/// # Shapes
/// - `x`, `dy`, the last block's `z`: `[N, O, P]`; result the same
fn residual_mask(last: &Saved, x: &[f32], dy: &[f32], dims: &[usize]) -> Vec<f32> {
    let g = bn::Geometry { n: dims[0], c: dims[1], s: dims[2..].iter().product() };
    let mut out = recycled(dy.len());
    bn::for_each_plane(&mut out, g, |ch, at, o| {
        let range = at..at + o.len();
        bn::residual_mask_plane(o, &last.z[range.clone()], &x[range.clone()], &dy[range], last.affine.of(ch));
    });
    out
}

/// `dx += d`, in parallel chunks.
fn add_into(dx: &mut [f32], d: &[f32]) {
    dx.par_chunks_mut(bn::TASK_ELEMS).zip(d.par_chunks(bn::TASK_ELEMS)).for_each(|(a, b)| add_chunk(a, b));
}

simd_kernel! {
fn add_chunk<'a>(a: &'a mut [f32], b: &'a [f32]) -> () {
    for (u, &v) in a.iter_mut().zip(b) {
        *u += v;
    }
}
}
