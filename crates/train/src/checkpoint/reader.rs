//! Reading a safetensors checkpoint, with its checksums computed while it
//! is read.
//!
//! Restore reads every byte of a checkpoint once, and the checksums must
//! not add a second pass over memory: the bytes are read in 1 MiB chunks,
//! and each chunk is checksummed and converted into its tensor's values
//! while it is still in cache. The CRC-32C is crc-fast's carry-less-multiply
//! kernel (`tfrecord::Crc32c`), about 55 GB/s on this machine's
//! AVX-512 cores, so checksumming cifar_cnn's 8.9 MB costs 0.15-0.2 ms.
//!
//! The header is parsed in one pass (`header.rs`) and validated by the
//! `safetensors` crate's own `Metadata::new` (offsets contiguous, each
//! tensor's byte length its shape's); its data length must be the file's.

use std::collections::HashMap;
use std::io::Read;

use safetensors::Dtype;
use tfrecord::Crc32c;

use crate::checkpoint::decode::ValuesBuilder;
use crate::checkpoint::file::Values;
use crate::checkpoint::header::parse_header;
use crate::checkpoint::integrity::{self, CHECKSUMS_KEY, FORMAT_KEY};
use crate::error::{Result, TrainError};

/// Bytes per chunk. Measured (first restore after a save, `ferroflow bench
/// checkpoint`, 2-vCPU EPYC with 1 MiB of L2 per core): vgg_small 7.98 ms
/// with 256 KiB chunks, 7.10 with 1 MiB, 6.97 with 4 MiB, 8.90 with one read
/// of the whole 26 MB; cifar_cnn 2.78 / 2.41 / 2.39 ms; resnet20 1.07 /
/// 1.00 / 1.01 ms.
const CHUNK: usize = 1024 * 1024;

/// One tensor as read.
#[derive(Debug)]
pub struct RawTensor {
    /// Its name.
    pub name: String,
    /// Its safetensors dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, or its dtype when ferroflow does not read it.
    pub values: std::result::Result<Values, Dtype>,
    /// The CRC-32C of its bytes, when the file carries checksums.
    pub crc: Option<u32>,
}

/// A safetensors file as read: its metadata and its tensors in file order.
#[derive(Debug)]
pub struct RawFile {
    /// The `__metadata__` entries.
    pub metadata: HashMap<String, String>,
    /// The tensors, in the order of their bytes in the file.
    pub tensors: Vec<RawTensor>,
}

fn bad(path: &str, reason: String) -> TrainError {
    TrainError::Checkpoint { path: path.to_string(), reason: format!("not a safetensors checkpoint: {reason}") }
}

/// Reads a safetensors file of `len` bytes from `reader`; `path` names it in
/// errors. The CRC-32C of each tensor is computed when the metadata holds
/// ferroflow's checksum keys (verifying them is the caller's).
pub fn read_safetensors<R: Read>(reader: &mut R, len: u64, path: &str) -> Result<RawFile> {
    let io = |cause: std::io::Error| TrainError::Io { path: path.to_string(), cause };
    if len < 8 {
        return Err(bad(path, format!("the file has {len} bytes, fewer than the 8 of its header's length")));
    }
    let mut n = [0u8; 8];
    reader.read_exact(&mut n).map_err(io)?;
    let n = u64::from_le_bytes(n);
    if n > len - 8 {
        return Err(bad(path, format!("its header's length, {n} bytes, runs past the end of the file ({len} bytes)")));
    }
    let mut header = vec![0u8; n as usize];
    reader.read_exact(&mut header).map_err(io)?;
    let parsed = parse_header(&header).map_err(|e| bad(path, format!("its header: {e}")))?;
    integrity::check_padding(&header, path)?;
    let data_len = len - 8 - n;
    if parsed.data_len() as u64 != data_len {
        return Err(bad(
            path,
            format!(
                "its header describes {} bytes of tensor data, but the file has {data_len} after the header",
                parsed.data_len()
            ),
        ));
    }
    let metadata = parsed.metadata().clone().unwrap_or_default();
    let checksum = metadata.contains_key(CHECKSUMS_KEY) || metadata.contains_key(FORMAT_KEY);
    let mut tensors: Vec<(String, Dtype, Vec<usize>, usize)> = Vec::new();
    for name in parsed.offset_keys() {
        let Some(info) = parsed.info(&name) else { continue };
        let (start, end) = info.data_offsets;
        tensors.push((name, info.dtype, info.shape.clone(), end - start));
    }
    let mut builders: Vec<std::result::Result<ValuesBuilder, Dtype>> =
        tensors.iter().map(|(_, dtype, _, bytes)| ValuesBuilder::new(*dtype, *bytes)).collect();
    let sizes: Vec<usize> = tensors.iter().map(|t| t.3).collect();

    let mut crcs = vec![Crc32c::new(); sizes.len()];
    let mut buffer = Vec::new();
    read_chunks(reader, &sizes, &mut buffer, path, |i, chunk| {
        if checksum {
            crcs[i].update(chunk);
        }
        if let Ok(b) = &mut builders[i] {
            b.push(chunk);
        }
    })?;
    let tensors = tensors
        .into_iter()
        .zip(builders)
        .zip(crcs)
        .map(|(((name, dtype, shape, _), builder), crc)| RawTensor {
            name,
            dtype,
            shape,
            values: builder.map(ValuesBuilder::finish),
            crc: checksum.then(|| crc.finish()),
        })
        .collect();
    Ok(RawFile { metadata, tensors })
}

