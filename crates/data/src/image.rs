//! The image type every data stage passes around: pixels in height × width ×
//! channels (HWC) order, as TensorFlow's image ops take them.

/// An image of `T` pixels in HWC order (rows top to bottom, channels
/// interleaved), the layout of `tf.image` tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Image<T> {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels per pixel (1 grey, 3 RGB).
    pub channels: usize,
    /// `height * width * channels` values.
    pub data: Vec<T>,
}

/// 8-bit pixels, as decoded.
pub type ImageU8 = Image<u8>;
/// Float pixels, as after resizing or normalising (TF's resize outputs float32).
pub type ImageF32 = Image<f32>;

impl<T: Copy> Image<T> {
    /// Wraps `data`; panics if its length is not `height * width * channels`
    /// (a programming error, not bad input).
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), height * width * channels, "image buffer does not match {height}x{width}x{channels}");
        Image { height, width, channels, data }
    }

    /// An image filled with `value`.
    pub fn filled(height: usize, width: usize, channels: usize, value: T) -> Self {
        Image { height, width, channels, data: vec![value; height * width * channels] }
    }

    /// The value at row `y`, column `x`, channel `c`.
    #[inline]
    pub fn at(&self, y: usize, x: usize, c: usize) -> T {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// The `[h, w, c]` shape.
    pub fn shape(&self) -> [usize; 3] {
        [self.height, self.width, self.channels]
    }

    /// Applies `f` to every value.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> Image<U> {
        Image {
            height: self.height,
            width: self.width,
            channels: self.channels,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }
}

impl ImageU8 {
    /// The pixels as float32 in [0, 255], like `tf.cast(image, tf.float32)`.
    pub fn to_f32(&self) -> ImageF32 {
        self.map(f32::from)
    }

    /// The image as PNG bytes; `tag` names it in an error.
    pub fn to_png(&self, tag: &str) -> Result<Vec<u8>, String> {
        tfrecord::Image {
            height: self.height as u32,
            width: self.width as u32,
            channels: self.channels as u32,
            pixels: &self.data,
        }
        .to_png(tag)
        .map_err(|e| e.to_string())
    }
}

impl ImageF32 {
    /// Rounds and saturates to 8 bits, like `tf.image.convert_image_dtype(…,
    /// saturate=True)` on [0, 255] values (round half to even, as `tf.round`).
    pub fn to_u8(&self) -> ImageU8 {
        self.map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
    }
}
