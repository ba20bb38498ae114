//! Golden conformance for ferroflow-data: resizing, `tf.image` ops and
//! decoding against reference outputs computed by TensorFlow.
//!
//! Reads every case under `testdata/golden/cases/` (see
//! `testdata/golden/README.md` for the format and tolerances) and under each
//! directory in `FERROFLOW_GOLDEN_DIR` (`:`-separated, scanned recursively).
//! Ops of other crates are only counted here; a case with an op nobody knows
//! is a failure, never a silent skip. Every case is checked and every failure
//! listed before the test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferroflow_data::{
    DecodeOptions, Image, ImageF32, ImageU8, ResizeMethod, ResizeOptions, adjust_brightness, adjust_contrast,
    adjust_hue, adjust_saturation, central_crop, decode_image, flip_left_right, per_image_standardization, resize,
    resize_bilinear_legacy, resize_with_crop_or_pad, rgb_to_grayscale,
};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Test output is captured unless a test fails, but the count of checked
/// cases should show on every run, so it is written to stderr directly.
macro_rules! report {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($t)*);
    }};
}

/// Ops whose cases another crate's golden harness checks.
const OTHER_CRATES_OPS: &[&str] = &[
    "conv2d",
    "conv2d_transpose",
    "max_pool",
    "avg_pool",
    "batch_norm_tf1",
    "batch_norm_keras",
    "flatten_dense",
    "sparse_softmax_cross_entropy",
    "softmax_cross_entropy_label_smoothing",
    "optimizer",
    "lr_schedule",
];

/// Ops this harness checks, in the order the summary lists them.
const DATA_OPS: &[&str] = &["resize", "image_ops", "decode"];

/// README tolerances.
const ATOL_RESIZE: f32 = 1e-3;
const ATOL_RESIZE_SMOOTH: f32 = 5e-3;
const ATOL_OPS_255: f32 = 1e-3;
const ATOL_OPS_UNIT: f32 = 1e-5;
const JPEG_MAX_MEAN_ABS: f64 = 1.0;
const JPEG_MAX_ABS: u8 = 16;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// A case file's tensors and metadata.
struct Case {
    op: String,
    params: Value,
    tensors: BTreeMap<String, Tensor>,
}

#[derive(Debug, Clone)]
enum Data {
    F32(Vec<f32>),
    U8(Vec<u8>),
    Other(String),
}

#[derive(Debug, Clone)]
struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    fn dtype(&self) -> &str {
        match &self.data {
            Data::F32(_) => "float32",
            Data::U8(_) => "uint8",
            Data::Other(name) => name,
        }
    }
}

fn load_case(path: &Path) -> Result<Case, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let op = meta.get("op").ok_or("metadata has no `op`")?.clone();
    let params = match meta.get("params") {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("metadata `params` is not JSON: {e}"))?,
        None => Value::Object(Default::default()),
    };
    if !meta.contains_key("tf_version") {
        return Err("metadata has no `tf_version`".into());
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => {
                Data::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
            }
            Dtype::U8 => Data::U8(raw.to_vec()),
            other => Data::Other(format!("{other:?}")),
        };
        tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
    }
    Ok(Case { op, params, tensors })
}

impl Case {
    fn tensor(&self, name: &str) -> Result<&Tensor, String> {
        self.tensors.get(name).ok_or_else(|| format!("case has no tensor `{name}`"))
    }

    fn str_param(&self, key: &str) -> Result<&str, String> {
        self.params.get(key).and_then(Value::as_str).ok_or_else(|| format!("params has no string `{key}`"))
    }

    fn f64_param(&self, key: &str) -> Result<f64, String> {
        self.params.get(key).and_then(Value::as_f64).ok_or_else(|| format!("params has no number `{key}`"))
    }

