//! Synchronised batch norm (`model.sync_batch_norm`): two replicas, each on
//! its own thread with half of a batch and summing through a shared buffer,
//! must compute what one batch norm computes on the whole batch: the same
//! outputs and statistics, and `dx` of the sum of the halves' losses equal
//! to the whole batch's `dx`; `dgamma`/`dbeta` stay each half's own and add
//! up to the whole batch's.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use ferroflow_dist::{DistError, Local, ReplicaSum};
use ferroflow_nn::ops;

/// Replicas as threads: each adds its values into `acc`, waits for the
/// others, reads the total, and the last one out clears it.
#[derive(Debug)]
struct ThreadSum {
    replicas: usize,
    barrier: Barrier,
    acc: Mutex<Vec<f64>>,
}

impl ThreadSum {
    fn new(replicas: usize) -> Self {
        ThreadSum { replicas, barrier: Barrier::new(replicas), acc: Mutex::new(Vec::new()) }
    }
}

impl ReplicaSum for ThreadSum {
    fn replicas(&self) -> usize {
        self.replicas
    }
    fn sum_f64(&self, values: &mut [f64], _what: &str) -> Result<(), DistError> {
        {
            let mut acc = self.acc.lock().unwrap();
            if acc.is_empty() {
                acc.resize(values.len(), 0.0);
            }
            acc.iter_mut().zip(values.iter()).for_each(|(a, v)| *a += v);
        }
        self.barrier.wait();
        values.copy_from_slice(&self.acc.lock().unwrap());
        if self.barrier.wait().is_leader() {
            self.acc.lock().unwrap().clear();
        }
        self.barrier.wait();
        Ok(())
    }
}

/// A deterministic batch with channel means and scales far from 0 and 1.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 8;
            (h % 1000) as f32 / 250.0 - 1.5 + (i % 3) as f32
        })
        .collect()
}

struct Out {
    y: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

/// Forward and backward of `Σ y · w` on `x` ([n, c, h, w]), synchronised
/// through `replicas` or plain.
fn run(
    x: &[f32],
    w: &[f32],
    dims: (usize, usize, usize, usize),
    relu: bool,
    replicas: Option<&Arc<dyn ReplicaSum>>,
) -> Out {
    let dev = Device::Cpu;
    let c = dims.1;
    let x = Var::from_vec(x.to_vec(), dims, &dev).unwrap();
    let gamma = Var::from_vec((0..c).map(|i| 0.5 + i as f32 * 0.25).collect(), c, &dev).unwrap();
    let beta = Var::from_vec((0..c).map(|i| 0.1 * i as f32 - 0.2).collect(), c, &dev).unwrap();
    let (y, mean, var) = match (replicas, relu) {
        (Some(r), _) => {
            let (y, mean, var, count) = ops::batch_norm_train_across(&x, &gamma, &beta, 1e-3, relu, r).unwrap();
            assert_eq!(count, WHOLE_BATCH * dims.2 * dims.3, "every replica's values");
            (y, mean, var)
        }
        (None, false) => ops::batch_norm_train(&x, &gamma, &beta, 1e-3).unwrap(),
        (None, true) => ops::batch_norm_relu_train(&x, &gamma, &beta, 1e-3).unwrap(),
    };
    let wt = Tensor::from_vec(w.to_vec(), dims, &dev).unwrap();
    let grads = (&y * &wt).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
    Out {
        y: flat(&y),
        mean: flat(&mean),
        var: flat(&var),
        dx: flat(grads.get(&x).unwrap()),
        dgamma: flat(grads.get(&gamma).unwrap()),
        dbeta: flat(grads.get(&beta).unwrap()),
    }
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

/// The batch every test splits between two replicas.
const WHOLE_BATCH: usize = 8;

/// Two replicas with `first` and `WHOLE_BATCH - first` images equal one batch norm on all
/// of them.
fn parts_equal_whole(relu: bool, first: usize) {
    let (n, c, h, w) = (WHOLE_BATCH, 3, 5, 4);
    let x = values(n * c * h * w, 1);
    let wts = values(n * c * h * w, 2);
    let whole = run(&x, &wts, (n, c, h, w), relu, None);
    let image = c * h * w;
    let sizes = [first, n - first];
    let starts = [0, first * image];
    let sum: Arc<dyn ReplicaSum> = Arc::new(ThreadSum::new(2));
    let parts: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|r| {
                let len = sizes[r] * image;
                let (x, wts, sum) = (&x[starts[r]..][..len], &wts[starts[r]..][..len], &sum);
                s.spawn(move || run(x, wts, (sizes[r], c, h, w), relu, Some(sum)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (r, p) in parts.iter().enumerate() {
        let (at, len) = (starts[r], sizes[r] * image);
        assert_close("y", &p.y, &whole.y[at..at + len], 1e-5);
        assert_close("dx", &p.dx, &whole.dx[at..at + len], 1e-4);
        assert_close("mean", &p.mean, &whole.mean, 1e-6);
        assert_close("var", &p.var, &whole.var, 1e-6);
    }
    let add =
        |f: fn(&Out) -> &Vec<f32>| -> Vec<f32> { f(&parts[0]).iter().zip(f(&parts[1])).map(|(a, b)| a + b).collect() };
    assert_close("dgamma", &add(|o| &o.dgamma), &whole.dgamma, 1e-4);
    assert_close("dbeta", &add(|o| &o.dbeta), &whole.dbeta, 1e-4);
    // Each part's own parameter gradients differ from the whole's (they are not summed).
    assert!((parts[0].dbeta[0] - whole.dbeta[0]).abs() > 1e-3);
}

fn halves_equal_whole(relu: bool) {
    parts_equal_whole(relu, WHOLE_BATCH / 2);
}

#[test]
fn replicas_with_unequal_batches_equal_one_batch_norm_on_the_whole_batch() {
    parts_equal_whole(false, 3);
}

#[test]
fn two_replicas_with_half_batches_equal_one_batch_norm_on_the_whole_batch() {
    halves_equal_whole(false);
}

#[test]
fn two_replicas_equal_the_whole_batch_with_the_fused_relu() {
    halves_equal_whole(true);
}

#[test]
fn one_replica_equals_plain_batch_norm() {
    let dims = (WHOLE_BATCH, 2, 3, 3);
    let x = values(WHOLE_BATCH * 18, 5);
    let w = values(WHOLE_BATCH * 18, 6);
    let one: Arc<dyn ReplicaSum> = Arc::new(Local);
    let synced = run(&x, &w, dims, false, Some(&one));
    let plain = run(&x, &w, dims, false, None);
    assert_close("y", &synced.y, &plain.y, 1e-7);
    assert_close("dx", &synced.dx, &plain.dx, 1e-6);
    assert_eq!((synced.dgamma, synced.dbeta), (plain.dgamma, plain.dbeta));
}

#[test]
fn non_cpu_f32_input_is_refused_by_name() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 2, 1, 1), DType::F64, &dev).unwrap();
    let p = Tensor::ones(2, DType::F64, &dev).unwrap();
    let one: Arc<dyn ReplicaSum> = Arc::new(Local);
    let err = ops::batch_norm_train_across(&x, &p, &p, 1e-3, false, &one).unwrap_err().to_string();
    assert!(err.contains("model.sync_batch_norm runs on f32 CPU tensors") && err.contains("F64"), "{err}");
}
