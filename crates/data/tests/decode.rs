//! Decoding real files: every file in testdata/data/bad-images behaves as its
//! README says, and the DCT-scaled JPEG path stays close to full decoding.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferroflow_data::{
    DecodeError, DecodeOptions, ImageFormat, ResizeOptions, decode_image, image_info, resize_bilinear_u8, resize_u8,
};

fn bad(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/bad-images").join(name)).unwrap()
}

fn rgb() -> DecodeOptions {
    DecodeOptions { channels: Some(3), ..Default::default() }
}

#[test]
fn errors_for_broken_files() {
    assert_eq!(decode_image(&bad("empty.jpg"), &rgb()), Err(DecodeError::Empty));
    let e = decode_image(&bad("not-an-image.jpg"), &rgb()).unwrap_err();
    assert!(e.to_string().starts_with("not a recognised image format"), "{e}");
    // libjpeg's warnings about missing or damaged data are errors, in its words.
    let e = decode_image(&bad("truncated.jpg"), &rgb()).unwrap_err();
    assert!(matches!(&e, DecodeError::Truncated { reason, .. } if reason.contains("Premature end")), "{e:?}");
    let e = decode_image(&bad("corrupt-middle.jpg"), &rgb()).unwrap_err();
    assert!(matches!(&e, DecodeError::Corrupt { reason, .. } if reason.contains("Corrupt JPEG data")), "{e:?}");
    // The same through the fast path, and for grey output.
    let fast = DecodeOptions { channels: Some(1), jpeg_min_size: Some((8, 8)), ..Default::default() };
    assert!(matches!(decode_image(&bad("truncated.jpg"), &fast), Err(DecodeError::Truncated { .. })));
    assert!(matches!(decode_image(&bad("corrupt-middle.jpg"), &fast), Err(DecodeError::Corrupt { .. })));
    // The header alone is intact.
    let info = image_info(&bad("truncated.jpg")).unwrap();
    assert_eq!((info.width, info.height, info.grey), (524, 410, false));
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/photos-mini").join(name)).unwrap()
}