    fn bool_param(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.params.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| format!("params `{key}` is not a boolean")),
        }
    }

    fn size_param(&self) -> Result<(usize, usize), String> {
        let dims: Option<Vec<usize>> = self
            .params
            .get("size")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_u64().map(|n| n as usize)).collect());
        match dims.as_deref() {
            Some(&[h, w]) => Ok((h, w)),
            _ => Err("params has no `size` [height, width]".into()),
        }
    }

    /// The `image` tensor as an HWC uint8 image.
    fn image_u8(&self) -> Result<ImageU8, String> {
        let t = self.tensor("image")?;
        let [h, w, c] = hwc(&t.shape)?;
        match &t.data {
            Data::U8(v) => Ok(Image::new(h, w, c, v.clone())),
            _ => Err(format!("tensor `image` is {}, expected uint8", t.dtype())),
        }
    }

    /// The `image` tensor as float32 (uint8 values cast, as `tf.cast`).
    fn image_f32(&self) -> Result<ImageF32, String> {
        let t = self.tensor("image")?;
        let [h, w, c] = hwc(&t.shape)?;
        match &t.data {
            Data::U8(v) => Ok(Image::new(h, w, c, v.iter().map(|&b| f32::from(b)).collect())),
            Data::F32(v) => Ok(Image::new(h, w, c, v.clone())),
            Data::Other(d) => Err(format!("tensor `image` has unsupported dtype {d}")),
        }
    }
}

fn hwc(shape: &[usize]) -> Result<[usize; 3], String> {
    match *shape {
        [h, w, c] => Ok([h, w, c]),
        _ => Err(format!("expected an HWC tensor, got shape {shape:?}")),
    }
}

/// The group a case's statistics are reported under: the resize method (and
/// antialias / legacy flavour), the image op, or the decode format.
fn group_of(case: &Case) -> String {
    let param = |key: &str| case.params.get(key).and_then(Value::as_str).unwrap_or("?").to_string();
    let flag = |key: &str| case.params.get(key).and_then(Value::as_bool).unwrap_or(false);
    match case.op.as_str() {
        "resize" if param("api") == "tf.compat.v1.image.resize_bilinear" => format!(
            "resize tf1 bilinear{}{}",
            if flag("align_corners") { " align_corners" } else { "" },
            if flag("half_pixel_centers") { " half_pixel_centers" } else { " legacy" }
        ),
        "resize" => format!("resize {}{}", param("method"), if flag("antialias") { " antialias" } else { "" }),
        "image_ops" => {
            let api = param("api");
            let name = api.split_whitespace().next().unwrap_or_default();
            format!("image_ops {}", name.trim_start_matches("tf.image."))
        }
        "decode" => format!("decode {}", param("format")),
        op => op.to_string(),
    }
}

fn unravel(mut index: usize, shape: &[usize]) -> Vec<usize> {
    let mut coords = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            coords[k] = index % d;
            index /= d;
        }
    }
    coords
}

