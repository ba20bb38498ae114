//! What data-parallel training does between ranks, through the
//! [`Collective`] trait: the same start everywhere, the mean gradient, the
//! averaged moving statistics, and validation metrics summed over the
//! ranks' parts. With one process ([`ferroflow_dist::Local`]) each of these
//! is the identity, and the trainer's loop is the same code.

use candle_core::Tensor;
use candle_core::backprop::GradStore;
use ferroflow_data::Cursor;
use ferroflow_dist::{Collective, buckets};
use ferroflow_nn::{VarStore, Variable};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::metrics::Metrics;
use crate::monitor::MonitorState;

/// The training state besides the variables that rank 0 hands the others
/// at the start (what it restored, or its fresh start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StartState {
    /// Whether rank 0 resumed a run.
    pub resumed: bool,
    /// The global step.
    pub global_step: i64,
    /// The data position.
    pub cursor: Cursor,
    /// Early stopping's / the best checkpoint's state.
    pub monitor: Option<MonitorState>,
    /// The dropout streams' states.
    pub dropout: Vec<(String, [u64; 4])>,
}

/// Every rank must train with rank 0's settings (`config_toml`, the resolved
/// config): a rank started with another `--set` would otherwise run other
/// collectives (synchronised batch norm on some ranks only) or silently
/// train something else. Rank 0 broadcasts its settings; every rank then
/// learns whether any rank differs, so all of them stop together, each
/// with one error (a differing rank names its first differing line).
pub fn check_same_config(collective: &mut dyn Collective, config_toml: &str) -> Result<()> {
    let (rank, world) = (collective.rank(), collective.world_size());
    if world == 1 {
        return Ok(());
    }
    collective.sync("the check that every rank has rank 0's settings")?;
    let mut leader = config_toml.as_bytes().to_vec();
    collective.broadcast_bytes(&mut leader, 0)?;
    let mine_differs = leader != config_toml.as_bytes();
    let mut differing = [0.0f64];
    collective.all_reduce_sum_f64(&[f64::from(u8::from(mine_differs))], &mut differing)?;
    if differing[0] == 0.0 {
        return Ok(());
    }
    let reason = if mine_differs {
        let leader = String::from_utf8_lossy(&leader);
        let first = config_toml.lines().zip(leader.lines()).find(|(a, b)| a != b).map_or_else(
            || "a line present on one side only".to_string(),
            |(a, b)| format!("{a:?} here, {b:?} on rank 0"),
        );
        format!(
            "rank {rank} of {world} runs other settings than rank 0 ({first}); start every rank with the same command"
        )
    } else {
        format!("{} rank(s) run other settings than rank 0 (their errors name the difference)", differing[0])
    };
    Err(TrainError::config("train (every rank)", reason))
}

/// The ranks of a run and the settings of what passes between them.
pub struct Replicas<'a> {
    /// The ranks.
    pub collective: &'a mut dyn Collective,
    /// Bytes per gradient all-reduce call.
    pub bucket_bytes: usize,
}

/// A variable's values as `f32`s (every variable ferroflow trains is `f32`).
fn values(t: &Tensor, context: &'static str) -> Result<Vec<f32>> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(TrainError::candle(context))
}