#[test]
fn every_cut_of_a_jpeg_is_an_error_and_damage_never_panics() {
    let bytes = photo("chelsea/00001.jpg");
    // Cut anywhere (even just before the end-of-image marker): an error.
    let step = bytes.len() / 97;
    for len in (3..bytes.len()).step_by(step).chain([bytes.len() - 2, bytes.len() - 1]) {
        match decode_image(&bytes[..len], &rgb()) {
            Err(DecodeError::Truncated { .. } | DecodeError::Corrupt { .. }) => {}
            other => panic!("cut at {len} of {}: {:?}", bytes.len(), other.map(|i| i.shape())),
        }
    }
    // Damage anywhere, decoded on two threads at once: an error or an image,
    // never a panic or an abort.
    std::thread::scope(|scope| {
        for offset in [0, 1] {
            let bytes = &bytes;
            scope.spawn(move || {
                for i in (offset..bytes.len()).step_by(2 * step + 1) {
                    let mut damaged = bytes.clone();
                    damaged[i] ^= 0x5a;
                    for options in [rgb(), DecodeOptions { jpeg_min_size: Some((100, 100)), ..rgb() }] {
                        if let Ok(img) = decode_image(&damaged, &options) {
                            assert_eq!(img.data.len(), img.height * img.width * 3, "byte {i}");
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn decompression_bomb_is_rejected_before_allocating() {
    let bytes = bad("huge-dimensions.png");
    let e = decode_image(&bytes, &rgb()).unwrap_err();
    assert_eq!(e, DecodeError::TooLarge { width: 100_000, height: 100_000, limit: ferroflow_data::DEFAULT_MAX_PIXELS });
    assert!(e.to_string().contains("100000x100000"), "{e}");
    let info = image_info(&bytes).unwrap();
    assert_eq!((info.width, info.height, info.format), (100_000, 100_000, ImageFormat::Png));
}

#[test]
fn unusual_colour_types_decode() {
    for (name, format) in [
        ("cmyk.jpg", ImageFormat::Jpeg),
        ("grayscale.jpg", ImageFormat::Jpeg),
        ("rgba.png", ImageFormat::Png),
        ("palette.png", ImageFormat::Png),
        ("gray16.png", ImageFormat::Png),
        ("one-pixel.png", ImageFormat::Png),
        ("photo.bmp", ImageFormat::Bmp),
        ("photo.gif", ImageFormat::Gif),
    ] {
        let bytes = bad(name);
        let info = image_info(&bytes).unwrap();
        let (w, h, f) = (info.width, info.height, info.format);
        assert_eq!(f, format, "{name}");
        let img = decode_image(&bytes, &rgb()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.width, img.height, img.channels), (w as usize, h as usize, 3), "{name}");
        // Real content, not a blank buffer.
        let mean = img.data.iter().map(|&v| f64::from(v)).sum::<f64>() / img.data.len() as f64;
        assert!(mean > 5.0 && mean < 250.0 || name == "one-pixel.png", "{name}: mean {mean}");
    }
}

#[test]
fn grey_sources_stay_grey_by_default_and_expand_to_rgb_on_request() {
    let bytes = bad("grayscale.jpg");
    let grey = decode_image(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!(grey.channels, 1);
    let rgb3 = decode_image(&bytes, &rgb()).unwrap();
    assert_eq!(rgb3.channels, 3);
    for (i, &g) in grey.data.iter().enumerate() {
        assert_eq!(rgb3.data[3 * i..3 * i + 3], [g, g, g]);
    }
    // 16-bit grey scales to 8 bits (its values are not all clipped).
    let g16 = decode_image(&bad("gray16.png"), &DecodeOptions::default()).unwrap();
    assert_eq!(g16.channels, 1);
    assert!(g16.data.iter().any(|&v| v > 10 && v < 245));
}

#[test]
fn cmyk_fast_path_agrees_with_full_decode() {
    let bytes = bad("cmyk.jpg");
    let full = decode_image(&bytes, &rgb()).unwrap();
    let scaled = decode_image(&bytes, &DecodeOptions { jpeg_min_size: Some((1, 1)), ..rgb() }).unwrap();
    let (fm, sm) = (mean(&full.data), mean(&scaled.data));
    assert!((fm - sm).abs() < 4.0, "CMYK full mean {fm} vs scaled {sm}");
}

#[test]
fn adobe_cmyk_jpeg_matches_its_rgb_original() {
    // cmyk.jpg is photos-mini/chelsea/00001.jpg saved as Adobe (inverted) CMYK.
    let cmyk = decode_image(&bad("cmyk.jpg"), &rgb()).unwrap();
    let original = decode_image(&photo("chelsea/00001.jpg"), &rgb()).unwrap();
    assert_eq!(cmyk.shape(), original.shape());
    let d = mean_abs_diff(&cmyk.data, &original.data);
    assert!(d < 2.0, "CMYK vs RGB original: mean abs diff {d}");
    // One channel from CMYK works too (TF fails there), close to the luma.
    let grey = decode_image(&bad("cmyk.jpg"), &DecodeOptions { channels: Some(1), ..rgb() }).unwrap();
    let luma = decode_image(&photo("chelsea/00001.jpg"), &DecodeOptions { channels: Some(1), ..rgb() }).unwrap();
    assert_eq!((grey.channels, grey.shape()), (1, luma.shape()));
    let d = mean_abs_diff(&grey.data, &luma.data);
    assert!(d < 2.0, "CMYK grey vs luma: mean abs diff {d}");
}

#[test]
fn one_channel_is_libjpeg_luma() {
    // libjpeg's JCS_GRAYSCALE output of a YCbCr JPEG is its Y plane: close to
    // the grey of the RGB decode, not equal (rounding, chroma upsampling).
    let bytes = photo("coffee/00130.jpg");
    let y = decode_image(&bytes, &DecodeOptions { channels: Some(1), ..Default::default() }).unwrap();
    let rgb3 = decode_image(&bytes, &DecodeOptions::default()).unwrap();
    assert_eq!((y.channels, rgb3.channels), (1, 3));
    let grey: Vec<u8> = rgb3
        .data
        .chunks_exact(3)
        .map(|p| (0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])).round() as u8)
        .collect();
    let d = mean_abs_diff(&y.data, &grey);
    assert!(d > 0.0 && d < 1.0, "luma vs grey of RGB: mean abs diff {d}");
}

#[test]
fn fast_path_picks_the_largest_reduction_that_fits() {
    // libjpeg's scaled size is ceil(size / 2^k).
    let at = |name: &str, min: (usize, usize)| {
        let img = decode_image(&photo(name), &DecodeOptions { jpeg_min_size: Some(min), ..rgb() }).unwrap();
        (img.height, img.width)
    };
    // 480x640.
    assert_eq!(at("chelsea/00057.jpg", (64, 64)), (120, 160));
    assert_eq!(at("chelsea/00057.jpg", (60, 80)), (60, 80));
    assert_eq!(at("chelsea/00057.jpg", (61, 80)), (120, 160));
    assert_eq!(at("chelsea/00057.jpg", (240, 320)), (240, 320));
    assert_eq!(at("chelsea/00057.jpg", (240, 321)), (480, 640));
    assert_eq!(at("chelsea/00057.jpg", (1000, 1000)), (480, 640));
    // 278x389: odd sizes round up.
    assert_eq!(at("chelsea/00105.jpg", (1, 1)), (35, 49));
    assert_eq!(at("chelsea/00105.jpg", (36, 1)), (70, 98));
    assert_eq!(at("chelsea/00105.jpg", (1, 98)), (70, 98));
    assert_eq!(at("chelsea/00105.jpg", (1, 99)), (139, 195));
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| f64::from(x.abs_diff(y))).sum::<f64>() / a.len() as f64
}

fn mean(v: &[u8]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
}

#[test]
fn dct_scaled_jpeg_is_close_after_resizing() {
    // The accuracy cost of the fast path, on real photos resized to 64x64
    // (recorded in the doc comment of `DecodeOptions::jpeg_min_size`). Plain
    // bilinear (the pipeline's resize) aliases when it shrinks the full-size
    // decode, so most of that difference is the reference's; antialiased
    // bilinear shows the DCT scaling's own cost.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/photos-mini/chelsea");
    let antialias = ResizeOptions { antialias: true, ..Default::default() };
    let (mut worst, mut worst_antialiased): (f64, f64) = (0.0, 0.0);
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if ImageFormat::sniff(&bytes) != Some(ImageFormat::Jpeg) {
            continue;
        }
        let full = decode_image(&bytes, &rgb()).unwrap();
        let fast = decode_image(&bytes, &DecodeOptions { jpeg_min_size: Some((64, 64)), ..rgb() }).unwrap();
        assert!(fast.height >= 64 && fast.width >= 64);
        assert!(
            fast.height < full.height,
            "scaled: {}x{} from {}x{}",
            fast.height,
            fast.width,
            full.height,
            full.width
        );
        let mad = |a: ferroflow_data::ImageF32, b: ferroflow_data::ImageF32| {
            a.data.iter().zip(&b.data).map(|(x, y)| f64::from((x - y).abs())).sum::<f64>() / a.data.len() as f64
        };
        worst = worst.max(mad(resize_bilinear_u8(&full, 64, 64), resize_bilinear_u8(&fast, 64, 64)));
        worst_antialiased =
            worst_antialiased.max(mad(resize_u8(&full, 64, 64, &antialias), resize_u8(&fast, 64, 64, &antialias)));
        n += 1;
    }
    assert!(n > 0);
    println!(
        "DCT-scaled decode vs full decode, after resizing to 64x64: worst mean abs diff {worst:.2} (bilinear), \
         {worst_antialiased:.2} (antialiased bilinear) over {n} photos"
    );
    assert!(worst < 7.5, "{worst}");
    assert!(worst_antialiased < 5.0, "{worst_antialiased}");
}

/// Single-thread decode speed on testdata/data/photos-mini, full decode and
/// the DCT-scaled fast path at 224x224. Run with
/// `cargo test -p ferroflow-data --release --test decode -- --ignored --nocapture decode_speed`.
#[test]
#[ignore]
fn decode_speed() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/photos-mini");
    let mut files = Vec::new();
    for class in std::fs::read_dir(root).unwrap() {
        for entry in std::fs::read_dir(class.unwrap().path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if ImageFormat::sniff(&bytes) == Some(ImageFormat::Jpeg) {
                files.push(bytes);
            }
        }
    }
    assert!(!files.is_empty());
    let megapixels = files
        .iter()
        .map(|b| {
            let i = image_info(b).unwrap();
            f64::from(i.width) * f64::from(i.height) / 1e6
        })
        .sum::<f64>()
        / files.len() as f64;
    for (name, options) in [
        ("full decode", rgb()),
        ("fast path 224x224", DecodeOptions { jpeg_min_size: Some((224, 224)), ..rgb() }),
        ("fast path 64x64", DecodeOptions { jpeg_min_size: Some((64, 64)), ..rgb() }),
    ] {
        // Warm up, then time whole passes over the set for at least 2 s.
        for b in &files {
            decode_image(b, &options).unwrap();
        }
        let start = std::time::Instant::now();
        let mut n = 0usize;
        while start.elapsed().as_secs_f64() < 2.0 {
            for b in &files {
                std::hint::black_box(decode_image(b, &options).unwrap());
            }
            n += files.len();
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!("{name}: {rate:.0} images/s ({} JPEGs, mean {megapixels:.2} MP)", files.len());
    }
}

/// A build without `nasm` links libjpeg-turbo without its SIMD kernels: the
/// same pixels, a 26% slower input pipeline on photos, and only a cargo
/// warning at build time.
/// CI installs nasm (`.ci/run`), so there the decoder must have them.
#[test]
#[cfg(target_arch = "x86_64")]
fn jpeg_decoder_has_simd_when_nasm_is_installed() {
    if std::process::Command::new("nasm").arg("-v").output().is_err() {
        eprintln!("skipped: no nasm on PATH, so mozjpeg-sys builds libjpeg-turbo as plain C");
        return;
    }
    assert!(
        ferroflow_data::jpeg_simd(),
        "nasm is installed but the JPEG decoder has no SIMD: mozjpeg-sys was built before nasm was \
         (`cargo clean -p mozjpeg-sys` and rebuild)"
    );
}