/// Compares a float result with the case's `y` under `|got - want| <= atol +
/// rtol * |want|`, reporting the worst element on failure.
fn compare_f32(got: &ImageF32, want: &Tensor, atol: f32, rtol: f32) -> Result<f64, String> {
    let got_shape = got.shape();
    if want.shape != got_shape {
        return Err(format!("shape mismatch: got {got_shape:?}, want {:?}", want.shape));
    }
    let Data::F32(want_data) = &want.data else {
        return Err(format!("tensor `y` is {}, expected float32", want.dtype()));
    };
    let mut max_abs = 0.0f64;
    let mut worst: Option<(usize, f64)> = None; // (index, excess over the tolerance)
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.data.iter().zip(want_data).enumerate() {
        let diff = (f64::from(g) - f64::from(w)).abs();
        let tol = f64::from(atol) + f64::from(rtol) * f64::from(w).abs();
        let ok = diff <= tol || (g.is_nan() && w.is_nan()) || (g == w);
        let excess = if ok {
            0.0
        } else if diff.is_nan() {
            f64::INFINITY
        } else {
            diff - tol
        };
        if !diff.is_nan() {
            max_abs = max_abs.max(diff);
        } else if !ok {
            max_abs = f64::INFINITY;
        }
        if !ok {
            bad += 1;
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(max_abs),
        Some((i, _)) => Err(format!(
            "{bad} of {} elements outside atol {atol} rtol {rtol}; worst at index {i} {:?}: got {}, want {} (|diff| {:.3e})",
            want_data.len(),
            unravel(i, &want.shape),
            got.data[i],
            want_data[i],
            (f64::from(got.data[i]) - f64::from(want_data[i])).abs()
        )),
    }
}

/// Exact comparison (crops, pads, lossless decodes).
fn compare_exact<T: Copy + PartialEq + std::fmt::Debug>(
    got: &Image<T>,
    want: &Tensor,
    want_data: &[T],
) -> Result<f64, String> {
    let got_shape = got.shape();
    if want.shape != got_shape {
        return Err(format!("shape mismatch: got {got_shape:?}, want {:?}", want.shape));
    }
    let bad: Vec<usize> =
        got.data.iter().zip(want_data).enumerate().filter(|(_, (g, w))| g != w).map(|(i, _)| i).collect();
    match bad.first() {
        None => Ok(0.0),
        Some(&i) => Err(format!(
            "{} of {} elements differ (exact match required); first at index {i} {:?}: got {:?}, want {:?}",
            bad.len(),
            want_data.len(),
            unravel(i, &want.shape),
            got.data[i],
            want_data[i]
        )),
    }
}

fn check_resize(case: &Case) -> Result<f64, String> {
    let image = case.image_f32()?;
    let (h, w) = case.size_param()?;
    let want = case.tensor("y")?;
    let api = case.str_param("api")?;
    let (got, atol) = match api {
        "tf.image.resize" => {
            let name = case.str_param("method")?;
            let method = ResizeMethod::from_tf_name(name).ok_or_else(|| format!("unknown resize method `{name}`"))?;
            let antialias = case.bool_param("antialias", false)?;
            // README: bilinear, nearest, area atol 1e-3; bicubic and antialias 5e-3
            // (the other kernels are smooth ScaleAndTranslate kernels like bicubic).
            let plain = matches!(method, ResizeMethod::Bilinear | ResizeMethod::Nearest | ResizeMethod::Area);
            let atol = if plain && !antialias { ATOL_RESIZE } else { ATOL_RESIZE_SMOOTH };
            (resize(&image, h, w, &ResizeOptions { method, antialias }), atol)
        }
        "tf.compat.v1.image.resize_bilinear" => {
            match case.params.get("method").and_then(Value::as_str) {
                None | Some("bilinear") => {}
                Some(m) => return Err(format!("resize_bilinear case with method `{m}`")),
            }
            let align_corners = case.bool_param("align_corners", false)?;
            let half_pixel_centers = case.bool_param("half_pixel_centers", false)?;
            let got = match (align_corners, half_pixel_centers) {
                (true, true) => return Err("TF rejects align_corners with half_pixel_centers".into()),
                (_, false) => resize_bilinear_legacy(&image, h, w, align_corners),
                // TF1 with half-pixel centres is TF2's bilinear.
                (false, true) => resize(&image, h, w, &ResizeOptions::default()),
            };
            (got, ATOL_RESIZE)
        }
        other => return Err(format!("unknown resize api `{other}`")),
    };
    compare_f32(&got, want, atol, 0.0)
}

/// The `image_ops` apis that move pixels without changing them (checked exactly).
const GEOMETRIC_OPS: &[&str] =
    &["tf.image.central_crop", "tf.image.resize_with_crop_or_pad", "tf.image.flip_left_right"];

fn geometric<T: Copy + Default>(name: &str, case: &Case, image: &Image<T>) -> Result<Image<T>, String> {
    Ok(match name {
        "tf.image.central_crop" => {
            let fraction = case.f64_param("central_fraction")?;
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(format!("central_fraction {fraction} outside (0, 1]"));
            }
            central_crop(image, fraction)
        }
        "tf.image.resize_with_crop_or_pad" => {
            let (h, w) = case.size_param()?;
            resize_with_crop_or_pad(image, h, w)
        }
        "tf.image.flip_left_right" => flip_left_right(image),
        _ => return Err(format!("`{name}` is not a geometric op")),
    })
}

