//! The zoo, TOML declarations, batch norm and dropout behaviour, and the
//! variable store.

#![allow(clippy::unwrap_used)]

use candle_core::{D, DType, Device, Tensor};
use ferroflow_nn::layers::dropout::Dropout;
use ferroflow_nn::{Init, Layer, ModelSpec, Reuse, VarStore, ZOO, ops, zoo_model};

fn input(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ferroflow_rng::Rng::new(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.normal_f32()).collect::<Vec<f32>>(), shape, &Device::Cpu).unwrap()
}

#[test]
fn every_zoo_model_builds_runs_and_has_its_parameter_count() {
    // Counts derived by hand in each model's doc comment (cifar_cnn's matches TF/Keras).
    let expected = [
        ("lenet", 61_706),
        ("cifar_cnn", 1_117_162),
        ("resnet20", 272_474),
        ("vgg_small", 3_249_098),
        // TF-slim's counts for 10 classes (tf_slim.nets, counted in TensorFlow).
        ("resnet_v1_50", 23_528_522),
        ("resnet_v1_101", 42_520_650),
        ("resnet_v2_50", 23_539_850),
        ("inception_v1", 5_602_874),
        ("inception_v3", 21_788_842),
        ("alexnet_v2", 46_247_882),
        ("vgg_16", 134_301_514),
        ("vgg_19", 139_611_210),
        ("encoder_decoder", 38_723),
    ];
    assert_eq!(ZOO.len(), expected.len());
    for (name, params) in expected {
        let store = VarStore::new(Device::Cpu, 1);
        let model = zoo_model(name, 10).unwrap().build(&store, 1).unwrap();
        assert_eq!(store.trainable_parameter_count(), params, "{name}");
        assert_eq!(model.summary().iter().map(|l| l.parameters).sum::<usize>(), params, "{name}");
        let [c, h, w] = model.input_shape();
        let x = input(&[2, c, h, w], 3);
        let y = model.forward_t(&x, true).unwrap();
        let loss = if name == "encoder_decoder" {
            assert_eq!(y.dims(), [2, 3, 32, 32]);
            ops::mean_squared_error(&y, &x).unwrap()
        } else {
            assert_eq!(y.dims(), [2, 10], "{name}");
            let labels = Tensor::new(&[3u32, 7], &Device::Cpu).unwrap();
            ops::sparse_softmax_cross_entropy(&y, &labels).unwrap().mean_all().unwrap()
        };
        let grads = loss.backward().unwrap();
        for v in store.trainable_variables() {
            let g = grads.get(&v.var).unwrap_or_else(|| panic!("{name}: no gradient for {}", v.name));
            assert_eq!(g.dims(), v.var.dims());
        }
        // Eval mode runs too, and is deterministic.
        let a = model.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = model.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn cifar_cnn_variables_have_tf_slim_names() {
    let store = VarStore::new(Device::Cpu, 0);
    zoo_model("cifar_cnn", 10).unwrap().build(&store, 0).unwrap();
    let names: Vec<String> = store.global_variables().iter().map(|v| v.name.clone()).collect();
    for want in [
        "conv1/weights",
        "conv1/BatchNorm/gamma",
        "conv1/BatchNorm/beta",
        "conv1/BatchNorm/moving_mean",
        "conv1/BatchNorm/moving_variance",
        "fc1/weights",
        "fc1/biases",
        "fc2/weights",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n == "conv1/biases"), "no conv bias before batch norm");
    let trainable: Vec<String> = store.trainable_variables().iter().map(|v| v.name.clone()).collect();
    assert!(!trainable.iter().any(|n| n.contains("moving_")), "moving statistics are not trainable");
    assert_eq!(store.get("conv1/weights").unwrap().var.dims(), [32, 3, 3, 3]);
}

fn values(store: &VarStore, name: &str) -> Vec<f32> {
    store.get(name).unwrap().var.to_vec1::<f32>().unwrap()
}

#[test]
fn batch_norm_moves_statistics_in_training_only_and_restores_exactly() {
    let store = VarStore::new(Device::Cpu, 5);
    let model = zoo_model("cifar_cnn", 10).unwrap().build(&store, 5).unwrap();
    let x = input(&[4, 3, 32, 32], 9);
    let before = values(&store, "conv1/BatchNorm/moving_mean");
    model.forward_t(&x, false).unwrap();
    assert_eq!(values(&store, "conv1/BatchNorm/moving_mean"), before, "eval must not move the statistics");
    model.forward_t(&x, true).unwrap();
    let after = values(&store, "conv1/BatchNorm/moving_mean");
    assert_ne!(after, before, "a training step moves the statistics");
    assert_ne!(values(&store, "conv1/BatchNorm/moving_variance"), vec![1.0; 32]);
    // One update per training forward: momentum 0.99 from zero gives 0.01 * batch mean.
    let conv = store.get("conv1/weights").unwrap();
    let pre_bn = ops::conv2d(&x, &conv.var, [1, 1], [1, 1], ops::Padding::Same).unwrap();
    let batch_mean =
        pre_bn.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap().flatten_all().unwrap();
    for (a, m) in after.iter().zip(batch_mean.to_vec1::<f32>().unwrap()) {
        assert!((a - 0.01 * m).abs() < 1e-5, "{a} vs {}", 0.01 * m);
    }
    // A second model restored from the first's variables gives identical eval outputs.
    let store2 = VarStore::new(Device::Cpu, 99);
    let model2 = zoo_model("cifar_cnn", 10).unwrap().build(&store2, 99).unwrap();
    for v in store.global_variables() {
        store2.assign(&v.name, v.var.as_tensor()).unwrap();
    }
    let y1 = model.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let y2 = model2.forward_t(&x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(y1, y2);
}

#[test]
fn dropout_is_identity_in_eval_and_inverted_in_training() {
    let store = VarStore::new(Device::Cpu, 0);
    let rate = 0.3f32;
    let layer = Dropout::new(&store.root(), "dropout1", &[10_000], rate, 42).unwrap();
    let x = Tensor::ones((1, 10_000), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(layer.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
    let state = layer.rng_state();
    let y = layer.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap()[0].clone();
    let kept: Vec<f32> = y.iter().copied().filter(|&v| v != 0.0).collect();
    let frac = kept.len() as f32 / y.len() as f32;
    assert!((frac - (1.0 - rate)).abs() < 0.02, "kept {frac}");
    assert!(kept.iter().all(|&v| (v - 1.0 / (1.0 - rate)).abs() < 1e-6));
    // The same seed (stream state) gives the same mask; the next step another.
    layer.set_rng_state(state);
    assert_eq!(layer.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap()[0], y);
    assert_ne!(layer.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap()[0], y);
    let other = Dropout::new(&VarStore::new(Device::Cpu, 0).root(), "dropout1", &[10_000], rate, 42).unwrap();
    assert_eq!(other.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap()[0], y);
}

#[test]
fn var_store_scopes_reuse_and_trainable_filtering() {
    let store = VarStore::new(Device::Cpu, 3);
    let root = store.root();
    let block = root.sub("block1").sub("conv1");
    block.get_variable("weights", &[4, 2, 3, 3], Init::GlorotUniform, true).unwrap();
    block.get_variable("moving_mean", &[4], Init::Zeros, false).unwrap();
    let err = block.get_variable("weights", &[4, 2, 3, 3], Init::Zeros, true).unwrap_err().to_string();
    assert!(err.starts_with("variable block1/conv1/weights: already exists"), "{err}");
    let err =
        root.sub("nope").with_reuse(Reuse::Yes).get_variable("w", &[1], Init::Zeros, true).unwrap_err().to_string();
    assert!(err.contains("nope/w: does not exist"), "{err}");
    let err = block
        .with_reuse(Reuse::Auto)
        .get_variable("weights", &[4, 2, 1, 1], Init::Zeros, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("shape mismatch") && err.contains("[4, 2, 3, 3]"), "{err}");
    block.with_reuse(Reuse::Auto).get_variable("bias", &[4], Init::Constant { value: 0.5 }, true).unwrap();
    assert_eq!(
        store.trainable_variables().iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["block1/conv1/weights", "block1/conv1/bias"]
    );
    assert_eq!(store.global_variables().len(), 3);
    assert_eq!(values(&store, "block1/conv1/bias"), [0.5; 4]);
    assert_eq!(store.increment_global_step(), 1);
    // Seeded initializers: the same seed gives the same weights.
    let again = VarStore::new(Device::Cpu, 3);
    again.root().sub("block1").sub("conv1").get_variable("weights", &[4, 2, 3, 3], Init::GlorotUniform, true).unwrap();
    let w = |s: &VarStore| s.get("block1/conv1/weights").unwrap().var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(w(&store), w(&again));
    let limit = (6.0f32 / (18.0 + 36.0)).sqrt();
    assert!(w(&store).iter().all(|v| v.abs() <= limit));
    let err = store.assign("block1/conv1/bias", &Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap()).unwrap_err();
    assert!(err.to_string().contains("model has [4], the value has [3]"), "{err}");
}

#[test]
fn toml_models_build_and_errors_name_the_layer() {
    let text = r#"
        name = "tiny"
        input = [28, 28, 1]
        [[layers]]
        type = "conv2d"
        filters = 8
        kernel = 3
        batch_norm = true
        activation = "relu"
        [[layers]]
        type = "max_pool"
        pool = 2
        [[layers]]
        type = "flatten"
        [[layers]]
        type = "dense"
        units = 10
    "#;
    let spec = ModelSpec::from_toml(text).unwrap();
    let store = VarStore::new(Device::Cpu, 0);
    let model = spec.build(&store, 0).unwrap();
    assert_eq!(model.output_shape(), [10]);
    assert_eq!(store.trainable_parameter_count(), 3 * 3 * 8 + 16 + 14 * 14 * 8 * 10 + 10);
    let y = model.forward_t(&input(&[3, 1, 28, 28], 1), true).unwrap();
    assert_eq!(y.dims(), [3, 10]);
    assert!(y.argmax(D::Minus1).is_ok());

    let bad_type = text.replace("type = \"max_pool\"", "type = \"max_pool3d\"");
    let e = ModelSpec::from_toml(&bad_type).unwrap_err().to_string();
    assert!(e.starts_with("model \"tiny\": layers[1] (max_pool3d): unknown layer type \"max_pool3d\""), "{e}");
    let bad_key = text.replace("units = 10", "units = 10\nunit = 3");
    let e = ModelSpec::from_toml(&bad_key).unwrap_err().to_string();
    assert!(e.contains("layers[3] (dense)") && e.contains("unit"), "{e}");
    // An impossible shape: a 7x7 VALID pool after the image shrank to 1x1.
    let impossible = text.replace("pool = 2", "pool = 28\n[[layers]]\ntype = \"max_pool\"\npool = 7");
    let e =
        ModelSpec::from_toml(&impossible).unwrap().build(&VarStore::new(Device::Cpu, 0), 0).unwrap_err().to_string();
    assert!(e.starts_with("model \"tiny\": layers[2] (max_pool \"pool2\", input [8, 1, 1])"), "{e}");
    let e = ModelSpec::from_toml(&text.replace("type = \"flatten\"\n", "type = \"activation\"\nfunction = \"relu\"\n"))
        .unwrap()
        .build(&VarStore::new(Device::Cpu, 0), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("layers[3] (dense \"fc1\"") && e.contains("add a flatten layer"), "{e}");
}

#[test]
fn graph_def_carries_name_scopes() {
    let store = VarStore::new(Device::Cpu, 0);
    let model = zoo_model("cifar_cnn", 10).unwrap().build(&store, 0).unwrap();
    let graph = model.graph_def();
    let names: Vec<&str> = graph.node.iter().map(|n| n.name.as_str()).collect();
    for want in [
        "input",
        "conv1/weights",
        "conv1/Conv2D",
        "conv1/BatchNorm/FusedBatchNormV3",
        "conv1/Relu",
        "pool1/MaxPool",
        "fc1/MatMul",
        "dropout1/dropout",
        "output",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let conv = graph.node.iter().find(|n| n.name == "conv1/Conv2D").unwrap();
    assert_eq!(conv.input, ["input", "conv1/weights"]);
    let bn = graph.node.iter().find(|n| n.name == "conv1/BatchNorm/FusedBatchNormV3").unwrap();
    assert_eq!(bn.input[0], "conv1/Conv2D");
}

#[test]
fn tf_slim_resnets_take_other_input_sizes_through_their_global_pool() {
    // TF-slim's pool5 is a reduce_mean over whatever map the blocks leave.
    for (name, side) in [("resnet_v1_50", 160), ("resnet_v2_50", 257)] {
        let mut spec = zoo_model(name, 10).unwrap();
        spec.input = [side, side, 3];
        let store = VarStore::new(Device::Cpu, 1);
        let model = spec.build(&store, 1).unwrap();
        let y = model.forward_t(&input(&[1, 3, side, side], 4), false).unwrap();
        assert_eq!(y.dims(), [1, 10], "{name} at {side}x{side}");
    }
}

/// Frozen variables (TF-slim's `trainable_scopes`) enter the forward pass detached:
/// backward computes no gradient for them, and none below the lowest trainable layer,
/// while the forward values and the trainable gradients stay what they were.
#[test]
fn frozen_variables_get_no_gradients_and_change_nothing_else() {
    for name in ["cifar_cnn", "resnet20"] {
        let store = VarStore::new(Device::Cpu, 1);
        let model = zoo_model(name, 10).unwrap().build(&store, 1).unwrap();
        let [c, h, w] = model.input_shape();
        let x = input(&[4, c, h, w], 3);
        let labels = Tensor::new(&[3u32, 7, 1, 0], &Device::Cpu).unwrap();
        // The same dropout masks in both passes.
        let streams = model.rng_states();
        let step = || {
            for (stream, state) in &streams {
                model.set_rng_state(stream, *state).unwrap();
            }
            let y = model.forward_t(&x, true).unwrap();
            let loss = ops::sparse_softmax_cross_entropy(&y, &labels).unwrap().mean_all().unwrap();
            (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), loss.backward().unwrap())
        };
        let (all_y, all_grads) = step();
        let last = store.trainable_variables().last().unwrap().name.clone();
        let head = last.rsplit_once('/').unwrap().0.to_string();
        for v in store.trainable_variables() {
            if !v.name.starts_with(&format!("{head}/")) {
                store.set_trainable(&v.name, false).unwrap();
            }
        }
        let (frozen_y, frozen_grads) = step();
        assert_eq!(all_y, frozen_y, "{name}: freezing changed the forward pass");
        for v in store.global_variables() {
            let g = frozen_grads.get(&v.var);
            if v.trainable {
                let want = all_grads.get(&v.var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let got = g.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(got, want, "{name}: {} trains, its gradient must not change", v.name);
            } else {
                assert!(g.is_none(), "{name}: frozen {} got a gradient", v.name);
            }
        }
        assert!(store.trainable_variables().len() <= 2, "{name}: only {head} trains");
    }
}

/// Under `no_grad` (evaluation and prediction) an eval-mode forward records no autograd
/// node, so its activations are freed layer by layer, and gives the same values.
#[test]
fn no_grad_eval_forward_records_nothing_and_changes_nothing() {
    for name in ["cifar_cnn", "resnet20", "inception_v1"] {
        let store = VarStore::new(Device::Cpu, 2);
        let model = zoo_model(name, 10).unwrap().build(&store, 2).unwrap();
        let [c, h, w] = model.input_shape();
        let x = input(&[2, c, h, w], 4);
        let tracked = model.forward_t(&x, false).unwrap();
        assert!(tracked.track_op(), "{name}: outside no_grad the forward is differentiable");
        let plain = ferroflow_nn::no_grad(|| model.forward_t(&x, false)).unwrap();
        assert!(!plain.track_op(), "{name}: no_grad recorded a backward graph");
        assert_eq!(
            plain.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            tracked.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}"
        );
        assert!(ferroflow_nn::grad_enabled(), "no_grad restores the flag");
    }
}
