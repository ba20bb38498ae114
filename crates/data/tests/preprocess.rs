//! Train/eval preprocessing on a real photo: shapes, normalisation, and
//! that each augmentation does what it says.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ferroflow_data::{
    Augment, Crop, DecodeOptions, ImageU8, Order, Preprocess, ResizeOptions, Rng, central_crop, decode_image,
    flip_left_right, resize_u8,
};

fn photo() -> ImageU8 {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/data/photos-mini/coffee");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let png = files.iter().find(|p| p.extension().is_some_and(|e| e == "png")).unwrap_or(&files[0]);
    decode_image(&std::fs::read(png).unwrap(), &DecodeOptions { channels: Some(3), ..Default::default() }).unwrap()
}

/// CHW planes back to an HWC vector.
fn hwc(chw: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0; c * h * w];
    for ch in 0..c {
        for i in 0..h * w {
            out[i * c + ch] = chw[ch * h * w + i];
        }
    }
    out
}

#[test]
fn eval_is_resize_then_normalise_in_chw() {
    let img = photo();
    let pre = Preprocess {
        image_size: [40, 50],
        mean: Some([100.0, 110.0, 120.0]),
        std: Some([50.0, 50.0, 50.0]),
        eval_central_fraction: Some(0.875),
        ..Default::default()
    };
    let out = pre.eval(&img);
    assert_eq!(out.len(), 3 * 40 * 50);
    let want = resize_u8(&central_crop(&img, 0.875), 40, 50, &ResizeOptions::default());
    let got = hwc(&out, 3, 40, 50);
    for (i, (g, w)) in got.iter().zip(&want.data).enumerate() {
        let mean = [100.0, 110.0, 120.0][i % 3];
        assert!((g - (w - mean) / 50.0).abs() < 1e-5, "element {i}");
    }
}

#[test]
fn train_without_augmentation_equals_eval() {
    let img = photo();
    let pre = Preprocess { image_size: [32, 32], ..Default::default() };
    assert_eq!(pre.train(&img, &mut Rng::new(1)), pre.eval(&img));
}

#[test]
fn flip_flips_about_half_the_time() {
    let img = photo();
    let pre = Preprocess {
        image_size: [16, 16],
        train: Augment { flip_left_right: true, ..Default::default() },
        ..Default::default()
    };
    let plain = pre.eval(&img);
    let flipped = {
        let f = flip_left_right(&img);
        pre.eval(&f)
    };
    let mut n_flipped = 0;
    for seed in 0..200 {
        let out = pre.train(&img, &mut Rng::new(seed));
        if out == flipped {
            n_flipped += 1;
        } else {
            assert_eq!(out, plain);
        }
    }
    assert!((70..130).contains(&n_flipped), "{n_flipped}");
}

#[test]
fn random_crop_with_padding_is_a_shifted_window() {
    let img = photo();
    let pre = Preprocess {
        image_size: [24, 24],
        train: Augment { crop: Crop::Random { padding: 4 }, ..Default::default() },
        ..Default::default()
    };
    let base = hwc(&pre.eval(&img), 3, 24, 24);
    let mut shifts = std::collections::BTreeSet::new();
    for seed in 0..50 {
        let out = hwc(&pre.train(&img, &mut Rng::new(seed)), 3, 24, 24);
        // Find the shift (dy, dx) in [-4, 4] that explains the crop.
        let found = (-4i32..=4).flat_map(|dy| (-4i32..=4).map(move |dx| (dy, dx))).find(|&(dy, dx)| {
            (0..24i32).all(|y| {
                (0..24i32).all(|x| {
                    let (sy, sx) = (y + dy, x + dx);
                    (0..3).all(|c| {
                        let v = out[((y * 24 + x) * 3 + c) as usize];
                        if (0..24).contains(&sy) && (0..24).contains(&sx) {
                            v == base[((sy * 24 + sx) * 3 + c) as usize]
                        } else {
                            v == 0.0
                        }
                    })
                })
            })
        });
        shifts.insert(found.expect("a padded crop is a shift of the resized image"));
    }
    assert!(shifts.len() > 10, "{shifts:?}");
}

