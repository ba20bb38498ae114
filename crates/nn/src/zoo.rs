//! The model zoo, each model a [`ModelSpec`] (so `ferroflow models` and TOML
//! declarations share one builder).

use crate::layer::Activation;
use crate::layers::batch_norm::{BatchNormConfig, BatchNormSemantics};
use crate::ops::Padding;
use crate::spec::{BatchNormSpec, LayerSpec, ModelSpec, Size2};

/// A zoo entry.
#[derive(Debug, Clone)]
pub struct ZooModel {
    /// The name `--model` takes.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Its declaration for `num_classes` outputs.
    pub spec: fn(usize) -> ModelSpec,
}

/// Every zoo model.
pub const ZOO: &[ZooModel] = &[
    ZooModel { name: "lenet", description: "LeNet-5 (LeCun et al. 1998) for 28x28 greyscale digits", spec: lenet },
    ZooModel {
        name: "cifar_cnn",
        description: "4 conv + BN + ReLU, 2 max-pools, dense 256, dropout 0.5 (the CPU benchmark model)",
        spec: cifar_cnn,
    },
    ZooModel { name: "resnet20", description: "CIFAR ResNet-20 (He et al. 2016, section 4.2)", spec: resnet20 },
    ZooModel { name: "vgg_small", description: "VGG-style 6 conv (64-128-256) + BN, dense 512", spec: vgg_small },
    ZooModel {
        name: "resnet_v1_50",
        description: "TF-slim's resnet_v1_50 (He et al. 2016), 224x224; loads resnet_v1_50.ckpt",
        spec: resnet_v1_50,
    },
    ZooModel {
        name: "resnet_v1_101",
        description: "TF-slim's resnet_v1_101 (He et al. 2016), 224x224; loads resnet_v1_101.ckpt",
        spec: resnet_v1_101,
    },
    ZooModel {
        name: "resnet_v2_50",
        description: "TF-slim's resnet_v2_50 (pre-activation, He et al. 2016), 224x224; loads resnet_v2_50.ckpt",
        spec: resnet_v2_50,
    },
    ZooModel {
        name: "inception_v1",
        description: "TF-slim's inception_v1 (GoogLeNet with batch norm), 224x224; loads inception_v1.ckpt",
        spec: inception_v1,
    },
    ZooModel {
        name: "inception_v3",
        description: "TF-slim's inception_v3 (Szegedy et al. 2015), 299x299, no auxiliary head; loads inception_v3.ckpt",
        spec: inception_v3,
    },
    ZooModel {
        name: "alexnet_v2",
        description: "TF-slim's alexnet_v2 (Krizhevsky 2014, one-GPU version), 224x224",
        spec: alexnet_v2,
    },
    ZooModel {
        name: "vgg_16",
        description: "TF-slim's vgg_16 (Simonyan & Zisserman 2014, config D), 224x224; loads vgg_16.ckpt",
        spec: vgg_16,
    },
    ZooModel {
        name: "vgg_19",
        description: "TF-slim's vgg_19 (Simonyan & Zisserman 2014, config E), 224x224; loads vgg_19.ckpt",
        spec: vgg_19,
    },
    ZooModel {
        name: "encoder_decoder",
        description: "2 strided convs down, 2 conv2d_transpose up: 32x32x3 in, 32x32x3 out (MSE)",
        spec: encoder_decoder,
    },
];

/// The zoo model called `name`, for `num_classes` outputs.
pub fn zoo_model(name: &str, num_classes: usize) -> Option<ModelSpec> {
    ZOO.iter().find(|m| m.name == name).map(|m| (m.spec)(num_classes))
}

fn conv(filters: usize, kernel: usize, padding: Padding, activation: Activation, bn: bool) -> LayerSpec {
    LayerSpec::Conv2d {
        name: None,
        filters,
        kernel: Size2::Square(kernel),
        stride: Size2::Square(1),
        dilation: Size2::Square(1),
        padding,
        use_bias: !bn,
        batch_norm: BatchNormSpec::Flag(bn),
        activation,
    }
}

fn max_pool() -> LayerSpec {
    LayerSpec::MaxPool { name: None, pool: Size2::Square(2), stride: None, padding: Padding::Valid }
}

fn dense(units: usize, activation: Activation) -> LayerSpec {
    LayerSpec::Dense { name: None, units, use_bias: true, activation }
}

fn flatten() -> LayerSpec {
    LayerSpec::Flatten { name: None }
}

