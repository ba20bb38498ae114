//! candle's backprop as ferroflow builds it: the vendored candle-core stores the first
//! gradient reaching a node instead of adding it into zeros (vendor/README.md). These
//! tests check the gradients that path produces (fan-in, broadcasts, strided views,
//! ferroflow's own ops) against values worked out by hand, and that the patch is in force.

#![allow(clippy::unwrap_used)]

use candle_core::{DType, Device, Tensor, Var};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "element {i}: got {g}, want {w}");
    }
}

/// A gradient that reaches its tensor twice is the sum of both: `d/dx Σ (2x + x²) = 2 + 2x`.
#[test]
fn fan_in_adds_every_contribution() {
    let x = Var::from_vec(vec![-1.5f32, 0.0, 0.5, 3.0], (2, 2), &Device::Cpu).unwrap();
    let loss = ((x.as_tensor() * 2.0).unwrap() + x.as_tensor().sqr().unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("gradient of x");
    close(&values(g), &[-1.0, 2.0, 3.0, 8.0]);
}

/// Three paths into one variable, one through a subtraction (upstream's code path): `d/dx
/// Σ (x·c + x - 3x) = c - 2`.
#[test]
fn fan_in_through_subtraction() {
    let dev = Device::Cpu;
    let x = Var::from_vec(vec![1.0f32, 2.0, 3.0], 3, &dev).unwrap();
    let c = Tensor::new(&[0.5f32, -1.0, 4.0], &dev).unwrap();
    let xt = x.as_tensor();
    let y = ((xt * &c).unwrap() + xt).unwrap();
    let loss = (y - (xt * 3.0).unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap().get(xt).expect("gradient of x").clone();
    close(&values(&g), &[-1.5, -3.0, 2.0]);
}

/// A first gradient that arrives as a broadcast (a sum's backward) or as a transposed
/// view is stored contiguous, with the tensor's shape.
#[test]
fn broadcast_and_strided_first_gradients_are_materialised() {
    let dev = Device::Cpu;
    let x = Var::from_vec((0..6).map(|v| v as f32).collect(), (2, 3), &dev).unwrap();
    // Σ_rows then weighted: d/dx[i, j] = w[j].
    let w = Tensor::new(&[1.0f32, -2.0, 0.25], &dev).unwrap();
    let loss = x.as_tensor().sum(0).unwrap().mul(&w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("gradient of x");
    assert_eq!(g.dims(), &[2, 3]);
    assert!(g.is_contiguous(), "broadcast gradient stored as a view");
    close(&values(g), &[1.0, -2.0, 0.25, 1.0, -2.0, 0.25]);

    // xᵀ · m: the gradient reaching xᵀ flows back through the transpose as a strided view.
    let m = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &dev).unwrap();
    let loss = x.as_tensor().t().unwrap().matmul(&m).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).expect("gradient of x");
    assert_eq!(g.dims(), &[2, 3]);
    assert!(g.is_contiguous(), "transposed gradient stored as a view");
    // d/dx[i, j] = Σ_k m[i, k].
    close(&values(g), &[3.0, 3.0, 3.0, 7.0, 7.0, 7.0]);
}

/// The patch is in force: `a + b` passes its gradient unchanged to both sides, and each is
/// the first to reach its variable, so both are stored as that one tensor (upstream makes
/// two fresh sums `0 + g`).
#[test]
fn the_first_gradient_is_stored_not_added_to_zeros() {
    let dev = Device::Cpu;
    let a = Var::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (2, 2), &dev).unwrap();
    let b = Var::from_vec(vec![0.5f32; 4], (2, 2), &dev).unwrap();
    let loss = (a.as_tensor() + b.as_tensor()).unwrap().sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let (ga, gb) = (grads.get(a.as_tensor()).unwrap(), grads.get(b.as_tensor()).unwrap());
    close(&values(ga), &[3.0, 5.0, 7.0, 9.0]);
    close(&values(gb), &[3.0, 5.0, 7.0, 9.0]);
    let ptr = |t: &Tensor| {
        let (storage, layout) = t.storage_and_layout();
        match &*storage {
            candle_core::Storage::Cpu(cpu) => cpu.as_slice::<f32>().unwrap()[layout.start_offset()..].as_ptr(),
            _ => unreachable!("CPU tensors"),
        }
    };
    assert_eq!(ptr(ga), ptr(gb), "the first gradients were added into zeros (candle-core not patched?)");
}

/// ferroflow's fused ops (custom ops with their own backward) in a residual block: the
/// input's gradient is the sum of the shortcut's and the conv path's, as with the
/// unfused reference ops.
#[test]
fn residual_gradients_match_the_reference_ops() {
    use ferroflow_nn::kernels::{Conv2dParams, conv2d};
    let dev = Device::Cpu;
    let x =
        Var::from_vec((0..2 * 3 * 5 * 5).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect(), (2, 3, 5, 5), &dev)
            .unwrap();
    let w = Tensor::from_vec((0..3 * 3 * 9).map(|i| ((i * 13 % 17) as f32 - 8.0) / 20.0).collect(), (3, 3, 3, 3), &dev)
        .unwrap();
    // SAME 3x3 at unit stride: one pixel of zeros on every side.
    let params = Conv2dParams { pad_before: [1, 1], pad_after: [1, 1], ..Conv2dParams::UNIT };
    let loss_of = |y: Tensor| (y + x.as_tensor()).unwrap().sqr().unwrap().mean_all().unwrap();
    let fused = loss_of(conv2d(x.as_tensor(), &w, params).unwrap()).backward().unwrap();
    let reference = loss_of(x.as_tensor().conv2d(&w, 1, 1, 1, 1).unwrap()).backward().unwrap();
    let (gf, gr) = (fused.get(x.as_tensor()).unwrap(), reference.get(x.as_tensor()).unwrap());
    assert_eq!(gf.dtype(), DType::F32);
    close(&values(gf), &values(gr));
    assert!(values(gr).iter().any(|v| v.abs() > 1e-3), "a gradient to compare");
}
