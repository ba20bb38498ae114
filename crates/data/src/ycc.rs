//! A JPEG's colour planes as libjpeg decodes them before chroma upsampling
//! and colour conversion (`raw_data_out`): the fast input path resizes these
//! directly and converts to RGB only at the output size.

use crate::image::ImageU8;

/// One component plane of a [`YccImage`].
#[derive(Debug, Clone, PartialEq)]
pub struct YccPlane {
    /// `height` rows of samples, `stride` bytes apart (libjpeg pads each row
    /// to whole 8x8 blocks; the bytes after `width` in a row are padding).
    pub data: Vec<u8>,
    /// Bytes from one row to the next (at least `width`).
    pub stride: usize,
    /// Samples per row: `ceil(image width / step[0])` (libjpeg's
    /// `downsampled_width`).
    pub width: usize,
    /// Rows: `ceil(image height / step[1])`.
    pub height: usize,
    /// Image pixels per sample along x and y: 1 for luma, 2 for 4:2:0 chroma
    /// (`max_h_samp_factor / h_samp_factor`, likewise vertically).
    pub step: [usize; 2],
}

impl YccPlane {
    /// The sample in row `y`, column `x`.
    pub fn at(&self, y: usize, x: usize) -> u8 {
        self.data[y * self.stride + x]
    }
}

/// A decoded JPEG as its Y, Cb and Cr planes (JFIF's YCbCr, chroma possibly
/// subsampled). The samples are libjpeg's: the same integer IDCT output the
/// RGB decode upsamples and converts.
#[derive(Debug, Clone, PartialEq)]
pub struct YccImage {
    /// Pixels per row of the image (the Y plane's width).
    pub width: usize,
    /// Rows of the image.
    pub height: usize,
    /// Y, Cb, Cr.
    pub planes: [YccPlane; 3],
}

/// JFIF's YCbCr → RGB (ITU-R BT.601 with full-range values), as libjpeg's
/// `jdcolor.c` computes it (there in fixed point, here in float): `[r, g, b]`
/// from luma and the centred chroma `cb - 128`, `cr - 128`, not clamped.
#[inline(always)]
pub(crate) fn ycc_to_rgb(y: f32, cb: f32, cr: f32) -> [f32; 3] {
    // jdcolor.c: R = Y + 1.40200 * Cr; G = Y - 0.34414 * Cb - 0.71414 * Cr;
    // B = Y + 1.77200 * Cb.
    [y + 1.402 * cr, y - 0.34414 * cb - 0.71414 * cr, y + 1.772 * cb]
}

/// The sampling position in a plane of the image pixel at `i` along one axis:
/// sample `j` of a plane with `step` pixels per sample is centred on image
/// position `step * j + (step - 1) / 2` (JFIF's centred chroma siting), so
/// pixel `i` sits at `(i + 0.5) / step - 0.5`.
#[inline]
pub(crate) fn plane_position(i: f32, step: usize) -> f32 {
    (i + 0.5) / step as f32 - 0.5
}

/// Linear interpolation weights at `pos` along a plane axis of `len` samples,
/// clamped at the edges: `(lower, upper, frac)`.
#[inline]
pub(crate) fn plane_lerp(pos: f32, len: usize) -> (usize, usize, f32) {
    let last = len as i64 - 1;
    let floor = pos.floor();
    let lower = (floor as i64).clamp(0, last) as usize;
    let upper = (floor as i64).saturating_add(1).clamp(0, last) as usize;
    let frac = if pos < 0.0 { 0.0 } else { pos - floor };
    (lower, upper, frac)
}

impl YccImage {
    /// Panics unless the planes are consistent with the image size: each
    /// has `step`s of at least 1, `ceil(size / step)` samples per axis, a
    /// stride of at least its width, and `stride * height` bytes. (Planes from
    /// `decode_image_planar` always are.)
    pub(crate) fn assert_consistent(&self) {
        assert!(self.width > 0 && self.height > 0, "a {}x{} image has no pixels", self.width, self.height);
        for (i, p) in self.planes.iter().enumerate() {
            let ok = p.step[0] >= 1
                && p.step[1] >= 1
                && p.width == self.width.div_ceil(p.step[0])
                && p.height == self.height.div_ceil(p.step[1])
                && p.stride >= p.width
                && p.data.len() >= p.stride * p.height;
            assert!(
                ok,
                "plane {i} of a {}x{} image: {}x{} samples, step {:?}, stride {}, {} bytes",
                self.width,
                self.height,
                p.width,
                p.height,
                p.step,
                p.stride,
                p.data.len()
            );
        }
    }