/// LeNet-5 on 28x28x1: conv 5x5x6 (SAME) → pool → conv 5x5x16 (VALID) →
/// pool → 120 → 84 → classes. 61,706 parameters for 10 classes.
pub fn lenet(classes: usize) -> ModelSpec {
    ModelSpec {
        name: "lenet".into(),
        input: [28, 28, 1],
        layers: vec![
            conv(6, 5, Padding::Same, Activation::Relu, false),
            max_pool(),
            conv(16, 5, Padding::Valid, Activation::Relu, false),
            max_pool(),
            flatten(),
            dense(120, Activation::Relu),
            dense(84, Activation::Relu),
            dense(classes, Activation::Linear),
        ],
    }
}

/// The benchmark model of DESIGN.md on 32x32x3: conv3x3(32) → BN → ReLU →
/// conv3x3(32) → BN → ReLU → maxpool2 → conv3x3(64) → BN → ReLU →
/// conv3x3(64) → BN → ReLU → maxpool2 → flatten → dense 256 → ReLU →
/// dropout 0.5 → dense classes. Convs have no bias (batch norm follows).
/// 1,117,162 trainable parameters for 10 classes, as in TF/Keras.
pub fn cifar_cnn(classes: usize) -> ModelSpec {
    ModelSpec {
        name: "cifar_cnn".into(),
        input: [32, 32, 3],
        layers: vec![
            conv(32, 3, Padding::Same, Activation::Relu, true),
            conv(32, 3, Padding::Same, Activation::Relu, true),
            max_pool(),
            conv(64, 3, Padding::Same, Activation::Relu, true),
            conv(64, 3, Padding::Same, Activation::Relu, true),
            max_pool(),
            flatten(),
            dense(256, Activation::Relu),
            LayerSpec::Dropout { name: None, rate: 0.5 },
            dense(classes, Activation::Linear),
        ],
    }
}

/// ResNet-20 for 32x32x3: conv3x3(16) + BN + ReLU, three stages of three
/// basic blocks (16, 32, 64 filters; stride 2 entering stages 2 and 3, with
/// 1x1 conv + BN projections), global average pooling, dense classes.
/// 272,474 trainable parameters for 10 classes.
pub fn resnet20(classes: usize) -> ModelSpec {
    let mut layers = vec![conv(16, 3, Padding::Same, Activation::Relu, true)];
    for (stage, filters) in [16, 32, 64].into_iter().enumerate() {
        for block in 0..3 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            layers.push(LayerSpec::Residual {
                name: Some(format!("stage{}_block{}", stage + 1, block + 1)),
                filters,
                stride,
            });
        }
    }
    layers.push(LayerSpec::AvgPool {
        name: Some("global_pool".into()),
        pool: Size2::Square(8),
        stride: None,
        padding: Padding::Valid,
    });
    layers.push(flatten());
    layers.push(LayerSpec::Dense {
        name: Some("logits".into()),
        units: classes,
        use_bias: true,
        activation: Activation::Linear,
    });
    ModelSpec { name: "resnet20".into(), input: [32, 32, 3], layers }
}

/// A VGG-style net for 32x32x3: [conv3x3 + BN + ReLU] x2 per stage at 64,
/// 128 and 256 filters, each stage ending in a 2x2 max-pool, then dense 512,
/// dropout 0.5, dense classes. 3,249,098 trainable parameters for 10 classes.
pub fn vgg_small(classes: usize) -> ModelSpec {
    let mut layers = Vec::new();
    for filters in [64, 128, 256] {
        layers.push(conv(filters, 3, Padding::Same, Activation::Relu, true));
        layers.push(conv(filters, 3, Padding::Same, Activation::Relu, true));
        layers.push(max_pool());
    }
    layers.extend([
        flatten(),
        dense(512, Activation::Relu),
        LayerSpec::Dropout { name: None, rate: 0.5 },
        dense(classes, Activation::Linear),
    ]);
    ModelSpec { name: "vgg_small".into(), input: [32, 32, 3], layers }
}

