//! The ReLU kernel (`ferroflow_nn::kernels::relu`) against the slow loop reference
//! (`kernels::reference`) and against the candle-ops path `ops::relu` took before it, on
//! random shapes (forward, and the gradient through candle's autograd and through the
//! explicit backward), including TF's kink (no gradient at exactly 0) and NaN.

mod common;

use candle_core::{Device, Tensor, Var};
use common::flat;
use ferroflow_nn::kernels::{self, reference};
use ferroflow_rng::Rng;

/// `ops::relu` as it was before the kernel: `where_cond(x > 0, x, 0)`.
fn candle_relu(x: &Tensor) -> Tensor {
    x.gt(0.0).and_then(|pos| pos.where_cond(x, &x.zeros_like()?)).expect("candle relu")
}

/// Random values with exact zeros, negative zeros and repeated values mixed in.
fn values(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.below(8) {
            0 => 0.0,
            1 => -0.0,
            _ => rng.range_f32(-3.0, 3.0),
        })
        .collect()
}

/// `(y, dx)` of `Σ f(x) · dy` through candle's autograd.
fn forward_backward(f: impl Fn(&Tensor) -> Tensor, x: &[f32], dy: &[f32], dims: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let dev = Device::Cpu;
    let xv = Var::from_vec(x.to_vec(), dims, &dev).expect("x");
    let dyt = Tensor::from_vec(dy.to_vec(), dims, &dev).expect("dy");
    let y = f(&xv);
    let grads = (&y * &dyt).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    (flat(&y), flat(grads.get(&xv).expect("dx")))
}

#[test]
fn matches_reference_and_candle_path_on_random_shapes() {
    let mut rng = Rng::new(31);
    for i in 0..40 {
        let rank = 1 + rng.below(4) as usize;
        // Up to ~200k elements, so that the parallel chunks are exercised too.
        let dims: Vec<usize> = (0..rank).map(|_| 1 + rng.below(if i % 8 == 0 { 60 } else { 9 }) as usize).collect();
        let n: usize = dims.iter().product();
        let (x, dy) = (values(&mut rng, n), values(&mut rng, n));
        let (y, dx) = forward_backward(|t| kernels::relu(t).expect("relu"), &x, &dy, &dims);
        assert_eq!(y, reference::relu(&x), "case {i} {dims:?}: y");
        assert_eq!(dx, reference::relu_backward(&x, &dy), "case {i} {dims:?}: dx");
        let (cy, cdx) = forward_backward(candle_relu, &x, &dy, &dims);
        assert_eq!((&y, &dx), (&cy, &cdx), "case {i} {dims:?}: differs from the candle path");
        // The explicit backward, from the output.
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::from_vec(v.to_vec(), dims.as_slice(), &dev).expect("tensor");
        assert_eq!(flat(&kernels::relu_backward(&t(&y), &t(&dy)).expect("backward")), dx, "case {i}: explicit");
    }
}

#[test]
fn kink_and_nan_follow_tf() {
    let x = [-2.0, -0.0, 0.0, f32::MIN_POSITIVE, 3.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let dy = [1.0; 8];
    let (y, dx) = forward_backward(|t| kernels::relu(t).expect("relu"), &x, &dy, &[8]);
    assert_eq!(y[..5], [0.0, 0.0, 0.0, f32::MIN_POSITIVE, 3.0]);
    assert_eq!(y[5..], [0.0, f32::INFINITY, 0.0], "NaN gives 0 (as ops::relu's where_cond did)");
    assert_eq!(dx, [0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
    assert!(y.iter().all(|v| v.is_sign_positive()), "no negative zeros: {y:?}");
}

#[test]
fn ops_relu_takes_the_kernel_and_keeps_other_dtypes() {
    let dev = Device::Cpu;
    let x = Tensor::from_vec(vec![-1f32, 0.0, 2.0], 3, &dev).expect("x");
    let y = ferroflow_nn::ops::relu(&x).expect("relu");
    assert_eq!(flat(&y), [0.0, 0.0, 2.0]);
    let x64 = x.to_dtype(candle_core::DType::F64).expect("f64");
    assert!(kernels::relu(&x64).is_err(), "the kernel is f32 only");
    assert_eq!(flat(&ferroflow_nn::ops::relu(&x64).expect("f64 relu")), [0.0, 0.0, 2.0]);
}

#[test]
fn rejects_mismatched_backward_shapes() {
    let dev = Device::Cpu;
    let y = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).expect("y");
    let dy = Tensor::zeros((3, 2), candle_core::DType::F32, &dev).expect("dy");
    let e = kernels::relu_backward(&y, &dy).expect_err("shapes").to_string();
    assert!(e.contains("differ in shape"), "{e}");
}

/// `add_relu(a, b)` (a residual unit's sum and ReLU in one pass) equals the reference
/// `relu(a + b)` and the candle path `relu(a + b)` it replaces, forward and both gradients,
/// including the shared input of an identity shortcut (`add_relu(x, x)`).
#[test]
fn add_relu_matches_the_sum_then_relu() {
    let mut rng = Rng::new(5);
    let dev = Device::Cpu;
    for i in 0..20 {
        let dims: Vec<usize> = (0..4).map(|_| 1 + rng.below(if i % 5 == 0 { 40 } else { 7 }) as usize).collect();
        let n: usize = dims.iter().product();
        let (a, b, dy) = (values(&mut rng, n), values(&mut rng, n), values(&mut rng, n));
        let run = |fused: bool| {
            let (av, bv) = (
                Var::from_vec(a.clone(), dims.as_slice(), &dev).expect("a"),
                Var::from_vec(b.clone(), dims.as_slice(), &dev).expect("b"),
            );
            let y = if fused {
                kernels::add_relu(&av, &bv).expect("add_relu")
            } else {
                candle_relu(&(av.as_tensor() + bv.as_tensor()).expect("sum"))
            };
            let dyt = Tensor::from_vec(dy.clone(), dims.as_slice(), &dev).expect("dy");
            let grads = (&y * &dyt).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
            (flat(&y), flat(grads.get(&av).expect("da")), flat(grads.get(&bv).expect("db")))
        };
        let (y, da, db) = run(true);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(u, v)| u + v).collect();
        assert_eq!(y, reference::relu(&sum), "case {i} {dims:?}: y");
        assert_eq!(da, reference::relu_backward(&sum, &dy), "case {i}: da");
        assert_eq!(db, da, "case {i}: db");
        assert_eq!((y, da, db), run(false), "case {i}: differs from relu(a + b)");
    }
    // An identity shortcut feeds the same tensor twice: the gradients add up.
    let x = Var::from_vec(vec![-1.0f32, 0.5, 2.0], 3, &dev).expect("x");
    let y = kernels::add_relu(&x, &x).expect("add_relu");
    let grads = y.sum_all().and_then(|t| t.backward()).expect("backward");
    assert_eq!((flat(&y), flat(grads.get(&x).expect("dx"))), (vec![0.0, 1.0, 4.0], vec![0.0, 2.0, 2.0]));
}