    /// The plane's value at image position `(v, u)` (image pixel units, pixel
    /// centres at integers), interpolated bilinearly in the plane.
    pub(crate) fn sample(&self, plane: usize, v: f32, u: f32) -> f32 {
        let p = &self.planes[plane];
        let (y0, y1, fy) = plane_lerp(plane_position(v, p.step[1]), p.height);
        let (x0, x1, fx) = plane_lerp(plane_position(u, p.step[0]), p.width);
        let at = |y, x| f32::from(p.at(y, x));
        let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
        let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
        top + (bottom - top) * fy
    }

    /// The RGB image, each pixel's chroma interpolated linearly between the
    /// nearest chroma samples (for 2x subsampling, weights 3/4 and 1/4, as
    /// libjpeg's "fancy" upsampling) and converted as `jdcolor.c`, rounded and
    /// clamped to 0–255. The slow, obvious reference for the fast path, and
    /// its fallback where an RGB image is needed after all.
    ///
    /// # Shapes
    /// `[height, width, 3]`.
    ///
    /// # Panics
    /// If the planes do not fit the image size (wrong sample counts, a step
    /// of 0, too few bytes).
    pub fn to_rgb(&self) -> ImageU8 {
        self.assert_consistent();
        let mut data = Vec::with_capacity(self.height * self.width * 3);
        for y in 0..self.height {
            for x in 0..self.width {
                let (v, u) = (y as f32, x as f32);
                let luma = f32::from(self.planes[0].at(y, x));
                let rgb = ycc_to_rgb(luma, self.sample(1, v, u) - 128.0, self.sample(2, v, u) - 128.0);
                data.extend(rgb.map(|c| c.round().clamp(0.0, 255.0) as u8));
            }
        }
        ImageU8::new(self.height, self.width, 3, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(width: usize, height: usize, step: [usize; 2], f: impl Fn(usize, usize) -> u8) -> YccPlane {
        let stride = width + 3;
        let mut data = vec![0u8; stride * height];
        for y in 0..height {
            for x in 0..width {
                data[y * stride + x] = f(y, x);
            }
        }
        YccPlane { data, stride, width, height, step }
    }

    #[test]
    fn grey_planes_convert_to_grey() {
        let img = YccImage {
            width: 5,
            height: 3,
            planes: [
                plane(5, 3, [1, 1], |y, x| (y * 40 + x * 7) as u8),
                plane(3, 2, [2, 2], |_, _| 128),
                plane(3, 2, [2, 2], |_, _| 128),
            ],
        };
        let rgb = img.to_rgb();
        for y in 0..3 {
            for x in 0..5 {
                let l = (y * 40 + x * 7) as u8;
                assert_eq!([rgb.at(y, x, 0), rgb.at(y, x, 1), rgb.at(y, x, 2)], [l, l, l]);
            }
        }
    }

    #[test]
    fn chroma_is_upsampled_with_fancy_weights() {
        // One chroma row 0, 100 (step 2): pixel 1 sits at chroma position 0.25,
        // pixel 2 at 0.75 (libjpeg's 3/4, 1/4 weights); pixel 0 clamps to sample 0.
        let img = YccImage {
            width: 4,
            height: 1,
            planes: [
                plane(4, 1, [1, 1], |_, _| 100),
                plane(2, 1, [2, 1], |_, x| [28, 228][x]),
                plane(2, 1, [2, 1], |_, _| 128),
            ],
        };
        let cb: Vec<f32> = (0..4).map(|x| img.sample(1, 0.0, x as f32)).collect();
        assert_eq!(cb, [28.0, 78.0, 178.0, 228.0]);
        // B = Y + 1.772 (Cb - 128), clamped.
        let rgb = img.to_rgb();
        assert_eq!((0..4).map(|x| rgb.at(0, x, 2)).collect::<Vec<_>>(), [0, 11, 189, 255]);
    }

    #[test]
    fn conversion_matches_libjpeg_constants() {
        let [r, g, b] = ycc_to_rgb(100.0, 10.0, -20.0);
        assert!((r - (100.0 - 28.04)).abs() < 1e-4);
        assert!((g - (100.0 - 3.4414 + 14.2828)).abs() < 1e-4);
        assert!((b - (100.0 + 17.72)).abs() < 1e-4);
    }
}
