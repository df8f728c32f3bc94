//! Classic NBS table files (`go/store/nbs/table.go` describes the layout).
//!
//! ```text
//! [record 0] ... [record N-1] [prefix tuples: N x (u64 prefix, u32 ordinal)]
//! [lengths: N x u32] [suffixes: N x 12 bytes] [footer: u32 N, u64 bytes, magic]
//! ```
//!
//! All integers are big-endian. Records are in insertion order and lengths and
//! suffixes follow that order (the ordinal), while the prefix tuples are sorted
//! for binary search. A record is a snappy block followed by the CRC32C of that
//! block; its indexed length includes the CRC. The chunk journal stores the same
//! records, so a ranged download without a dictionary decodes with
//! [`decode_record`] whether it came from a table file or the journal.

use bytes::Bytes;

use super::{be_u32, be_u64, lower_bound, span, Address, Result, StorageError, Unhashed, MAX_CHUNK_LEN};

/// The first 8 bytes of SHA-256 of `https://github.com/attic-labs/nbs` (`go/store/nbs/table.go`).
pub const TABLE_MAGIC: [u8; 8] = [0xff, 0xb5, 0xd8, 0xc2, 0x24, 0x63, 0xee, 0x50];
pub const TABLE_FOOTER_LEN: usize = 20;
const PREFIX_TUPLE_LEN: usize = 12;
const LENGTH_LEN: usize = 4;
const SUFFIX_LEN: usize = 12;
const INDEX_ENTRY_LEN: usize = PREFIX_TUPLE_LEN + LENGTH_LEN + SUFFIX_LEN;
const CRC_LEN: usize = 4;
/// A one-byte snappy block (an empty chunk) and its CRC; anything shorter is corrupt.
const MIN_RECORD_LEN: u32 = 1 + CRC_LEN as u32;

/// Decodes one table-style record, checking its CRC32C, bounding the size its
/// snappy header claims, and checking the result hashes to `expected`.
pub fn decode_record(expected: &Address, record: &[u8]) -> Result<Bytes> {
    decompress_record(expected, record)?.check()
}

/// [`decode_record`] up to the hash: the CRC, the bounds and snappy are checked.
pub fn decompress_record(expected: &Address, record: &[u8]) -> Result<Unhashed> {
    if record.len() < MIN_RECORD_LEN as usize {
        return Err(StorageError::Truncated {
            what: "chunk record",
            needed: MIN_RECORD_LEN as u64,
            available: record.len() as u64,
        });
    }
    let (block, trailer) = record.split_at(record.len() - CRC_LEN);
    let stored = be_u32(trailer, 0);
    let computed = crc32c::crc32c(block);
    if stored != computed {
        return Err(StorageError::BadCrc { address: *expected, stored, computed });
    }
    let decompress_error = |e: snap::Error| StorageError::Decompress { address: *expected, reason: e.to_string() };
    let claimed = snap::raw::decompress_len(block).map_err(decompress_error)?;
    if claimed > MAX_CHUNK_LEN {
        return Err(StorageError::Implausible {
            what: "chunk length",
            detail: format!(
                "snappy header of {expected} claims {claimed} bytes, more than the {MAX_CHUNK_LEN} allowed"
            ),
        });
    }
    let bytes = snap::raw::Decoder::new().decompress_vec(block).map_err(decompress_error)?;
    Ok(Unhashed::new(expected, bytes))
}

/// Where a chunk's record sits in the data section of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    pub offset: u64,
    pub len: u32,
}

/// A parsed table-file index. It can be built from just the tail of a file
/// (index and footer), which is all a ranged download needs to find a chunk.
#[derive(Debug, Clone)]
pub struct TableIndex {
    count: usize,
    /// The index and footer, nothing before.
    index: Bytes,
    /// `offsets[k]` is where record `k` starts; `offsets[count]` is the data length.
    offsets: Vec<u64>,
}

impl TableIndex {
    /// Parses the index from the last bytes of a table file; `tail` may be the
    /// whole file or any suffix of it that holds the index and footer.
    pub fn parse(tail: Bytes) -> Result<TableIndex> {
        let footer = span(&tail, (tail.len() as u64).saturating_sub(TABLE_FOOTER_LEN as u64), 20, "table footer")?;
        if footer[12..] != TABLE_MAGIC {
            return Err(StorageError::UnknownFileFormat);
        }
        let count = be_u32(footer, 0) as usize;
        let index_len = count as u64 * INDEX_ENTRY_LEN as u64;
        let start = (tail.len() as u64 - TABLE_FOOTER_LEN as u64).checked_sub(index_len).ok_or_else(|| {
            StorageError::Implausible {
                what: "chunk count",
                detail: format!("footer claims {count} chunks, whose index would not fit in {} bytes", tail.len()),
            }
        })?;
        let index = tail.slice(start as usize..);
        let offsets = record_offsets(&index, count)?;
        let parsed = TableIndex { count, index, offsets };
        parsed.check_prefix_tuples()?;
        Ok(parsed)
    }

