//! Image decoding: arbitrary bytes through the header reader and both
//! decoders (pixels and JPEG planes), grey, RGB and as stored, at full size
//! and DCT-downscaled. Each may only fail with an error; what decodes has
//! the size and channels its header and the options say.

use ferroflow_data::{DecodeOptions, decode_image, decode_image_planar, image_info};

/// Pixels per image the target allows (real photos are far smaller; a
/// larger declared size must be refused before any decoding).
const MAX_PIXELS: u64 = 1 << 22;

/// The body of the `image_decode` target.
pub fn image_decode(data: &[u8]) {
    let info = image_info(data);
    for channels in [None, Some(1), Some(3)] {
        for jpeg_min_size in [None, Some((8, 8))] {
            let options = DecodeOptions { channels, max_pixels: MAX_PIXELS, jpeg_min_size };
            let pixels = decode_image(data, &options);
            let planes = decode_image_planar(data, &options).map(|d| d.into_pixels());
            match (&pixels, &planes) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.shape(), b.shape(), "the two decoders disagree on the size");
                    assert_eq!(a.data.len(), a.shape().iter().product::<usize>());
                    if let Some(c) = channels {
                        assert_eq!(a.channels, c);
                    }
                    let info = info.as_ref().expect("a decodable image has a readable header");
                    if jpeg_min_size.is_none() {
                        assert_eq!((a.width, a.height), (info.width as usize, info.height as usize));
                    }
                }
                (Err(a), Err(_)) => {
                    let _ = a.to_string();
                }
                _ => panic!("one decoder failed and the other did not: {:?} / {:?}", pixels.err(), planes.err()),
            }
        }
    }
}
