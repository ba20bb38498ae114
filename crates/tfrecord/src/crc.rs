//! The masked CRC-32C that TFRecord framing uses.
//!
//! TensorFlow masks every stored CRC so that a CRC computed over data that
//! itself contains CRCs does not degenerate (`tensorflow/core/lib/hash/crc32c.h`,
//! `Mask`): rotate right by 15 bits and add a constant.

/// The constant added by TensorFlow's `crc32c::Mask` (`kMaskDelta`).
const MASK_DELTA: u32 = 0xa282_ead8;

/// Masks a raw CRC-32C the way TensorFlow stores it.
///
/// ```
/// use tfrecord::{mask_crc, unmask_crc};
/// let crc = crc32c::crc32c(b"hello");
/// assert_eq!(unmask_crc(mask_crc(crc)), crc);
/// ```
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverts [`mask_crc`].
pub fn unmask_crc(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// The masked CRC-32C of `data`, as written after a record's length and data.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    mask_crc(crc32c::crc32c(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value_from_tensorflow() {
        // The header of the first record in a file TensorFlow wrote
        // (testdata/tf-files/tfrecord/mixed_features.tfrecord) stores the
        // masked CRC of its 8-byte length; checked against that file in the
        // integration tests. Here: the published CRC-32C check value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        for v in [0u32, 1, 0xdead_beef, u32::MAX] {
            assert_eq!(unmask_crc(mask_crc(v)), v);
        }
    }
}