/// A small encoder-decoder on 32x32x3: conv 3x3 stride 2 (32) → conv 3x3
/// stride 2 (64) → conv2d_transpose 3x3 stride 2 (32) → conv2d_transpose 3x3
/// stride 2 (3 channels, linear): an image out, for reconstruction with MSE.
/// 38,723 trainable parameters (`_classes` is unused).
pub fn encoder_decoder(_classes: usize) -> ModelSpec {
    let down = |filters| LayerSpec::Conv2d {
        name: None,
        filters,
        kernel: Size2::Square(3),
        stride: Size2::Square(2),
        dilation: Size2::Square(1),
        padding: Padding::Same,
        use_bias: true,
        batch_norm: BatchNormSpec::Flag(false),
        activation: Activation::Relu,
    };
    let up = |filters, activation| LayerSpec::Conv2dTranspose {
        name: None,
        filters,
        kernel: Size2::Square(3),
        stride: Size2::Square(2),
        padding: Padding::Same,
        output_size: None,
        use_bias: true,
        activation,
    };
    ModelSpec {
        name: "encoder_decoder".into(),
        input: [32, 32, 3],
        layers: vec![down(32), down(64), up(32, Activation::Relu), up(3, Activation::Linear)],
    }
}

/// TF-slim's `vgg_16` (`tf_slim/nets/vgg.py`, tf-slim 1.1.0) with its variable names
/// (`vgg_16/conv1/conv1_1/weights`, …, `vgg_16/fc8/biases`), so the published
/// `vgg_16.ckpt` loads: five stages of 3x3 SAME convs with biases and ReLU (2, 2, 3, 3, 3
/// convs of 64, 128, 256, 512, 512 filters), each ending in a 2x2 VALID max-pool; `fc6`
/// a 7x7 VALID conv of 4096, `fc7` a 1x1 conv of 4096, each followed by dropout 0.5;
/// `fc8` a linear 1x1 conv of `classes`; the spatial squeeze. Input 224x224x3 (RGB minus
/// the ImageNet means, TF-slim's `vgg_preprocessing`). 138,357,544 trainable parameters
/// for 1000 classes (134,301,514 for 10), as TF-slim's.
pub fn vgg_16(classes: usize) -> ModelSpec {
    slim_vgg("vgg_16", [2, 2, 3, 3, 3], classes)
}

/// TF-slim's `vgg_19`: [`vgg_16`] with 4 convs in stages 3 to 5 (config E), named
/// `vgg_19/…`. 143,667,240 trainable parameters for 1000 classes (139,611,210 for 10).
pub fn vgg_19(classes: usize) -> ModelSpec {
    slim_vgg("vgg_19", [2, 2, 4, 4, 4], classes)
}

/// TF-slim's VGG family: `repeats[s]` convs in stage `s + 1`, under the scope `name`.
fn slim_vgg(name: &str, repeats: [usize; 5], classes: usize) -> ModelSpec {
    let named_conv = |scope: String, filters: usize, kernel: usize, padding: Padding, activation: Activation| {
        slim_conv(scope, filters, kernel, 1, padding, None, activation)
    };
    let mut layers = Vec::new();
    for (stage, (&n, filters)) in repeats.iter().zip([64, 128, 256, 512, 512]).enumerate() {
        let b = stage + 1;
        for i in 1..=n {
            // slim.repeat names the i-th conv `convB/convB_i`.
            layers.push(named_conv(format!("{name}/conv{b}/conv{b}_{i}"), filters, 3, Padding::Same, Activation::Relu));
        }
        layers.push(LayerSpec::MaxPool {
            name: Some(format!("{name}/pool{b}")),
            pool: Size2::Square(2),
            stride: None,
            padding: Padding::Valid,
        });
    }
    layers.push(named_conv(format!("{name}/fc6"), 4096, 7, Padding::Valid, Activation::Relu));
    layers.push(LayerSpec::Dropout { name: Some(format!("{name}/dropout6")), rate: 0.5 });
    layers.push(named_conv(format!("{name}/fc7"), 4096, 1, Padding::Same, Activation::Relu));
    layers.push(LayerSpec::Dropout { name: Some(format!("{name}/dropout7")), rate: 0.5 });
    layers.push(named_conv(format!("{name}/fc8"), classes, 1, Padding::Same, Activation::Linear));
    // `fc8/squeezed`: [N, classes, 1, 1] → [N, classes].
    layers.push(LayerSpec::Flatten { name: Some(format!("{name}/fc8/squeezed")) });
    ModelSpec { name: name.into(), input: [224, 224, 3], layers }
}

