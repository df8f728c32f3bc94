//! Dolt archive files, `<id>.darc` (`go/store/nbs/archive.go` describes the layout).
//!
//! ```text
//! [byte span 1] ... [byte span N]
//! [span ends: N x u64] [prefixes: M x u64] [chunk refs: M x (u32 dictionary span, u32 data span)]
//! [suffixes: M x 12 bytes] [metadata JSON] [footer]
//! ```
//!
//! Integers are big-endian. Unlike table files, chunks are sorted by address, so
//! a chunk's position in the prefix list indexes the refs and suffixes too.
//! Span 0 is the empty span: a chunk whose dictionary span is 0 has none.
//!
//! What a data span holds (`go/store/nbs/archive_reader.go`):
//! - with a dictionary: a zstd frame compressed with that dictionary, where the
//!   dictionary span is itself a zstd frame (no dictionary) of the raw dictionary;
//! - without one, format 2 and later: a table-style snappy + CRC32C record;
//! - without one, format 1: a plain zstd frame.
//!
//! Pushes upload archives (`go/store/datas/pull/pull_table_file_writer.go`); a file
//! gains a dictionary once it holds 1000 chunks.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use zstd::dict::DecoderDictionary;

use super::table_file::{decode_record, decompress_record};
use super::{be_u32, be_u64, lower_bound, span, Address, Result, StorageError, Unhashed, MAX_CHUNK_LEN};

pub const ARCHIVE_SIGNATURE: &[u8; 7] = b"DOLTARC";
/// The version-3 footer; versions 1 and 2 lack the first 4 bytes (a `u32` index length).
pub const ARCHIVE_FOOTER_LEN: usize = 220;
const SMALL_FOOTER_VERSION_LIMIT: u8 = 3;
const VERSION_OFFSET: usize = 212;
const MAX_VERSION: u8 = 3;
const SPAN_END_LEN: u64 = 8;
const PREFIX_LEN: u64 = 8;
const CHUNK_REF_LEN: u64 = 8;
const SUFFIX_LEN: u64 = 12;
/// 2^25 bytes: room for the largest chunk, so a hostile frame header cannot make
/// the decoder reserve more.
const ZSTD_WINDOW_LOG_MAX: u32 = 25;

/// A byte range of an archive's data section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub offset: u64,
    pub len: u64,
}

/// Where one chunk's bytes are: the same facts `StreamDownloadLocations`
/// reports as `RangeChunk{offset, length, dictionary_offset, dictionary_length}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpans {
    pub data: ByteRange,
    pub dictionary: Option<ByteRange>,
}