    pub fn chunk_count(&self) -> usize {
        self.count
    }

    /// How many bytes at the end of a `file_len`-byte table file hold its
    /// index and footer, read from the last [`TABLE_FOOTER_LEN`] bytes.
    pub fn tail_len(footer: &[u8], file_len: u64) -> Result<u64> {
        let footer = span(footer, (footer.len() as u64).saturating_sub(TABLE_FOOTER_LEN as u64), 20, "table footer")?;
        if footer[12..] != TABLE_MAGIC {
            return Err(StorageError::UnknownFileFormat);
        }
        let count = u64::from(be_u32(footer, 0));
        let needed = count * INDEX_ENTRY_LEN as u64 + TABLE_FOOTER_LEN as u64;
        if needed > file_len {
            return Err(StorageError::Implausible {
                what: "chunk count",
                detail: format!("footer claims {count} chunks, whose index would not fit in {file_len} bytes"),
            });
        }
        Ok(needed)
    }

    /// The address suffixes as stored (in record order): what a table file's
    /// name is the hash of.
    pub fn suffix_section(&self) -> &[u8] {
        let start = self.count * (PREFIX_TUPLE_LEN + LENGTH_LEN);
        &self.index[start..start + self.count * SUFFIX_LEN]
    }

    /// Bytes of records before the index.
    pub fn data_len(&self) -> u64 {
        self.offsets[self.count]
    }

    /// Bytes of index and footer, i.e. how much of a file's tail [`TableIndex::parse`] needs.
    pub fn index_and_footer_len(&self) -> usize {
        self.index.len()
    }

    /// Where the chunk `address` is, if this file holds it.
    pub fn lookup(&self, address: &Address) -> Option<RecordSpan> {
        let target = address.prefix();
        let first = lower_bound(self.count, |i| self.tuple(i).0, target);
        (first..self.count)
            .map(|i| self.tuple(i))
            .take_while(|&(prefix, _)| prefix == target)
            .find(|&(_, ordinal)| self.suffix(ordinal) == address.suffix())
            .map(|(_, ordinal)| RecordSpan { offset: self.offsets[ordinal], len: self.length(ordinal) })
    }

    /// Every address this file holds, in prefix order.
    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        (0..self.count).map(|i| {
            let (prefix, ordinal) = self.tuple(i);
            let mut address = [0; 20];
            address[..8].copy_from_slice(&prefix.to_be_bytes());
            address[8..].copy_from_slice(self.suffix(ordinal));
            Address(address)
        })
    }

    fn tuple(&self, i: usize) -> (u64, usize) {
        let at = i * PREFIX_TUPLE_LEN;
        (be_u64(&self.index, at), be_u32(&self.index, at + 8) as usize)
    }

    fn length(&self, ordinal: usize) -> u32 {
        be_u32(&self.index, self.count * PREFIX_TUPLE_LEN + ordinal * LENGTH_LEN)
    }

    fn suffix(&self, ordinal: usize) -> &[u8] {
        let at = self.count * (PREFIX_TUPLE_LEN + LENGTH_LEN) + ordinal * SUFFIX_LEN;
        &self.index[at..at + SUFFIX_LEN]
    }

    /// Lookups binary-search the tuples and then index by ordinal: both must be
    /// sound before the first lookup, or a hostile index could send one out of bounds.
    fn check_prefix_tuples(&self) -> Result<()> {
        let mut previous = 0;
        for i in 0..self.count {
            let (prefix, ordinal) = self.tuple(i);
            if ordinal >= self.count || prefix < previous {
                return Err(StorageError::Implausible {
                    what: "table index",
                    detail: format!("prefix tuple {i} is out of order or names ordinal {ordinal} of {}", self.count),
                });
            }
            previous = prefix;
        }
        Ok(())
    }
}

