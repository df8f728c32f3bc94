//! Where chunks come from. Readers ask for a whole batch of addresses at once
//! (every changed node of one tree level), so a network-backed source can turn
//! a batch into one round of ranged downloads.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use super::archive::Archive;
use super::journal::{Journal, JOURNAL_NAME};
use super::table_file::TableFile;
use super::{Address, Result, StorageError};

/// A store of chunks by address.
///
/// Contract: every value returned hashes to its key (decoders in this module
/// check that before returning bytes), and addresses the source does not hold
/// are left out of the map rather than reported as errors; [`get_all`] turns
/// absence into [`StorageError::MissingChunk`].
pub trait ChunkSource: Sync {
    fn get(&self, addresses: &[Address]) -> impl Future<Output = Result<HashMap<Address, Bytes>>> + Send;
}

impl<S: ChunkSource> ChunkSource for &S {
    fn get(&self, addresses: &[Address]) -> impl Future<Output = Result<HashMap<Address, Bytes>>> + Send {
        (**self).get(addresses)
    }
}

/// Every one of `addresses`, or an error naming the first that is missing.
pub async fn get_all<S: ChunkSource>(source: &S, addresses: &[Address]) -> Result<HashMap<Address, Bytes>> {
    let found = source.get(addresses).await?;
    match addresses.iter().find(|a| !found.contains_key(a)) {
        Some(missing) => Err(StorageError::MissingChunk(*missing)),
        None => Ok(found),
    }
}

/// One chunk, or [`StorageError::MissingChunk`].
pub async fn get_one<S: ChunkSource>(source: &S, address: &Address) -> Result<Bytes> {
    let mut found = get_all(source, std::slice::from_ref(address)).await?;
    Ok(found.remove(address).expect("get_all returns every address"))
}

/// Counts what passes through, so callers can report how much a walk read.
#[derive(Debug)]
pub struct CountingSource<S> {
    inner: S,
    chunks: AtomicUsize,
    batches: AtomicUsize,
}

impl<S: ChunkSource> CountingSource<S> {
    pub fn new(inner: S) -> CountingSource<S> {
        CountingSource { inner, chunks: AtomicUsize::new(0), batches: AtomicUsize::new(0) }
    }

    /// Chunks returned so far.
    pub fn chunks(&self) -> usize {
        self.chunks.load(Ordering::Relaxed)
    }

    /// Calls to `get` so far: round trips, for a network source.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
}

impl<S: ChunkSource> ChunkSource for CountingSource<S> {
    async fn get(&self, addresses: &[Address]) -> Result<HashMap<Address, Bytes>> {
        let found = self.inner.get(addresses).await?;
        self.chunks.fetch_add(found.len(), Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(found)
    }
}

/// Keeps what it fetched, so one walk after another over the same store
/// (ancestry, integrity, rules on commits, table rules) reads each chunk from
/// a network source once. Past `budget` bytes it keeps nothing more and only
/// passes requests through, so memory stays bounded whatever a push holds.
pub struct CachingSource<S> {
    inner: S,
    kept: std::sync::Mutex<(HashMap<Address, Bytes>, usize)>,
    budget: usize,
}

impl<S: ChunkSource> CachingSource<S> {
    pub fn new(inner: S, budget: usize) -> CachingSource<S> {
        CachingSource { inner, kept: std::sync::Mutex::new((HashMap::new(), 0)), budget }
    }
}

impl<S: ChunkSource> ChunkSource for CachingSource<S> {
    async fn get(&self, addresses: &[Address]) -> Result<HashMap<Address, Bytes>> {
        let (mut found, missing) = {
            let kept = self.kept.lock().expect("chunk cache");
            let found: HashMap<Address, Bytes> =
                addresses.iter().filter_map(|a| kept.0.get(a).map(|chunk| (*a, chunk.clone()))).collect();
            let missing: Vec<Address> = addresses.iter().filter(|a| !found.contains_key(*a)).copied().collect();
            (found, missing)
        };
        if missing.is_empty() {
            return Ok(found);
        }
        let fetched = self.inner.get(&missing).await?;
        let mut kept = self.kept.lock().expect("chunk cache");
        for (address, chunk) in &fetched {
            if kept.1 + chunk.len() <= self.budget && kept.0.insert(*address, chunk.clone()).is_none() {
                kept.1 += chunk.len();
            }
        }
        found.extend(fetched);
        Ok(found)
    }
}

/// A table file or an archive, told apart by their footers.
#[derive(Debug)]
pub enum ChunkFile {
    Table(TableFile),
    Archive(Archive),
}

impl ChunkFile {
    pub fn parse(bytes: Bytes) -> Result<ChunkFile> {
        if bytes.ends_with(super::archive::ARCHIVE_SIGNATURE) {
            return Archive::parse(bytes).map(ChunkFile::Archive);
        }
        TableFile::parse(bytes).map(ChunkFile::Table)
    }

