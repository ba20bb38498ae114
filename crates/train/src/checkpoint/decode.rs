//! Turning a checkpoint's tensor bytes (safetensors: little-endian, packed)
//! into values. [`ValuesBuilder`] takes them piece by piece as they are
//! read (`reader.rs`); on a little-endian machine an aligned piece is one
//! `memcpy`, since safetensors' byte order is then the machine's.
//! [`decode_reference`] is the slow, obvious path it is tested against.

use bytemuck::Pod;
use safetensors::Dtype;

use crate::checkpoint::file::Values;

/// One tensor's result: the CRC-32C of its bytes (`None` when not asked
/// for) and its values, or its dtype when ferroflow does not read it.
pub type Decoded = (Option<u32>, std::result::Result<Values, Dtype>);

/// The slow, obvious path: element by element with `from_le_bytes`, the
/// CRC over the whole slice.
pub fn decode_reference(dtype: Dtype, data: &[u8], checksum: bool) -> Decoded {
    fn each<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N).map(|c| from(c.try_into().unwrap_or([0; N]))).collect()
    }
    let crc = checksum.then(|| tfrecord::crc32c(data));
    let values = match dtype {
        Dtype::F32 => Values::F32(each(data, f32::from_le_bytes)),
        Dtype::F64 => Values::F64(each(data, f64::from_le_bytes)),
        Dtype::I64 => Values::I64(each(data, i64::from_le_bytes)),
        Dtype::I32 => Values::I32(each(data, i32::from_le_bytes)),
        other => return (crc, Err(other)),
    };
    (crc, Ok(values))
}

/// The size of one element of the dtypes ferroflow reads.
pub fn element_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 | Dtype::I32 => Some(4),
        Dtype::F64 | Dtype::I64 => Some(8),
        _ => None,
    }
}

/// Appends the little-endian values in `piece` to `out`.
fn extend<T: Pod, const N: usize>(out: &mut Vec<T>, piece: &[u8], from: fn([u8; N]) -> T) {
    match bytemuck::try_cast_slice::<u8, T>(piece) {
        // An aligned piece is the values' memory as is.
        Ok(values) if cfg!(target_endian = "little") => out.extend_from_slice(values),
        _ => out.extend(piece.chunks_exact(N).map(|c| from(c.try_into().unwrap_or([0; N])))),
    }
}

/// A tensor's values, built from its bytes piece by piece. A piece may end
/// inside an element (the reader's chunks do not follow tensor
/// boundaries); those bytes wait for the next piece.
#[derive(Debug)]
pub struct ValuesBuilder {
    values: Values,
    /// Bytes of a partial element carried to the next piece.
    pending: Vec<u8>,
}

impl ValuesBuilder {
    /// A builder for a tensor of `dtype` with `bytes` bytes, or the dtype
    /// when ferroflow does not read it.
    pub fn new(dtype: Dtype, bytes: usize) -> std::result::Result<ValuesBuilder, Dtype> {
        let n = bytes / element_size(dtype).ok_or(dtype)?;
        let values = match dtype {
            Dtype::F32 => Values::F32(Vec::with_capacity(n)),
            Dtype::F64 => Values::F64(Vec::with_capacity(n)),
            Dtype::I64 => Values::I64(Vec::with_capacity(n)),
            _ => Values::I32(Vec::with_capacity(n)),
        };
        Ok(ValuesBuilder { values, pending: Vec::new() })
    }

    fn size(&self) -> usize {
        match self.values {
            Values::F32(_) | Values::I32(_) => 4,
            Values::F64(_) | Values::I64(_) => 8,
        }
    }

    /// Appends the values in `piece` (with any partial element left by the
    /// previous piece).
    pub fn push(&mut self, mut piece: &[u8]) {
        let size = self.size();
        if !self.pending.is_empty() {
            let need = (size - self.pending.len()).min(piece.len());
            self.pending.extend_from_slice(&piece[..need]);
            piece = &piece[need..];
            if self.pending.len() < size {
                return;
            }
            let element = std::mem::take(&mut self.pending);
            self.append(&element);
        }
        let whole = piece.len() / size * size;
        self.append(&piece[..whole]);
        self.pending.extend_from_slice(&piece[whole..]);
    }

    /// Appends whole elements.
    fn append(&mut self, bytes: &[u8]) {
        match &mut self.values {
            Values::F32(v) => extend(v, bytes, f32::from_le_bytes),
            Values::F64(v) => extend(v, bytes, f64::from_le_bytes),
            Values::I64(v) => extend(v, bytes, i64::from_le_bytes),
            Values::I32(v) => extend(v, bytes, i32::from_le_bytes),
        }
    }

    /// The values (a trailing partial element is dropped, as
    /// [`decode_reference`] drops it; safetensors' validation means a
    /// checkpoint never has one).
    pub fn finish(self) -> Values {
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// The values' bytes (bitwise: NaN payloads included).
    fn value_bytes(v: &Values) -> Vec<u8> {
        match v {
            Values::F32(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            Values::F64(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
            Values::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    #[test]
    fn the_builder_equals_the_reference_in_any_pieces() {
        for dtype in [Dtype::F32, Dtype::F64, Dtype::I64, Dtype::I32] {
            for n in [0, 8, 24, 4096, 100_000] {
                let data = bytes(n, n as u32 + 3);
                let (crc, want) = decode_reference(dtype, &data, true);
                assert_eq!(crc, Some(tfrecord::crc32c(&data)));
                let want = want.unwrap();
                // Whole, in 8-byte pieces, in pieces that end inside elements, and
                // from an unaligned source.
                for piece in [n.max(1), 8, 8 * 37, 8 * 1001, 1, 3, 13, 4099] {
                    let mut b = ValuesBuilder::new(dtype, n).unwrap();
                    data.chunks(piece).for_each(|p| b.push(p));
                    assert_eq!(value_bytes(&b.finish()), value_bytes(&want), "{dtype:?} {n} bytes, pieces of {piece}");
                }
                let mut shifted = vec![0u8];
                shifted.extend_from_slice(&data);
                let mut b = ValuesBuilder::new(dtype, n).unwrap();
                b.push(&shifted[1..]);
                assert_eq!(value_bytes(&b.finish()), value_bytes(&want), "{dtype:?} {n} bytes, unaligned");
            }
        }
        // Known values, so that both paths cannot be wrong together.
        let mut b = ValuesBuilder::new(Dtype::F32, 8).unwrap();
        b.push(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]);
        assert_eq!(b.finish(), Values::F32(vec![1.0, -2.0]));
        assert_eq!(decode_reference(Dtype::I64, &7i64.to_le_bytes(), false), (None, Ok(Values::I64(vec![7]))));
        assert_eq!(ValuesBuilder::new(Dtype::F16, 2).unwrap_err(), Dtype::F16);
    }
}