/// TF-slim's `resnet_v1_50` (`tf_slim/nets/resnet_v1.py`, tf-slim 1.1.0, under
/// `resnet_arg_scope()`) with its variable names (`resnet_v1_50/conv1/weights`,
/// `resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/BatchNorm/moving_mean`, …,
/// `resnet_v1_50/logits/biases`), so the published `resnet_v1_50.ckpt` loads: the root
/// block (`conv2d_same` 7x7/2 with 64 filters, i.e. an explicit 3-pixel pad and a VALID
/// conv, then a 3x3/2 SAME max-pool), four blocks of 3, 4, 6 and 3 bottleneck units
/// (depths 256, 512, 1024, 2048; the stride 2 of blocks 1–3 in their *last* unit, as
/// TF-slim puts it), the global average pool, a 1x1 `logits` conv with biases and the
/// spatial squeeze. Batch norm: decay 0.997, epsilon 1e-5, with gamma. Input 224x224x3
/// (TF-slim's `vgg_preprocessing`, which the ResNet v1 checkpoints were trained with).
/// 25,557,032 trainable parameters for 1000 classes.
pub fn resnet_v1_50(classes: usize) -> ModelSpec {
    slim_resnet("resnet_v1_50", [3, 4, 6, 3], classes, false)
}

/// TF-slim's `resnet_v1_101`: [`resnet_v1_50`] with 23 units in block 3.
/// 44,549,160 trainable parameters for 1000 classes.
pub fn resnet_v1_101(classes: usize) -> ModelSpec {
    slim_resnet("resnet_v1_101", [3, 4, 23, 3], classes, false)
}

/// TF-slim's `resnet_v2_50` (`tf_slim/nets/resnet_v2.py`, pre-activation units; He et al.
/// 2016, "Identity Mappings"): as [`resnet_v1_50`] but the root conv has biases and no
/// batch norm or ReLU, each `bottleneck_v2` unit starts with batch norm + ReLU
/// (`preact`) and its shortcut projection and `conv3` have biases and no batch norm, no
/// ReLU follows the sum, and a batch norm + ReLU (`postnorm`) follows the last block.
/// Input 224x224x3 scaled to [-1, 1] (TF-slim's `inception_preprocessing`, which its
/// ResNet v2 checkpoints were trained with). 25,570,409 trainable parameters for 1001
/// classes.
pub fn resnet_v2_50(classes: usize) -> ModelSpec {
    slim_resnet("resnet_v2_50", [3, 4, 6, 3], classes, true)
}

/// TF-slim's ResNet family under the scope `name`, `units[b]` bottleneck units in block
/// `b + 1`: v1 (`resnet_v1.py`) or, with `v2`, pre-activation (`resnet_v2.py`).
fn slim_resnet(name: &str, units: [usize; 4], classes: usize, v2: bool) -> ModelSpec {
    // resnet_utils.resnet_arg_scope: batch_norm_decay 0.997, epsilon 1e-5, scale True.
    let bn = BatchNormConfig { momentum: 0.997, epsilon: 1e-5, semantics: BatchNormSemantics::Tf1, scale: true };
    let mut layers = vec![
        // conv2d_same(inputs, 64, 7, stride=2): pad_total 6, split 3/3.
        LayerSpec::Pad { name: Some(format!("{name}/conv1_pad")), pad: [3, 3, 3, 3] },
        // v2's root conv: activation_fn=None, normalizer_fn=None, so biases instead.
        slim_conv(
            format!("{name}/conv1"),
            64,
            7,
            2,
            Padding::Valid,
            (!v2).then_some(bn),
            if v2 { Activation::Linear } else { Activation::Relu },
        ),
        // resnet_arg_scope makes max_pool2d SAME.
        LayerSpec::MaxPool {
            name: Some(format!("{name}/pool1")),
            pool: Size2::Square(3),
            stride: Some(Size2::Square(2)),
            padding: Padding::Same,
        },
    ];
    for (b, (&n, (base, stride))) in units.iter().zip([(64, 2), (128, 2), (256, 2), (512, 1)]).enumerate() {
        for u in 1..=n {
            layers.push(LayerSpec::Bottleneck {
                name: Some(format!("{name}/block{}/unit_{u}/bottleneck_v{}", b + 1, if v2 { 2 } else { 1 })),
                depth: base * 4,
                depth_bottleneck: base,
                // resnet_v1_block: stride 1 in every unit but the last.
                stride: if u == n { stride } else { 1 },
                batch_norm: bn,
                preactivation: v2,
            });
        }
    }
    if v2 {
        layers.push(LayerSpec::BatchNorm { name: Some(format!("{name}/postnorm")), config: bn });
        layers.push(LayerSpec::Activation { name: Some(format!("{name}/postnorm_relu")), function: Activation::Relu });
    }
    // `pool5`: reduce_mean over the map, whatever the input size.
    layers.push(LayerSpec::GlobalAvgPool { name: Some(format!("{name}/pool5")) });
    layers.push(slim_conv(format!("{name}/logits"), classes, 1, 1, Padding::Same, None, Activation::Linear));
    layers.push(LayerSpec::Flatten { name: Some(format!("{name}/spatial_squeeze")) });
    ModelSpec { name: name.into(), input: [224, 224, 3], layers }
}