fn check_image_op(case: &Case) -> Result<f64, String> {
    let api = case.str_param("api")?;
    // "tf.image.adjust_hue on [0,1] floats" -> "tf.image.adjust_hue".
    let name = api.split_whitespace().next().unwrap_or_default();
    let unit_input = api.contains("[0,1]") || api.contains("[0, 1]");
    let want = case.tensor("y")?;

    // The geometric ops: exact, in the input's dtype.
    if GEOMETRIC_OPS.contains(&name) {
        return match (&case.tensor("image")?.data, &want.data) {
            (Data::U8(_), Data::U8(w)) => compare_exact(&geometric(name, case, &case.image_u8()?)?, want, w),
            (Data::F32(_), Data::F32(w)) => compare_exact(&geometric(name, case, &case.image_f32()?)?, want, w),
            _ => Err(format!("{name}: `image` and `y` dtypes differ ({})", want.dtype())),
        };
    }

    let mut image = case.image_f32()?;
    if unit_input {
        // TF got `image / 255.0` computed in float32 (numpy float32 / Python float).
        image = image.map(|v| v / 255.0);
    }
    let got = match name {
        "tf.image.per_image_standardization" => per_image_standardization(&image),
        "tf.image.rgb_to_grayscale" => rgb_to_grayscale(&image),
        "tf.image.adjust_brightness" => adjust_brightness(&image, case.f64_param("delta")? as f32),
        "tf.image.adjust_contrast" => adjust_contrast(&image, case.f64_param("factor")? as f32),
        "tf.image.adjust_saturation" => adjust_saturation(&image, case.f64_param("factor")? as f32),
        "tf.image.adjust_hue" => adjust_hue(&image, case.f64_param("delta")? as f32),
        _ => return Err(format!("unknown image_ops api `{api}`")),
    };
    // [0,1] outputs (from [0,1] inputs) get the tight tolerance; cross-check
    // that the reference really is in that range, so a misread api cannot
    // silently loosen or tighten the check.
    let atol = if unit_input {
        let out_of_range = match &want.data {
            Data::F32(w) => w.iter().any(|&v| !(-1e-3..=1.0 + 1e-3).contains(&v)),
            _ => false,
        };
        if out_of_range {
            return Err(format!("api `{api}` says [0,1] input, but `y` leaves [0, 1]"));
        }
        ATOL_OPS_UNIT
    } else {
        ATOL_OPS_255
    };
    compare_f32(&got, want, atol, 0.0)
}

fn check_decode(case: &Case) -> Result<f64, String> {
    let encoded = match &case.tensor("encoded")?.data {
        Data::U8(v) => v.clone(),
        _ => return Err("tensor `encoded` is not uint8".into()),
    };
    let want = case.tensor("y")?;
    let Data::U8(want_data) = &want.data else {
        return Err(format!("tensor `y` is {}, expected uint8", want.dtype()));
    };
    let format = case.str_param("format")?;
    let got = decode_image(&encoded, &DecodeOptions { channels: Some(3), ..Default::default() })
        .map_err(|e| format!("decode_image failed: {e}"))?;
    match format {
        "png" | "gif" | "bmp" => compare_exact(&got, want, want_data),
        "jpeg" | "jpg" => {
            if want.shape != got.shape() {
                return Err(format!("shape mismatch: got {:?}, want {:?}", got.shape(), want.shape));
            }
            let mut sum = 0u64;
            let mut worst = (0usize, 0u8);
            for (i, (&g, &w)) in got.data.iter().zip(want_data).enumerate() {
                let d = g.abs_diff(w);
                sum += u64::from(d);
                if d > worst.1 {
                    worst = (i, d);
                }
            }
            let mean = sum as f64 / want_data.len().max(1) as f64;
            if mean > JPEG_MAX_MEAN_ABS || worst.1 > JPEG_MAX_ABS {
                let i = worst.0;
                return Err(format!(
                    "JPEG mean abs diff {mean:.4} (limit {JPEG_MAX_MEAN_ABS}), max {} (limit {JPEG_MAX_ABS}) at index {i} {:?}: got {}, want {}",
                    worst.1,
                    unravel(i, &want.shape),
                    got.data[i],
                    want_data[i]
                ));
            }
            Ok(f64::from(worst.1))
        }
        other => Err(format!("unknown decode format `{other}`")),
    }
}

