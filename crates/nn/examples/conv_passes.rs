//! Times each pass of one convolution (forward, input gradient, filter gradient) through
//! im2col + gemm (`gemm`), the direct kernels (`dir`, `Kernels::Direct`) and the default
//! fast kernels (`fast`: Winograd where it applies), on random data, one shape per line.
//!
//! Usage: `cargo run --release -p ferroflow-nn --example conv_passes -- [N C H W O K STRIDE]...`
//! (no arguments: the 3x3 SAME convolutions of cifar_cnn, resnet20 and vgg_small at batch
//! 64). Threads: RAYON_NUM_THREADS.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use candle_core::{Device, Tensor};
use ferroflow_nn::kernels::{
    Conv2dParams, Kernels, conv2d, conv2d_backward_filter, conv2d_backward_input, with_kernels,
};

fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best * 1e3
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().unwrap()).collect();
    let shapes: Vec<[usize; 7]> = if args.is_empty() {
        vec![
            [64, 3, 32, 32, 16, 3, 1],
            [64, 16, 32, 32, 16, 3, 1],
            [64, 16, 32, 32, 32, 3, 2],
            [64, 32, 16, 16, 32, 3, 1],
            [64, 64, 8, 8, 64, 3, 1],
            [64, 32, 32, 32, 32, 3, 1],
            [64, 32, 16, 16, 64, 3, 1],
            [64, 64, 16, 16, 64, 3, 1],
            [64, 64, 32, 32, 64, 3, 1],
            [64, 128, 16, 16, 128, 3, 1],
            [64, 256, 8, 8, 256, 3, 1],
        ]
    } else {
        args.chunks_exact(7).map(|c| c.try_into().unwrap()).collect()
    };
    println!(
        "{:>28}  {:>22}  {:>22}  {:>22}",
        "N C H W -> O kxk /s", "fwd gemm|dir|fast", "input gemm|dir|fast", "filter gemm|dir|fast"
    );
    for [n, c, h, w, o, k, s] in shapes {
        let pad = (k - 1) / 2;
        let p = Conv2dParams {
            stride: [s, s],
            dilation: [1, 1],
            pad_before: [pad, pad],
            pad_after: [k - 1 - pad, k - 1 - pad],
        };
        let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &Device::Cpu).unwrap();
        let wt = Tensor::randn(0f32, 0.1, (o, c, k, k), &Device::Cpu).unwrap();
        let y = conv2d(&x, &wt, p).unwrap();
        let dy = y.randn_like(0.0, 1.0).unwrap();
        let mut row = format!("{:>28}", format!("{n} {c} {h} {w} -> {o} {k}x{k} /{s}"));
        for pass in 0..3 {
            let ms: Vec<f64> = [Kernels::Gemm, Kernels::Direct, Kernels::Fast]
                .into_iter()
                .map(|kern| {
                    with_kernels(kern, || {
                        time(|| {
                            match pass {
                                0 => drop(conv2d(&x, &wt, p).unwrap()),
                                1 => drop(conv2d_backward_input(&dy, &wt, [h, w], p).unwrap()),
                                _ => drop(conv2d_backward_filter(&x, &dy, [k, k], p).unwrap()),
                            };
                        })
                    })
                })
                .collect();
            row += &format!("  {:>6.2} |{:>6.2} |{:>6.2}", ms[0], ms[1], ms[2]);
        }
        println!("{row}");
    }
}
