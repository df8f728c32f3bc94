//! The cache's directory: which files it holds, how much room they take, and
//! which go first when it is full (least recently used).
//!
//! Layout under `[cache] dir`:
//! - `v1/files/<cluster>/<store>/<name>`: finished files, each verified
//!   before it was renamed here; `<cluster>` and `<store>` (the database's
//!   directory on the Dolt server, such as `mydb/.dolt/noms`) are
//!   percent-encoded into one path segment each;
//! - `v1/tmp/`: fills in progress. Nothing there is ever served from a later
//!   process: it is emptied at start, so a killed doltgate leaves no half
//!   file behind that could be mistaken for a whole one.
//!
//! Recency lives in memory; at start files are ranked by modification time
//! (when they were filled). One doltgate process owns a directory: it holds
//! an exclusive lock on `v1/lock` while it runs, and a second process finds
//! the directory in use (and serves uncached).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::uploads::UploadName;

/// Everything but these is escaped, `.` and `/` included, so an encoded
/// segment is never `.`, `..` or a path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

const VERSION_DIR: &str = "v1";

/// One cached file: the cluster that serves it, the database's directory on
/// that cluster's members, and the file's name (`<hash>` or `<hash>.darc`;
/// the same name under `oldgen/` is the same file).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub cluster: String,
    pub store: String,
    pub name: UploadName,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.cluster, self.store, self.name)
    }
}

#[derive(Debug)]
struct Entry {
    len: u64,
    last_used: u64,
    /// When the upstream last confirmed the file's length.
    checked: Instant,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Key, Entry>,
    total: u64,
    clock: u64,
}

/// A cached file found for a request.
#[derive(Debug)]
pub struct Hit {
    pub path: PathBuf,
    pub len: u64,
    pub checked: Instant,
}

/// The cache directory and what it holds.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Held for the life of the store: the directory is this process's.
    _lock: std::fs::File,
    index: Mutex<Index>,
    max_bytes: AtomicU64,
}

impl Store {
    /// Opens (creating) `dir`: empties its temporary area, indexes the files
    /// already there and evicts down to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Store> {
        let root = dir.join(VERSION_DIR);
        std::fs::create_dir_all(&root)?;
        let lock = std::fs::File::create(root.join("lock"))?;
        lock.try_lock().map_err(|err| match err {
            std::fs::TryLockError::WouldBlock => {
                std::io::Error::other("in use by another doltgate process (one process per cache directory)")
            }
            std::fs::TryLockError::Error(err) => err,
        })?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        std::fs::create_dir_all(root.join("files"))?;
        let mut found = scan(&root)?;
        found.sort_by_key(|file| file.modified);
        let mut index = Index::default();
        for file in found {
            index.clock += 1;
            index.total += file.len;
            let entry = Entry { len: file.len, last_used: index.clock, checked: Instant::now() };
            index.entries.insert(file.key, entry);
        }
        let store = Store { root, _lock: lock, index: Mutex::new(index), max_bytes: AtomicU64::new(max_bytes) };
        store.evict(None);
        store.publish_gauges();
        Ok(store)
    }

    pub fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.evict(None);
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// The file cached under `key`, now counted as just used.
    pub fn lookup(&self, key: &Key) -> Option<Hit> {
        let mut index = self.index.lock().expect("cache index");
        index.clock += 1;
        let clock = index.clock;
        let entry = index.entries.get_mut(key)?;
        entry.last_used = clock;
        Some(Hit { path: self.path_of(key), len: entry.len, checked: entry.checked })
    }

    /// The upstream confirmed `key`'s length just now.
    pub fn mark_checked(&self, key: &Key) {
        if let Some(entry) = self.index.lock().expect("cache index").entries.get_mut(key) {
            entry.checked = Instant::now();
        }
    }

    /// A new file in the temporary area, for a fill.
    pub fn temp_file(&self) -> std::io::Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.root.join("tmp"))
    }

    /// Moves a verified fill into place under `key` and makes room for it.
    pub fn publish(&self, key: &Key, file: tempfile::NamedTempFile, len: u64) -> std::io::Result<()> {
        let path = self.path_of(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        file.as_file().sync_all()?;
        file.persist(&path).map_err(|e| e.error)?;
        {
            let mut index = self.index.lock().expect("cache index");
            index.clock += 1;
            let entry = Entry { len, last_used: index.clock, checked: Instant::now() };
            if let Some(old) = index.entries.insert(key.clone(), entry) {
                index.total -= old.len;
            }
            index.total += len;
        }
        self.evict(Some(key));
        self.publish_gauges();
        Ok(())
    }

    /// Drops `key` (the upstream no longer agrees with it, or it cannot be read).
    pub fn forget(&self, key: &Key) {
        let removed = {
            let mut index = self.index.lock().expect("cache index");
            let removed = index.entries.remove(key);
            if let Some(entry) = &removed {
                index.total -= entry.len;
            }
            removed
        };
        if removed.is_some() {
            let _ = std::fs::remove_file(self.path_of(key));
            self.publish_gauges();
        }
    }

    /// Removes least recently used files until the total fits, sparing `keep`.
    fn evict(&self, keep: Option<&Key>) {
        let max = self.max_bytes();
        let mut victims = Vec::new();
        {
            let mut index = self.index.lock().expect("cache index");
            while index.total > max {
                let oldest = index
                    .entries
                    .iter()
                    .filter(|(key, _)| Some(*key) != keep)
                    .min_by_key(|(_, entry)| entry.last_used)
                    .map(|(key, _)| key.clone());
                let Some(oldest) = oldest else { break };
                let entry = index.entries.remove(&oldest).expect("listed");
                index.total -= entry.len;
                victims.push(oldest);
            }
        }
        // A reader that has the file open keeps reading it after the unlink.
        for key in &victims {
            let _ = std::fs::remove_file(self.path_of(key));
            tracing::debug!(file = %key, "evicted from the edge cache");
        }
        crate::metrics::metrics().cache_evictions.inc_by(victims.len() as u64);
        if !victims.is_empty() {
            self.publish_gauges();
        }
    }

    fn publish_gauges(&self) {
        let (files, total) = {
            let index = self.index.lock().expect("cache index");
            (index.entries.len(), index.total)
        };
        let metrics = crate::metrics::metrics();
        metrics.cache_files.set(files as i64);
        metrics.cache_size_bytes.set(total as i64);
    }

    fn path_of(&self, key: &Key) -> PathBuf {
        self.root.join("files").join(encode(&key.cluster)).join(encode(&key.store)).join(key.name.to_string())
    }
}

fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, SEGMENT).to_string()
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment).decode_utf8().ok().map(|s| s.into_owned())
}

struct Found {
    key: Key,
    len: u64,
    modified: SystemTime,
}

/// Every file under `root/files` that is named as a cache entry.
fn scan(root: &Path) -> std::io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for cluster in subdirectories(&root.join("files"))? {
        for store in subdirectories(&cluster)? {
            for file in std::fs::read_dir(&store)? {
                let file = file?;
                let meta = file.metadata()?;
                let name = file.file_name().to_str().and_then(|n| UploadName::from_file_name(n).ok());
                let segment = |dir: &Path| dir.file_name().and_then(|n| n.to_str()).and_then(decode);
                if let (true, Some(name), Some(cluster), Some(store)) =
                    (meta.is_file(), name, segment(&cluster), segment(&store))
                {
                    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    found.push(Found { key: Key { cluster, store, name }, len: meta.len(), modified });
                }
            }
        }
    }
    Ok(found)
}

fn subdirectories(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// What a cache directory holds for one database directory of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    pub cluster: String,
    pub store: String,
    pub files: usize,
    pub bytes: u64,
}

/// `doltgate cache stats`: the cached files of `dir`, by cluster and database directory.
pub fn stats(dir: &Path) -> std::io::Result<Vec<StoreStats>> {
    let root = dir.join(VERSION_DIR);
    if !root.join("files").is_dir() {
        return Ok(Vec::new());
    }
    let mut by_store: std::collections::BTreeMap<(String, String), (usize, u64)> = Default::default();
    for file in scan(&root)? {
        let totals = by_store.entry((file.key.cluster, file.key.store)).or_default();
        totals.0 += 1;
        totals.1 += file.len;
    }
    Ok(by_store
        .into_iter()
        .map(|((cluster, store), (files, bytes))| StoreStats { cluster, store, files, bytes })
        .collect())
}

/// `doltgate cache purge`: removes every cached file and unfinished fill of
/// `dir`; returns how many files and bytes went.
pub fn purge(dir: &Path) -> std::io::Result<(usize, u64)> {
    let root = dir.join(VERSION_DIR);
    let gone = stats(dir)?.iter().fold((0, 0), |(files, bytes), s| (files + s.files, bytes + s.bytes));
    for area in ["files", "tmp"] {
        let path = root.join(area);
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::verify::FileKind;
    use crate::storage::Address;

    fn key(n: u8) -> Key {
        let name = UploadName { name: Address([n; 20]), kind: FileKind::Archive };
        Key { cluster: "eu".into(), store: "my db/.dolt/noms".into(), name }
    }

    fn fill(store: &Store, key: &Key, len: usize) {
        let mut file = store.temp_file().unwrap();
        std::io::Write::write_all(&mut file, &vec![7u8; len]).unwrap();
        store.publish(key, file, len as u64).unwrap();
    }

    #[test]
    fn least_recently_used_files_go_first_and_the_layout_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 250).unwrap();
        fill(&store, &key(1), 100);
        fill(&store, &key(2), 100);
        assert!(store.lookup(&key(1)).is_some(), "touch 1, so 2 is the oldest");
        fill(&store, &key(3), 100);
        assert!(store.lookup(&key(2)).is_none(), "evicted");
        let hit = store.lookup(&key(1)).unwrap();
        assert_eq!((hit.len, std::fs::read(&hit.path).unwrap().len()), (100, 100));
        assert!(!hit.path.to_string_lossy().contains("/.dolt/"), "the store is one escaped segment: {hit:?}");

        // A fill left in the temporary area by a killed process is removed, not indexed.
        let mut half = store.temp_file().unwrap();
        std::io::Write::write_all(&mut half, b"half").unwrap();
        let (_, half_path) = half.keep().unwrap();
        drop(store);
        let reopened = Store::open(dir.path(), 250).unwrap();
        let second = Store::open(dir.path(), 250).unwrap_err();
        assert!(second.to_string().contains("in use by another doltgate process"), "{second}");
        assert!(!half_path.exists());
        assert!(reopened.lookup(&key(1)).is_some() && reopened.lookup(&key(3)).is_some());
        assert_eq!(
            stats(dir.path()).unwrap(),
            vec![StoreStats { cluster: "eu".into(), store: "my db/.dolt/noms".into(), files: 2, bytes: 200 }]
        );

        reopened.set_max_bytes(100);
        assert_eq!(stats(dir.path()).unwrap()[0].files, 1, "shrinking evicts");
        assert_eq!(purge(dir.path()).unwrap(), (1, 100));
        assert!(stats(dir.path()).unwrap().is_empty());
    }
}
