//! Decoding real files: every file in testdata/data/bad-images behaves as its
//! README says, and the DCT-scaled JPEG path stays close to full decoding.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferroflow_data::{DecodeError, DecodeOptions, ImageFormat, decode_image, image_info, resize_bilinear_u8};

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
    let e = decode_image(&bad("truncated.jpg"), &rgb()).unwrap_err();
    assert!(matches!(e, DecodeError::Truncated { .. } | DecodeError::Corrupt { .. }), "{e}");
    // Damaged entropy-coded data: an error, or a decode (never a crash or hang).
    if let Err(e) = decode_image(&bad("corrupt-middle.jpg"), &rgb()) {
        assert!(matches!(e, DecodeError::Corrupt { .. } | DecodeError::Truncated { .. }), "{e}");
    }
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

fn mean(v: &[u8]) -> f64 {
    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
}

#[test]
fn dct_scaled_jpeg_is_close_after_resizing() {
    // The accuracy cost of the fast path, on real photos resized to 64x64.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/photos-mini/chelsea");
    let mut worst: f64 = 0.0;
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
        let a = resize_bilinear_u8(&full, 64, 64);
        let b = resize_bilinear_u8(&fast, 64, 64);
        let mad = a.data.iter().zip(&b.data).map(|(x, y)| f64::from((x - y).abs())).sum::<f64>() / a.data.len() as f64;
        worst = worst.max(mad);
        n += 1;
    }
    assert!(n > 0);
    println!(
        "DCT-scaled decode vs full decode, after bilinear resize to 64x64: worst mean abs diff {worst:.2} over {n} photos"
    );
    assert!(worst < 6.0, "{worst}");
}
