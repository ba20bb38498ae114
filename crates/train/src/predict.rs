//! `ferroflow predict`: class probabilities (or, for a regression model, the
//! predicted values) for image files, with the eval preprocessing recorded
//! in the checkpoint.

use std::path::{Path, PathBuf};

use candle_core::{D, Tensor};
use ferroflow_data::{DecodeOptions, IMAGE_EXTENSIONS, decode_image};
use ferroflow_nn::{no_grad, ops};
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::objective::Objective;
use crate::restored::RestoredModel;

/// One image's top classes, or its predicted regression targets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The image file (for a `.npy` batch, `FILE[i]`).
    pub path: PathBuf,
    /// `(class name, label, probability)`, most probable first (empty for
    /// regression). The label is the data's: the model's output index minus
    /// `model.labels_offset`, so outputs before the offset (TF-slim's
    /// `background`) have negative labels.
    pub top: Vec<(String, i64, f32)>,
    /// A classifier's raw logits, when asked for ([`PredictOptions::logits`]).
    pub logits: Vec<f32>,
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

/// How [`predict`] runs and what it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictOptions {
    /// Classes reported per image. Default 5.
    pub top_k: usize,
    /// Images per forward pass. Default 64.
    pub batch_size: usize,
    /// An image-to-image model writes its output images here.
    pub out_dir: Option<PathBuf>,
    /// Also return each image's raw logits. Default false.
    pub logits: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions { top_k: 5, batch_size: 64, out_dir: None, logits: false }
    }
}

/// Predicts the top classes of each image, in batches. An image that cannot
/// be decoded is an error naming it. A `.npy` file is a batch of model inputs
/// that skips decoding and preprocessing (float32 `[N, H, W, C]` or
/// `[H, W, C]`, already preprocessed, e.g. by TF, to debug a preprocessing
/// difference); each of its examples is reported as `FILE[i]`.
pub fn predict(restored: &RestoredModel, images: &[PathBuf], options: &PredictOptions) -> Result<Vec<Prediction>> {
    let (top_k, batch_size, out_dir, with_logits) =
        (options.top_k, options.batch_size, options.out_dir.as_deref(), options.logits);
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
    let is_npy = |p: &PathBuf| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    for path in images.iter().filter(|p| is_npy(p)) {
        if restored.objective.is_reconstruction() || restored.objective.is_regression() {
            return Err(TrainError::config(".npy input", "is for classifiers; give image files"));
        }
        let (n, values) = read_npy_batch(path, [h, w, c])?;
        let x = Tensor::from_vec(values, (n, h, w, c), device)
            .and_then(|t| t.permute((0, 3, 1, 2))?.contiguous()) // NHWC → NCHW
            .map_err(TrainError::candle("predict input"))?;
        for start in (0..n).step_by(batch_size.max(1)) {
            let len = batch_size.max(1).min(n - start);
            let part = x.narrow(0, start, len).map_err(TrainError::candle("predict"))?;
            let logits = no_grad(|| restored.model.forward_t(&part, false))?;
            let names: Vec<PathBuf> =
                (start..start + len).map(|i| PathBuf::from(format!("{}[{i}]", path.display()))).collect();
            classify(restored, &names, &logits, top_k, with_logits, &mut out)?;
        }
    }
    let images: Vec<PathBuf> = images.iter().filter(|p| !is_npy(p)).cloned().collect();
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
        let logits = no_grad(|| restored.model.forward_t(&x, false))?; // [N, outputs] or [N, C, H, W]
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
                out.push(Prediction {
                    path: path.clone(),
                    top: Vec::new(),
                    logits: Vec::new(),
                    values: Vec::new(),
                    output: Some(file),
                });
            }
            continue;
        }
        if let Objective::Regression { stats, .. } = &restored.objective {
            let mut values =
                logits.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(TrainError::candle("predict"))?;
            stats.denormalize(&mut values); // back to the targets' units
            for (path, row) in chunk.iter().zip(values.chunks_exact(stats.len().max(1))) {
                out.push(Prediction {
                    path: path.clone(),
                    top: Vec::new(),
                    logits: Vec::new(),
                    values: row.to_vec(),
                    output: None,
                });
            }
            continue;
        }
        classify(restored, chunk, &logits, top_k, with_logits, &mut out)?;
    }
    Ok(out)
}

/// The top classes (and, with `with_logits`, the logits) of a batch's `logits` `[N, outputs]`.
fn classify(
    restored: &RestoredModel,
    paths: &[PathBuf],
    logits: &Tensor,
    top_k: usize,
    with_logits: bool,
    out: &mut Vec<Prediction>,
) -> Result<()> {
    let probs = ops::softmax(logits, D::Minus1)?; // [N, classes]
    let rows = probs.to_vec2::<f32>().map_err(TrainError::candle("predict"))?;
    let raw = if with_logits {
        logits.to_vec2::<f32>().map_err(TrainError::candle("predict"))?
    } else {
        vec![Vec::new(); rows.len()]
    };
    for ((path, row), raw) in paths.iter().zip(rows).zip(raw) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        // Highest probability first; ties by label, as tf.math.top_k.
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let top = order
            .into_iter()
            .take(top_k.max(1))
            .map(|i| {
                let name = restored.output_names.get(i).cloned().unwrap_or_else(|| i.to_string());
                (name, i as i64 - restored.labels_offset as i64, row[i])
            })
            .collect();
        out.push(Prediction { path: path.clone(), top, logits: raw, values: Vec::new(), output: None });
    }
    Ok(())
}

/// Reads a `.npy` file of float32 model inputs, `[N, H, W, C]` or `[H, W, C]`
/// with `[H, W, C]` = `hwc`, C order. Returns `(N, values)`.
pub fn read_npy_batch(path: &Path, hwc: [usize; 3]) -> Result<(usize, Vec<f32>)> {
    let name = path.display().to_string();
    let bad = |reason: String| TrainError::config(".npy input", format!("{name}: {reason}"));
    let bytes = std::fs::read(path).map_err(|cause| TrainError::Io { path: name.clone(), cause })?;
    let npy = crate::npy::Npy::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    if npy.descr != "<f4" || npy.fortran_order {
        return Err(bad(format!(
            "holds {} ({} order); expected little-endian float32 (<f4) in C order, e.g. \
             np.save(path, x.astype(np.float32))",
            npy.descr,
            if npy.fortran_order { "Fortran" } else { "C" }
        )));
    }
    let n = match npy.shape[..] {
        [n, h, w, c] if [h, w, c] == hwc => n,
        [h, w, c] if [h, w, c] == hwc => 1,
        _ => {
            return Err(bad(format!(
                "has shape {:?}; the model takes [N, {}, {}, {}] (NHWC, preprocessed)",
                npy.shape, hwc[0], hwc[1], hwc[2]
            )));
        }
    };
    if n == 0 {
        return Err(bad("holds no examples".into()));
    }
    let values = npy.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((n, values))
}
