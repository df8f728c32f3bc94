//! Checking a whole uploaded table file or archive before Dolt may keep it.
//!
//! Dolt trusts what it stores: it never hashes a chunk it reads, and when two
//! files hold one address it may read either. So an upload is judged here,
//! whole: every chunk its index names must decode and hash to its address, and
//! the file's name must be the one Dolt derives from the contents
//! (`go/store/nbs/table_writer.go` for table files, `go/store/nbs/archive_writer.go`
//! for archives). A file that passes can only add chunks that are what their
//! addresses say; it cannot stand in for a commit, a root or a journal. Every
//! chunk must also be one Dolt can walk without crashing (see
//! [`check_walkable`]): Dolt walks every chunk of a file it adds to its store.
//!
//! The file is read through [`ReadAt`], so a multi-gigabyte upload spooled to
//! disk is checked holding one chunk (and one zstd dictionary) per thread at
//! a time. The chunks are split between up to [`MAX_THREADS`] threads: the
//! check runs while the client and Dolt wait for the file's last bytes, so
//! every core it can use shortens the push.

use bytes::Bytes;

use super::archive::{
    decompress_plain_archive_chunk, ArchiveIndex, ByteRange, DictionaryDecoder, ARCHIVE_FOOTER_LEN, ARCHIVE_SIGNATURE,
};
use super::message::check_walkable;
use super::table_file::{decompress_record, TableIndex, TABLE_FOOTER_LEN};
use super::{check_each, Address, Result, StorageError, Unhashed};

/// Positional reads of a file that is complete and does not change.
pub trait ReadAt {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Exactly `len` bytes at `offset`; the caller has checked they exist.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>>;
}

impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        Ok(super::span(self, offset, len as u64, "file")?.to_vec())
    }
}

/// A spooled upload on disk.
pub struct DiskFile {
    pub file: std::fs::File,
    pub len: u64,
    pub path: std::path::PathBuf,
}

impl ReadAt for DiskFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len) {
            return Err(StorageError::Truncated {
                what: "file",
                needed: offset.saturating_add(len as u64),
                available: self.len,
            });
        }
        let mut buffer = vec![0; len];
        self.file
            .read_exact_at(&mut buffer, offset)
            .map_err(|source| StorageError::Io { path: self.path.clone(), source })?;
        Ok(buffer)
    }
}

/// The two kinds of file Dolt uploads, by the suffix of their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// A classic table file, uploaded with no suffix.
    Table,
    /// An archive, uploaded as `<name>.darc`.
    Archive,
}

impl FileKind {
    pub fn suffix(self) -> &'static str {
        match self {
            FileKind::Table => "",
            FileKind::Archive => ".darc",
        }
    }
}

/// What a verified file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub kind: FileKind,
    pub name: Address,
    pub chunk_count: usize,
}

/// Why an upload is refused, naming the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{name}{}: {source}", .kind.suffix())]
    Corrupt { name: Address, kind: FileKind, source: StorageError },
    #[error("{claimed}{}: its contents make it {actual}{}, so it cannot be stored as {claimed}", .kind.suffix(), .kind.suffix())]
    WrongName { claimed: Address, actual: Address, kind: FileKind },
    #[error("{name}{}: the name says {}, the contents are {}", .claimed.suffix(), describe(*.claimed), describe(*.found))]
    WrongKind { name: Address, claimed: FileKind, found: FileKind },
}

fn describe(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Table => "a table file",
        FileKind::Archive => "an archive",
    }
}

impl VerifyError {
    /// The first address whose chunk is not what the address says, if that is the fault.
    pub fn bad_address(&self) -> Option<Address> {
        match self {
            VerifyError::Corrupt {
                source:
                    StorageError::AddressMismatch { expected, .. }
                    | StorageError::BadCrc { address: expected, .. }
                    | StorageError::Decompress { address: expected, .. },
                ..
            } => Some(*expected),
            _ => None,
        }
    }
}

/// Checks the file `name` + `kind.suffix()` holds: its format matches its
/// suffix, every indexed chunk hashes to its address, and the name is the one
/// Dolt derives from the contents.
pub fn verify(file: &(impl ReadAt + ?Sized + Sync), name: Address, kind: FileKind) -> Result<Verified, VerifyError> {
    verify_hashed(file, name, kind, None)
}

/// [`verify`], given the SHA-512 of the whole file when the caller computed it
/// as the bytes arrived (it names an archive; hashing it again would read
/// the whole file once more).
pub fn verify_hashed(
    file: &(impl ReadAt + ?Sized + Sync),
    name: Address,
    kind: FileKind,
    whole_file: Option<Address>,
) -> Result<Verified, VerifyError> {
    let corrupt = |source| VerifyError::Corrupt { name, kind, source };
    let found = sniff(file).map_err(corrupt)?;
    if found != kind {
        return Err(VerifyError::WrongKind { name, claimed: kind, found });
    }
    let (actual, chunk_count) = match kind {
        FileKind::Table => verify_table(file).map_err(corrupt)?,
        FileKind::Archive => verify_archive(file, whole_file).map_err(corrupt)?,
    };
    if actual != name {
        return Err(VerifyError::WrongName { claimed: name, actual, kind });
    }
    Ok(Verified { kind, name, chunk_count })
}