/// Every `*.safetensors` file under `dir`, recursively.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot list: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: cannot list: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "safetensors") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every file `manifest.json` lists must exist, so a lost case file cannot
/// silently shrink the suite.
fn check_manifest(cases_dir: &Path, failures: &mut Vec<String>) {
    let path = cases_dir.join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let manifest: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("{}: not JSON: {e}", path.display()));
            return;
        }
    };
    for entry in manifest.get("cases").and_then(Value::as_array).into_iter().flatten() {
        match entry.get("file").and_then(Value::as_str) {
            Some(file) if !cases_dir.join(file).is_file() => {
                failures.push(format!("{}: listed in manifest.json but missing", cases_dir.join(file).display()));
            }
            Some(_) => {}
            None => failures.push(format!("{}: a case entry has no `file`", path.display())),
        }
    }
}

#[test]
fn golden_data_ops() {
    let root = repo_root();
    let mut dirs = vec![root.join("testdata").join("golden").join("cases")];
    if let Ok(extra) = std::env::var("FERROFLOW_GOLDEN_DIR") {
        dirs.extend(extra.split(':').filter(|s| !s.is_empty()).map(PathBuf::from));
    }

    let mut failures = Vec::new();
    let mut files = Vec::new();
    for dir in &dirs {
        if !dir.is_dir() {
            failures.push(format!("{}: golden directory does not exist", dir.display()));
            continue;
        }
        if let Err(e) = collect(dir, &mut files) {
            failures.push(e);
        }
    }
    files.sort();
    files.dedup();
    check_manifest(&dirs[0], &mut failures);

    let mut per_op: Vec<(&str, usize)> = DATA_OPS.iter().map(|&op| (op, 0)).collect();
    let mut other_crates = 0usize;
    // group -> (passed, failed, worst |got - want| among the passing cases)
    let mut groups: BTreeMap<String, (usize, usize, f64)> = BTreeMap::new();
    for file in &files {
        let shown = file.strip_prefix(&root).unwrap_or(file).display().to_string();
        let case = match load_case(file) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let result = match case.op.as_str() {
            "resize" => check_resize(&case),
            "image_ops" => check_image_op(&case),
            "decode" => check_decode(&case),
            op if OTHER_CRATES_OPS.contains(&op) => {
                other_crates += 1;
                continue;
            }
            op => {
                failures.push(format!("{shown}: unknown op `{op}` (no harness checks it)"));
                continue;
            }
        };
        if let Some((_, n)) = per_op.iter_mut().find(|(op, _)| *op == case.op) {
            *n += 1;
        }
        let group = groups.entry(group_of(&case)).or_default();
        match result {
            Ok(max_abs) => {
                group.0 += 1;
                group.2 = group.2.max(max_abs);
            }
            Err(e) => {
                group.1 += 1;
                failures.push(format!("{shown}: {e}"));
            }
        }
    }

    let checked: usize = per_op.iter().map(|(_, n)| n).sum();
    let breakdown = per_op.iter().map(|(op, n)| format!("{n} {op}")).collect::<Vec<_>>().join(", ");
    report!(
        "golden (data): checked {checked} cases ({breakdown}) from {} dir(s); {other_crates} cases belong to other crates",
        dirs.len()
    );
    for (group, (passed, failed, max_abs)) in &groups {
        let fail = if *failed > 0 { format!(", {failed} FAILED") } else { String::new() };
        report!("  {group}: {passed} passed{fail}; worst |got - want| of the passing: {max_abs:.3e}");
    }
    if checked == 0 {
        failures.push("no resize / image_ops / decode cases found".into());
    }
    assert!(
        failures.is_empty(),
        "{} golden failure(s):\n{}",
        failures.len(),
        failures.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    );
}
