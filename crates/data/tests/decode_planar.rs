//! The fast input path's YCbCr planes (`decode_image_planar`) and their resize
//! (`resize_ycc_into_chw`): how far they are from libjpeg's RGB decode plus
//! TF's bilinear resize (the exact path), which files take the planes path,
//! and that bad files fail the same way as through `decode_image`.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ferroflow_data::{
    Augment, DecodeError, DecodeOptions, Decoded, ImageU8, Label, Mode, Pipeline, PipelineConfig, Preprocess, Source,
    crop, decode_image, decode_image_planar, discover, resize_bilinear_u8_into_chw, resize_ycc_into_chw,
};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data").join(rel)
}

fn rgb() -> DecodeOptions {
    DecodeOptions { channels: Some(3), ..Default::default() }
}

/// Every JPEG of photos-mini (54 photos, 323x240 to 640x480, all 4:2:0).
fn photos() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let root = testdata("photos-mini");
    let mut classes: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    classes.sort();
    for class in classes.iter().filter(|c| c.is_dir()) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(class).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.into_iter().filter(|f| f.extension().is_some_and(|e| e == "jpg")) {
            let bytes = std::fs::read(&f).unwrap();
            out.push((f, bytes));
        }
    }
    out
}

fn planes(bytes: &[u8], path: &Path) -> ferroflow_data::YccImage {
    match decode_image_planar(bytes, &rgb()).unwrap() {
        Decoded::Ycc(p) => p,
        Decoded::Pixels(_) => panic!("{} did not decode to planes", path.display()),
    }
}

fn abs_diffs(a: &[f32], b: &[f32]) -> (f64, f64) {
    let mut sum = 0.0f64;
    let mut max = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let d = f64::from((x - y).abs());
        sum += d;
        max = max.max(d);
    }
    (sum / a.len() as f64, max)
}

fn bytes_diffs(a: &ImageU8, b: &ImageU8) -> (f64, f64) {
    let a: Vec<f32> = a.data.iter().map(|&v| f32::from(v)).collect();
    let b: Vec<f32> = b.data.iter().map(|&v| f32::from(v)).collect();
    abs_diffs(&a, &b)
}

#[test]
fn planes_convert_to_libjpegs_rgb() {
    let (mut worst_mean, mut worst_max) = (0.0f64, 0.0f64);
    let photos = photos();
    assert_eq!(photos.len(), 54);
    for (path, bytes) in &photos {
        let planes = planes(bytes, path);
        let want = decode_image(bytes, &rgb()).unwrap();
        assert_eq!((planes.height, planes.width), (want.height, want.width), "{}", path.display());
        let (mean, max) = bytes_diffs(&planes.to_rgb(), &want);
        worst_mean = worst_mean.max(mean);
        worst_max = worst_max.max(max);
    }
    // Measured: worst mean 0.28, worst max 1 (libjpeg rounds its fixed-point
    // upsampling and conversion; `to_rgb` converts in float).
    println!("planes -> RGB against libjpeg's RGB: worst mean |diff| {worst_mean:.4}, worst max {worst_max}");
    assert!(worst_mean < 0.35 && worst_max <= 1.0, "mean {worst_mean}, max {worst_max}");
}

#[test]
fn planar_resize_is_close_to_the_exact_path() {
    let mean = [123.68, 116.78, 103.94];
    let (mut worst_mean, mut worst_max) = (0.0f64, 0.0f64);
    for (path, bytes) in &photos() {
        let planes = planes(bytes, path);
        let rgb = decode_image(bytes, &rgb()).unwrap();
        for (h, w) in [(224, 224), (64, 64), (480, 480)] {
            let mut fast = vec![0.0; 3 * h * w];
            let mut exact = vec![0.0; 3 * h * w];
            resize_ycc_into_chw(&planes, h, w, true, mean, [1.0; 3], &mut fast);
            resize_bilinear_u8_into_chw(&rgb, h, w, true, mean, [1.0; 3], &mut exact);
            let (m, x) = abs_diffs(&fast, &exact);
            worst_mean = worst_mean.max(m);
            worst_max = worst_max.max(x);
        }
    }
    // Measured: worst mean 0.39 on the 0-255 scale. The largest single
    // differences (up to 26.5) are at the edges of saturated colours: libjpeg
    // clamps each source pixel's RGB to 0-255 before the resize interpolates,
    // the planes path interpolates YCbCr and clamps after converting.
    println!(
        "planar resize against RGB decode + TF bilinear: worst mean |diff| {worst_mean:.4}, worst max {worst_max:.2}"
    );
    assert!(worst_mean < 0.5 && worst_max < 32.0, "mean {worst_mean}, max {worst_max}");
}