    pub fn get(&self, address: &Address) -> Result<Option<Bytes>> {
        match self {
            ChunkFile::Table(table) => table.get(address),
            ChunkFile::Archive(archive) => archive.get(address),
        }
    }

    pub fn chunk_count(&self) -> usize {
        match self {
            ChunkFile::Table(table) => table.index().chunk_count(),
            ChunkFile::Archive(archive) => archive.chunk_count(),
        }
    }
}

/// Chunks held in memory: single chunks, and whole files (such as an upload
/// that passed through the gateway), decoded on demand.
#[derive(Debug, Default)]
pub struct MemorySource {
    chunks: HashMap<Address, Bytes>,
    files: Vec<ChunkFile>,
}

impl MemorySource {
    pub fn new() -> MemorySource {
        MemorySource::default()
    }

    /// Stores one chunk under the address its bytes hash to.
    pub fn insert(&mut self, chunk: impl Into<Bytes>) -> Address {
        let chunk = chunk.into();
        let address = Address::of(&chunk);
        self.chunks.insert(address, chunk);
        address
    }

    /// Adds a whole table file or archive; returns how many chunks it holds.
    pub fn add_file(&mut self, bytes: Bytes) -> Result<usize> {
        let file = ChunkFile::parse(bytes)?;
        let count = file.chunk_count();
        self.files.push(file);
        Ok(count)
    }

    fn get_one(&self, address: &Address) -> Result<Option<Bytes>> {
        if let Some(chunk) = self.chunks.get(address) {
            return Ok(Some(chunk.clone()));
        }
        first_hit(self.files.iter().map(|f| f.get(address)))
    }
}

impl ChunkSource for MemorySource {
    async fn get(&self, addresses: &[Address]) -> Result<HashMap<Address, Bytes>> {
        collect(addresses, |a| self.get_one(a))
    }
}

fn collect(addresses: &[Address], get: impl Fn(&Address) -> Result<Option<Bytes>>) -> Result<HashMap<Address, Bytes>> {
    let mut found = HashMap::with_capacity(addresses.len());
    for address in addresses {
        if let Some(chunk) = get(address)? {
            found.insert(*address, chunk);
        }
    }
    Ok(found)
}

/// The first file that holds a chunk answers; an error in one stops the search.
fn first_hit(mut lookups: impl Iterator<Item = Result<Option<Bytes>>>) -> Result<Option<Bytes>> {
    lookups.find_map(Result::transpose).transpose()
}

/// A local `.dolt/noms` directory: its manifest's table files and archives,
/// those of `oldgen/` (where `dolt gc` moves history), and the chunk journal.
/// Everything is read into memory at open; this serves tests and tools, not
/// a gateway's hot path.
#[derive(Debug)]
pub struct DirectorySource {
    root: Address,
    format: String,
    files: Vec<ChunkFile>,
    journal: Option<Journal>,
}

/// What a manifest says (`go/store/nbs/file_manifest.go`):
/// `5:<format>:<lock>:<root>:<gc generation>:<file>:<chunk count>:...`, or
/// version 4 without the GC generation.
#[derive(Debug)]
struct Manifest {
    format: String,
    root: Address,
    files: Vec<String>,
}

impl Manifest {
    fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| io(path, source))?;
        let bad = |reason: String| StorageError::BadManifest { path: path.to_owned(), reason };
        let fields: Vec<&str> = text.trim_end().split(':').collect();
        let header = match fields.first() {
            Some(&"5") => 5,
            Some(&"4") => 4,
            other => return Err(bad(format!("unknown manifest version {other:?}"))),
        };
        if fields.len() < header || !(fields.len() - header).is_multiple_of(2) {
            return Err(bad(format!("{} fields do not make a version-{header} manifest", fields.len())));
        }
        let root = fields[3].parse().map_err(|e: StorageError| bad(e.to_string()))?;
        let files = fields[header..].chunks_exact(2).map(|pair| pair[0].to_owned()).collect();
        Ok(Manifest { format: fields[1].to_owned(), root, files })
    }
}

