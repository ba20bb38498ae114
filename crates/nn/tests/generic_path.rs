//! The generic path (candle's standard tensor ops, what CUDA runs) covers every
//! model op: every zoo model and every layer kind trains a step and evaluates
//! through it without one of ferroflow's fast CPU kernels running, and gives
//! the fast path's outputs and gradients within rounding. A layer whose op had
//! no generic path would either run a fast kernel here (counted) or fail.

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor};
use ferroflow_nn::kernels::{Kernels, fast_kernel_runs, with_kernels};
use ferroflow_nn::{ModelSpec, VarStore, ZOO};

/// Train-mode output, eval-mode output and every trainable gradient of `Σ y · w`.
fn step(spec: &ModelSpec, batch: usize) -> Vec<(String, Vec<f32>)> {
    let store = VarStore::new(Device::Cpu, 7);
    let model = spec.build(&store, 7).unwrap();
    let [h, w, c] = spec.input;
    let n = batch * c * h * w;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let x = Tensor::from_vec(x, (batch, c, h, w), &Device::Cpu).unwrap();
    let y = model.forward_t(&x, true).unwrap();
    let weights: Vec<f32> = (0..y.elem_count()).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
    let weights = Tensor::from_vec(weights, y.shape(), &Device::Cpu).unwrap();
    let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    let mut out = vec![("train output".to_string(), flat(&y))];
    out.push(("eval output".to_string(), flat(&model.forward_t(&x, false).unwrap())));
    for v in store.trainable_variables() {
        let g = grads.get(v.var.as_tensor()).unwrap_or_else(|| panic!("{}: no gradient", v.name));
        out.push((format!("d {}", v.name), flat(g)));
    }
    out
}

/// Every zoo model of CIFAR size or smaller, and every layer kind. The ImageNet nets
/// (224x224, VGG's 138 M parameters) are left out for time: they are built only from
/// layer kinds these cover (conv, max-pool, dropout, flatten), checked against TF-slim
/// in crates/train/tests/slim_nets.rs.
fn models() -> Vec<ModelSpec> {
    let mut specs: Vec<ModelSpec> = ZOO.iter().map(|m| (m.spec)(10)).filter(|s| s.input[0] <= 64).collect();
    for file in ["../onnx/tests/models/every_layer.toml", "../../examples/models/small_cnn.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        specs.push(ModelSpec::from_toml(&std::fs::read_to_string(&path).unwrap()).unwrap());
    }
    specs
}

#[test]
fn every_model_trains_and_evaluates_through_the_generic_path_as_through_the_fast_kernels() {
    for spec in models() {
        let before = fast_kernel_runs();
        // The direct kernels, not Winograd's (`Kernels::Direct`): Winograd's rounding (its
        // forward outputs agree with the generic path's to 2e-6 here) moves a max-pool's
        // winner on vgg_small's 16x16 layer at batch 2, which sends that pixel's gradient
        // elsewhere (8.6e-2 relative in that layer's dW). Winograd is checked against the
        // reference on its own (tests/winograd_conv.rs, tests/conv_bn_kernels.rs).
        let fast = with_kernels(Kernels::Direct, || step(&spec, 2));
        assert!(fast_kernel_runs() > before, "{}: the fast path ran no fast kernel", spec.name);
        let before = fast_kernel_runs();
        let generic = with_kernels(Kernels::Generic, || step(&spec, 2));
        assert_eq!(fast_kernel_runs(), before, "{}: a fast kernel ran on the generic path", spec.name);
        assert_eq!(fast.len(), generic.len());
        for ((what, a), (_, b)) in fast.iter().zip(&generic) {
            // Relative to the tensor's largest value, with an absolute floor for gradients
            // that are rounding noise around 0 (a bias before a batch norm has none).
            let scale = a.iter().fold(0.05f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max) / scale;
            // Sums in another order, through batch norms' 1 / sqrt(var) on batch 2.
            assert!(worst < 2e-4, "{} {what}: fast and generic differ by {worst:e} relative", spec.name);
        }
    }
}