/// A decompressed zstd dictionary, ready to decode many chunks.
pub struct ZstdDictionary(DecoderDictionary<'static>);

impl ZstdDictionary {
    /// Builds the dictionary from the bytes of a dictionary span (a zstd frame
    /// wrapping the raw dictionary).
    pub fn from_span(span: &[u8]) -> Result<ZstdDictionary> {
        let raw = zstd_decode(span, None).map_err(|reason| StorageError::Implausible {
            what: "zstd dictionary",
            detail: format!("cannot decompress the dictionary span: {reason}"),
        })?;
        Ok(ZstdDictionary(DecoderDictionary::copy(&raw)))
    }
}

/// Decodes one chunk fetched by a ranged download: `data` is the chunk's span,
/// `dictionary` the dictionary span when the range named one
/// (`dictionary_length != 0`). Without a dictionary the bytes are a snappy +
/// CRC32C record, whether they came from a table file, the chunk journal or an
/// archive (`go/libraries/doltcore/remotestorage/chunk_fetcher.go` decides the same way).
pub fn decode_range_chunk(expected: &Address, data: &[u8], dictionary: Option<&[u8]>) -> Result<Bytes> {
    match dictionary.filter(|d| !d.is_empty()) {
        Some(span) => decode_with_dictionary(expected, data, &ZstdDictionary::from_span(span)?),
        None => decode_record(expected, data),
    }
}

/// Decodes a zstd frame compressed with `dictionary` and checks it is `expected`.
pub fn decode_with_dictionary(expected: &Address, data: &[u8], dictionary: &ZstdDictionary) -> Result<Bytes> {
    decompress_with_dictionary(expected, data, dictionary)?.check()
}

fn decompress_with_dictionary(expected: &Address, data: &[u8], dictionary: &ZstdDictionary) -> Result<Unhashed> {
    let bytes = zstd_decode(data, Some(&dictionary.0))
        .map_err(|reason| StorageError::Decompress { address: *expected, reason })?;
    Ok(Unhashed::new(expected, bytes))
}

/// One zstd frame, refused once it grows past [`MAX_CHUNK_LEN`].
fn zstd_decode(frame: &[u8], dictionary: Option<&DecoderDictionary<'static>>) -> std::result::Result<Vec<u8>, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut decoder = match dictionary {
        Some(dictionary) => zstd::stream::read::Decoder::with_prepared_dictionary(frame, dictionary).map_err(io)?,
        None => zstd::stream::read::Decoder::with_buffer(frame).map_err(io)?,
    }
    .single_frame();
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(io)?;
    let mut out = Vec::new();
    decoder.take(MAX_CHUNK_LEN as u64 + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() > MAX_CHUNK_LEN {
        return Err(format!("decompresses to more than {MAX_CHUNK_LEN} bytes"));
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
struct Footer {
    version: u8,
    index_len: u64,
    span_count: u64,
    chunk_count: u64,
    metadata_len: u64,
}

impl Footer {
    fn parse(file: &[u8]) -> Result<Footer> {
        let start = (file.len() as u64).saturating_sub(ARCHIVE_FOOTER_LEN as u64);
        let tail = span(file, start, ARCHIVE_FOOTER_LEN as u64, "archive footer")?;
        if &tail[VERSION_OFFSET + 1..] != ARCHIVE_SIGNATURE {
            return Err(StorageError::UnknownFileFormat);
        }
        let version = tail[VERSION_OFFSET];
        if version == 0 || version > MAX_VERSION {
            return Err(StorageError::UnsupportedArchiveVersion(version));
        }
        let index_len = match version < SMALL_FOOTER_VERSION_LIMIT {
            true => u64::from(be_u32(tail, 4)),
            false => be_u64(tail, 0),
        };
        let footer = Footer {
            version,
            index_len,
            span_count: be_u32(tail, 8).into(),
            chunk_count: be_u32(tail, 12).into(),
            metadata_len: be_u32(tail, 16).into(),
        };
        let expected_index =
            footer.span_count * SPAN_END_LEN + footer.chunk_count * (PREFIX_LEN + CHUNK_REF_LEN + SUFFIX_LEN);
        if footer.index_len != expected_index {
            return Err(implausible(format!(
                "index length {} does not match {} spans and {} chunks",
                footer.index_len, footer.span_count, footer.chunk_count
            )));
        }
        Ok(footer)
    }

    fn len(&self) -> u64 {
        match self.version < SMALL_FOOTER_VERSION_LIMIT {
            true => ARCHIVE_FOOTER_LEN as u64 - 4,
            false => ARCHIVE_FOOTER_LEN as u64,
        }
    }

    /// Index, metadata and footer: the tail of the file the index lives in.
    fn tail_len(&self) -> u64 {
        self.len() + self.metadata_len + self.index_len
    }
}

/// A parsed archive index. Like `TableIndex`, it is built from the
/// tail of a file alone (index, metadata and footer), which is what a check
/// of a file on disk reads before it reads the chunks.
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    footer: Footer,
    /// The index and metadata, nothing before or after.
    index: Bytes,
    /// Where the index starts in the file, i.e. the length of the data section.
    data_len: u64,
}

impl ArchiveIndex {
    /// How many bytes at the end of a `file_len`-byte archive hold its index,
    /// metadata and footer, read from the last [`ARCHIVE_FOOTER_LEN`] bytes.
    pub fn tail_len(last_bytes: &[u8], file_len: u64) -> Result<u64> {
        let footer = Footer::parse(last_bytes)?;
        if footer.tail_len() > file_len {
            return Err(implausible(format!(
                "index of {} bytes and metadata of {} do not fit in {file_len} bytes",
                footer.index_len, footer.metadata_len
            )));
        }
        Ok(footer.tail_len())
    }

    /// Parses the index from `tail`, the last bytes of a `file_len`-byte
    /// archive (at least [`ArchiveIndex::tail_len`] of them; the whole file will do).
    pub fn parse(tail: Bytes, file_len: u64) -> Result<ArchiveIndex> {
        let footer = Footer::parse(&tail)?;
        let needed = footer.tail_len();
        if needed > file_len || needed > tail.len() as u64 || tail.len() as u64 > file_len {
            return Err(implausible(format!(
                "index of {} bytes and metadata of {} do not fit in {file_len} bytes",
                footer.index_len, footer.metadata_len
            )));
        }
        let start = tail.len() - needed as usize;
        let index = tail.slice(start..tail.len() - footer.len() as usize);
        let parsed = ArchiveIndex { footer, index, data_len: file_len - needed };
        parsed.check()?;
        Ok(parsed)
    }

    pub fn version(&self) -> u8 {
        self.footer.version
    }

    pub fn chunk_count(&self) -> usize {
        self.footer.chunk_count as usize
    }

    /// Bytes of spans before the index.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// The metadata JSON Dolt writes (e.g. `{"dolt_version":"..."}`), unparsed.
    pub fn metadata(&self) -> &[u8] {
        &self.index[self.footer.index_len as usize..]
    }

    pub fn lookup(&self, address: &Address) -> Option<ChunkSpans> {
        self.find(address).map(|ordinal| self.spans_of(ordinal))
    }

    /// Where chunk number `ordinal` (in address order) is.
    pub fn spans_of(&self, ordinal: usize) -> ChunkSpans {
        let (dictionary, data) = self.chunk_ref(ordinal);
        ChunkSpans { data: self.byte_span(data), dictionary: (dictionary != 0).then(|| self.byte_span(dictionary)) }
    }

    /// Every address this archive holds, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        (0..self.chunk_count()).map(|i| self.address(i))
    }

    /// The address of chunk number `ordinal`.
    pub fn address(&self, ordinal: usize) -> Address {
        let mut address = [0; 20];
        address[..8].copy_from_slice(&self.prefix(ordinal).to_be_bytes());
        address[8..].copy_from_slice(self.suffix(ordinal));
        Address(address)
    }

    fn find(&self, address: &Address) -> Option<usize> {
        let target = address.prefix();
        let count = self.chunk_count();
        (lower_bound(count, |i| self.prefix(i), target)..count)
            .take_while(|&i| self.prefix(i) == target)
            .find(|&i| self.suffix(i) == address.suffix())
    }

    fn span_end(&self, id: u32) -> u64 {
        match id {
            0 => 0,
            id => be_u64(&self.index, ((u64::from(id) - 1) * SPAN_END_LEN) as usize),
        }
    }

    fn byte_span(&self, id: u32) -> ByteRange {
        let start = if id <= 1 { 0 } else { self.span_end(id - 1) };
        ByteRange { offset: start, len: self.span_end(id) - start }
    }

    fn prefix(&self, i: usize) -> u64 {
        be_u64(&self.index, (self.footer.span_count * SPAN_END_LEN + i as u64 * PREFIX_LEN) as usize)
    }

    fn chunk_ref(&self, i: usize) -> (u32, u32) {
        let refs = self.footer.span_count * SPAN_END_LEN + self.footer.chunk_count * PREFIX_LEN;
        let at = (refs + i as u64 * CHUNK_REF_LEN) as usize;
        (be_u32(&self.index, at), be_u32(&self.index, at + 4))
    }

    fn suffix(&self, i: usize) -> &[u8] {
        let suffixes = self.footer.span_count * SPAN_END_LEN + self.footer.chunk_count * (PREFIX_LEN + CHUNK_REF_LEN);
        let at = (suffixes + i as u64 * SUFFIX_LEN) as usize;
        &self.index[at..at + SUFFIX_LEN as usize]
    }

    /// Every later access indexes by these numbers without further checks, so
    /// they are all checked here, once: spans ascend within the data section,
    /// prefixes are sorted, and every chunk names spans that exist.
    fn check(&self) -> Result<()> {
        let mut previous = 0;
        for id in 1..=self.footer.span_count as u32 {
            let end = self.span_end(id);
            if end < previous || end > self.data_len {
                return Err(implausible(format!("span {id} ends at {end}, outside the data section")));
            }
            previous = end;
        }
        let spans = self.footer.span_count as u32;
        let mut previous = 0;
        for i in 0..self.chunk_count() {
            let (dictionary, data) = self.chunk_ref(i);
            if self.prefix(i) < previous || data == 0 || data > spans || dictionary > spans {
                return Err(implausible(format!(
                    "chunk {i} is out of order or names spans {dictionary}/{data} of {spans}"
                )));
            }
            previous = self.prefix(i);
        }
        Ok(())
    }
}

/// Decodes one chunk of an archive that has no dictionary, given how the
/// archive compresses such chunks (`version`).
pub fn decode_plain_archive_chunk(expected: &Address, version: u8, data: &[u8]) -> Result<Bytes> {
    decompress_plain_archive_chunk(expected, version, data)?.check()
}

/// [`decode_plain_archive_chunk`] up to the hash.
pub fn decompress_plain_archive_chunk(expected: &Address, version: u8, data: &[u8]) -> Result<Unhashed> {
    match version {
        1 => Ok(Unhashed::new(
            expected,
            zstd_decode(data, None).map_err(|reason| StorageError::Decompress { address: *expected, reason })?,
        )),
        _ => decompress_record(expected, data),
    }
}

/// Decodes many chunks compressed with one dictionary through one zstd
/// context: making a context costs more than decoding a small chunk, and a
/// pushed archive holds hundreds of thousands of them.
pub struct DictionaryDecoder {
    context: zstd::bulk::Decompressor<'static>,
    /// For frames that do not declare their size: the bounded streaming path.
    streaming: ZstdDictionary,
}

impl DictionaryDecoder {
    /// From the bytes of a dictionary span (a zstd frame wrapping the raw dictionary).
    pub fn from_span(span: &[u8]) -> Result<DictionaryDecoder> {
        let implausible = |reason: String| StorageError::Implausible {
            what: "zstd dictionary",
            detail: format!("cannot decompress the dictionary span: {reason}"),
        };
        let raw = zstd_decode(span, None).map_err(implausible)?;
        let context = zstd::bulk::Decompressor::with_dictionary(&raw).map_err(|e| implausible(e.to_string()))?;
        Ok(DictionaryDecoder { context, streaming: ZstdDictionary(DecoderDictionary::copy(&raw)) })
    }

    /// The chunk in `data`, checked to be `expected`. A frame that declares
    /// its size is decoded into exactly that much room (refused past
    /// [`MAX_CHUNK_LEN`]); one that does not is streamed, stopping there.
    pub fn decode(&mut self, expected: &Address, data: &[u8]) -> Result<Bytes> {
        self.decompress(expected, data)?.check()
    }

    /// [`DictionaryDecoder::decode`] up to the hash.
    pub fn decompress(&mut self, expected: &Address, data: &[u8]) -> Result<Unhashed> {
        match zstd::zstd_safe::get_frame_content_size(data) {
            Ok(Some(size)) if size <= MAX_CHUNK_LEN as u64 => {
                let bytes = self
                    .context
                    .decompress(data, size as usize)
                    .map_err(|e| StorageError::Decompress { address: *expected, reason: e.to_string() })?;
                Ok(Unhashed::new(expected, bytes))
            }
            Ok(Some(size)) => Err(StorageError::Implausible {
                what: "chunk length",
                detail: format!(
                    "zstd frame of {expected} declares {size} bytes, more than the {MAX_CHUNK_LEN} allowed"
                ),
            }),
            _ => decompress_with_dictionary(expected, data, &self.streaming),
        }
    }
}

/// A whole archive in memory.
pub struct Archive {
    bytes: Bytes,
    index: ArchiveIndex,
    /// Raw dictionaries by span offset, decompressed once for all the chunks that share one.
    dictionaries: Mutex<HashMap<u64, Arc<ZstdDictionary>>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("footer", &self.index.footer).field("len", &self.bytes.len()).finish()
    }
}

