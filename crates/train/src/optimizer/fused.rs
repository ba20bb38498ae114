//! The momentum update in place, for float32 CPU variables: two passes over
//! the slot and the variable instead of candle's chain of element-wise ops
//! (four to six new tensors per variable, then a copy into each `Var`). The
//! arithmetic is [`super::Optimizer`]'s tensor path term for term, in the same
//! order, without fused multiply-adds and with the `+ 0` of candle's `affine`
//! (so even the signs of zeros agree); that path stays as the reference (and
//! serves every other device and aliased operands), and the tests below
//! compare the two.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Tensor, Var};
use rayon::prelude::*;

/// Elements per rayon task: big enough that scheduling is noise, small
/// enough that a dense layer's weights (1M values) use every core.
const CHUNK: usize = 1 << 15;

/// `accum = accum * momentum + g`, then `var -= accum * lr` (or with Nesterov
/// `var -= g * lr + accum * momentum * lr`), in place.
///
/// Returns `Ok(false)` and changes nothing when a tensor is not a contiguous
/// float32 CPU tensor of the variable's shape; the caller then takes the
/// tensor path.
///
/// # Shapes
/// `var`, `accum`, `g`: one shape, any rank.
pub(super) fn momentum(
    var: &Var,
    accum: &Var,
    g: &Tensor,
    lr: f32,
    momentum: f32,
    nesterov: bool,
) -> candle_core::Result<bool> {
    let eligible = |t: &Tensor| {
        ferroflow_nn::kernels::fast_kernels_on(t.device())
            && t.dtype() == candle_core::DType::F32
            && t.is_contiguous()
            && t.dims() == var.dims()
            && t.layout().start_offset() == 0
    };
    if ![var.as_tensor(), accum.as_tensor(), g].into_iter().all(eligible) {
        return Ok(false);
    }
    // candle refuses an in-place op whose operand shares the destination's
    // storage; such a gradient (e.g. the variable itself) takes the tensor path,
    // before anything is written.
    let storage = |t: &Tensor| {
        let (s, _) = t.storage_and_layout();
        std::ptr::from_ref(&*s) as usize
    };
    let (v, a, gs) = (storage(var.as_tensor()), storage(accum.as_tensor()), storage(g));
    if gs == v || gs == a || a == v {
        return Ok(false);
    }
    accum.as_tensor().inplace_op2(g, &Accumulate { momentum })?;
    var.as_tensor().inplace_op3(accum.as_tensor(), g, &Apply { lr, momentum, nesterov })?;
    Ok(true)
}

/// `accum = accum * momentum + g`.
struct Accumulate {
    momentum: f32,
}

/// `var -= accum * lr`, or `var -= g * lr + accum * momentum * lr`.
struct Apply {
    lr: f32,
    momentum: f32,
    nesterov: bool,
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a mut [f32]> {
    let n = l.shape().elem_count();
    match s {
        CpuStorage::F32(v) if l.is_contiguous() && l.start_offset() + n <= v.len() => {
            Ok(&mut v[l.start_offset()..l.start_offset() + n])
        }
        _ => candle_core::bail!("fused momentum: {what} is not a contiguous float32 CPU tensor"),
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, n: usize, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) if l.is_contiguous() && l.shape().elem_count() == n && l.start_offset() + n <= v.len() => {
            Ok(&v[l.start_offset()..l.start_offset() + n])
        }
        _ => candle_core::bail!("fused momentum: {what} is not a contiguous float32 CPU tensor of {n} values"),
    }
}