/// TF-slim's `alexnet_v2` (`tf_slim/nets/alexnet.py`, tf-slim 1.1.0; Krizhevsky 2014,
/// "One weird trick", without LRN) with its variable names (`alexnet_v2/conv1/weights`, …,
/// `alexnet_v2/fc8/biases`): conv 11x11/4 VALID (64), 3x3/2 VALID max-pool, conv 5x5
/// (192), pool, three 3x3 convs (384, 384, 256), pool, `fc6` a 5x5 VALID conv of 4096,
/// `fc7` a 1x1 conv of 4096 (each with dropout 0.5 after), `fc8` a linear 1x1 conv, the
/// spatial squeeze; convs SAME with biases and ReLU unless said. Input 224x224x3.
/// (TF-slim initialises the biases to 0.1 and fc6–fc7 from a truncated normal of
/// stddev 0.005; ferroflow's default initialisers are used here, which matters only
/// when training from scratch.)
pub fn alexnet_v2(classes: usize) -> ModelSpec {
    let name = "alexnet_v2";
    let conv = |scope: &str, filters: usize, kernel: usize, stride: usize, padding: Padding, activation| {
        slim_conv(format!("{name}/{scope}"), filters, kernel, stride, padding, None, activation)
    };
    let pool = |scope: &str| LayerSpec::MaxPool {
        name: Some(format!("{name}/{scope}")),
        pool: Size2::Square(3),
        stride: Some(Size2::Square(2)),
        padding: Padding::Valid,
    };
    let (relu, same, valid) = (Activation::Relu, Padding::Same, Padding::Valid);
    let layers = vec![
        conv("conv1", 64, 11, 4, valid, relu),
        pool("pool1"),
        conv("conv2", 192, 5, 1, same, relu),
        pool("pool2"),
        conv("conv3", 384, 3, 1, same, relu),
        conv("conv4", 384, 3, 1, same, relu),
        conv("conv5", 256, 3, 1, same, relu),
        pool("pool5"),
        conv("fc6", 4096, 5, 1, valid, relu),
        LayerSpec::Dropout { name: Some(format!("{name}/dropout6")), rate: 0.5 },
        conv("fc7", 4096, 1, 1, same, relu),
        LayerSpec::Dropout { name: Some(format!("{name}/dropout7")), rate: 0.5 },
        conv("fc8", classes, 1, 1, same, Activation::Linear),
        LayerSpec::Flatten { name: Some(format!("{name}/fc8/squeezed")) },
    ];
    ModelSpec { name: name.into(), input: [224, 224, 3], layers }
}