/// Tells a table file from an archive by its last bytes.
fn sniff(file: &(impl ReadAt + ?Sized)) -> Result<FileKind> {
    let len = file.len();
    let last =
        file.read_at(len.saturating_sub(ARCHIVE_SIGNATURE.len() as u64), ARCHIVE_SIGNATURE.len().min(len as usize))?;
    if last == ARCHIVE_SIGNATURE {
        return Ok(FileKind::Archive);
    }
    let last = file.read_at(len.saturating_sub(8), 8.min(len as usize))?;
    if last == super::table_file::TABLE_MAGIC {
        return Ok(FileKind::Table);
    }
    Err(StorageError::UnknownFileFormat)
}

/// Every record a table file's index names, read in file order; the name is
/// the first 20 bytes of the SHA-512 of the suffix section as stored.
fn verify_table(file: &(impl ReadAt + ?Sized + Sync)) -> Result<(Address, usize)> {
    let len = file.len();
    let footer = file.read_at(len.saturating_sub(TABLE_FOOTER_LEN as u64), TABLE_FOOTER_LEN.min(len as usize))?;
    let tail_len = TableIndex::tail_len(&footer, len)?;
    let index = TableIndex::parse(Bytes::from(file.read_at(len - tail_len, tail_len as usize)?))?;
    if index.data_len() != len - tail_len {
        return Err(StorageError::Implausible {
            what: "record lengths",
            detail: format!(
                "the index's records add up to {} bytes, the file holds {}",
                index.data_len(),
                len - tail_len
            ),
        });
    }
    let mut records: Vec<(u64, u32, Address)> = index
        .addresses()
        .map(|address| {
            let span = index.lookup(&address).expect("an address the index lists");
            (span.offset, span.len, address)
        })
        .collect();
    records.sort_unstable_by_key(|&(offset, _, _)| offset);
    in_parallel(&records, |part| {
        let mut batch = Batch::default();
        for &(offset, record_len, address) in part {
            batch.add(decompress_record(&address, &file.read_at(offset, record_len as usize)?))?;
        }
        batch.check()
    })?;
    Ok((Address::of(index.suffix_section()), index.chunk_count()))
}

/// Every chunk of an archive, read in span order with one dictionary at a
/// time; the name is the first 20 bytes of the SHA-512 of the whole file.
fn verify_archive(file: &(impl ReadAt + ?Sized + Sync), whole_file: Option<Address>) -> Result<(Address, usize)> {
    let len = file.len();
    let footer = file.read_at(len.saturating_sub(ARCHIVE_FOOTER_LEN as u64), ARCHIVE_FOOTER_LEN.min(len as usize))?;
    let tail_len = ArchiveIndex::tail_len(&footer, len)?;
    let index = ArchiveIndex::parse(Bytes::from(file.read_at(len - tail_len, tail_len as usize)?), len)?;
    let mut chunks: Vec<usize> = (0..index.chunk_count()).collect();
    // Chunks sharing a dictionary together, each group in file order, so each
    // dictionary is read and set up once. The keys are worked out once per
    // chunk, not once per comparison: an archive holds hundreds of thousands.
    chunks.sort_by_cached_key(|&i| {
        let spans = index.spans_of(i);
        (spans.dictionary.map(|d| d.offset), spans.data.offset)
    });
    in_parallel(&chunks, |part| {
        let mut decoder: Option<(u64, DictionaryDecoder)> = None;
        let mut batch = Batch::default();
        for &i in part {
            let spans = index.spans_of(i);
            let (address, data) = (index.address(i), read_range(file, spans.data)?);
            let Some(span) = spans.dictionary else {
                batch.add(decompress_plain_archive_chunk(&address, index.version(), &data))?;
                continue;
            };
            if decoder.as_ref().is_none_or(|(offset, _)| *offset != span.offset) {
                decoder = Some((span.offset, DictionaryDecoder::from_span(&read_range(file, span)?)?));
            }
            batch.add(decoder.as_mut().expect("set above").1.decompress(&address, &data))?;
        }
        batch.check()
    })?;
    let name = match whole_file {
        Some(hash) => hash,
        None => hash_whole_file(file)?,
    };
    Ok((name, index.chunk_count()))
}