fn io(path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io { path: path.to_owned(), source }
}

impl DirectorySource {
    /// Opens `noms`, e.g. `<repo>/.dolt/noms` or a `file://` remote's directory.
    pub fn open(noms: &Path) -> Result<DirectorySource> {
        let manifest = Manifest::read(&noms.join("manifest"))?;
        let mut source =
            DirectorySource { root: manifest.root, format: manifest.format, files: Vec::new(), journal: None };
        source.load(noms, &manifest.files)?;
        let oldgen = noms.join("oldgen");
        if oldgen.join("manifest").is_file() {
            source.load(&oldgen, &Manifest::read(&oldgen.join("manifest"))?.files)?;
        }
        if let Some(root) = source.journal.as_ref().and_then(Journal::root) {
            source.root = root;
        }
        Ok(source)
    }

    fn load(&mut self, dir: &Path, names: &[String]) -> Result<()> {
        for name in names {
            if name == JOURNAL_NAME {
                self.journal = Some(Journal::parse(read(&dir.join(name))?)?);
                continue;
            }
            let table = dir.join(name);
            let path = if table.is_file() { table } else { dir.join(format!("{name}.darc")) };
            self.files.push(ChunkFile::parse(read(&path)?)?);
        }
        Ok(())
    }

    /// The current root: the journal's newest root record, else the manifest's.
    pub fn root(&self) -> Address {
        self.root
    }

    /// The manifest's format, `__DOLT__` for every database Dolt writes today.
    pub fn format(&self) -> &str {
        &self.format
    }

    pub fn files(&self) -> &[ChunkFile] {
        &self.files
    }

    /// Chunks in the journal, 0 when there is none.
    pub fn journal_chunk_count(&self) -> usize {
        self.journal.as_ref().map_or(0, Journal::chunk_count)
    }

    fn get_one(&self, address: &Address) -> Result<Option<Bytes>> {
        let journal = self.journal.iter().map(|j| j.get(address));
        first_hit(journal.chain(self.files.iter().map(|f| f.get(address))))
    }
}

fn read(path: &PathBuf) -> Result<Bytes> {
    std::fs::read(path).map(Bytes::from).map_err(|source| io(path, source))
}

