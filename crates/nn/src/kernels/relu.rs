//! ReLU (f32, any shape) as a candle custom op with its own backward.
//!
//! Why: `ops::relu` built on candle ops is `gt` + `zeros_like` + `where_cond`, and candle's
//! `where_cond` backward makes two more `where_cond`s, three zero-filled tensors and two
//! adds, one of them a gradient for the constant zeros (perf: ReLU was 10.8% of cifar_cnn's
//! training step). Here the forward is one pass and the backward one pass.
//!
//! Semantics are TF's `Relu`/`ReluGrad` (`tensorflow/core/kernels/relu_op_functor.h`):
//! `y = max(x, 0)`, `dx = dy · (x > 0)`, so the gradient at exactly 0 is 0. The backward
//! masks with the *output*: `y > 0` exactly when `x > 0`, and `y` is what candle hands to
//! the backward anyway (TF's `ReluGrad` takes the features, but for ReLU either gives the
//! same mask). NaN input gives 0 and no gradient, as `ops::relu`'s `where_cond` did.
//!
//! Determinism: element-wise, so the bits never depend on the thread count.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, bail};
use rayon::prelude::*;

/// Elements per rayon task: large enough that the task overhead stays small next to a
/// memory-bound pass, small enough to split a `[64, 32, 32, 32]` activation over threads.
const TASK_ELEMS: usize = 64 * 1024;

/// Whether [`relu`] handles `x` (f32 on the CPU): the condition for taking the fast path
/// instead of the candle-ops one.
pub fn supports(x: &Tensor) -> bool {
    super::fast_kernels_on(x.device()) && x.dtype() == DType::F32
}

/// `max(x, 0)` for one value, NaN to 0: the forward of every ReLU kernel.
#[inline(always)]
pub(crate) fn relu_value(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
}

/// ReLU on candle's CPU device in f32, with TF's gradient through candle's autograd
/// (first order only).
///
/// # Shapes
/// - `x`: any; result: the same
///
/// # Errors
/// A non-CPU device or a dtype other than f32.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    if !supports(x) {
        bail!("ferroflow relu kernel: f32 CPU tensors only (got {:?} on {:?})", x.dtype(), x.device().location());
    }
    // The kernel reads a plain row-major slice.
    x.contiguous()?.apply_op1(Relu)
}

/// `max(a + b, 0)`: a residual unit's sum and ReLU (ResNets' `relu(shortcut + residual)`)
/// in one pass, and one backward pass whose masked `dy` is the gradient of both inputs
/// (TF's `AddV2` then `Relu`: the same values, `a + b` rounded once).
///
/// # Shapes
/// - `a`, `b`: the same shape; result: that shape
///
/// # Errors
/// As [`relu`]; also when the shapes differ.
pub fn add_relu(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if !supports(a) || !supports(b) {
        bail!("ferroflow add+relu kernel: f32 CPU tensors only");
    }
    if a.dims() != b.dims() {
        bail!("ferroflow add+relu: {:?} and {:?} differ in shape", a.dims(), b.dims());
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "ferroflow-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_map(("add_relu", "a", "b"), (s1, l1), (s2, l2), |u, v| relu_value(u + v))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let d = relu_backward(y, dy)?;
        Ok((Some(d.clone()), Some(d)))
    }
}

/// The gradient of [`relu`] from its output: `dy` where `y > 0`, else 0.
///
/// # Shapes
/// - `y`, `dy`: the same shape; result: that shape
///
/// # Errors
/// As [`relu`]; also when the shapes differ.
pub fn relu_backward(y: &Tensor, dy: &Tensor) -> candle_core::Result<Tensor> {
    if !supports(y) || !supports(dy) {
        bail!("ferroflow relu backward kernel: f32 CPU tensors only");
    }
    dy.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)
}

/// `f` applied element by element, in parallel chunks, into a new vector (written once, not
/// zero-filled first).
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    x.par_iter().with_min_len(TASK_ELEMS).map(|&v| f(v)).collect()
}

/// `f(a, b)` element by element over two f32 operands of one shape, in parallel chunks,
/// into a new vector: the body of the two-input kernels. `names` is `(op, a, b)` for errors.
fn zip_map(
    names: (&str, &str, &str),
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let (op, a_name, b_name) = names;
    super::count_fast_run();
    if l1.dims() != l2.dims() {
        bail!("ferroflow {op}: {a_name} {:?} and {b_name} {:?} differ in shape", l1.dims(), l2.dims());
    }
    let a = super::f32_contiguous(s1, l1, op, a_name)?;
    let b = super::f32_contiguous(s2, l2, op, b_name)?;
    let out = a.par_iter().zip(b).with_min_len(TASK_ELEMS).map(|(&u, &v)| f(u, v)).collect();
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "ferroflow-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        super::count_fast_run();
        let x = super::f32_contiguous(s, l, "relu", "x")?;
        Ok((CpuStorage::F32(map(x, relu_value)), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(relu_backward(y, dy)?))
    }
}

/// `dx` of [`relu`] as a custom op over `(dy, y)`; no backward of its own.
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "ferroflow-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        zip_map(("relu backward", "dy", "y"), (s1, l1), (s2, l2), |d, v| if v > 0.0 { d } else { 0.0 })
    }
}
