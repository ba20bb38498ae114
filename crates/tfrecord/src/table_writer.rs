//! Writing an immutable LevelDB-format table, the container of a TF
//! checkpoint's `.index` file (TF's `core/lib/io/table_builder.cc`, a copy
//! of LevelDB's; format in LevelDB's `doc/table_format.md`).
//!
//! What TF writes for a checkpoint index, and so what this writes:
//! - data blocks of at most about 256 KiB (`table::Options::block_size`),
//!   keys prefix-compressed against the previous key, a restart point every
//!   16 entries (`block_restart_interval`), no compression;
//! - after each block, a trailer: the compression byte (0) and the masked
//!   CRC-32C of the block and that byte;
//! - an empty metaindex block, then an index block with one entry per data
//!   block (a restart at every entry): a key between that block's last key
//!   and the next block's first (TF's `FindShortestSeparator`; after the last
//!   block, `FindShortSuccessor`) and the block's handle;
//! - a 48-byte footer: the metaindex and index handles padded to 40 bytes,
//!   then the magic number.
//!
//! With the same keys and values the bytes equal TensorFlow's (tested
//! against an index TF 2.21 wrote).

use crate::crc::{crc32c, mask_crc};

/// `table::Options::block_size` in TF's `table_options.h`.
const BLOCK_SIZE: usize = 256 * 1024;
/// `table::Options::block_restart_interval`.
const RESTART_INTERVAL: usize = 16;
/// LevelDB's `kTableMagicNumber`.
const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Two block handles (at most 10 bytes per varint) padded to this length.
const FOOTER_HANDLES_LEN: usize = 40;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A block being built: entries, then the restart array.
#[derive(Debug)]
struct BlockBuilder {
    buffer: Vec<u8>,
    restarts: Vec<u32>,
    interval: usize,
    counter: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    fn new(interval: usize) -> BlockBuilder {
        BlockBuilder { buffer: Vec::new(), restarts: vec![0], interval, counter: 0, last_key: Vec::new() }
    }

    fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    /// The block's size once finished (LevelDB's `CurrentSizeEstimate`).
    fn size_estimate(&self) -> usize {
        self.buffer.len() + 4 * self.restarts.len() + 4
    }

    fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter < self.interval {
            key.iter().zip(&self.last_key).take_while(|(a, b)| a == b).count()
        } else {
            self.restarts.push(self.buffer.len() as u32);
            self.counter = 0;
            0
        };
        put_varint(&mut self.buffer, shared as u64);
        put_varint(&mut self.buffer, (key.len() - shared) as u64);
        put_varint(&mut self.buffer, value.len() as u64);
        self.buffer.extend_from_slice(&key[shared..]);
        self.buffer.extend_from_slice(value);
        self.last_key = key.to_vec();
        self.counter += 1;
    }

    /// The block's bytes; the builder starts over.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buffer);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        *self = BlockBuilder::new(self.interval);
        out
    }
}

/// TF's `FindShortestSeparator`: shortens `start` to a key in
/// `[start, limit)` where one byte can be incremented.
fn shortest_separator(start: &mut Vec<u8>, limit: &[u8]) {
    let common = start.iter().zip(limit).take_while(|(a, b)| a == b).count();
    if common < start.len().min(limit.len()) {
        let byte = start[common];
        if byte < 0xff && byte + 1 < limit[common] {
            start[common] += 1;
            start.truncate(common + 1);
        }
    }
}

/// TF's `FindShortSuccessor`: the shortest key at or after `key`.
fn short_successor(key: &mut Vec<u8>) {
    if let Some(i) = key.iter().position(|&b| b != 0xff) {
        key[i] += 1;
        key.truncate(i + 1);
    }
}

/// Builds a table in memory from entries added in increasing key order.
#[derive(Debug)]
pub struct TableWriter {
    out: Vec<u8>,
    data: BlockBuilder,
    index: BlockBuilder,
    /// The handle of the last flushed data block, until the next key (or
    /// the end) gives its index key.
    pending: Option<(u64, u64)>,
    last_key: Vec<u8>,
}

