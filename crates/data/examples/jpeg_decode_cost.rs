//! Per-image CPU cost of the fast input path's stages on one thread: JPEG
//! decode as RGB (`decode_image`) against YCbCr planes
//! (`decode_image_planar`), and each one's resize to 224x224 CHW. The photos
//! are testdata/data/photos-mini's JPEGs, each decoded `--rounds` times.
//!
//! Usage: cargo run --release -p ferroflow-data --example jpeg_decode_cost [-- ROUNDS]

use std::error::Error;
use std::time::Instant;

use ferroflow_data::{
    DecodeOptions, Decoded, decode_image, decode_image_planar, recycle_decoded, recycle_planar,
    resize_bilinear_u8_into_chw, resize_ycc_into_chw,
};

const MEAN: [f32; 3] = [123.68, 116.78, 103.94];

fn main() -> Result<(), Box<dyn Error>> {
    let rounds: usize = std::env::args().nth(1).map(|r| r.parse()).transpose()?.unwrap_or(10);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/data/photos-mini");
    let mut photos = Vec::new();
    for class in std::fs::read_dir(root)? {
        let class = class?.path();
        if class.is_dir() {
            for file in std::fs::read_dir(&class)? {
                let file = file?.path();
                if file.extension().is_some_and(|e| e == "jpg") {
                    photos.push(std::fs::read(&file)?);
                }
            }
        }
    }
    // Full-size decodes only (`jpeg_min_size: None`): the planes path's case.
    let options = DecodeOptions { channels: Some(3), ..Default::default() };
    let mut out = vec![0.0f32; 3 * 224 * 224];
    let per_image = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / (rounds * photos.len()) as f64;
    for pass in 0..2 {
        let (mut rgb_decode, mut rgb_resize, mut ycc_decode, mut ycc_resize) = (0.0, 0.0, 0.0, 0.0);
        for jpeg in &photos {
            let t = Instant::now();
            for _ in 0..rounds {
                recycle_decoded(decode_image(jpeg, &options)?);
            }
            rgb_decode += per_image(t);
            let image = decode_image(jpeg, &options)?;
            let t = Instant::now();
            for _ in 0..rounds {
                resize_bilinear_u8_into_chw(&image, 224, 224, false, MEAN, [1.0; 3], &mut out);
            }
            rgb_resize += per_image(t);
            let t = Instant::now();
            for _ in 0..rounds {
                recycle_planar(decode_image_planar(jpeg, &options)?);
            }
            ycc_decode += per_image(t);
            let Decoded::Ycc(planes) = decode_image_planar(jpeg, &options)? else {
                return Err("a photo did not decode to planes".into());
            };
            let t = Instant::now();
            for _ in 0..rounds {
                resize_ycc_into_chw(&planes, 224, 224, false, MEAN, [1.0; 3], &mut out);
            }
            ycc_resize += per_image(t);
        }
        println!(
            "pass {pass}, {} photos x {rounds}, µs per image: RGB decode {rgb_decode:.0} + resize {rgb_resize:.0} = {:.0}; \
             planes decode {ycc_decode:.0} + resize {ycc_resize:.0} = {:.0}",
            photos.len(),
            rgb_decode + rgb_resize,
            ycc_decode + ycc_resize
        );
    }
    Ok(())
}
