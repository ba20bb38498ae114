//! Compression of TFRecord files (`tf.io.TFRecordOptions(compression_type=…)`).

use crate::crc::masked_crc32c;

/// How a TFRecord file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain framing (`compression_type=""`).
    #[default]
    None,
    /// A GZIP stream (`compression_type="GZIP"`; zlib `window_bits = MAX_WBITS + 16`).
    Gzip,
    /// A ZLIB stream (`compression_type="ZLIB"`; zlib `window_bits = MAX_WBITS`).
    Zlib,
}

impl Compression {
    /// Guesses the compression from a file's first bytes.
    ///
    /// Plain framing is tried first (a valid length CRC is a 1-in-2^32
    /// accident otherwise), so a plain file whose first length byte happens to
    /// be 0x1f or 0x78 is not mistaken for a compressed one. An unrecognisable
    /// start is reported as plain, so the reader names the bad header.
    ///
    /// ```
    /// use tfrecord::Compression;
    /// assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
    /// assert_eq!(Compression::detect(&[0x78, 0x9c]), Compression::Zlib);
    /// assert_eq!(Compression::detect(&[]), Compression::None);
    /// ```
    pub fn detect(head: &[u8]) -> Compression {
        if head.len() >= 12 {
            let stored = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
            if masked_crc32c(&head[..8]) == stored {
                return Compression::None;
            }
        }
        if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
            return Compression::Gzip;
        }
        // RFC 1950: CM = 8 (deflate), CINFO <= 7, and the 16-bit header is a
        // multiple of 31.
        if head.len() >= 2
            && head[0] & 0x0f == 8
            && head[0] >> 4 <= 7
            && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0
        {
            return Compression::Zlib;
        }
        Compression::None
    }

    /// The name TensorFlow uses for it (`""`, `"GZIP"`, `"ZLIB"`).
    pub fn tf_name(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "GZIP",
            Compression::Zlib => "ZLIB",
        }
    }
}
