//! Golden conformance for ferroflow-data: resizing, `tf.image` ops and
//! decoding against reference outputs computed by TensorFlow.
//!
//! Reads every case under `testdata/golden/cases/` (see
//! `testdata/golden/README.md` for the format and tolerances) and under each
//! directory in `FERROFLOW_GOLDEN_DIR` (`:`-separated, scanned recursively).
//! Ops of other crates are only counted here; a case with an op nobody knows
//! is a failure, never a silent skip. Every case is checked and every failure
//! listed before the test fails.

use ferroflow_data::{
    DecodeOptions, Image, ImageF32, ImageU8, ResizeMethod, ResizeOptions, adjust_brightness, adjust_contrast,
    adjust_hue, adjust_saturation, central_crop, decode_image, flip_left_right, per_image_standardization, resize,
    resize_bilinear_legacy, resize_with_crop_or_pad, rgb_to_grayscale,
};
use ferroflow_golden::{Case, Harness, TensorData, Values, compare_close, unravel};
use serde_json::Value;

/// README tolerances.
const ATOL_RESIZE: f32 = 1e-3;
const ATOL_RESIZE_SMOOTH: f32 = 5e-3;
const ATOL_OPS_255: f32 = 1e-3;
const ATOL_OPS_UNIT: f32 = 1e-5;
const JPEG_MAX_MEAN_ABS: f64 = 1.0;
const JPEG_MAX_ABS: u8 = 16;

/// The case's params and tensors the way this harness reads them.
trait DataCase {
    fn size_param(&self) -> Result<(usize, usize), String>;
    fn image_u8(&self) -> Result<ImageU8, String>;
    fn image_f32(&self) -> Result<ImageF32, String>;
}

impl DataCase for Case {
    fn size_param(&self) -> Result<(usize, usize), String> {
        match self.sizes_param("size").as_deref() {
            Some(&[h, w]) => Ok((h, w)),
            _ => Err("params has no `size` [height, width]".into()),
        }
    }

    /// The `image` tensor as an HWC uint8 image.
    fn image_u8(&self) -> Result<ImageU8, String> {
        let t = self.tensor("image")?;
        let [h, w, c] = hwc(&t.shape)?;
        match &t.values {
            Values::U8(v) => Ok(Image::new(h, w, c, v.clone())),
            _ => Err(format!("tensor `image` is {}, expected uint8", t.dtype())),
        }
    }

    /// The `image` tensor as float32 (uint8 values cast, as `tf.cast`).
    fn image_f32(&self) -> Result<ImageF32, String> {
        let t = self.tensor("image")?;
        let [h, w, c] = hwc(&t.shape)?;
        match &t.values {
            Values::U8(v) => Ok(Image::new(h, w, c, v.iter().map(|&b| f32::from(b)).collect())),
            Values::F32(v) => Ok(Image::new(h, w, c, v.clone())),
            _ => Err(format!("tensor `image` has unsupported dtype {}", t.dtype())),
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

/// Compares a float result with the case's `y` under `|got - want| <= atol +
/// rtol * |want|`, reporting the worst element on failure.
fn compare_f32(got: &ImageF32, want: &TensorData, atol: f32, rtol: f32) -> Result<f64, String> {
    let got_shape = got.shape();
    if want.shape != got_shape {
        return Err(format!("shape mismatch: got {got_shape:?}, want {:?}", want.shape));
    }
    let Values::F32(want_data) = &want.values else {
        return Err(format!("tensor `y` is {}, expected float32", want.dtype()));
    };
    compare_close(&got.data, want_data, &want.shape, atol, rtol).into_result()
}

/// Exact comparison (crops, pads, lossless decodes).
fn compare_exact<T: Copy + PartialEq + std::fmt::Debug>(
    got: &Image<T>,
    want: &TensorData,
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
        return match (&case.tensor("image")?.values, &want.values) {
            (Values::U8(_), Values::U8(w)) => compare_exact(&geometric(name, case, &case.image_u8()?)?, want, w),
            (Values::F32(_), Values::F32(w)) => compare_exact(&geometric(name, case, &case.image_f32()?)?, want, w),
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
        let out_of_range = match &want.values {
            Values::F32(w) => w.iter().any(|&v| !(-1e-3..=1.0 + 1e-3).contains(&v)),
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
    let encoded = match &case.tensor("encoded")?.values {
        Values::U8(v) => v.clone(),
        _ => return Err("tensor `encoded` is not uint8".into()),
    };
    let want = case.tensor("y")?;
    let Values::U8(want_data) = &want.values else {
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

#[test]
fn golden_data_ops() {
    ferroflow_golden::run(Harness::Data, "no resize / image_ops / decode cases found", group_of, |case| {
        match case.op.as_str() {
            "resize" => check_resize(case),
            "image_ops" => check_image_op(case),
            "decode" => check_decode(case),
            op => Err(format!("the data harness has no check for op `{op}`")),
        }
    });
}