impl Archive {
    pub fn parse(bytes: Bytes) -> Result<Archive> {
        let index = ArchiveIndex::parse(bytes.clone(), bytes.len() as u64)?;
        Ok(Archive { bytes, index, dictionaries: Mutex::default() })
    }

    pub fn index(&self) -> &ArchiveIndex {
        &self.index
    }

    pub fn version(&self) -> u8 {
        self.index.version()
    }

    pub fn chunk_count(&self) -> usize {
        self.index.chunk_count()
    }

    /// The metadata JSON Dolt writes (e.g. `{"dolt_version":"..."}`), unparsed.
    pub fn metadata(&self) -> &[u8] {
        self.index.metadata()
    }

    /// How many chunks are compressed with a dictionary.
    pub fn dictionary_chunk_count(&self) -> usize {
        (0..self.chunk_count()).filter(|&i| self.index.chunk_ref(i).0 != 0).count()
    }

    pub fn lookup(&self, address: &Address) -> Option<ChunkSpans> {
        self.index.lookup(address)
    }

    /// Every address this archive holds, in order.
    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        self.index.addresses()
    }

    /// The chunk `address`, verified, or `None` when this archive does not hold it.
    pub fn get(&self, address: &Address) -> Result<Option<Bytes>> {
        let Some(spans) = self.index.lookup(address) else { return Ok(None) };
        let data = self.range(spans.data);
        match spans.dictionary {
            Some(span) => decode_with_dictionary(address, data, &*self.dictionary(span)?).map(Some),
            None => decode_plain_archive_chunk(address, self.version(), data).map(Some),
        }
    }

    fn dictionary(&self, span: ByteRange) -> Result<Arc<ZstdDictionary>> {
        if let Some(found) = self.dictionaries.lock().expect("dictionary cache").get(&span.offset) {
            return Ok(found.clone());
        }
        let built = Arc::new(ZstdDictionary::from_span(self.range(span))?);
        self.dictionaries.lock().expect("dictionary cache").insert(span.offset, built.clone());
        Ok(built)
    }

    fn range(&self, range: ByteRange) -> &[u8] {
        &self.bytes[range.offset as usize..(range.offset + range.len) as usize]
    }
}