impl ChunkSource for DirectorySource {
    async fn get(&self, addresses: &[Address]) -> Result<HashMap<Address, Bytes>> {
        collect(addresses, |a| self.get_one(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::journal::tests::{chunk_record, root_record};
    use crate::storage::{archive, table_file};

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn a_caching_source_fetches_each_chunk_once_within_its_budget() {
        let mut memory = MemorySource::new();
        let (small, large) = (memory.insert(Bytes::from_static(b"small")), memory.insert(vec![7u8; 100]));
        let counting = CountingSource::new(&memory);
        let cache = CachingSource::new(&counting, 50);
        let absent = Address::of(b"absent");
        for _ in 0..3 {
            let found = block_on(cache.get(&[small, large, absent])).unwrap();
            assert_eq!(found.len(), 2, "what the source lacks stays absent");
        }
        // `small` came once; `large` is over the budget, so it is fetched every time.
        assert_eq!(counting.chunks(), 1 + 3);
        assert_eq!(block_on(get_one(&cache, &small)).unwrap(), Bytes::from_static(b"small"));
        assert_eq!(counting.batches(), 3);
    }

    #[test]
    fn memory_source_serves_chunks_and_files() {
        let mut source = MemorySource::new();
        let single = source.insert(Bytes::from_static(b"single"));
        let table = table_file::tests::build(&[b"in a table".as_slice()]);
        let darc = archive::tests::build(&[b"in an archive".as_slice(), b"also archived".as_slice()], 3);
        assert_eq!(source.add_file(table.into()).unwrap(), 1);
        assert_eq!(source.add_file(darc.into()).unwrap(), 2);
        let wanted = [single, Address::of(b"in a table"), Address::of(b"in an archive"), Address::of(b"absent")];
        let found = block_on(source.get(&wanted)).unwrap();
        assert_eq!(found.len(), 3);
        assert_eq!(found[&wanted[2]], b"in an archive".as_slice());
        let error = block_on(get_all(&source, &wanted)).unwrap_err();
        assert_eq!(error.to_string(), format!("missing chunk {}", wanted[3]));
        assert!(source.add_file(Bytes::from_static(b"neither kind of file at all")).is_err());
    }

    #[test]
    fn counting_source_counts_chunks_and_round_trips() {
        let mut memory = MemorySource::new();
        let a = memory.insert(Bytes::from_static(b"a"));
        let b = memory.insert(Bytes::from_static(b"b"));
        let counting = CountingSource::new(&memory);
        block_on(get_all(&counting, &[a, b])).unwrap();
        block_on(get_one(&counting, &a)).unwrap();
        assert_eq!((counting.chunks(), counting.batches()), (3, 2));
    }

    #[test]
    fn directory_source_reads_manifests_oldgen_and_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let noms = dir.path();
        let table = table_file::tests::build(&[b"new table chunk".as_slice()]);
        let darc = archive::tests::build(&[b"old archived chunk".as_slice()], 3);
        let journal = [chunk_record(b"journal chunk"), root_record(Address::of(b"journal chunk"))].concat();
        let (table_name, darc_name) = ("0".repeat(32), "1".repeat(32));
        std::fs::write(noms.join(&table_name), table).unwrap();
        std::fs::write(noms.join(JOURNAL_NAME), journal).unwrap();
        let manifest_root = Address::of(b"manifest root");
        let manifest =
            format!("5:__DOLT__:{}:{manifest_root}:{}:{table_name}:1:{JOURNAL_NAME}:1", "2".repeat(32), "0".repeat(32));
        std::fs::write(noms.join("manifest"), manifest).unwrap();
        std::fs::create_dir(noms.join("oldgen")).unwrap();
        std::fs::write(noms.join("oldgen").join(format!("{darc_name}.darc")), darc).unwrap();
        let old_manifest = format!("5:__DOLT__:{0}:{0}:{0}:{darc_name}:1", "3".repeat(32));
        std::fs::write(noms.join("oldgen/manifest"), old_manifest).unwrap();

        let source = DirectorySource::open(noms).unwrap();
        assert_eq!(source.root(), Address::of(b"journal chunk"));
        assert_eq!(source.format(), "__DOLT__");
        assert_eq!((source.files().len(), source.journal_chunk_count()), (2, 1));
        let wanted: Vec<Address> =
            [b"new table chunk".as_slice(), b"old archived chunk", b"journal chunk"].map(Address::of).to_vec();
        assert_eq!(block_on(get_all(&source, &wanted)).unwrap().len(), 3);
    }

    #[test]
    fn directory_source_names_a_bad_manifest() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("9:x", "unknown manifest version"),
            ("5:__DOLT__:a:b", "fields"),
            ("5:__DOLT__:a:b:c", "bad address text"),
        ] {
            std::fs::write(dir.path().join("manifest"), text).unwrap();
            let error = DirectorySource::open(dir.path()).unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
        let error = DirectorySource::open(&dir.path().join("absent")).unwrap_err();
        assert!(error.to_string().contains("manifest"), "{error}");
    }
}