impl Replicas<'_> {
    /// This rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// Ranks in all.
    pub fn world(&self) -> usize {
        self.collective.world_size()
    }

    /// Whether this rank writes (checkpoints, summaries, config, progress).
    pub fn leader(&self) -> bool {
        self.collective.rank() == 0
    }

    /// Every variable of `store` (weights, moving statistics, optimizer
    /// slots, EMA shadows) and `state` become rank 0's.
    pub fn broadcast_start(&mut self, store: &VarStore, state: &mut StartState) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        self.collective.sync("the start (rank 0's variables and position)")?;
        let vars = store.global_variables();
        for bucket in buckets(&sizes(&vars), self.bucket_bytes) {
            let vars = &vars[bucket];
            let mut flat = Vec::new();
            for v in vars {
                flat.extend(values(v.var.as_tensor(), "broadcast")?);
            }
            self.collective.broadcast(&mut flat, 0)?;
            assign_flat(vars, &flat)?;
        }
        let mut bytes = serde_json::to_vec(&*state).unwrap_or_default();
        self.collective.broadcast_bytes(&mut bytes, 0)?;
        *state = serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path: "rank 0's start state".into(),
            reason: format!("could not be read on rank {}: {e}", self.rank()),
        })?;
        store.set_global_step(state.global_step);
        Ok(())
    }

    /// The mean over the ranks of each variable's gradient in `grads`
    /// (variables without one on this rank count zeros), bucketed; and the
    /// mean of `moving` (the moving statistics each rank updated from its
    /// own part of the batch), assigned; and the mean of `scalars` (loss
    /// and the like), in place.
    ///
    /// Every rank gets bitwise the same sums (one MPI all-reduce per
    /// bucket), so weights and optimizer slots stay equal on every rank.
    pub fn mean_gradients(
        &mut self,
        step: i64,
        trainable: &[Variable],
        grads: &mut GradStore,
        moving: &[Variable],
        scalars: &mut [f32],
    ) -> Result<()> {
        let world = self.world();
        if world == 1 {
            return Ok(());
        }
        self.collective.sync(&format!("the gradient all-reduce of step {}", step + 1))?;
        let scale = 1.0 / world as f32;
        for bucket in buckets(&sizes(trainable), self.bucket_bytes) {
            let vars = &trainable[bucket];
            let mut send = Vec::new();
            for v in vars {
                match grads.get(v.var.as_tensor()) {
                    Some(g) => send.extend(values(g, "gradient all-reduce")?),
                    None => send.extend(std::iter::repeat_n(0.0, v.var.elem_count())),
                }
            }
            let mut sum = vec![0f32; send.len()];
            self.collective.all_reduce_sum(&send, &mut sum)?;
            let mut at = 0;
            for v in vars {
                let n = v.var.elem_count();
                let mean: Vec<f32> = sum[at..at + n].iter().map(|s| s * scale).collect();
                at += n;
                let g = Tensor::from_vec(mean, v.var.shape(), v.var.device())
                    .map_err(TrainError::candle("gradient all-reduce"))?;
                grads.insert(v.var.as_tensor(), g);
            }
        }
        // The moving statistics and the scalars: one small call.
        let mut send = Vec::new();
        for v in moving {
            send.extend(values(v.var.as_tensor(), "moving statistics")?);
        }
        send.extend_from_slice(scalars);
        let mut sum = vec![0f32; send.len()];
        self.collective.all_reduce_sum(&send, &mut sum)?;
        let mean: Vec<f32> = sum.iter().map(|s| s * scale).collect();
        let stats = mean.len() - scalars.len();
        assign_flat(moving, &mean[..stats])?;
        scalars.copy_from_slice(&mean[stats..]);
        Ok(())
    }

    /// `metrics` summed over the ranks (each evaluated its part).
    pub fn sum_metrics(&mut self, step: i64, metrics: &mut Metrics) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        self.collective.sync(&format!("the validation at step {step}"))?;
        let mut send =
            vec![metrics.count as f64, metrics.loss_sum, metrics.correct as f64, metrics.correct_top5 as f64];
        send.extend(metrics.confusion.iter().flatten().map(|&c| c as f64));
        let mut sum = vec![0f64; send.len()];
        self.collective.all_reduce_sum_f64(&send, &mut sum)?;
        metrics.count = sum[0] as usize;
        metrics.loss_sum = sum[1];
        metrics.correct = sum[2] as usize;
        metrics.correct_top5 = sum[3] as usize;
        let classes = metrics.confusion.len();
        for (row, values) in metrics.confusion.iter_mut().zip(sum[4..].chunks(classes.max(1))) {
            for (c, v) in row.iter_mut().zip(values) {
                *c = *v as usize;
            }
        }
        Ok(())
    }
}

fn sizes(vars: &[Variable]) -> Vec<usize> {
    vars.iter().map(|v| v.var.elem_count()).collect()
}

/// Sets `vars` (in order) from their values back to back in `flat`.
fn assign_flat(vars: &[Variable], flat: &[f32]) -> Result<()> {
    let mut at = 0;
    for v in vars {
        let n = v.var.elem_count();
        let t = Tensor::from_slice(&flat[at..at + n], v.var.shape(), v.var.device())
            .and_then(|t| t.to_dtype(v.var.dtype()))
            .map_err(TrainError::candle("assign"))?;
        v.var.set(&t).map_err(TrainError::candle("assign"))?;
        at += n;
    }
    Ok(())
}

/// The variables holding moving statistics (batch norm's `moving_mean`
/// and `moving_variance`), which each rank updates from its own part of
/// the batch.
pub fn moving_statistics(store: &VarStore) -> Vec<Variable> {
    store
        .global_variables()
        .into_iter()
        .filter(|v| !v.trainable && (v.name.ends_with("/moving_mean") || v.name.ends_with("/moving_variance")))
        .collect()
}