/// Decoded chunks waiting to be hashed together ([`check_each`]), then
/// judged in file order, so the first bad chunk is still the one named.
#[derive(Default)]
struct Batch {
    chunks: Vec<Unhashed>,
    bytes: usize,
}

impl Batch {
    /// Enough chunks to keep every hashing lane busy; the byte bound keeps a
    /// thread's held chunks to a few MiB whatever their sizes.
    const MAX_CHUNKS: usize = 256;
    const MAX_BYTES: usize = 2 << 20;

    /// Takes the next chunk in order, or its decoding error once every chunk
    /// before it has been judged.
    fn add(&mut self, chunk: Result<Unhashed>) -> Result<()> {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => return self.check().and(Err(error)),
        };
        self.bytes += chunk.len();
        self.chunks.push(chunk);
        if self.chunks.len() >= Batch::MAX_CHUNKS || self.bytes >= Batch::MAX_BYTES {
            return self.check();
        }
        Ok(())
    }

    /// Every chunk held: its bytes hash to its address and Dolt can walk it.
    fn check(&mut self) -> Result<()> {
        self.bytes = 0;
        for (address, bytes) in check_each(std::mem::take(&mut self.chunks)) {
            check_walkable(&address, &bytes?)?;
        }
        Ok(())
    }
}

/// The most threads one file's chunks are checked on.
pub const MAX_THREADS: usize = 4;
/// Below this many chunks one thread does it all.
const CHUNKS_PER_THREAD: usize = 256;

