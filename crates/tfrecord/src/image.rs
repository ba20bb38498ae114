//! Images for image summaries: 8-bit pixels in height × width × channels
//! order, encoded as PNG.

use crate::error::EventError;

/// An 8-bit image, rows top to bottom, channels interleaved (HWC).
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).
    pub channels: u32,
    /// `height * width * channels` bytes.
    pub pixels: &'a [u8],
}

impl Image<'_> {
    /// Encodes it as PNG; `tag` names the summary in errors.
    pub fn to_png(&self, tag: &str) -> Result<Vec<u8>, EventError> {
        let color = match self.channels {
            1 => Some(png::ColorType::Grayscale),
            2 => Some(png::ColorType::GrayscaleAlpha),
            3 => Some(png::ColorType::Rgb),
            4 => Some(png::ColorType::Rgba),
            _ => None,
        };
        let expected = self.height as usize * self.width as usize * self.channels as usize;
        let shape_error = || EventError::ImageShape {
            tag: tag.to_string(),
            height: self.height,
            width: self.width,
            channels: self.channels,
            expected,
            got: self.pixels.len(),
        };
        let color = color.ok_or_else(shape_error)?;
        if self.pixels.len() != expected || expected == 0 {
            return Err(shape_error());
        }
        let png_error = |cause| EventError::Png { tag: tag.to_string(), cause };
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, self.width, self.height);
        encoder.set_color(color);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(self.pixels).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
        Ok(out)
    }
}
