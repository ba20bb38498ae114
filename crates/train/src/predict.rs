//! `ferroflow predict`: class probabilities (or, for a regression model, the
//! predicted values) for image files, with the eval preprocessing recorded
//! in the checkpoint.

use std::path::{Path, PathBuf};

use candle_core::{D, Tensor};
use ferroflow_data::{DecodeOptions, IMAGE_EXTENSIONS, decode_image};
use ferroflow_nn::ops;
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::objective::Objective;
use crate::restored::RestoredModel;

/// One image's top classes, or its predicted regression targets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The image file.
    pub path: PathBuf,
    /// `(class name, label, probability)`, most probable first (empty for regression).
    pub top: Vec<(String, usize, f32)>,
    /// A regression model's predicted targets, in their own units (empty for classifiers).
    pub values: Vec<f32>,
    /// An image-to-image model's output image, written as PNG.
    pub output: Option<PathBuf>,
}

/// Image files under `inputs`: files as given, directories walked (sorted)
/// for files with an image extension.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|cause| TrainError::Io { path: dir.display().to_string(), cause })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out)?;
        } else if input.exists() {
            out.push(input.clone());
        } else {
            return Err(TrainError::Io {
                path: input.display().to_string(),
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such image file or directory"),
            });
        }
    }
    Ok(out)
}

/// Predicts the `top_k` classes of each image, in batches of `batch_size`.
/// An image that cannot be decoded is an error naming it.
pub fn predict(
    restored: &RestoredModel,
    images: &[PathBuf],
    top_k: usize,
    batch_size: usize,
    out_dir: Option<&Path>,
) -> Result<Vec<Prediction>> {
    let out_dir = match (&restored.objective, out_dir) {
        (Objective::Reconstruction { .. }, None) => {
            return Err(TrainError::config("--out", "an image-to-image model writes images: give --out DIR"));
        }
        (Objective::Reconstruction { .. }, Some(dir)) => {
            std::fs::create_dir_all(dir).map_err(|cause| TrainError::Io { path: dir.display().to_string(), cause })?;
            Some(dir)
        }
        _ => None,
    };
    let mut written = std::collections::HashSet::new();
    let p = &restored.preprocess;
    let [h, w] = p.image_size;
    let c = p.channels;
    let device = restored.store.device();
    let options = DecodeOptions { channels: Some(c), ..Default::default() };
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(batch_size.max(1)) {
        let mut input = vec![0f32; chunk.len() * p.output_len()];
        for (path, slot) in chunk.iter().zip(input.chunks_mut(p.output_len())) {
            let bytes =
                std::fs::read(path).map_err(|cause| TrainError::Io { path: path.display().to_string(), cause })?;
            let image = decode_image(&bytes, &options)
                .map_err(|e| TrainError::config("image", format!("{}: {e}", path.display())))?;
            p.eval_into(&image, slot);
        }
        let x = Tensor::from_vec(input, (chunk.len(), c, h, w), device).map_err(TrainError::candle("predict input"))?;
        let logits = restored.model.forward_t(&x, false)?; // [N, outputs] or [N, C, H, W]
        if let (Objective::Reconstruction { scale, .. }, Some(dir)) = (&restored.objective, out_dir) {
            let (_, oc, oh, ow) = logits.dims4().map_err(TrainError::candle("predict"))?;
            let values =
                logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(TrainError::candle("predict"))?;
            for (path, chw) in chunk.iter().zip(values.chunks_exact(oc * oh * ow)) {
                let mut hwc = vec![0u8; chw.len()];
                for (i, v) in chw.iter().enumerate() {
                    let (ch, p) = (i / (oh * ow), i % (oh * ow));
                    hwc[p * oc + ch] = scale.pixel(*v, ch.min(2)).round().clamp(0.0, 255.0) as u8;
                }
                let png = tfrecord::Image { height: oh as u32, width: ow as u32, channels: oc as u32, pixels: &hwc }
                    .to_png("predict")
                    .map_err(|e| TrainError::config("--out", e.to_string()))?;
                let stem = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
                let mut name = format!("{stem}.png");
                let mut n = 1;
                while !written.insert(name.clone()) {
                    name = format!("{stem}_{n}.png");
                    n += 1;
                }
                let file = dir.join(name);
                std::fs::write(&file, png)
                    .map_err(|cause| TrainError::Io { path: file.display().to_string(), cause })?;
                out.push(Prediction { path: path.clone(), top: Vec::new(), values: Vec::new(), output: Some(file) });
            }
            continue;
        }
        if let Objective::Regression { stats, .. } = &restored.objective {
            let mut values =
                logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(TrainError::candle("predict"))?;
            stats.denormalize(&mut values); // back to the targets' units
            for (path, row) in chunk.iter().zip(values.chunks_exact(stats.len().max(1))) {
                out.push(Prediction { path: path.clone(), top: Vec::new(), values: row.to_vec(), output: None });
            }
            continue;
        }
        let probs = ops::softmax(&logits, D::Minus1)?; // [N, classes]
        let rows = probs.to_vec2::<f32>().map_err(TrainError::candle("predict"))?;
        for (path, row) in chunk.iter().zip(rows) {
            let mut order: Vec<usize> = (0..row.len()).collect();
            // Highest probability first; ties by label, as tf.math.top_k.
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let top = order
                .into_iter()
                .take(top_k.max(1))
                .map(|i| (restored.classes.get(i).cloned().unwrap_or_else(|| i.to_string()), i, row[i]))
                .collect();
            out.push(Prediction { path: path.clone(), top, values: Vec::new(), output: None });
        }
    }
    Ok(out)
}