#[test]
fn only_full_scale_colour_jpegs_decode_to_planes() {
    let is_planes =
        |bytes: &[u8], options: &DecodeOptions| matches!(decode_image_planar(bytes, options), Ok(Decoded::Ycc(_)));
    let photo = std::fs::read(testdata("photos-mini/chelsea/00001.jpg")).unwrap();
    assert!(is_planes(&photo, &rgb()));
    // Grey output, or the channel count left to the source: pixels.
    assert!(!is_planes(&photo, &DecodeOptions { channels: Some(1), ..Default::default() }));
    assert!(!is_planes(&photo, &DecodeOptions::default()));
    // A DCT-scaled decode is cheaper as RGB; a minimum it cannot shrink to is not.
    let info = ferroflow_data::image_info(&photo).unwrap();
    let (h, w) = (info.height as usize, info.width as usize);
    assert!(!is_planes(&photo, &DecodeOptions { jpeg_min_size: Some((h / 2, w / 2)), ..rgb() }));
    assert!(is_planes(&photo, &DecodeOptions { jpeg_min_size: Some((h, w)), ..rgb() }));
    // Grey and CMYK JPEGs, and other formats: pixels, equal to decode_image's.
    for name in ["grayscale.jpg", "cmyk.jpg", "rgba.png", "photo.gif", "photo.bmp"] {
        let bytes = std::fs::read(testdata("bad-images").join(name)).unwrap();
        match decode_image_planar(&bytes, &rgb()).unwrap() {
            Decoded::Pixels(image) => assert_eq!(image, decode_image(&bytes, &rgb()).unwrap(), "{name}"),
            Decoded::Ycc(_) => panic!("{name} decoded to planes"),
        }
    }
}