fn record_offsets(index: &[u8], count: usize) -> Result<Vec<u64>> {
    let lengths = &index[count * PREFIX_TUPLE_LEN..count * (PREFIX_TUPLE_LEN + LENGTH_LEN)];
    let mut offsets = Vec::with_capacity(count + 1);
    let mut offset = 0u64;
    for (ordinal, length) in lengths.chunks_exact(LENGTH_LEN).map(|b| be_u32(b, 0)).enumerate() {
        if length < MIN_RECORD_LEN {
            return Err(StorageError::Implausible {
                what: "record length",
                detail: format!("record {ordinal} is {length} bytes, shorter than a snappy block and its CRC"),
            });
        }
        offsets.push(offset);
        offset += u64::from(length);
    }
    offsets.push(offset);
    Ok(offsets)
}

/// A whole table file in memory.
#[derive(Debug, Clone)]
pub struct TableFile {
    bytes: Bytes,
    index: TableIndex,
}

impl TableFile {
    pub fn parse(bytes: Bytes) -> Result<TableFile> {
        let index = TableIndex::parse(bytes.clone())?;
        let data_len = (bytes.len() - index.index_and_footer_len()) as u64;
        if index.data_len() != data_len {
            return Err(StorageError::Implausible {
                what: "record lengths",
                detail: format!("the index's records add up to {} bytes, the file holds {data_len}", index.data_len()),
            });
        }
        Ok(TableFile { bytes, index })
    }

    pub fn index(&self) -> &TableIndex {
        &self.index
    }

