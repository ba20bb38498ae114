//! TensorBoard logging for a training run: `<train_dir>/train/` and
//! `<train_dir>/validation/` event files, like the notes' two writers.

use std::path::Path;

use candle_core::Tensor;
use ferroflow_nn::Variable;
use tfrecord::proto::event::{Event, SessionLog, SessionStatus, What};
use tfrecord::proto::graph::GraphDef;
use tfrecord::{EventWriter, Image};

use crate::error::{Result, TrainError};

/// The two runs' writers.
pub struct Summaries {
    /// `<train_dir>/train`.
    pub train: EventWriter,
    /// `<train_dir>/validation`.
    pub validation: EventWriter,
}

impl Summaries {
    /// Creates both writers under `train_dir`.
    pub fn new(train_dir: &Path) -> Result<Self> {
        Ok(Summaries {
            train: EventWriter::new(train_dir.join("train"))?,
            validation: EventWriter::new(train_dir.join("validation"))?,
        })
    }

    /// The model graph and the resolved config (as Markdown text).
    pub fn start(&mut self, graph: &GraphDef, config_toml: &str, step: i64) -> Result<()> {
        self.train.add_graph(graph)?;
        self.train.add_text("config", &format!("```toml\n{config_toml}\n```"), step)?;
        self.train.flush()?;
        Ok(())
    }

    /// Marks the start of a session that continues from global step `step`
    /// (0 for a fresh run) with a `SessionLog.START` event at `step + 1` in
    /// both runs, as TF's `Supervisor` does on every start. TensorBoard
    /// ignores a run's first START and, at each later one, discards the
    /// events with a step at or after it (`purge_orphaned_data`): what an
    /// interrupted run logged after its last checkpoint, and the resumed run
    /// logs again, is shown once, and curves do not fold back.
    pub fn session_start(&mut self, step: i64) -> Result<()> {
        let step = step + 1;
        let wall_time =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let event = Event {
            wall_time,
            step,
            what: Some(What::SessionLog(SessionLog {
                status: SessionStatus::Start as i32,
                checkpoint_path: String::new(),
                msg: String::new(),
            })),
        };
        for w in [&mut self.train, &mut self.validation] {
            w.write_event(&event)?;
            w.flush()?;
        }
        Ok(())
    }

    /// Histograms of every variable and of its gradient (`<name>/gradient`).
    pub fn histograms(&mut self, vars: &[Variable], grads: &candle_core::backprop::GradStore, step: i64) -> Result<()> {
        for v in vars {
            let values = flat_f64(v.var.as_tensor())?;
            self.train.add_histogram(&v.name, &values, step)?;
            if let Some(g) = grads.get(&v.var) {
                self.train.add_histogram(&format!("{}/gradient", v.name), &flat_f64(g)?, step)?;
            }
        }
        Ok(())
    }

    /// Up to `max` input images of a batch, de-normalised back to 0–255.
    pub fn images(
        &mut self,
        batch: &ferroflow_data::Batch,
        mean: [f32; 3],
        std: [f32; 3],
        scale: f32,
        max: usize,
        step: i64,
    ) -> Result<()> {
        let [c, h, w] = batch.shape;
        let n = batch.size.min(max);
        let mut pixels: Vec<Vec<u8>> = Vec::with_capacity(n);
        for i in 0..n {
            let chw = &batch.images[i * c * h * w..(i + 1) * c * h * w];
            let mut hwc = vec![0u8; c * h * w];
            for ch in 0..c {
                for p in 0..h * w {
                    let v = chw[ch * h * w + p] / scale * std[ch] + mean[ch];
                    hwc[p * c + ch] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
            pixels.push(hwc);
        }
        let images: Vec<Image<'_>> =
            pixels.iter().map(|p| Image { height: h as u32, width: w as u32, channels: c as u32, pixels: p }).collect();
        self.train.add_images("input", &images, step)?;
        Ok(())
    }

    /// Image-to-image validation samples as one picture each, side by side:
    /// the model's input, the target, the output (`validation/reconstruction`).
    pub fn reconstructions(
        &mut self,
        samples: &crate::evaluate::ImageSamples,
        scale: &crate::reconstruction::PixelScale,
        max: usize,
        step: i64,
    ) -> Result<()> {
        let [n, c, h, w] = samples.shape;
        let mut pixels: Vec<Vec<u8>> = Vec::new();
        for i in 0..n.min(max) {
            let mut hwc = vec![0u8; h * 3 * w * c];
            for (panel, values) in [&samples.input, &samples.target, &samples.output].into_iter().enumerate() {
                let chw = &values[i * c * h * w..(i + 1) * c * h * w];
                for ch in 0..c {
                    for y in 0..h {
                        for x in 0..w {
                            let v = scale.pixel(chw[(ch * h + y) * w + x], ch.min(2));
                            hwc[(y * 3 * w + panel * w + x) * c + ch] = v.round().clamp(0.0, 255.0) as u8;
                        }
                    }
                }
            }
            pixels.push(hwc);
        }
        let images: Vec<Image<'_>> = pixels
            .iter()
            .map(|p| Image { height: h as u32, width: 3 * w as u32, channels: c as u32, pixels: p })
            .collect();
        self.validation.add_images("reconstruction", &images, step)?;
        Ok(())
    }

    /// Flushes both writers.
    pub fn flush(&mut self) -> Result<()> {
        self.train.flush()?;
        self.validation.flush()?;
        Ok(())
    }
}

fn flat_f64(t: &Tensor) -> Result<Vec<f64>> {
    let v = t.flatten_all().and_then(|t| t.to_dtype(candle_core::DType::F64)).and_then(|t| t.to_vec1::<f64>());
    v.map_err(TrainError::candle("histogram"))
}
