//! The chained conv → batch norm (→ ReLU) (→ max-pool) kernel
//! (`ferroflow_nn::kernels::conv_bn_chain`) against the same blocks as one fused op each
//! (`kernels::conv_bn`, itself tested against the slow references in
//! `conv_bn_kernels.rs`): random chains of 1–3 blocks with random geometries, strides,
//! paddings and pools give the same outputs, statistics and gradients bit for bit, and
//! the same on any number of threads.

mod common;

use candle_core::{Device, Tensor, Var};
use common::{between, flat, values};
use ferroflow_nn::kernels::{self, ChainLink, Conv2dParams, Pool2dParams};
use ferroflow_rng::Rng;

/// One block: filter shape, geometry, parameters, ReLU, pool.
#[derive(Debug, Clone)]
struct BlockCase {
    ws: [usize; 4],
    params: Conv2dParams,
    w: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    epsilon: f64,
    relu: bool,
    pool: Option<Pool2dParams>,
}

#[derive(Debug, Clone)]
struct ChainCase {
    xs: [usize; 4],
    x: Vec<f32>,
    blocks: Vec<BlockCase>,
    /// The output's shape and the gradient `Σ y · dy` gives it.
    ys: [usize; 4],
    dy: Vec<f32>,
}

/// A random chain: each block's input is the previous block's output, with kernels 1–3,
/// strides 1–2, TF-SAME or explicit padding, and max-pools after some ReLUs.
fn random_chain(rng: &mut Rng, links: usize) -> ChainCase {
    'retry: loop {
        let xs = [between(rng, 1, 4), between(rng, 1, 4), between(rng, 4, 12), between(rng, 4, 12)];
        let mut shape = xs;
        let mut blocks = Vec::new();
        for _ in 0..links {
            let ws = [between(rng, 1, 6), shape[1], between(rng, 1, 3), between(rng, 1, 3)];
            let stride = [between(rng, 1, 2), between(rng, 1, 2)];
            let pad_before = [between(rng, 0, 1), between(rng, 0, 1)];
            let pad_after = [between(rng, 0, 2), between(rng, 0, 2)];
            let params = Conv2dParams { stride, dilation: [1, 1], pad_before, pad_after };
            let Some([oh, ow]) = params.output_size([shape[2], shape[3]], [ws[2], ws[3]]) else { continue 'retry };
            if shape[0] * oh * ow < 2 {
                continue 'retry;
            }
            let relu = rng.below(4) != 0;
            let pool = if relu && rng.below(2) == 0 {
                let p = Pool2dParams {
                    ksize: [between(rng, 1, 2), between(rng, 1, 2)],
                    stride: [between(rng, 1, 2), between(rng, 1, 2)],
                    pad_before: [0, 0],
                    pad_after: [between(rng, 0, 1), between(rng, 0, 1)],
                };
                p.output_size([oh, ow]).map(|_| p)
            } else {
                None
            };
            let [h, w] = pool.and_then(|p| p.output_size([oh, ow])).unwrap_or([oh, ow]);
            blocks.push(BlockCase {
                ws,
                params,
                w: values(rng, ws.iter().product(), 0.0, 1.0),
                gamma: values(rng, ws[0], 1.0, 0.5),
                beta: values(rng, ws[0], 0.0, 0.5),
                epsilon: [1e-3, 1e-5][rng.below(2) as usize],
                relu,
                pool,
            });
            shape = [shape[0], ws[0], h, w];
        }
        let x = values(rng, xs.iter().product(), 0.5, 1.0);
        let dy = values(rng, shape.iter().product(), 0.0, 1.0);
        return ChainCase { xs, x, blocks, ys: shape, dy };
    }
}

/// A random residual unit with an identity shortcut: 1–3 blocks of kernels 1–3 that keep
/// the spatial size (stride 1, TF-SAME padding, odd or even kernels), the last one linear
/// and back to the input's channels, no pools.
fn random_residual(rng: &mut Rng, links: usize) -> ChainCase {
    let xs = [between(rng, 1, 4), between(rng, 1, 5), between(rng, 3, 10), between(rng, 3, 10)];
    let mut channels = xs[1];
    let blocks = (0..links)
        .map(|k| {
            let last = k + 1 == links;
            let ws = [if last { xs[1] } else { between(rng, 1, 6) }, channels, between(rng, 1, 3), between(rng, 1, 3)];
            channels = ws[0];
            let pad_before = [(ws[2] - 1) / 2, (ws[3] - 1) / 2];
            let pad_after = [ws[2] - 1 - pad_before[0], ws[3] - 1 - pad_before[1]];
            BlockCase {
                ws,
                params: Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before, pad_after },
                w: values(rng, ws.iter().product(), 0.0, 1.0),
                gamma: values(rng, ws[0], 1.0, 0.5),
                beta: values(rng, ws[0], 0.0, 0.5),
                epsilon: [1e-3, 1e-5][rng.below(2) as usize],
                relu: !last && rng.below(4) != 0,
                pool: None,
            }
        })
        .collect();
    // Centred inputs: about half the unit's sums fall below zero, so the ReLU masks.
    let x = values(rng, xs.iter().product(), 0.0, 1.0);
    let dy = values(rng, xs.iter().product(), 0.0, 1.0);
    ChainCase { xs, x, blocks, ys: xs, dy }
}

