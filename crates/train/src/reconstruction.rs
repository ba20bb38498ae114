//! Image-to-image training: the model outputs an image the size of its input
//! and learns a target image. Here the target is the input itself
//! (`data.targets = "input"`: an autoencoder), with Gaussian noise added to
//! what the model sees when `data.noise_stddev > 0` (a denoiser). Metrics
//! are in 0–255 pixel units.

use candle_core::{Device, Tensor};
use ferroflow_data::Preprocess;
use ferroflow_rng::Rng;
use serde::Serialize;

use crate::error::{Result, TrainError};

/// How model values map to pixels: `pixel = value / k + mean` per channel
/// (the inverse of the preprocessing's `(pixel - mean) * k`).
#[derive(Debug, Clone, PartialEq)]
pub struct PixelScale {
    /// Per-channel mean, 0–255.
    pub mean: [f32; 3],
    /// Per-channel `scale / std`.
    pub k: [f32; 3],
}

impl PixelScale {
    /// The scale of `preprocess`'s normalisation.
    pub fn of(preprocess: &Preprocess) -> PixelScale {
        let mean = preprocess.mean.unwrap_or([0.0; 3]);
        let std = preprocess.std.unwrap_or([1.0; 3]);
        PixelScale { mean, k: std.map(|s| preprocess.scale / s) }
    }

    /// `value` of channel `c` as a 0–255 pixel (not clamped).
    pub fn pixel(&self, value: f32, c: usize) -> f32 {
        value / self.k[c] + self.mean[c]
    }
}

/// Adds `N(0, stddev²)` pixel noise (in model units: `stddev * k` per channel)
/// to images `[N, C, H, W]`, from a stream keyed by `key`, so the same key
/// gives the same noise (resumes and validations repeat exactly).
pub fn add_noise(x: &Tensor, stddev: f64, scale: &PixelScale, seed: u64, key: [u64; 2]) -> Result<Tensor> {
    if stddev <= 0.0 {
        return Ok(x.clone());
    }
    let run = || -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let mut rng = Rng::derive(seed, &[7, key[0], key[1]]);
        let mut noise = vec![0f32; n * c * h * w];
        for (i, v) in noise.iter_mut().enumerate() {
            let ch = (i / (h * w)) % c;
            *v = rng.normal_f32() * stddev as f32 * scale.k[ch.min(2)];
        }
        x + Tensor::from_vec(noise, (n, c, h, w), &Device::Cpu)?.to_device(x.device())?
    };
    run().map_err(TrainError::candle("input noise"))
}

/// Reconstruction metrics of an evaluation, in 0–255 pixel units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconstructionReport {
    /// Mean squared error of the output against the target.
    pub mse: f64,
    /// Mean absolute error of the output.
    pub mae: f64,
    /// Peak signal-to-noise ratio of the output, `10 log10(255² / mse)` dB.
    pub psnr: f64,
    /// Mean squared error of the model's (noisy) input against the target: the baseline.
    pub input_mse: f64,
    /// PSNR of the input.
    pub input_psnr: f64,
}

/// Accumulates output, input and target pixels over batches.
#[derive(Debug, Clone, Default)]
pub struct ReconstructionMetrics {
    count: f64,
    sq: f64,
    abs: f64,
    input_sq: f64,
}

impl ReconstructionMetrics {
    /// Adds a batch: `output`, `input`, `target` are `[N, C, H, W]` row-major model values.
    pub fn add(
        &mut self,
        output: &[f32],
        input: &[f32],
        target: &[f32],
        channels: usize,
        plane: usize,
        scale: &PixelScale,
    ) {
        for (i, ((o, x), t)) in output.iter().zip(input).zip(target).enumerate() {
            let c = ((i / plane) % channels).min(2);
            let (o, x, t) = (scale.pixel(*o, c), scale.pixel(*x, c), scale.pixel(*t, c));
            let d = f64::from(o - t);
            self.sq += d * d;
            self.abs += d.abs();
            self.input_sq += f64::from(x - t) * f64::from(x - t);
        }
        self.count += output.len() as f64;
    }

    /// The report.
    ///
    /// ```
    /// use ferroflow_train::reconstruction::{PixelScale, ReconstructionMetrics};
    /// let scale = PixelScale { mean: [0.0; 3], k: [1.0; 3] };
    /// let mut m = ReconstructionMetrics::default();
    /// m.add(&[10.0, 12.0], &[0.0, 20.0], &[10.0, 10.0], 1, 2, &scale);
    /// let r = m.report();
    /// assert_eq!((r.mse, r.mae, r.input_mse), (2.0, 1.0, 100.0));
    /// assert!((r.input_psnr - 10.0 * (255.0f64 * 255.0 / 100.0).log10()).abs() < 1e-12);
    /// ```
    pub fn report(&self) -> ReconstructionReport {
        let c = self.count.max(1.0);
        let psnr = |mse: f64| if mse > 0.0 { 10.0 * (255.0 * 255.0 / mse).log10() } else { f64::INFINITY };
        let (mse, input_mse) = (self.sq / c, self.input_sq / c);
        ReconstructionReport { mse, mae: self.abs / c, psnr: psnr(mse), input_mse, input_psnr: psnr(input_mse) }
    }
}