fn implausible(detail: String) -> StorageError {
    StorageError::Implausible { what: "archive index", detail }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::table_file::tests::record;

    const RAW_DICTIONARY: &[u8] = b"a shared dictionary: chunk number payload payload payload payload";

    /// An archive in the layout above. Chunks at even positions (in address
    /// order) are zstd with one dictionary, odd ones snappy + CRC.
    pub(crate) fn build(chunks: &[&[u8]], version: u8) -> Vec<u8> {
        let mut sorted: Vec<(Address, &[u8])> = chunks.iter().map(|c| (Address::of(c), *c)).collect();
        sorted.sort();
        let mut spans: Vec<Vec<u8>> = vec![zstd::bulk::compress(RAW_DICTIONARY, 3).unwrap()];
        let mut refs = Vec::new();
        for (i, (_, chunk)) in sorted.iter().enumerate() {
            let compressed = match i % 2 {
                0 => zstd::bulk::Compressor::with_dictionary(3, RAW_DICTIONARY).unwrap().compress(chunk).unwrap(),
                _ => record(chunk),
            };
            spans.push(compressed);
            refs.push((if i % 2 == 0 { 1u32 } else { 0 }, spans.len() as u32));
        }
        let mut file = spans.concat();
        let mut index = Vec::new();
        let mut end = 0u64;
        for span in &spans {
            end += span.len() as u64;
            index.extend_from_slice(&end.to_be_bytes());
        }
        sorted.iter().for_each(|(a, _)| index.extend_from_slice(&a.prefix().to_be_bytes()));
        for (dictionary, data) in &refs {
            index.extend_from_slice(&dictionary.to_be_bytes());
            index.extend_from_slice(&data.to_be_bytes());
        }
        sorted.iter().for_each(|(a, _)| index.extend_from_slice(a.suffix()));
        file.extend_from_slice(&index);
        let metadata = br#"{"dolt_version":"test"}"#;
        file.extend_from_slice(metadata);
        match version {
            3 => file.extend_from_slice(&(index.len() as u64).to_be_bytes()),
            _ => file.extend_from_slice(&(index.len() as u32).to_be_bytes()),
        }
        for count in [spans.len(), sorted.len(), metadata.len()] {
            file.extend_from_slice(&(count as u32).to_be_bytes());
        }
        file.extend_from_slice(&[0; 192]);
        file.push(version);
        file.extend_from_slice(ARCHIVE_SIGNATURE);
        file
    }

    fn chunks() -> Vec<Vec<u8>> {
        (0..40).map(|i| format!("chunk number {i} payload ").repeat(i % 7 + 1).into_bytes()).collect()
    }

    fn archive(version: u8) -> (Vec<Vec<u8>>, Vec<u8>) {
        let chunks = chunks();
        let file = build(&chunks.iter().map(Vec::as_slice).collect::<Vec<_>>(), version);
        (chunks, file)
    }

    #[test]
    fn reads_both_compressions_in_versions_2_and_3() {
        for version in [2, 3] {
            let (chunks, file) = archive(version);
            let archive = Archive::parse(file.into()).unwrap();
            assert_eq!(archive.version(), version);
            assert_eq!(archive.chunk_count(), chunks.len());
            assert_eq!(archive.dictionary_chunk_count(), chunks.len() / 2);
            assert_eq!(archive.metadata(), br#"{"dolt_version":"test"}"#);
            for chunk in &chunks {
                assert_eq!(archive.get(&Address::of(chunk)).unwrap().unwrap(), chunk.as_slice());
            }
            assert_eq!(archive.get(&Address::of(b"absent")).unwrap(), None);
            assert_eq!(archive.addresses().count(), chunks.len());
        }
    }

    #[test]
    fn ranged_downloads_decode_like_the_whole_file() {
        let (chunks, file) = archive(3);
        let archive = Archive::parse(Bytes::from(file.clone())).unwrap();
        let slice = |r: ByteRange| &file[r.offset as usize..(r.offset + r.len) as usize];
        let mut with_dictionary = 0;
        for chunk in &chunks {
            let address = Address::of(chunk);
            let spans = archive.lookup(&address).unwrap();
            with_dictionary += usize::from(spans.dictionary.is_some());
            let decoded = decode_range_chunk(&address, slice(spans.data), spans.dictionary.map(slice)).unwrap();
            assert_eq!(decoded, chunk.as_slice());
        }
        assert!(with_dictionary > 0);
    }

    #[test]
    fn ranged_download_refuses_a_wrong_address_or_dictionary() {
        let (chunks, file) = archive(3);
        let archive = Archive::parse(Bytes::from(file.clone())).unwrap();
        let slice = |r: ByteRange| &file[r.offset as usize..(r.offset + r.len) as usize];
        let address = Address::of(&chunks[0]);
        let spans = (0..chunks.len()).map(|i| archive.lookup(&Address::of(&chunks[i])).unwrap());
        let zstd = spans.clone().find(|s| s.dictionary.is_some()).unwrap();
        let snappy = spans.clone().find(|s| s.dictionary.is_none()).unwrap();
        let wrong = Address::of(b"other");
        let error = decode_range_chunk(&wrong, slice(zstd.data), zstd.dictionary.map(slice)).unwrap_err();
        assert!(matches!(error, StorageError::AddressMismatch { .. }), "{error}");
        let error = decode_range_chunk(&address, slice(snappy.data), zstd.dictionary.map(slice)).unwrap_err();
        assert!(matches!(error, StorageError::Decompress { .. }), "{error}");
        let error = decode_range_chunk(&address, slice(zstd.data), Some(b"not zstd")).unwrap_err();
        assert!(error.to_string().contains("zstd dictionary"), "{error}");
    }

    #[test]
    fn refuses_a_zstd_bomb() {
        let huge = vec![0u8; MAX_CHUNK_LEN + 10];
        let frame = zstd::bulk::compress(&huge, 1).unwrap();
        let dictionary = zstd::bulk::compress(RAW_DICTIONARY, 3).unwrap();
        let error = decode_range_chunk(&Address::of(&huge), &frame, Some(&dictionary)).unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
    }

    #[test]
    fn refuses_corrupt_footers_and_indexes() {
        let (_, file) = archive(3);
        let last = file.len() - 1;
        let mut unsigned = file.clone();
        unsigned[last] = b'X';
        assert!(matches!(Archive::parse(unsigned.into()), Err(StorageError::UnknownFileFormat)));
        let mut future = file.clone();
        future[last - 7] = 9;
        assert!(matches!(Archive::parse(future.into()), Err(StorageError::UnsupportedArchiveVersion(9))));
        let mut many_chunks = file.clone();
        let count_at = file.len() - ARCHIVE_FOOTER_LEN + 12;
        many_chunks[count_at..count_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Archive::parse(many_chunks.into()), Err(StorageError::Implausible { .. })));
        let mut huge_index = file.clone();
        let index_at = file.len() - ARCHIVE_FOOTER_LEN;
        huge_index[index_at..index_at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(Archive::parse(huge_index.into()), Err(StorageError::Implausible { .. })));
        assert!(matches!(Archive::parse(Bytes::from_static(b"DOLTARC")), Err(StorageError::Truncated { .. })));
    }

    #[test]
    fn corrupt_bytes_anywhere_are_errors_not_panics() {
        let chunks = [b"first".as_slice(), b"second chunk", b"third chunk, longer"];
        let good = build(&chunks, 3);
        for i in 0..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                if let Ok(archive) = Archive::parse(bad.into()) {
                    chunks.iter().for_each(|c| drop(archive.get(&Address::of(c))));
                }
            }
        }
    }

    #[test]
    fn refuses_a_span_id_beyond_the_spans() {
        let (chunks, file) = archive(3);
        let spans = chunks.len() as u64 + 1;
        let index_len = spans * 8 + chunks.len() as u64 * 28;
        let metadata_len = br#"{"dolt_version":"test"}"#.len() as u64;
        let index_start = file.len() as u64 - ARCHIVE_FOOTER_LEN as u64 - metadata_len - index_len;
        let first_ref = (index_start + spans * 8 + chunks.len() as u64 * 8) as usize;
        let mut broken = file.clone();
        broken[first_ref + 4..first_ref + 8].copy_from_slice(&1000u32.to_be_bytes());
        let error = Archive::parse(broken.into()).unwrap_err();
        assert!(error.to_string().contains("spans 1/1000"), "{error}");
    }
}