/// Reads the tensors' bytes (`sizes`, in file order, back to back) in
/// chunks of [`CHUNK`] bytes into `buffer`, calling `each(tensor, piece)`
/// for each tensor's piece of each chunk. A chunk spans tensors, so a model
/// of many small tensors costs a few reads, not one per tensor (resnet20:
/// 173 tensors, 3 reads).
fn read_chunks<R: Read>(
    reader: &mut R,
    sizes: &[usize],
    buffer: &mut Vec<u8>,
    path: &str,
    mut each: impl FnMut(usize, &[u8]),
) -> Result<()> {
    let total: usize = sizes.iter().sum();
    let (mut tensor, mut left_in_tensor) = (0usize, sizes.first().copied().unwrap_or(0));
    let mut offset = 0usize;
    while offset < total {
        let take = (total - offset).min(CHUNK);
        buffer.resize(take, 0);
        read_exact(reader, buffer, offset, path)?;
        let mut chunk = &buffer[..];
        while !chunk.is_empty() {
            while left_in_tensor == 0 {
                tensor += 1;
                left_in_tensor = sizes[tensor];
            }
            let n = left_in_tensor.min(chunk.len());
            each(tensor, &chunk[..n]);
            (chunk, left_in_tensor) = (&chunk[n..], left_in_tensor - n);
        }
        offset += take;
    }
    Ok(())
}

/// `read_exact` with an error naming where in the tensor data the file ended.
fn read_exact<R: Read>(reader: &mut R, buffer: &mut [u8], offset: usize, path: &str) -> Result<()> {
    reader.read_exact(buffer).map_err(|cause| match cause.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            bad(path, format!("the file ended within bytes {offset}..{} of its tensor data", offset + buffer.len()))
        }
        _ => TrainError::Io { path: path.to_string(), cause },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::decode::decode_reference;
    use safetensors::tensor::TensorView;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, dtype, shape, data)| (*name, TensorView::new(*dtype, shape.clone(), data).unwrap()))
            .collect();
        let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn reads_what_the_reference_decodes() {
        // Small and large (several chunks per tensor, a tensor ending
        // mid-chunk) files; with and without checksums.
        for big in [false, true] {
            let scale = if big { CHUNK / 8 + 12 } else { 10 };
            let tensors = vec![
                ("a", Dtype::F32, vec![scale, 4], noise(scale * 16, 1)),
                ("b", Dtype::I64, vec![3], noise(24, 2)),
                ("c", Dtype::F64, vec![scale], noise(scale * 8, 3)),
                ("d", Dtype::F16, vec![2], noise(4, 4)),
                ("e", Dtype::I32, vec![0], Vec::new()),
            ];
            for meta in [vec![(CHECKSUMS_KEY, "{}")], vec![]] {
                let bytes = file(&tensors, &meta);
                let raw = read_safetensors(&mut &bytes[..], bytes.len() as u64, "f").unwrap();
                let checksum = !meta.is_empty();
                assert_eq!(raw.tensors.len(), tensors.len());
                for t in &raw.tensors {
                    let (_, dtype, shape, data) = tensors.iter().find(|x| x.0 == t.name).unwrap();
                    assert_eq!((&t.dtype, &t.shape), (dtype, shape));
                    let (crc, values) = decode_reference(*dtype, data, checksum);
                    assert_eq!(t.crc, crc, "{} big {big}", t.name);
                    // Bitwise: random bytes hold NaNs.
                    let bits = |v: &std::result::Result<Values, Dtype>| v.as_ref().map(Values::bytes).map_err(|d| *d);
                    assert_eq!(bits(&t.values), bits(&values), "{} big {big}", t.name);
                }
                assert_eq!(raw.metadata.len(), meta.len());
            }
        }
    }

    #[test]
    fn short_and_inconsistent_files_are_named() {
        let bytes = file(&[("a", Dtype::F32, vec![2], noise(8, 1))], &[]);
        let read = |b: &[u8], len: u64| read_safetensors(&mut &b[..], len, "f.safetensors").unwrap_err().to_string();
        assert!(read(&bytes[..5], 5).contains("fewer than the 8"));
        let e = read(&bytes, bytes.len() as u64 - 4);
        assert!(e.contains("describes 8 bytes of tensor data, but the file has 4"), "{e}");
        let e = read(&bytes[..bytes.len() - 4], bytes.len() as u64);
        assert!(e.contains("the file ended within bytes 0..8 of its tensor data"), "{e}");
        let mut long = bytes.clone();
        long[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read(&long, long.len() as u64).contains("runs past the end of the file"));
        let mut json = bytes.clone();
        json[9] = b'x';
        let e = read(&json, json.len() as u64);
        assert!(e.starts_with("f.safetensors: not a safetensors checkpoint: its header:"), "{e}");
    }
}
