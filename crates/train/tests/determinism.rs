//! Determinism (issue 5): the same seed gives bitwise-identical training
//! state after N steps, on any run and with any number of threads; another
//! seed gives another state. Each case runs [`bench_train`] (the training step
//! of `ferroflow bench train`: forward in training mode with batch norm and
//! dropout, sparse softmax CE, backward, momentum SGD) and compares every
//! variable of the store (weights, batch-norm moving statistics, momentum
//! slots) bit for bit.

#![allow(clippy::unwrap_used)]

use ferroflow_train::{BenchConfig, BenchReport, bench_train};

fn run(model: &str, batch_size: usize, steps: usize, seed: u64) -> BenchReport {
    let config = BenchConfig {
        model: model.to_string(),
        batch_size,
        steps,
        warmup: 0,
        seed,
        // Large enough that a step visibly moves every weight.
        learning_rate: 0.05,
        ..Default::default()
    };
    let mut losses = Vec::new();
    let report = bench_train(&config, &mut |s| losses.push(s.loss)).unwrap();
    assert_eq!(losses.len(), steps);
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert_eq!(report.store.global_step(), steps as i64);
    report
}

/// Every variable as (name, float32 bits), in creation order.
fn state(report: &BenchReport) -> Vec<(String, Vec<u32>)> {
    report
        .store
        .global_variables()
        .into_iter()
        .map(|v| {
            let bits = v.var.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
            (v.name, bits)
        })
        .collect()
}

/// Asserts bitwise equality, naming the first variable and element that differ.
fn assert_identical(a: &BenchReport, b: &BenchReport, what: &str) {
    let (sa, sb) = (state(a), state(b));
    assert_eq!(sa.len(), sb.len(), "{what}: variable counts differ");
    for ((name, x), (name_b, y)) in sa.iter().zip(&sb) {
        assert_eq!(name, name_b, "{what}: variable order differs");
        if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
            panic!("{what}: {name}[{i}] differs: {} vs {}", f32::from_bits(x[i]), f32::from_bits(y[i]));
        }
    }
    assert_eq!(a.weights_digest, b.weights_digest, "{what}: digests differ");
    assert_eq!(a.final_loss.to_bits(), b.final_loss.to_bits(), "{what}: final losses differ");
}

/// Runs `f` on a rayon pool of `threads` threads (ferroflow's kernels split
/// their work across the current pool).
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

#[test]
fn same_seed_gives_identical_weights_and_another_seed_different_ones() {
    // lenet: conv + bias + pool + dense; cifar_cnn: conv + batch norm + pool + dropout;
    // resnet20: strided convs, residual adds, projections, average pooling.
    for (model, batch, steps) in [("lenet", 8, 5), ("cifar_cnn", 4, 5), ("resnet20", 4, 3)] {
        let a = run(model, batch, steps, 7);
        let b = run(model, batch, steps, 7);
        assert_identical(&a, &b, &format!("{model}, two runs with seed 7"));

        let c = run(model, batch, steps, 8);
        assert_ne!(a.weights_digest, c.weights_digest, "{model}: seeds 7 and 8 end in the same state");
        let (sa, sc) = (state(&a), state(&c));
        let trainable: Vec<String> = a.store.trainable_variables().into_iter().map(|v| v.name).collect();
        for ((name, x), (_, y)) in sa.iter().zip(&sc) {
            if trainable.contains(name) {
                assert_ne!(x, y, "{model}: {name} is the same after seeds 7 and 8");
            }
        }
    }
}

#[test]
fn weights_do_not_depend_on_the_thread_count() {
    // Batch 6 on 4 threads splits the batch unevenly (chunks of 2, fewer
    // chunks than threads, so gemm parallelises inside a chunk); on 1 thread
    // every kernel runs its whole batch in one piece.
    for (model, batch, steps) in [("lenet", 6, 4), ("cifar_cnn", 6, 4)] {
        let one = on_threads(1, || run(model, batch, steps, 3));
        let four = on_threads(4, || run(model, batch, steps, 3));
        assert_eq!((one.threads, four.threads), (1, 4));
        assert_identical(&one, &four, &format!("{model}, 1 vs 4 threads"));
    }
}