impl Default for TableWriter {
    fn default() -> Self {
        TableWriter::new()
    }
}

impl TableWriter {
    /// An empty table.
    pub fn new() -> TableWriter {
        TableWriter {
            out: Vec::new(),
            data: BlockBuilder::new(RESTART_INTERVAL),
            index: BlockBuilder::new(1),
            pending: None,
            last_key: Vec::new(),
        }
    }

    /// Adds an entry. Keys must come in strictly increasing byte order
    /// (the caller sorts them; an out-of-order key is a bug there).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(self.out.is_empty() && self.data.is_empty() || key > self.last_key.as_slice());
        if let Some((offset, size)) = self.pending.take() {
            let mut separator = self.last_key.clone();
            shortest_separator(&mut separator, key);
            self.add_index(&separator, offset, size);
        }
        self.data.add(key, value);
        self.last_key = key.to_vec();
        if self.data.size_estimate() >= BLOCK_SIZE {
            self.flush();
        }
    }

    fn add_index(&mut self, key: &[u8], offset: u64, size: u64) {
        let mut handle = Vec::new();
        put_varint(&mut handle, offset);
        put_varint(&mut handle, size);
        self.index.add(key, &handle);
    }

    /// Writes `block` with its trailer; returns its handle.
    fn write_block(&mut self, block: &[u8]) -> (u64, u64) {
        let handle = (self.out.len() as u64, block.len() as u64);
        self.out.extend_from_slice(block);
        self.out.push(0); // kNoCompression
        let crc = crc32c(&self.out[handle.0 as usize..]);
        self.out.extend_from_slice(&mask_crc(crc).to_le_bytes());
        handle
    }

    fn flush(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let block = self.data.finish();
        self.pending = Some(self.write_block(&block));
    }

    /// The table's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.flush();
        let metaindex = BlockBuilder::new(RESTART_INTERVAL).finish();
        let metaindex = self.write_block(&metaindex);
        if let Some((offset, size)) = self.pending.take() {
            let mut successor = self.last_key.clone();
            short_successor(&mut successor);
            self.add_index(&successor, offset, size);
        }
        let index = self.index.finish();
        let index = self.write_block(&index);
        let mut footer = Vec::with_capacity(FOOTER_HANDLES_LEN + 8);
        for v in [metaindex.0, metaindex.1, index.0, index.1] {
            put_varint(&mut footer, v);
        }
        footer.resize(FOOTER_HANDLES_LEN, 0);
        footer.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        self.out.extend_from_slice(&footer);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_are_tfs() {
        let sep = |a: &str, b: &str| {
            let mut s = a.as_bytes().to_vec();
            shortest_separator(&mut s, b.as_bytes());
            String::from_utf8(s).unwrap()
        };
        assert_eq!(sep("conv1/weights", "conv3/beta"), "conv2");
        assert_eq!(sep("conv1/weights", "conv2/beta"), "conv1/weights"); // '1' + 1 is not < '2'
        assert_eq!(sep("abc", "abcd"), "abc"); // a prefix: unchanged
        let mut k = b"logits/weights/Momentum".to_vec();
        short_successor(&mut k);
        assert_eq!(k, b"m");
        let mut k = vec![0xff, 0xff, 0x10];
        short_successor(&mut k);
        assert_eq!(k, vec![0xff, 0xff, 0x11]);
    }

    #[test]
    fn restarts_every_sixteen_entries_and_blocks_split() {
        let mut b = BlockBuilder::new(RESTART_INTERVAL);
        for i in 0..40 {
            b.add(format!("key{i:03}").as_bytes(), b"v");
        }
        assert_eq!(b.restarts.len(), 3);
        // Many large entries: several data blocks, each indexed.
        let mut t = TableWriter::new();
        let value = vec![7u8; 100_000];
        for i in 0..8 {
            t.add(format!("t{i}").as_bytes(), &value);
        }
        let bytes = t.finish();
        let magic = u64::from_le_bytes(bytes[bytes.len() - 8..].try_into().unwrap());
        assert_eq!(magic, TABLE_MAGIC);
        assert!(bytes.len() > 800_000);
    }
}