    /// The chunk `address`, verified, or `None` when this file does not hold it.
    pub fn get(&self, address: &Address) -> Result<Option<Bytes>> {
        let Some(record) = self.index.lookup(address) else { return Ok(None) };
        let bytes = span(&self.bytes, record.offset, record.len.into(), "chunk record")?;
        decode_record(address, bytes).map(Some)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A table record exactly as Dolt writes one: snappy block, then its CRC32C.
    pub(crate) fn record(chunk: &[u8]) -> Vec<u8> {
        let mut record = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
        let crc = crc32c::crc32c(&record);
        record.extend_from_slice(&crc.to_be_bytes());
        record
    }

    /// A table file holding `chunks` in order, built from the layout above.
    pub(crate) fn build(chunks: &[&[u8]]) -> Vec<u8> {
        let records: Vec<Vec<u8>> = chunks.iter().map(|c| record(c)).collect();
        let addresses: Vec<Address> = chunks.iter().map(|c| Address::of(c)).collect();
        let mut tuples: Vec<(u64, u32)> = addresses.iter().enumerate().map(|(i, a)| (a.prefix(), i as u32)).collect();
        tuples.sort();
        let mut file: Vec<u8> = records.concat();
        for (prefix, ordinal) in tuples {
            file.extend_from_slice(&prefix.to_be_bytes());
            file.extend_from_slice(&ordinal.to_be_bytes());
        }
        for record in &records {
            file.extend_from_slice(&(record.len() as u32).to_be_bytes());
        }
        for address in &addresses {
            file.extend_from_slice(address.suffix());
        }
        file.extend_from_slice(&(chunks.len() as u32).to_be_bytes());
        file.extend_from_slice(&(chunks.iter().map(|c| c.len() as u64).sum::<u64>()).to_be_bytes());
        file.extend_from_slice(&TABLE_MAGIC);
        file
    }

    fn chunks() -> Vec<Vec<u8>> {
        (0..50).map(|i| format!("chunk number {i} ").repeat(i + 1).into_bytes()).collect()
    }

    fn table() -> (Vec<Vec<u8>>, TableFile) {
        let chunks = chunks();
        let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
        let table = TableFile::parse(build(&refs).into()).unwrap();
        (chunks, table)
    }

    #[test]
    fn finds_and_decodes_every_chunk() {
        let (chunks, table) = table();
        assert_eq!(table.index().chunk_count(), chunks.len());
        for chunk in &chunks {
            assert_eq!(table.get(&Address::of(chunk)).unwrap().unwrap(), chunk.as_slice());
        }
        assert_eq!(table.get(&Address::of(b"absent")).unwrap(), None);
        let mut listed: Vec<Address> = table.index().addresses().collect();
        let mut expected: Vec<Address> = chunks.iter().map(|c| Address::of(c)).collect();
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn index_parses_from_the_tail_alone() {
        let (chunks, table) = table();
        let whole = build(&chunks.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let tail = Bytes::from(whole[whole.len() - table.index().index_and_footer_len()..].to_vec());
        let index = TableIndex::parse(tail).unwrap();
        let address = Address::of(&chunks[7]);
        let span = index.lookup(&address).unwrap();
        let record = &whole[span.offset as usize..span.offset as usize + span.len as usize];
        assert_eq!(decode_record(&address, record).unwrap(), chunks[7].as_slice());
    }

    #[test]
    fn finds_chunks_that_share_a_prefix() {
        // Two index entries with one prefix: the lookup must compare suffixes.
        let chunks = chunks();
        let refs: Vec<&[u8]> = chunks.iter().take(2).map(Vec::as_slice).collect();
        let mut file = build(&refs);
        let data_len: usize = refs.iter().map(|c| record(c).len()).sum();
        let shared = file[data_len..data_len + 8].to_vec();
        file[data_len + 12..data_len + 20].copy_from_slice(&shared);
        let table = TableFile::parse(file.into()).unwrap();
        let ordinal_of_second = table.index().tuple(1).1;
        let found: Vec<Address> = table.index().addresses().collect();
        assert_eq!(found[0].prefix(), found[1].prefix());
        for address in found {
            // The rewritten entry no longer hashes right, which decoding reports.
            match table.get(&address) {
                Ok(Some(_)) => {}
                Err(StorageError::AddressMismatch { .. }) => {
                    assert_eq!(address.suffix(), table.index().suffix(ordinal_of_second))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_a_bad_crc() {
        let chunk = b"some chunk".as_slice();
        let mut file = build(&[chunk]);
        file[0] ^= 0x01;
        let table = TableFile::parse(file.into()).unwrap();
        let error = table.get(&Address::of(chunk)).unwrap_err();
        assert!(matches!(error, StorageError::BadCrc { .. }), "{error}");
        assert!(error.to_string().contains("bad CRC32C"));
    }

    #[test]
    fn refuses_bytes_that_hash_to_another_address() {
        let wanted = Address::of(b"wanted");
        let error = decode_record(&wanted, &record(b"imposter")).unwrap_err();
        assert!(matches!(error, StorageError::AddressMismatch { expected, .. } if expected == wanted), "{error}");
    }

    #[test]
    fn refuses_truncated_and_foreign_files() {
        let file = build(&[b"a chunk".as_slice()]);
        assert!(matches!(TableFile::parse(Bytes::from_static(b"short")), Err(StorageError::Truncated { .. })));
        let mut wrong_magic = file.clone();
        *wrong_magic.last_mut().unwrap() ^= 1;
        assert!(matches!(TableFile::parse(wrong_magic.into()), Err(StorageError::UnknownFileFormat)));
        let cut = file[1..].to_vec();
        assert!(matches!(TableFile::parse(cut.into()), Err(StorageError::Implausible { .. })));
        assert!(matches!(decode_record(&Address::EMPTY, &[1, 2]), Err(StorageError::Truncated { .. })));
    }

    #[test]
    fn refuses_absurd_counts_without_allocating() {
        let mut footer = vec![0xff; 4];
        footer.extend_from_slice(&[0; 8]);
        footer.extend_from_slice(&TABLE_MAGIC);
        let error = TableIndex::parse(footer.into()).unwrap_err();
        assert!(error.to_string().contains("4294967295 chunks"), "{error}");
    }

    #[test]
    fn refuses_a_snappy_header_claiming_too_much() {
        // uvarint 0xffffffff: a 4 GiB chunk from five bytes.
        let mut block = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
        let crc = crc32c::crc32c(&block);
        block.extend_from_slice(&crc.to_be_bytes());
        let error = decode_record(&Address::EMPTY, &block).unwrap_err();
        assert!(matches!(error, StorageError::Implausible { what: "chunk length", .. }), "{error}");
    }

    #[test]
    fn corrupt_bytes_anywhere_are_errors_not_panics() {
        let chunks = [b"first".as_slice(), b"second chunk", b"third chunk, longer"];
        let good = build(&chunks);
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                if let Ok(table) = TableFile::parse(bad.into()) {
                    chunks.iter().for_each(|c| drop(table.get(&Address::of(c))));
                }
            }
        }
    }

    #[test]
    fn refuses_out_of_range_ordinals() {
        let chunk = b"x".as_slice();
        let mut file = build(&[chunk]);
        let data_len = record(chunk).len();
        file[data_len + 8..data_len + 12].copy_from_slice(&7u32.to_be_bytes());
        let error = TableFile::parse(file.into()).unwrap_err();
        assert!(error.to_string().contains("ordinal 7"), "{error}");
    }
}