/// `check` over `items` split into contiguous parts, one thread each; the
/// error of the earliest failing part, so the first bad chunk in order is named.
fn in_parallel<T: Sync>(items: &[T], check: impl Fn(&[T]) -> Result<()> + Sync) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(MAX_THREADS).min(items.len() / CHUNKS_PER_THREAD).max(1);
    if threads == 1 {
        return check(items);
    }
    let check = &check;
    std::thread::scope(|scope| {
        let parts: Vec<_> =
            items.chunks(items.len().div_ceil(threads)).map(|part| scope.spawn(move || check(part))).collect();
        parts.into_iter().try_for_each(|part| part.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

fn read_range(file: &(impl ReadAt + ?Sized), range: ByteRange) -> Result<Vec<u8>> {
    let len = usize::try_from(range.len).ok().filter(|&len| len <= super::MAX_CHUNK_LEN * 2).ok_or_else(|| {
        StorageError::Implausible { what: "archive span", detail: format!("{} bytes at {}", range.len, range.offset) }
    })?;
    file.read_at(range.offset, len)
}

fn hash_whole_file(file: &(impl ReadAt + ?Sized)) -> Result<Address> {
    const STEP: u64 = 1 << 20;
    let mut hasher = super::address::Hasher::new();
    let mut offset = 0;
    while offset < file.len() {
        let step = STEP.min(file.len() - offset);
        hasher.update(&file.read_at(offset, step as usize)?);
        offset += step;
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{archive, table_file};

    /// Blob messages, since only serial messages are chunks Dolt can walk.
    fn chunks() -> Vec<Vec<u8>> {
        let payload = |i: usize| format!("chunk {i} ").repeat(i % 5 + 1);
        (0..30).map(|i| crate::storage::build::blob(payload(i).as_bytes())).collect()
    }

    fn table() -> (Vec<u8>, Address) {
        let chunks = chunks();
        let file = table_file::tests::build(&chunks.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let index = TableIndex::parse(Bytes::from(file.clone())).unwrap();
        let name = Address::of(index.suffix_section());
        (file, name)
    }

    fn archive() -> (Vec<u8>, Address) {
        let chunks = chunks();
        let file = archive::tests::build(&chunks.iter().map(Vec::as_slice).collect::<Vec<_>>(), 3);
        let name = Address::of(&file);
        (file, name)
    }

    #[test]
    fn parallel_checks_name_the_first_bad_item_in_order() {
        let items: Vec<u64> = (0..4 * CHUNKS_PER_THREAD as u64).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let check = |part: &[u64]| {
            threads.lock().unwrap().insert(std::thread::current().id());
            match part.iter().find(|&&i| i == 300 || i == 900) {
                Some(&i) => Err(StorageError::MissingChunk(Address([i as u8; 20]))),
                None => Ok(()),
            }
        };
        let error = in_parallel(&items, check).unwrap_err();
        assert!(matches!(error, StorageError::MissingChunk(a) if a == Address([300u64 as u8; 20])), "{error}");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads.lock().unwrap().len(), cores.clamp(1, MAX_THREADS));
        assert!(in_parallel(&items, |_| Ok(())).is_ok());
    }

    #[test]
    fn a_sound_file_under_its_own_name_passes() {
        let (file, name) = table();
        assert_eq!(verify(file.as_slice(), name, FileKind::Table).unwrap().chunk_count, 30);
        let (file, name) = archive();
        assert_eq!(verify(file.as_slice(), name, FileKind::Archive).unwrap().chunk_count, 30);
    }

    #[test]
    fn another_name_or_kind_is_refused() {
        let (file, name) = table();
        let other = Address::of(b"someone else's head commit");
        let error = verify(file.as_slice(), other, FileKind::Table).unwrap_err();
        assert!(matches!(error, VerifyError::WrongName { actual, .. } if actual == name), "{error}");
        assert!(matches!(verify(file.as_slice(), name, FileKind::Archive), Err(VerifyError::WrongKind { .. })));
        let (file, _) = archive();
        assert!(matches!(verify(file.as_slice(), other, FileKind::Archive), Err(VerifyError::WrongName { .. })));
    }

    /// A record swapped for another chunk's bytes, indexed under the old
    /// address: the forgery that would let an upload stand in for a commit.
    #[test]
    fn a_chunk_filed_under_another_address_is_refused() {
        let chunks = chunks();
        let forged = b"forged commit bytes".to_vec();
        let mut file = table_file::tests::build(&chunks.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let index = TableIndex::parse(Bytes::from(file.clone())).unwrap();
        let target = Address::of(&chunks[3]);
        let span = index.lookup(&target).unwrap();
        let mut record = table_file::tests::record(&forged);
        record.resize(span.len as usize, 0);
        // A record whose CRC and snappy frame are sound but whose bytes are another chunk's.
        let honest = table_file::tests::record(&chunks[3]);
        if record.len() == honest.len() {
            file[span.offset as usize..(span.offset + u64::from(span.len)) as usize].copy_from_slice(&record);
        } else {
            file[span.offset as usize] ^= 0xff;
        }
        let name = Address::of(index.suffix_section());
        let error = verify(file.as_slice(), name, FileKind::Table).unwrap_err();
        assert_eq!(error.bad_address(), Some(target), "{error}");
        assert!(error.to_string().contains(&target.to_string()), "{error}");
    }

    /// Chunks are hashed in batches, after decoding; the error must still be
    /// the first bad chunk in file order, not the first one noticed.
    #[test]
    fn a_forged_chunk_is_named_before_a_later_undecodable_one() {
        let chunks: Vec<Vec<u8>> =
            (0..40).map(|i| crate::storage::build::blob(format!("chunk {i:03}").as_bytes())).collect();
        let mut file = table_file::tests::build(&chunks.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let index = TableIndex::parse(Bytes::from(file.clone())).unwrap();
        let (forged, broken) = (Address::of(&chunks[3]), Address::of(&chunks[30]));
        let (forged_span, broken_span) = (index.lookup(&forged).unwrap(), index.lookup(&broken).unwrap());
        assert!(forged_span.offset < broken_span.offset);
        // Sound snappy and CRC, another chunk's bytes: only hashing finds it.
        let imposter = table_file::tests::record(&crate::storage::build::blob(b"forged 03"));
        assert_eq!(imposter.len(), forged_span.len as usize);
        file[forged_span.offset as usize..][..imposter.len()].copy_from_slice(&imposter);
        // A bad CRC: found while decoding, before the batch is hashed.
        file[(broken_span.offset + u64::from(broken_span.len)) as usize - 1] ^= 1;
        let error = verify(file.as_slice(), Address::of(index.suffix_section()), FileKind::Table).unwrap_err();
        assert_eq!(error.bad_address(), Some(forged), "{error}");
        assert!(matches!(error, VerifyError::Corrupt { source: StorageError::AddressMismatch { .. }, .. }), "{error}");
    }

    #[test]
    fn corrupt_bytes_anywhere_are_refused_not_panics() {
        for (file, name, kind) in
            [(table().0, table().1, FileKind::Table), (archive().0, archive().1, FileKind::Archive)]
        {
            // A table footer's uncompressed-size field (8 bytes before the magic)
            // is only a statistic to Dolt, and is not judged.
            let statistic = match kind {
                FileKind::Table => file.len() - 16..file.len() - 8,
                FileKind::Archive => 0..0,
            };
            for i in (0..file.len()).step_by(7).filter(|i| !statistic.contains(i)) {
                let mut bad = file.clone();
                bad[i] ^= 0x41;
                assert!(verify(bad.as_slice(), name, kind).is_err(), "byte {i} of a {kind:?}");
            }
            assert!(verify(&file[..file.len() - 1], name, kind).is_err());
            assert!(verify(&[][..], name, kind).is_err());
        }
    }

    #[test]
    fn reads_from_disk_like_from_memory() {
        let (file, name) = archive();
        let mut spool = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut spool, &file).unwrap();
        let disk = DiskFile { file: spool, len: file.len() as u64, path: "spool".into() };
        assert_eq!(verify(&disk, name, FileKind::Archive).unwrap().chunk_count, 30);
    }
}