impl InplaceOp2 for Accumulate {
    fn name(&self) -> &'static str {
        "ferroflow-momentum-accumulate"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        ferroflow_nn::kernels::count_fast_run();
        let accum = slice_mut(s1, l1, "the slot")?;
        let g = slice(s2, l2, accum.len(), "the gradient")?;
        let m = self.momentum;
        accum.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(a, g)| {
            for (a, &g) in a.iter_mut().zip(g) {
                // `+ 0.0` as candle's `affine(m, 0)` in the tensor path: it turns
                // a -0 product into +0, so the sign of zero results agrees too.
                *a = (*a * m + 0.0) + g;
            }
        });
        Ok(())
    }
}

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "ferroflow-momentum-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        ferroflow_nn::kernels::count_fast_run();
        let var = slice_mut(s1, l1, "the variable")?;
        let accum = slice(s2, l2, var.len(), "the slot")?;
        let g = slice(s3, l3, var.len(), "the gradient")?;
        let (lr, m) = (self.lr, self.momentum);
        let nesterov = self.nesterov;
        var.par_chunks_mut(CHUNK).zip(accum.par_chunks(CHUNK).zip(g.par_chunks(CHUNK))).for_each(|(w, (a, g))| {
            // Term for term the tensor path's `w - step`, each product an
            // `affine(s, 0)`: `step = (g * lr + 0) + ((a * m + 0) * lr + 0)`
            // with Nesterov, else `a * lr + 0`.
            if nesterov {
                for ((w, &a), &g) in w.iter_mut().zip(a).zip(g) {
                    *w -= (g * lr + 0.0) + ((a * m + 0.0) * lr + 0.0);
                }
            } else {
                for (w, &a) in w.iter_mut().zip(a) {
                    *w -= a * lr + 0.0;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::optimizer::{Optimizer, OptimizerConfig};
    use ferroflow_nn::{Init, VarStore};

    /// Deterministic values with every sign and a spread of magnitudes.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // Every eighth value a signed zero, to check the signs of zeros too.
                match s % 8 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => (s as f32 / u32::MAX as f32 - 0.5) * 3.0,
                }
            })
            .collect()
    }

    /// The same steps through the fused path and through the tensor path
    /// (`use_fused = false`) give the same bits, for a size that spans several
    /// chunks and one that is not a multiple of anything.
    #[test]
    fn fused_momentum_matches_the_tensor_path_bit_for_bit() {
        for nesterov in [false, true] {
            for n in [1usize, 7, super::CHUNK * 2 + 13] {
                let run = |fused: bool| {
                    let store = VarStore::new(Device::Cpu, 0);
                    let w = store.root().get_variable("w", &[n], Init::Constant { value: 0.0 }, true).unwrap();
                    w.set(&Tensor::from_vec(values(n, 1), n, &Device::Cpu).unwrap()).unwrap();
                    let config = OptimizerConfig::Momentum { momentum: 0.9, use_nesterov: nesterov };
                    let mut opt = Optimizer::new(&config, &store).unwrap();
                    opt.use_fused = fused;
                    // A slot with signed zeros too (a fresh one is all +0).
                    let slot = opt.slot("w", "momentum").unwrap();
                    slot.set(&Tensor::from_vec(values(n, 2), n, &Device::Cpu).unwrap()).unwrap();
                    for step in 0..4u32 {
                        let g = Tensor::from_vec(values(n, 10 + step), n, &Device::Cpu).unwrap();
                        opt.apply(&[("w", g)], 0.05 + f64::from(step) * 0.01).unwrap();
                    }
                    let slot = opt.slot("w", "momentum").unwrap();
                    let bits = |v: &Var| v.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                    (bits(&w), bits(&slot))
                };
                let (fast, reference) = (run(true), run(false));
                let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same(&fast.0, &reference.0), "weights differ (n {n}, nesterov {nesterov})");
                assert!(same(&fast.1, &reference.1), "slots differ (n {n}, nesterov {nesterov})");
                assert!(fast.0.iter().any(|&v| v != 0.0));
            }
        }
    }

    /// A gradient that is the variable itself (shared storage, which candle's
    /// in-place ops refuse) takes the tensor path: the step succeeds and moves
    /// the variable as the tensor path does.
    #[test]
    fn an_aliased_gradient_takes_the_tensor_path() {
        let store = VarStore::new(Device::Cpu, 0);
        let w = store.root().get_variable("w", &[3], Init::Constant { value: 0.0 }, true).unwrap();
        w.set(&Tensor::new(&[1f32, -2.0, 4.0], &Device::Cpu).unwrap()).unwrap();
        let config = OptimizerConfig::Momentum { momentum: 0.9, use_nesterov: false };
        let mut opt = Optimizer::new(&config, &store).unwrap();
        opt.apply(&[("w", w.as_tensor().clone())], 0.5).unwrap();
        // accum = g = w; w -= 0.5 * accum.
        assert_eq!(w.to_vec1::<f32>().unwrap(), [0.5, -1.0, 2.0]);
        assert_eq!(opt.slot("w", "momentum").unwrap().to_vec1::<f32>().unwrap(), [1.0, -2.0, 4.0]);
    }
}
