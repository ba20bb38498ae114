//! A small raster plot of `survey`'s histograms (width, height, aspect
//! ratio), drawn directly into pixels with a built-in 5x7 font, so plotting
//! needs no font files or plotting library.

use std::path::Path;

use anyhow::Result;
use ferroflow_data::{Bin, SurveyReport, equal_bins};

const W: usize = 720;
const PANEL_H: usize = 230;
const MARGIN_L: usize = 70;
const MARGIN_R: usize = 20;
const SCALE: usize = 2;
const BG: [u8; 3] = [255, 255, 255];
const FG: [u8; 3] = [40, 40, 40];
const BAR: [u8; 3] = [66, 133, 244];

struct Canvas {
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(h: usize) -> Self {
        Canvas { h, px: BG.iter().copied().cycle().take(W * h * 3).collect() }
    }

    fn set(&mut self, x: usize, y: usize, c: [u8; 3]) {
        if x < W && y < self.h {
            let i = (y * W + x) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, c: [u8; 3]) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.set(x, y, c);
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y).
    fn text(&mut self, x: usize, y: usize, text: &str) {
        for (i, ch) in text.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits >> (4 - col) & 1 == 1 {
                        let (gx, gy) = (x + (i * 6 + col) * SCALE, y + r * SCALE);
                        self.rect(gx, gy, gx + SCALE, gy + SCALE, FG);
                    }
                }
            }
        }
    }

    fn text_width(text: &str) -> usize {
        text.chars().count() * 6 * SCALE
    }
}

fn fmt_edge(v: f64, integer: bool) -> String {
    if v.is_infinite() {
        "INF".to_string()
    } else if integer {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn panel(canvas: &mut Canvas, top: usize, title: &str, bins: &[Bin], integer: bool) {
    canvas.text(MARGIN_L, top + 8, title);
    let (x0, x1) = (MARGIN_L, W - MARGIN_R);
    let (y0, y1) = (top + 34, top + PANEL_H - 40);
    let max = bins.iter().map(|b| b.count).max().unwrap_or(0).max(1);
    canvas.rect(x0, y1, x1, y1 + 1, FG);
    canvas.rect(x0, y0, x0 + 1, y1, FG);
    let label = max.to_string();
    canvas.text(x0 - 8 - Canvas::text_width(&label), y0, &label);
    canvas.text(x0 - 8 - Canvas::text_width("0"), y1 - 7 * SCALE, "0");
    if bins.is_empty() {
        return;
    }
    let slot = (x1 - x0) / bins.len();
    for (i, b) in bins.iter().enumerate() {
        let bh = (y1 - y0) * b.count / max;
        let bx = x0 + i * slot;
        canvas.rect(bx + 3, y1 - bh, bx + slot - 3, y1, BAR);
        if i == 0 || bins.len() <= 10 || i % 2 == 0 {
            canvas.text(bx, y1 + 6, &fmt_edge(b.lo, integer));
        }
    }
    let last = fmt_edge(bins[bins.len() - 1].hi, integer);
    canvas.text(x1 - Canvas::text_width(&last), y1 + 22, &last);
}

/// Writes the survey's width, height and aspect-ratio histograms to a PNG.
pub fn survey_plot(report: &SurveyReport, path: &Path) -> Result<()> {
    let widths: Vec<f64> = report.sizes.iter().map(|s| f64::from(s[0])).collect();
    let heights: Vec<f64> = report.sizes.iter().map(|s| f64::from(s[1])).collect();
    let mut canvas = Canvas::new(PANEL_H * 3 + 10);
    panel(&mut canvas, 0, &format!("WIDTH (PX), {} IMAGES", report.images), &equal_bins(&widths, 10), true);
    panel(&mut canvas, PANEL_H, "HEIGHT (PX)", &equal_bins(&heights, 10), true);
    panel(&mut canvas, PANEL_H * 2, "ASPECT RATIO (WIDTH / HEIGHT)", &report.aspect_ratio, false);
    let image = tfrecord::Image { height: canvas.h as u32, width: W as u32, channels: 3, pixels: &canvas.px };
    let png = image.to_png("survey plot")?;
    std::fs::write(path, png)?;
    Ok(())
}

/// A 5x7 glyph: seven rows, the low five bits of each, leftmost pixel highest.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        _ => [0; 7],
    }
}
