//! Inference-mode batch norm's one-pass kernel (`kernels::batch_norm_eval`) against the
//! candle-ops path it replaces: bitwise the same values, with and without the fused ReLU,
//! and the graph path (with gradients) whenever an input is tracked by autograd.

#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{Device, Tensor, Var};
use common::{flat, values};
use ferroflow_nn::kernels::{self, Kernels};
use ferroflow_nn::ops;
use ferroflow_rng::Rng;

fn tensor(v: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
}

/// `(x, gamma, beta, mean, var)` for `dims`, values spread around zero so the ReLU cuts.
fn case(rng: &mut Rng, dims: &[usize]) -> [Tensor; 5] {
    let c = dims[1];
    let n: usize = dims.iter().product();
    [
        tensor(values(rng, n, 0.0, 3.0), dims),
        tensor(values(rng, c, 1.0, 0.5), &[c]),
        tensor(values(rng, c, 0.0, 0.5), &[c]),
        tensor(values(rng, c, 0.0, 1.0), &[c]),
        tensor(values(rng, c, 1.5, 1.0), &[c]),
    ]
}

#[test]
fn one_pass_equals_the_candle_ops_bitwise() {
    let mut rng = Rng::new(7);
    for dims in [vec![4, 8, 5, 7], vec![2, 3, 1, 1], vec![3, 16, 32, 32], vec![5, 6], vec![1, 2, 9]] {
        let [x, g, b, m, v] = case(&mut rng, &dims);
        for relu in [false, true] {
            let before = kernels::fast_kernel_runs();
            let fast = ops::batch_norm_eval_relu(&x, &g, &b, &m, &v, 1e-3, relu).unwrap();
            assert!(kernels::fast_kernel_runs() > before, "{dims:?}: the kernel did not run");
            let generic =
                kernels::with_kernels(Kernels::Generic, || ops::batch_norm_eval_relu(&x, &g, &b, &m, &v, 1e-3, relu))
                    .unwrap();
            let (f, slow) = (flat(&fast), flat(&generic));
            assert_eq!(fast.dims(), dims.as_slice());
            for (i, (a, b)) in f.iter().zip(&slow).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{dims:?} relu {relu}: element {i}: {a} vs {b}");
            }
            if relu {
                assert!(f.iter().all(|&y| y >= 0.0) && f.contains(&0.0), "{dims:?}: the ReLU did not cut");
            }
        }
    }
}

#[test]
fn a_tracked_input_keeps_the_graph_and_its_gradient() {
    let mut rng = Rng::new(8);
    let [x, g, b, m, v] = case(&mut rng, &[2, 3, 4, 4]);
    let gamma = Var::from_tensor(&g).unwrap();
    let y = ops::batch_norm_eval_relu(&x, gamma.as_tensor(), &b, &m, &v, 1e-3, true).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let dgamma = flat(grads.get(gamma.as_tensor()).expect("gamma has a gradient"));
    assert_eq!(dgamma.len(), 3);
    assert!(dgamma.iter().any(|&d| d != 0.0));
}

#[test]
fn wrong_statistics_are_one_shape_error() {
    let mut rng = Rng::new(9);
    let [x, g, b, m, _] = case(&mut rng, &[2, 3, 4, 4]);
    let short = tensor(vec![1.0, 1.0], &[2]);
    let e = ops::batch_norm_eval_relu(&x, &g, &b, &m, &short, 1e-3, true).unwrap_err().to_string();
    assert!(e.contains("moving_var must have shape [3]"), "{e}");
}