/// TF-slim's `inception_v1` (`tf_slim/nets/inception_v1.py`, tf-slim 1.1.0, under
/// `inception_v1_arg_scope()`; Szegedy et al. 2014 with batch norm) with its variable
/// names (`InceptionV1/Conv2d_1a_7x7/weights`,
/// `InceptionV1/Mixed_3b/Branch_1/Conv2d_0b_3x3/BatchNorm/moving_mean`, …,
/// `InceptionV1/Logits/Conv2d_0c_1x1/biases`): 7x7/2, 3x3/2 max-pool, 1x1 and 3x3 convs,
/// 3x3/2 max-pool, modules 3b–3c, 3x3/2 max-pool, 4b–4f, 2x2/2 max-pool, 5b–5c (every
/// conv and pool SAME), a 7x7 VALID average pool, dropout, a linear 1x1 `Conv2d_0c_1x1`
/// with biases and the spatial squeeze. Batch norm: decay 0.9997, epsilon 0.001, no
/// gamma (TF-slim's default `scale=False`). Input 224x224x3 scaled to [-1, 1]
/// (`inception_preprocessing`). 6,618,649 trainable parameters for 1001 classes.
pub fn inception_v1(classes: usize) -> ModelSpec {
    let name = "InceptionV1";
    let bn = BatchNormConfig { momentum: 0.9997, epsilon: 0.001, semantics: BatchNormSemantics::Tf1, scale: false };
    let conv = |scope: &str, filters: usize, kernel: usize, stride: usize| {
        slim_conv(format!("{name}/{scope}"), filters, kernel, stride, Padding::Same, Some(bn), Activation::Relu)
    };
    let pool = |scope: &str, size: usize| LayerSpec::MaxPool {
        name: Some(format!("{name}/{scope}")),
        pool: Size2::Square(size),
        stride: Some(Size2::Square(2)),
        padding: Padding::Same,
    };
    let mixed = |scope: &str, filters: [usize; 6]| LayerSpec::InceptionV1 {
        name: Some(format!("{name}/{scope}")),
        filters,
        batch_norm: bn,
        // TF-slim names Mixed_5b's branch-2 3x3 conv Conv2d_0a_3x3.
        branch_2_3x3: if scope == "Mixed_5b" { "Conv2d_0a_3x3" } else { "Conv2d_0b_3x3" }.into(),
    };
    let layers = vec![
        conv("Conv2d_1a_7x7", 64, 7, 2),
        pool("MaxPool_2a_3x3", 3),
        conv("Conv2d_2b_1x1", 64, 1, 1),
        conv("Conv2d_2c_3x3", 192, 3, 1),
        pool("MaxPool_3a_3x3", 3),
        mixed("Mixed_3b", [64, 96, 128, 16, 32, 32]),
        mixed("Mixed_3c", [128, 128, 192, 32, 96, 64]),
        pool("MaxPool_4a_3x3", 3),
        mixed("Mixed_4b", [192, 96, 208, 16, 48, 64]),
        mixed("Mixed_4c", [160, 112, 224, 24, 64, 64]),
        mixed("Mixed_4d", [128, 128, 256, 24, 64, 64]),
        mixed("Mixed_4e", [112, 144, 288, 32, 64, 64]),
        mixed("Mixed_4f", [256, 160, 320, 32, 128, 128]),
        pool("MaxPool_5a_2x2", 2),
        mixed("Mixed_5b", [256, 160, 320, 32, 128, 128]),
        mixed("Mixed_5c", [384, 192, 384, 48, 128, 128]),
        LayerSpec::AvgPool {
            name: Some(format!("{name}/Logits/AvgPool_0a_7x7")),
            pool: Size2::Square(7),
            stride: Some(Size2::Square(1)),
            padding: Padding::Valid,
        },
        LayerSpec::Dropout { name: Some(format!("{name}/Logits/Dropout_0b")), rate: 0.2 },
        slim_conv(format!("{name}/Logits/Conv2d_0c_1x1"), classes, 1, 1, Padding::Same, None, Activation::Linear),
        LayerSpec::Flatten { name: Some(format!("{name}/Logits/SpatialSqueeze")) },
    ];
    ModelSpec { name: "inception_v1".into(), input: [224, 224, 3], layers }
}