#[test]
fn colour_jitter_stays_in_range_and_is_seeded() {
    let img = photo();
    for order in [Order::ResizeFirst, Order::AugmentFirst] {
        let pre = Preprocess {
            image_size: [32, 32],
            train: Augment {
                crop: Crop::RandomResized { scale: [0.2, 1.0], ratio: [0.75, 1.333] },
                brightness: 40.0,
                contrast: 0.5,
                saturation: 0.5,
                hue: 0.1,
                order,
                ..Default::default()
            },
            ..Default::default()
        };
        pre.validate().unwrap();
        let a = pre.train(&img, &mut Rng::new(9));
        assert_eq!(a, pre.train(&img, &mut Rng::new(9)));
        assert_ne!(a, pre.train(&img, &mut Rng::new(10)));
        assert!(a.iter().all(|v| (0.0..=255.0).contains(v)));
    }
}

#[test]
fn invalid_settings_name_the_key() {
    let bad = Preprocess { resize_method: "bilinearr".into(), ..Default::default() };
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.starts_with("preprocess.resize_method: unknown method \"bilinearr\""), "{e}");
    let bad = Preprocess { channels: 2, ..Default::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("channels"));
}

/// The fused resize + flip + normalise + CHW path gives exactly the values
/// of `tf.image.resize` (bilinear) followed by the normalisation, for
/// downscaling and upscaling, flipped or not, colour and grey.
#[test]
fn fused_resize_matches_resize_then_normalise_bit_for_bit() {
    use ferroflow_data::resize_bilinear_u8_into_chw;
    let colour = photo();
    let grey = ImageU8::new(
        colour.height,
        colour.width,
        1,
        colour.data.chunks_exact(3).map(|p| ((u16::from(p[0]) + u16::from(p[1])) / 2) as u8).collect(),
    );
    let (mean, k) = ([101.5, 113.25, 99.0], [0.02, 0.031, 0.017]);
    for img in [&colour, &grey] {
        let c = img.channels;
        for (h, w) in [(37, 53), (224, 224), (img.height + 9, img.width * 2 + 1)] {
            let want = resize_u8(img, h, w, &ResizeOptions::default());
            for flip in [false, true] {
                let mut out = vec![0.0; c * h * w];
                resize_bilinear_u8_into_chw(img, h, w, flip, mean, k, &mut out);
                for y in 0..h {
                    for x in 0..w {
                        let sx = if flip { w - 1 - x } else { x };
                        for ch in 0..c {
                            let expect = (want.data[(y * w + sx) * c + ch] - mean[ch]) * k[ch];
                            let got = out[ch * h * w + y * w + x];
                            assert_eq!(got.to_bits(), expect.to_bits(), "{c}ch {h}x{w} flip {flip} at {y},{x},{ch}");
                        }
                    }
                }
            }
        }
    }
}

/// The fused path's edge cases against `resize` + normalisation, bit for bit:
/// one-pixel-wide and one-pixel-high sources and outputs (every tap is an edge
/// tap), a 1x1 source, and sizes where consecutive output rows share input rows
/// (upscaling) or skip them (downscaling).
#[test]
fn fused_resize_edge_sizes_match_bit_for_bit() {
    use ferroflow_data::resize_bilinear_u8_into_chw;
    let (mean, k) = ([3.5, 120.25, 255.0], [0.5, 0.031, 1.0]);
    let mut state = 12345u32;
    let mut pixel = || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (state >> 24) as u8
    };
    for (sh, sw) in [(1, 1), (1, 7), (7, 1), (2, 2), (5, 3), (40, 33)] {
        let data: Vec<u8> = (0..sh * sw * 3).map(|_| pixel()).collect();
        let img = ImageU8::new(sh, sw, 3, data);
        for (h, w) in [(1, 1), (1, 5), (5, 1), (3, 3), (sh * 3 + 1, sw * 2 + 1), (sh.div_ceil(3), sw.div_ceil(2))] {
            let want = resize_u8(&img, h, w, &ResizeOptions::default());
            for flip in [false, true] {
                let mut out = vec![0.0; 3 * h * w];
                resize_bilinear_u8_into_chw(&img, h, w, flip, mean, k, &mut out);
                for y in 0..h {
                    for x in 0..w {
                        let sx = if flip { w - 1 - x } else { x };
                        for ch in 0..3 {
                            let expect = (want.data[(y * w + sx) * 3 + ch] - mean[ch]) * k[ch];
                            let got = out[ch * h * w + y * w + x];
                            assert_eq!(
                                got.to_bits(),
                                expect.to_bits(),
                                "{sh}x{sw} -> {h}x{w} flip {flip} at {y},{x},{ch}"
                            );
                        }
                    }
                }
            }
        }
    }
}