/// How [`run`] computes the case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    /// The chain kernel.
    Chained,
    /// One fused conv + batch norm op per block.
    PerBlock,
    /// The residual kernel: `relu(chain(x) + x)` in one op.
    Residual,
    /// The chain kernel, then the add + ReLU kernel with `x`.
    ChainedThenAddRelu,
}

/// `(y, [mean, var per block], [dx, then dw, dgamma, dbeta per block])` of `Σ y · dy`,
/// along `path`. `x_grad`: whether `x` is a variable (else the chain skips its
/// gradient).
fn run(case: &ChainCase, path: Path, x_grad: bool) -> (Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let dev = Device::Cpu;
    let x_var = Var::from_vec(case.x.clone(), &case.xs, &dev).expect("x");
    let x = if x_grad { x_var.as_tensor().clone() } else { x_var.as_tensor().detach() };
    let vars: Vec<[Var; 3]> = case
        .blocks
        .iter()
        .map(|b| {
            [
                Var::from_vec(b.w.clone(), &b.ws, &dev).expect("w"),
                Var::from_vec(b.gamma.clone(), b.ws[0], &dev).expect("gamma"),
                Var::from_vec(b.beta.clone(), b.ws[0], &dev).expect("beta"),
            ]
        })
        .collect();
    let (y, stats) = if path != Path::PerBlock {
        let links: Vec<ChainLink<'_>> = case
            .blocks
            .iter()
            .zip(&vars)
            .map(|(b, [w, gamma, beta])| ChainLink {
                w,
                gamma,
                beta,
                params: b.params,
                epsilon: b.epsilon,
                relu: b.relu,
                pool: b.pool,
            })
            .collect();
        assert!(kernels::supports_chain(&x, &links));
        match path {
            Path::Residual => kernels::conv2d_batch_norm_residual_train(&x, &links).expect("residual"),
            Path::ChainedThenAddRelu => {
                let (y, stats) = kernels::conv2d_batch_norm_chain_train(&x, &links).expect("chain");
                (kernels::add_relu(&y, &x).expect("add_relu"), stats)
            }
            _ => kernels::conv2d_batch_norm_chain_train(&x, &links).expect("chain"),
        }
    } else {
        let mut y = x.clone();
        let mut stats = Vec::new();
        for (b, [w, gamma, beta]) in case.blocks.iter().zip(&vars) {
            let (out, mean, var) = match b.pool {
                Some(pool) => {
                    kernels::conv2d_batch_norm_relu_max_pool_train(&y, w, gamma, beta, b.params, pool, b.epsilon)
                }
                None => kernels::conv2d_batch_norm_train(&y, w, gamma, beta, b.params, b.epsilon, b.relu),
            }
            .expect("block");
            stats.push((mean, var));
            y = out;
        }
        (y, stats)
    };
    assert_eq!(y.dims(), case.ys, "output shape");
    let dy = Tensor::from_vec(case.dy.clone(), y.dims(), &dev).expect("dy");
    let grads = (&y * &dy).and_then(|t| t.sum_all()).and_then(|t| t.backward()).expect("backward");
    // Signed zeros: candle's `0 + -0` (its gradient accumulation between the ops) is `+0`.
    let g = |v: &Var| grads.get(v).map(flat).unwrap_or_default().into_iter().map(|v| v + 0.0).collect();
    let mut grad_values = vec![g(&x_var)];
    for [w, gamma, beta] in &vars {
        grad_values.extend([g(w), g(gamma), g(beta)]);
    }
    let stat_values = stats.iter().flat_map(|(m, v)| [flat(m), flat(v)]).collect();
    (flat(&y), stat_values, grad_values)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn chains_match_one_fused_op_per_block_bit_for_bit() {
    let mut rng = Rng::new(0xc4a1);
    for i in 0..60 {
        let case = random_chain(&mut rng, 1 + i % 3);
        let x_grad = i % 2 == 0;
        let what = format!(
            "chain {i}: x {:?}, blocks {:?}",
            case.xs,
            case.blocks.iter().map(|b| (b.ws, b.pool.is_some(), b.relu)).collect::<Vec<_>>()
        );
        let (y, stats, grads) = run(&case, Path::Chained, x_grad);
        let (y0, stats0, grads0) = run(&case, Path::PerBlock, x_grad);
        assert_eq!(bits(&y), bits(&y0), "{what}: output");
        assert_eq!(stats.len(), stats0.len(), "{what}: statistics");
        for (k, (a, b)) in stats.iter().zip(&stats0).enumerate() {
            assert_eq!(bits(a), bits(b), "{what}: statistic {k}");
        }
        for (k, (a, b)) in grads.iter().zip(&grads0).enumerate() {
            assert_eq!(bits(a), bits(b), "{what}: gradient {k} (0: x; then w, gamma, beta per block)");
        }
        assert_eq!(grads[0].is_empty(), !x_grad, "{what}: the input gradient is computed only for a variable");
        assert!(grads[1].iter().any(|&v| v != 0.0), "{what}: the first filter has a gradient");
    }
}

#[test]
fn chains_are_deterministic_across_thread_counts() {
    let mut rng = Rng::new(0xc4a2);
    let case = random_chain(&mut rng, 3);
    let first = run(&case, Path::Chained, true);
    let residual_case = random_residual(&mut rng, 2);
    let residual = run(&residual_case, Path::Residual, true);
    for threads in [1, 3, 4] {
        let tp = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        assert_eq!(first, tp.install(|| run(&case, Path::Chained, true)), "{threads} threads differ");
        assert_eq!(
            residual,
            tp.install(|| run(&residual_case, Path::Residual, true)),
            "residual: {threads} threads differ"
        );
    }
}

/// The residual kernel against the chain kernel followed by the add + ReLU kernel: the
/// same output, statistics and gradients bit for bit (`x`'s gradient is the chain's
/// plus the masked `dy` in both, added in the op or by candle's accumulation).
#[test]
fn residual_units_match_the_chain_then_add_relu_bit_for_bit() {
    let mut rng = Rng::new(0xc4a3);
    let mut masked = 0;
    for i in 0..40 {
        let case = random_residual(&mut rng, 1 + i % 3);
        let x_grad = i % 4 != 3;
        let what = format!(
            "unit {i}: x {:?}, blocks {:?}",
            case.xs,
            case.blocks.iter().map(|b| (b.ws, b.relu)).collect::<Vec<_>>()
        );
        let (y, stats, grads) = run(&case, Path::Residual, x_grad);
        let (y0, stats0, grads0) = run(&case, Path::ChainedThenAddRelu, x_grad);
        assert_eq!(bits(&y), bits(&y0), "{what}: output");
        assert_eq!(stats, stats0, "{what}: statistics");
        for (k, (a, b)) in grads.iter().zip(&grads0).enumerate() {
            assert_eq!(bits(a), bits(b), "{what}: gradient {k} (0: x; then w, gamma, beta per block)");
        }
        assert_eq!(grads[0].is_empty(), !x_grad, "{what}: the input gradient is computed only for a variable");
        masked += y.iter().filter(|&&v| v == 0.0).count();
        assert!(y.iter().any(|&v| v > 0.0), "{what}: the ReLU passes something");
    }
    assert!(masked > 100, "the ReLU masked only {masked} outputs: the mask is not exercised");
}

#[test]
fn residual_units_refuse_a_last_block_with_relu_or_another_shape() {
    let dev = Device::Cpu;
    let x = Tensor::ones((2, 3, 5, 5), candle_core::DType::F32, &dev).expect("x");
    let w = Tensor::ones((3, 3, 3, 3), candle_core::DType::F32, &dev).expect("w");
    let g = Tensor::ones(3, candle_core::DType::F32, &dev).expect("gamma");
    let same = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let relu = ChainLink { w: &w, gamma: &g, beta: &g, params: same, epsilon: 1e-3, relu: true, pool: None };
    let err = kernels::conv2d_batch_norm_residual_train(&x, &[relu]).expect_err("ReLU on the last block");
    assert!(err.to_string().contains("neither ReLU nor pool"), "{err}");
    let valid = Conv2dParams { pad_before: [0, 0], pad_after: [0, 0], ..same };
    let shrinking = ChainLink { params: valid, relu: false, ..relu };
    let err = kernels::conv2d_batch_norm_residual_train(&x, &[shrinking]).expect_err("3x3 output from 5x5");
    assert!(err.to_string().contains("residual"), "{err}");
}

#[test]
fn chains_refuse_what_they_do_not_handle() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 5, 5), candle_core::DType::F32, &dev).expect("x");
    let w = Tensor::zeros((4, 2, 3, 3), candle_core::DType::F32, &dev).expect("w");
    let g = Tensor::ones(4, candle_core::DType::F32, &dev).expect("gamma");
    let params = Conv2dParams { stride: [1, 1], dilation: [1, 1], pad_before: [1, 1], pad_after: [1, 1] };
    let link = ChainLink { w: &w, gamma: &g, beta: &g, params, epsilon: 1e-3, relu: true, pool: None };
    // The filter takes 2 channels, the input has 3.
    assert!(!kernels::supports_chain(&x, &[link]));
    let err = kernels::conv2d_batch_norm_chain_train(&x, &[link]).expect_err("mismatched channels");
    assert!(err.to_string().contains("channels chain"), "{err}");
    assert!(!kernels::supports_chain(&x, &[]));
}

