//! Reading Dolt's chunk store well enough to judge a push: which refs a new root
//! changes, and whether a branch moves forward or is rewritten.
//!
//! Nothing here talks to the network. The network side hands chunk bytes in
//! (whole table files, archives, or single ranges fetched after
//! `StreamDownloadLocations`) through a [`ChunkSource`]; this module decodes them,
//! checks every chunk against its address, and reads the few message kinds that
//! matter for refs.
//!
//! | module          | owns                                                             |
//! |-----------------|------------------------------------------------------------------|
//! | [`address`]     | chunk addresses and their base32 text form                      |
//! | [`sha512_lanes`]| SHA-512 of eight chunks at once, one per AVX-512 lane            |
//! | [`table_file`]  | classic NBS table files: footer, index, snappy + CRC32C records |
//! | [`archive`]     | `.darc` archives, and decoding one ranged download              |
//! | [`message`]     | the flatbuffers messages: StoreRoot, AddressMap, Commit, ...     |
//! | [`build`]       | encoders for those messages, for tests and crafted chunks        |
//! | [`source`]      | where chunks come from: memory, or a local `.dolt/noms`          |
//! | [`address_map`] | name → address prolly trees: read whole, or diffed node by node  |
//! | [`refs`]        | a root's ref map and the difference between two roots           |
//! | [`tables`]      | a root value's tables, and which changed in data or schema       |
//! | [`ancestry`]    | fast-forward or not, tags, working sets                          |
//! | [`verify`]      | a whole uploaded file: every chunk, and the name Dolt derives    |
//!
//! Every reader treats its input as hostile: lengths and counts are checked
//! against the bytes actually present before anything is allocated, and a chunk
//! whose bytes do not hash to the address asked for is an error, never a value.

pub mod address;
pub mod address_map;
pub mod ancestry;
pub mod archive;
pub mod build;
mod journal;
pub mod lineage;
pub mod message;
pub mod refs;
#[cfg(target_arch = "x86_64")]
pub mod sha512_lanes;
pub mod source;
pub mod table_file;
pub mod tables;
pub mod verify;

pub use address::Address;
pub use archive::{decode_range_chunk, Archive};
pub use source::{ChunkSource, DirectorySource, MemorySource};
pub use table_file::TableFile;

/// The largest chunk this module will decode. Every chunk of a `__DOLT__`
/// database is a serial message whose length is a 24-bit field
/// (`go/serial/fileidentifiers.go`), so nothing legitimate is larger than
/// 16 MiB plus its 4-byte prefix; refusing more bounds what a hostile
/// compressed record can make us allocate.
pub const MAX_CHUNK_LEN: usize = (1 << 24) + 4;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("truncated {what}: needs {needed} bytes, has {available}")]
    Truncated { what: &'static str, needed: u64, available: u64 },
    #[error("not a table file or archive: the last bytes are neither the table-file magic nor \"DOLTARC\"")]
    UnknownFileFormat,
    #[error("unsupported archive format version {0} (known: 1 to 3)")]
    UnsupportedArchiveVersion(u8),
    #[error("implausible {what}: {detail}")]
    Implausible { what: &'static str, detail: String },
    #[error("bad CRC32C on chunk {address}: stored {stored:08x}, computed {computed:08x}")]
    BadCrc { address: Address, stored: u32, computed: u32 },
    #[error("cannot decompress chunk {address}: {reason}")]
    Decompress { address: Address, reason: String },
    #[error("address mismatch: expected chunk {expected}, its bytes hash to {actual}")]
    AddressMismatch { expected: Address, actual: Address },
    #[error("missing chunk {0}")]
    MissingChunk(Address),
    #[error("not a serial message: {0}")]
    BadEnvelope(String),
    #[error("unknown file id \"{found}\" in chunk {address}, expected {expected}")]
    UnknownFileId { address: Address, found: String, expected: &'static str },
    #[error("bad flatbuffer in {id} chunk {address}: {reason}")]
    BadFlatbuffer { id: &'static str, address: Address, reason: String },
    #[error("chunk {address} would crash Dolt when it walks the chunk's addresses: {reason}")]
    Unwalkable { address: Address, reason: String },
    #[error("commit {address} does not carry the lineage Dolt would write for it: {reason}")]
    FalseLineage { address: Address, reason: String },
    #[error("bad prolly tree node {address}: {reason}")]
    BadTree { address: Address, reason: String },
    #[error("bad address text {0:?}: expected 32 characters of 0-9a-v")]
    BadAddressText(String),
    #[error("bad manifest {path}: {reason}")]
    BadManifest { path: std::path::PathBuf, reason: String },
    #[error("bad chunk journal at byte {offset}: {reason}")]
    BadJournal { offset: u64, reason: String },
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    /// A network-backed source could not fetch chunks (the upstream is down or refused).
    #[error("cannot fetch chunks: {0}")]
    Unavailable(String),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Checks that `bytes[start..start + len]` exists, naming `what` when it does not.
fn span<'a>(bytes: &'a [u8], start: u64, len: u64, what: &'static str) -> Result<&'a [u8]> {
    let end = start.checked_add(len).filter(|&end| end <= bytes.len() as u64);
    match end {
        Some(end) => Ok(&bytes[start as usize..end as usize]),
        None => Err(StorageError::Truncated { what, needed: start.saturating_add(len), available: bytes.len() as u64 }),
    }
}

/// Decoded chunk bytes not yet hashed. Only [`Unhashed::check`] and
/// [`check_each`] hand the bytes out, after checking they are the chunk
/// `expected` names, so no caller ever holds unverified chunk bytes.
pub struct Unhashed {
    expected: Address,
    bytes: Vec<u8>,
}

impl Unhashed {
    fn new(expected: &Address, bytes: Vec<u8>) -> Unhashed {
        Unhashed { expected: *expected, bytes }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn check(self) -> Result<bytes::Bytes> {
        let actual = Address::of(&self.bytes);
        self.judged(actual)
    }

    fn judged(self, actual: Address) -> Result<bytes::Bytes> {
        if actual != self.expected {
            return Err(StorageError::AddressMismatch { expected: self.expected, actual });
        }
        Ok(self.bytes.into())
    }
}

/// [`Unhashed::check`] of each chunk, in order, with the chunks hashed
/// together ([`Address::of_each`]): many at once is what a wide vector unit
/// does fastest.
pub fn check_each(chunks: Vec<Unhashed>) -> impl Iterator<Item = (Address, Result<bytes::Bytes>)> {
    let actual = Address::of_each(&chunks.iter().map(|chunk| chunk.bytes.as_slice()).collect::<Vec<_>>());
    chunks.into_iter().zip(actual).map(|(chunk, actual)| (chunk.expected, chunk.judged(actual)))
}

/// The first index in `0..len` whose key is not below `target`, for indexes
/// that are sorted by key (prefixes in table files and archives).
fn lower_bound(len: usize, key_at: impl Fn(usize) -> u64, target: u64) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        if key_at(mid) < target {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