/// TF-slim's `inception_v3` (`tf_slim/nets/inception_v3.py`, tf-slim 1.1.0, under
/// `inception_v3_arg_scope()`; Szegedy et al. 2015, "Rethinking the Inception
/// Architecture") with its variable names
/// (`InceptionV3/Conv2d_1a_3x3/weights`, `InceptionV3/Mixed_6b/Branch_2/Conv2d_0c_1x7/BatchNorm/beta`,
/// …, `InceptionV3/Logits/Conv2d_1c_1x1/biases`): the VALID stem (3x3/2, 3x3, 3x3 SAME,
/// 3x3/2 max-pool, 1x1, 3x3, 3x3/2 max-pool), three 35x35 modules (5b–5d), the 6a
/// reduction, four 17x17 modules with factorised 1x7/7x1 convs (6b–6e), the 7a reduction,
/// two 8x8 modules whose branches fork into 1x3 and 3x1 convs (7b, 7c), an 8x8 VALID
/// average pool, dropout (keep 0.8), a linear 1x1 `Conv2d_1c_1x1` with biases and the
/// spatial squeeze. Batch norm: decay 0.9997, epsilon 0.001, no gamma. The auxiliary
/// head (`AuxLogits`, a training-time loss on `Mixed_6e`) is not built: a checkpoint's
/// `AuxLogits` variables are ignored, and fine-tuning trains without its loss. Input
/// 299x299x3 scaled to [-1, 1] (`inception_preprocessing`). 23,819,401 trainable
/// parameters for 1001 classes.
pub fn inception_v3(classes: usize) -> ModelSpec {
    let name = "InceptionV3";
    let bn = BatchNormConfig { momentum: 0.9997, epsilon: 0.001, semantics: BatchNormSemantics::Tf1, scale: false };
    // A conv of kernel [kh, kw] with batch norm and ReLU.
    let conv = |scope: String, filters: usize, kernel: [usize; 2], stride: usize, padding: Padding| LayerSpec::Conv2d {
        name: Some(scope),
        filters,
        kernel: Size2::Pair(kernel),
        stride: Size2::Square(stride),
        dilation: Size2::Square(1),
        padding,
        use_bias: false,
        batch_norm: BatchNormSpec::Config(bn),
        activation: Activation::Relu,
    };
    let pool = |scope: String, max: bool, size: usize, stride: usize, padding: Padding| {
        let (pool, stride) = (Size2::Square(size), Some(Size2::Square(stride)));
        let name = Some(scope);
        if max {
            LayerSpec::MaxPool { name, pool, stride, padding }
        } else {
            LayerSpec::AvgPool { name, pool, stride, padding }
        }
    };
    // Inside a module every conv and pool is stride 1, SAME unless given.
    let module = |mixed: &str, branches: Vec<Vec<(&str, usize, [usize; 2])>>| {
        let scope = format!("{name}/{mixed}");
        let branches = branches
            .into_iter()
            .enumerate()
            .map(|(b, layers)| {
                layers
                    .into_iter()
                    .map(|(leaf, filters, kernel)| {
                        let full = format!("{scope}/Branch_{b}/{leaf}");
                        match leaf {
                            "AvgPool_0a_3x3" => pool(full, false, 3, 1, Padding::Same),
                            "MaxPool_1a_3x3" => pool(full, true, 3, 2, Padding::Valid),
                            // The reductions' strided convs (named 1x1 in 6a, though 3x3).
                            _ if leaf.starts_with("Conv2d_1a") => conv(full, filters, kernel, 2, Padding::Valid),
                            _ => conv(full, filters, kernel, 1, Padding::Same),
                        }
                    })
                    .collect()
            })
            .collect();
        LayerSpec::Concat { name: Some(scope), branches }
    };
    // Branches of Mixed_7b/7c end in a fork: a 1x3 and a 3x1 conv over the same map,
    // concatenated (no scope of their own).
    let fork = |mixed: &str, b: usize, first: &str, second: &str| LayerSpec::Concat {
        name: Some(format!("{name}/{mixed}/Branch_{b}/concat")),
        branches: vec![
            vec![conv(format!("{name}/{mixed}/Branch_{b}/{first}"), 384, [1, 3], 1, Padding::Same)],
            vec![conv(format!("{name}/{mixed}/Branch_{b}/{second}"), 384, [3, 1], 1, Padding::Same)],
        ],
    };
    let conv_1x1 = |mixed: &str, b: usize, leaf: &str, filters: usize| {
        conv(format!("{name}/{mixed}/Branch_{b}/{leaf}"), filters, [1, 1], 1, Padding::Same)
    };
    let mixed_7 = |mixed: &str, b1_second: &str| LayerSpec::Concat {
        name: Some(format!("{name}/{mixed}")),
        branches: vec![
            vec![conv_1x1(mixed, 0, "Conv2d_0a_1x1", 320)],
            vec![conv_1x1(mixed, 1, "Conv2d_0a_1x1", 384), fork(mixed, 1, "Conv2d_0b_1x3", b1_second)],
            vec![
                conv_1x1(mixed, 2, "Conv2d_0a_1x1", 448),
                conv(format!("{name}/{mixed}/Branch_2/Conv2d_0b_3x3"), 384, [3, 3], 1, Padding::Same),
                fork(mixed, 2, "Conv2d_0c_1x3", "Conv2d_0d_3x1"),
            ],
            vec![
                pool(format!("{name}/{mixed}/Branch_3/AvgPool_0a_3x3"), false, 3, 1, Padding::Same),
                conv_1x1(mixed, 3, "Conv2d_0b_1x1", 192),
            ],
        ],
    };
    let mixed_5 = |mixed: &str, b1_names: [&str; 2], pool_filters: usize| {
        module(
            mixed,
            vec![
                vec![("Conv2d_0a_1x1", 64, [1, 1])],
                vec![(b1_names[0], 48, [1, 1]), (b1_names[1], 64, [5, 5])],
                vec![("Conv2d_0a_1x1", 64, [1, 1]), ("Conv2d_0b_3x3", 96, [3, 3]), ("Conv2d_0c_3x3", 96, [3, 3])],
                vec![("AvgPool_0a_3x3", 0, [3, 3]), ("Conv2d_0b_1x1", pool_filters, [1, 1])],
            ],
        )
    };
    let mixed_6 = |mixed: &str, d: usize| {
        module(
            mixed,
            vec![
                vec![("Conv2d_0a_1x1", 192, [1, 1])],
                vec![("Conv2d_0a_1x1", d, [1, 1]), ("Conv2d_0b_1x7", d, [1, 7]), ("Conv2d_0c_7x1", 192, [7, 1])],
                vec![
                    ("Conv2d_0a_1x1", d, [1, 1]),
                    ("Conv2d_0b_7x1", d, [7, 1]),
                    ("Conv2d_0c_1x7", d, [1, 7]),
                    ("Conv2d_0d_7x1", d, [7, 1]),
                    ("Conv2d_0e_1x7", 192, [1, 7]),
                ],
                vec![("AvgPool_0a_3x3", 0, [3, 3]), ("Conv2d_0b_1x1", 192, [1, 1])],
            ],
        )
    };
    let stem = |leaf: &str, filters: usize, k: usize, stride: usize, padding: Padding| {
        conv(format!("{name}/{leaf}"), filters, [k, k], stride, padding)
    };
    let layers = vec![
        stem("Conv2d_1a_3x3", 32, 3, 2, Padding::Valid),
        stem("Conv2d_2a_3x3", 32, 3, 1, Padding::Valid),
        stem("Conv2d_2b_3x3", 64, 3, 1, Padding::Same),
        pool(format!("{name}/MaxPool_3a_3x3"), true, 3, 2, Padding::Valid),
        stem("Conv2d_3b_1x1", 80, 1, 1, Padding::Valid),
        stem("Conv2d_4a_3x3", 192, 3, 1, Padding::Valid),
        pool(format!("{name}/MaxPool_5a_3x3"), true, 3, 2, Padding::Valid),
        mixed_5("Mixed_5b", ["Conv2d_0a_1x1", "Conv2d_0b_5x5"], 32),
        mixed_5("Mixed_5c", ["Conv2d_0b_1x1", "Conv_1_0c_5x5"], 64),
        mixed_5("Mixed_5d", ["Conv2d_0a_1x1", "Conv2d_0b_5x5"], 64),
        module(
            "Mixed_6a",
            vec![
                vec![("Conv2d_1a_1x1", 384, [3, 3])],
                vec![("Conv2d_0a_1x1", 64, [1, 1]), ("Conv2d_0b_3x3", 96, [3, 3]), ("Conv2d_1a_1x1", 96, [3, 3])],
                vec![("MaxPool_1a_3x3", 0, [3, 3])],
            ],
        ),
        mixed_6("Mixed_6b", 128),
        mixed_6("Mixed_6c", 160),
        mixed_6("Mixed_6d", 160),
        mixed_6("Mixed_6e", 192),
        module(
            "Mixed_7a",
            vec![
                vec![("Conv2d_0a_1x1", 192, [1, 1]), ("Conv2d_1a_3x3", 320, [3, 3])],
                vec![
                    ("Conv2d_0a_1x1", 192, [1, 1]),
                    ("Conv2d_0b_1x7", 192, [1, 7]),
                    ("Conv2d_0c_7x1", 192, [7, 1]),
                    ("Conv2d_1a_3x3", 192, [3, 3]),
                ],
                vec![("MaxPool_1a_3x3", 0, [3, 3])],
            ],
        ),
        mixed_7("Mixed_7b", "Conv2d_0b_3x1"),
        mixed_7("Mixed_7c", "Conv2d_0c_3x1"),
        pool(format!("{name}/Logits/AvgPool_1a_8x8"), false, 8, 1, Padding::Valid),
        LayerSpec::Dropout { name: Some(format!("{name}/Logits/Dropout_1b")), rate: 0.2 },
        slim_conv(format!("{name}/Logits/Conv2d_1c_1x1"), classes, 1, 1, Padding::Same, None, Activation::Linear),
        LayerSpec::Flatten { name: Some(format!("{name}/Logits/SpatialSqueeze")) },
    ];
    ModelSpec { name: "inception_v3".into(), input: [299, 299, 3], layers }
}

/// A TF-slim `conv2d` named `scope`, square kernel and stride: with `batch_norm` (its
/// `normalizer_fn`) and then no biases, or without and with biases, as TF-slim's layers
/// create them.
fn slim_conv(
    scope: String,
    filters: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
    batch_norm: Option<BatchNormConfig>,
    activation: Activation,
) -> LayerSpec {
    LayerSpec::Conv2d {
        name: Some(scope),
        filters,
        kernel: Size2::Square(kernel),
        stride: Size2::Square(stride),
        dilation: Size2::Square(1),
        padding,
        use_bias: batch_norm.is_none(),
        batch_norm: batch_norm.map_or(BatchNormSpec::Flag(false), BatchNormSpec::Config),
        activation,
    }
}