/// `Model::forward_t` in training chains conv → BN (→ ReLU) (→ max-pool) layers and
/// leaves the rest alone; layer by layer gives the same logits and moving statistics bit
/// for bit and the same gradients (to the sign of zeros). The model mixes what the
/// chain detection must get right: two blocks then a max-pool after a *linear* block
/// (not fused: a pool follows only a ReLU inside the chain), a single ReLU block with
/// its pool (the single-block op), a tanh block (not chainable), and a Keras-semantics
/// batch norm in a chain of two with a pool between them.
#[test]
fn model_forward_chains_blocks_with_the_same_results_as_layer_by_layer() {
    let text = r#"
        name = "mixed"
        input = [13, 11, 2]
        [[layers]]
        type = "conv2d"
        filters = 5
        kernel = 3
        batch_norm = true
        activation = "relu"
        [[layers]]
        type = "conv2d"
        filters = 4
        kernel = 2
        batch_norm = true
        [[layers]]
        type = "max_pool"
        pool = 2
        [[layers]]
        type = "conv2d"
        filters = 6
        kernel = 3
        batch_norm = true
        activation = "tanh"
        [[layers]]
        type = "conv2d"
        filters = 6
        kernel = 1
        batch_norm = true
        activation = "relu"
        [[layers]]
        type = "max_pool"
        pool = 2
        [[layers]]
        type = "activation"
        function = "relu"
        [[layers]]
        type = "conv2d"
        filters = 3
        kernel = 3
        batch_norm = { momentum = 0.9, epsilon = 1e-5, semantics = "keras" }
        activation = "relu"
        [[layers]]
        type = "max_pool"
        pool = 1
        [[layers]]
        type = "conv2d"
        filters = 3
        kernel = 1
        batch_norm = true
        activation = "relu"
        [[layers]]
        type = "flatten"
        [[layers]]
        type = "dense"
        units = 4
    "#;
    let spec = ferroflow_nn::ModelSpec::from_toml(text).expect("spec");
    let dev = Device::Cpu;
    let run = |chained: bool| {
        let store = ferroflow_nn::VarStore::new(dev.clone(), 3);
        let model = spec.build(&store, 3).expect("build");
        let mut rng = Rng::new(11);
        let x = Tensor::from_vec(values(&mut rng, 3 * 2 * 13 * 11, 0.0, 1.0), (3, 2, 13, 11), &dev).expect("x");
        let mut losses = Vec::new();
        // Two steps' forward passes: the moving statistics move twice.
        for step in 0..2u32 {
            let logits = if chained {
                model.forward_t(&x, true).expect("forward")
            } else {
                let mut y = x.clone();
                for layer in model.layers() {
                    y = layer.forward_t(&y, true).expect("layer");
                }
                y
            };
            let labels = Tensor::new(&[1u32, step, 3], &dev).expect("labels");
            let loss = ferroflow_nn::ops::sparse_softmax_cross_entropy(&logits, &labels)
                .expect("loss")
                .mean_all()
                .expect("mean");
            losses.push(loss);
        }
        let grads = losses[1].backward().expect("backward");
        let grad_values: Vec<Vec<f32>> = store
            .trainable_variables()
            .iter()
            .map(|v| grads.get(&v.var).map(flat).expect("gradient").into_iter().map(|g| g + 0.0).collect())
            .collect();
        let var_values: Vec<Vec<f32>> = store.global_variables().iter().map(|v| flat(&v.var)).collect();
        (losses.iter().map(flat).collect::<Vec<_>>(), var_values, grad_values)
    };
    let (chained_loss, chained_vars, chained_grads) = run(true);
    let (plain_loss, plain_vars, plain_grads) = run(false);
    assert_eq!(chained_loss, plain_loss, "losses");
    assert_eq!(chained_vars, plain_vars, "variables (moving statistics after two steps)");
    for (i, (c, p)) in chained_grads.iter().zip(&plain_grads).enumerate() {
        common::assert_close_tol(c, p, 1e-5, 1e-4, &format!("gradient of trainable variable {i}"));
    }
}