#[test]
fn bad_files_fail_as_through_decode_image() {
    for name in ["empty.jpg", "not-an-image.jpg", "truncated.jpg", "corrupt-middle.jpg", "huge-dimensions.png"] {
        let bytes = std::fs::read(testdata("bad-images").join(name)).unwrap();
        let want = decode_image(&bytes, &rgb()).unwrap_err();
        assert_eq!(decode_image_planar(&bytes, &rgb()).unwrap_err(), want, "{name}");
    }
    // Every cut of a photo is an error on the planes path too.
    let bytes = std::fs::read(testdata("photos-mini/chelsea/00001.jpg")).unwrap();
    for len in (3..bytes.len()).step_by(bytes.len() / 61).chain([bytes.len() - 1]) {
        match decode_image_planar(&bytes[..len], &rgb()) {
            Err(DecodeError::Truncated { .. } | DecodeError::Corrupt { .. }) => {}
            Err(e) => panic!("cut at {len}: {e}"),
            Ok(_) => panic!("cut at {len} of {} decoded", bytes.len()),
        }
    }
    // The pixel limit applies before decoding.
    let small = DecodeOptions { max_pixels: 1000, ..rgb() };
    assert!(matches!(decode_image_planar(&bytes, &small), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn fast_pipeline_makes_the_same_choices_close_to_the_exact_one() {
    let found = discover(&testdata("photos-mini")).unwrap();
    let entries: Vec<(PathBuf, Label)> =
        found.images.iter().map(|e| (e.path.clone(), Label::Class(e.label.unwrap() as i64))).collect();
    // 256x256: DCT scaling by 1/2 would need both sides at least 512 and
    // photos-mini's photos are at most 640x480, so every JPEG takes the planes path.
    let pre = Preprocess {
        image_size: [256, 256],
        channels: 3,
        train: Augment { flip_left_right: true, ..Default::default() },
        mean: Some([123.68, 116.78, 103.94]),
        ..Default::default()
    };
    assert!(pre.takes_planes(true) && pre.takes_planes(false));
    for mode in [Mode::Train, Mode::Eval] {
        let run = |fast_jpeg| {
            let config = PipelineConfig { batch_size: 20, shuffle_buffer: 60, fast_jpeg, ..Default::default() };
            let source = Source::Files { entries: std::sync::Arc::new(entries.clone()) };
            let p = Pipeline::new(source, mode, config, pre.clone(), Default::default()).unwrap();
            p.take(3).map(|b| b.unwrap()).collect::<Vec<_>>()
        };
        let (fast, exact) = (run(true), run(false));
        assert_eq!(fast.len(), 3);
        let len = 3 * 256 * 256;
        let mut differing = 0;
        for (f, e) in fast.iter().zip(&exact) {
            assert_eq!(f.labels, e.labels);
            for (i, (a, b)) in f.images.chunks(len).zip(e.images.chunks(len)).enumerate() {
                // A flip that differed would leave a mean difference in the tens.
                let (mean, _) = abs_diffs(a, b);
                assert!(mean < 0.5, "{mode:?} image {i}: mean |diff| {mean}");
                differing += usize::from(mean > 0.0);
            }
        }
        // The fast path was taken (its pixels are not the exact path's).
        assert!(differing >= 50, "{mode:?}: only {differing} of 60 images differ from the exact path");
    }
}

/// A photo re-encoded by libjpeg (MozJPEG) with chroma `cb_cr` pixels per
/// sample (e.g. `(2, 2)` for 4:2:0), optionally progressive.
fn reencode(rgb: &ImageU8, cb_cr: (u8, u8), progressive: bool) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
    c.set_size(rgb.width, rgb.height);
    c.set_quality(90.0);
    c.set_chroma_sampling_pixel_sizes(cb_cr, cb_cr);
    if progressive {
        c.set_progressive_mode();
    }
    let mut started = c.start_compress(Vec::new()).unwrap();
    started.write_scanlines(&rgb.data).unwrap();
    started.finish().unwrap()
}

#[test]
fn every_sampling_and_progressive_jpegs_take_the_planes_path() {
    let photo = decode_image(&std::fs::read(testdata("photos-mini/coffee/00010.jpg")).unwrap(), &rgb()).unwrap();
    // The whole photo, and small crops: partial blocks and a last row of
    // blocks that fills only part of a 4:2:0 MCU row (9, 23 and 40 rows).
    let sources = [
        photo.clone(),
        crop(&photo, 100, 100, 9, 17),
        crop(&photo, 50, 200, 40, 23),
        crop(&photo, 7, 7, 1, 1),
        crop(&photo, 0, 0, 2, 33),
    ];
    // 4:2:0, 4:2:2, 4:4:0, 4:4:4, 4:1:1 (chroma pixels per sample), and progressive 4:2:0.
    let layouts = [((2, 2), false), ((2, 1), false), ((1, 2), false), ((1, 1), false), ((4, 1), false), ((2, 2), true)];
    for source in &sources {
        for (cb_cr, progressive) in layouts {
            let jpeg = reencode(source, cb_cr, progressive);
            let what = format!("{}x{}, chroma {cb_cr:?}, progressive {progressive}", source.width, source.height);
            let planes = planes(&jpeg, Path::new(&what));
            assert_eq!(planes.planes[1].step, [usize::from(cb_cr.0), usize::from(cb_cr.1)], "{what}");
            // Only rows of the plane remain (libjpeg leaves the padding rows of
            // the last MCU row unwritten).
            assert!(planes.planes.iter().all(|p| p.data.len() == p.stride * p.height), "{what}");
            let want = decode_image(&jpeg, &rgb()).unwrap();
            let (mean, max) = bytes_diffs(&planes.to_rgb(), &want);
            match cb_cr {
                // No upsampling: the float conversion rounds as libjpeg's fixed point.
                (1, 1) => assert_eq!(max, 0.0, "{what}"),
                // libjpeg-turbo interpolates only 2x chroma ("fancy" h2v1, h1v2,
                // h2v2) and repeats samples for 4x; `to_rgb` interpolates both.
                (4, 1) => assert!(mean < 2.0, "{what}: mean {mean}"),
                _ => assert!(mean < 0.35 && max <= 1.0, "{what}: mean {mean}, max {max}"),
            }
            for (h, w) in [(224, 224), (5, 3)] {
                let mut fast = vec![0.0; 3 * h * w];
                let mut exact = vec![0.0; 3 * h * w];
                resize_ycc_into_chw(&planes, h, w, false, [0.0; 3], [1.0; 3], &mut fast);
                resize_bilinear_u8_into_chw(&want, h, w, false, [0.0; 3], [1.0; 3], &mut exact);
                let (mean, _) = abs_diffs(&fast, &exact);
                let bound = if cb_cr == (4, 1) { 2.0 } else { 0.6 };
                assert!(mean < bound, "{what} -> {h}x{w}: resized mean |diff| {mean}");
            }
        }
    }
}
