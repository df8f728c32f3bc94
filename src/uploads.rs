//! Table-file uploads, checked before Dolt may keep them.
//!
//! Dolt stores whatever it is sent: an upload is renamed over any file of the
//! same name in the store (the chunk journal included), and nothing hashes a
//! chunk against its address. So doltgate judges every upload on its way:
//!
//! - the name must be one Dolt would write: 20 bytes (32 base32 characters),
//!   no suffix (a table file) or `.darc` (an archive), never the journal's
//!   all-ones name; upload locations are refused for anything else;
//! - the body passes to Dolt as it arrives and is spooled to local disk,
//!   except its last frame, which is held back. Dolt writes an upload to a
//!   temporary file and renames it into the store only once the body has ended
//!   (`go/store/nbs/file_table_persister.go`), so when the spooled file fails
//!   [`verify`](crate::storage::verify) the upstream body is aborted instead
//!   and nothing reaches the store;
//! - registration (`AddTableFiles`, and the files a Commit names) is accepted
//!   for files verified on their way in or already in the store's manifest.
//!
//! Memory stays bounded by a few frames in flight; disk by `uploads.max_file_bytes`
//! (times the spool files in use and kept, [`SpoolFiles`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};

use crate::config::{invalid, ConfigError, UploadsConfig, MIN_MAX_FILE_BYTES};
pub use crate::error::UploadRefused;
use crate::remotesapi::proto::{ChunkTableInfo, GetUploadLocsRequest};
use crate::storage::verify::{verify_hashed, DiskFile, FileKind, Verified};
use crate::storage::Address;
use crate::upstream::repo::UpstreamRepo;
use crate::upstream::UpstreamBody;
use crate::BoxError;

/// The chunk journal's name in a store directory: the all-ones address, 32
/// `v`s in Dolt's base32 (`go/store/nbs/journal_writer.go`). sql-server
/// appends to it and lists it among the store's files; it is never uploaded.
pub const JOURNAL: Address = Address([0xff; 20]);

/// How many frames may wait between the client and the upstream.
const FRAMES_IN_FLIGHT: usize = 8;
/// Spool writes are batched this much, so a gigabyte is not a million syscalls.
const SPOOL_BUFFER: usize = 1 << 20;

/// A file name Dolt could store, as an address and a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadName {
    pub name: Address,
    pub kind: FileKind,
}

impl std::fmt::Display for UploadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.name, self.kind.suffix())
    }
}

impl UploadName {
    /// From `GetUploadLocations`' `table_file_details`: the raw id and its suffix.
    pub fn from_id(id: &[u8], suffix: &str) -> Result<UploadName, UploadRefused> {
        let name = Address::from_slice(id).ok_or(UploadRefused::BadIdLength(id.len()))?;
        let kind = match suffix {
            "" => FileKind::Table,
            ".darc" => FileKind::Archive,
            other => return Err(UploadRefused::BadSuffix(crate::authn::shown(other))),
        };
        UploadName::checked(name, kind)
    }

    /// From the last segment of an upload URL's path, `<id>` or `<id>.darc`.
    pub fn from_file_name(file: &str) -> Result<UploadName, UploadRefused> {
        let (stem, kind) = match file.strip_suffix(".darc") {
            Some(stem) => (stem, FileKind::Archive),
            None => (file, FileKind::Table),
        };
        let name = stem.parse::<Address>().map_err(|_| UploadRefused::BadName(crate::authn::shown(file)))?;
        UploadName::checked(name, kind)
    }

    /// From an upload URL's path: the file is its last segment.
    pub fn from_upload_path(path: &str) -> Result<UploadName, UploadRefused> {
        let path = path.split('?').next().unwrap_or_default();
        UploadName::from_file_name(path.rsplit('/').next().unwrap_or_default())
    }

    fn checked(name: Address, kind: FileKind) -> Result<UploadName, UploadRefused> {
        if name == JOURNAL {
            return Err(UploadRefused::Journal(format!("{name}{}", kind.suffix())));
        }
        Ok(UploadName { name, kind })
    }
}

/// The chunk count an upload URL's query claims (`num_chunks`), if any.
pub fn claimed_chunk_count(path_and_query: &str) -> Option<u64> {
    let query = path_and_query.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix("num_chunks=")).and_then(|n| n.parse().ok())
}

/// Where and how large uploads may be spooled.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    pub spool_files: Arc<SpoolFiles>,
    pub max_file_bytes: u64,
    /// Tighter limits by database: patterns (lower-cased), limit, config key.
    per_database: Vec<(Vec<glob::Pattern>, u64, String)>,
}

/// The limit on one upload to a database, and the setting it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimit {
    pub bytes: u64,
    pub key: String,
    pub database: String,
}

impl UploadLimit {
    /// The refusal of `name`, which is (at least) `size` bytes.
    pub fn refuse(&self, name: impl ToString, size: impl ToString) -> UploadRefused {
        UploadRefused::TooLarge {
            name: name.to_string(),
            size: size.to_string(),
            limit: self.bytes,
            key: self.key.clone(),
            database: self.database.clone(),
        }
    }
}

impl UploadSettings {
    /// The `[uploads]` section: a spool directory that exists, and room for
    /// the largest file Dolt writes.
    pub fn build(config: &UploadsConfig) -> Result<UploadSettings, ConfigError> {
        if config.max_file_bytes < MIN_MAX_FILE_BYTES {
            return Err(invalid(
                "uploads.max_file_bytes",
                format!("must be at least {MIN_MAX_FILE_BYTES} (Dolt writes archives of up to 1 GiB)"),
            ));
        }
        if let Some(dir) = &config.spool_dir {
            if !dir.is_dir() {
                return Err(invalid("uploads.spool_dir", format!("{} is not a directory", dir.display())));
            }
        }
        let per_database = config
            .databases
            .iter()
            .enumerate()
            .map(|(i, limit)| {
                let key = format!("uploads.databases[{i}]");
                if limit.databases.is_empty() {
                    return Err(invalid(format!("{key}.databases"), "name at least one pattern"));
                }
                if limit.max_file_bytes == 0 || limit.max_file_bytes > config.max_file_bytes {
                    let why = format!("must be between 1 and uploads.max_file_bytes ({})", config.max_file_bytes);
                    return Err(invalid(format!("{key}.max_file_bytes"), why));
                }
                let patterns = limit
                    .databases
                    .iter()
                    .map(|p| glob::Pattern::new(&p.to_lowercase()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(format!("{key}.databases"), e.to_string()))?;
                Ok((patterns, limit.max_file_bytes, format!("{key}.max_file_bytes")))
            })
            .collect::<Result<_, _>>()?;
        let spool_dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        Ok(UploadSettings {
            spool_files: SpoolFiles::new(spool_dir, config.spool_files_kept),
            max_file_bytes: config.max_file_bytes,
            per_database,
        })
    }

    /// The limit on one upload to `database` (as Dolt resolves it): the
    /// smallest per-database limit that matches, else `max_file_bytes`.
    pub fn limit_for(&self, database: &str) -> UploadLimit {
        let lowered = database.to_lowercase();
        let matching = self.per_database.iter().filter(|(patterns, _, _)| patterns.iter().any(|p| p.matches(&lowered)));
        let (bytes, key) = matching
            .map(|(_, bytes, key)| (*bytes, key.as_str()))
            .min_by_key(|(bytes, _)| *bytes)
            .unwrap_or((self.max_file_bytes, "uploads.max_file_bytes"));
        UploadLimit { bytes, key: key.to_owned(), database: database.to_owned() }
    }
}

/// Spool files, kept open (and unlinked) between uploads so the next upload
/// rewrites pages the page cache already holds. A new file needs new pages
/// for every byte, and where a hypervisor backs guest memory lazily and takes
/// freed pages back (virtio-balloon free page reporting), writing a gigabyte
/// into new pages costs several times the copy itself, on the core the relay
/// and the verifier need. A kept file holds the disk space of the largest
/// upload it carried until doltgate stops or a reload replaces the set.
#[derive(Debug)]
pub struct SpoolFiles {
    dir: PathBuf,
    keep: usize,
    idle: Mutex<Vec<std::fs::File>>,
}

impl SpoolFiles {
    pub fn new(dir: PathBuf, keep: usize) -> Arc<SpoolFiles> {
        Arc::new(SpoolFiles { dir, keep, idle: Mutex::new(Vec::new()) })
    }

    /// A kept file, or a new one, positioned at its start. Only the bytes an
    /// upload writes are ever read back ([`DiskFile::len`]), so what a longer
    /// earlier upload left past them does not matter.
    pub fn take(self: &Arc<Self>) -> Result<SpoolFile, UploadRefused> {
        use std::io::Seek;
        let spool_error = |e: std::io::Error| UploadRefused::Spool(format!("{}: {e}", self.dir.display()));
        let kept = self.idle.lock().expect("spool file list").pop();
        let mut file = match kept {
            Some(file) => file,
            None => tempfile::tempfile_in(&self.dir).map_err(spool_error)?,
        };
        file.rewind().map_err(spool_error)?;
        Ok(SpoolFile { file: Some(file), home: Arc::clone(self) })
    }

    /// The directory the files are made in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.idle.lock().expect("spool file list").len()
    }
}

/// A spool file in use; it goes back to its [`SpoolFiles`] when dropped.
pub struct SpoolFile {
    file: Option<std::fs::File>,
    home: Arc<SpoolFiles>,
}

impl std::ops::Deref for SpoolFile {
    type Target = std::fs::File;

    fn deref(&self) -> &std::fs::File {
        self.file.as_ref().expect("present until dropped")
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let mut idle = self.home.idle.lock().expect("spool file list");
        if idle.len() < self.home.keep {
            idle.extend(self.file.take());
        }
    }
}

/// An upload on its way: the body to send upstream, and the verdict, which
/// arrives once the client's body has ended and the spooled file is judged.
pub struct GuardedUpload {
    pub body: UpstreamBody,
    pub verdict: oneshot::Receiver<Result<Verified, UploadRefused>>,
}

/// Starts passing `client` upstream through the spool and the verifier.
pub fn guard(
    client: Incoming,
    name: UploadName,
    claimed_chunks: Option<u64>,
    settings: &UploadSettings,
    limit: UploadLimit,
) -> Result<GuardedUpload, UploadRefused> {
    let spool = settings.spool_files.take()?;
    let (frames, receiver) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(FRAMES_IN_FLIGHT);
    let (verdict_sender, verdict) = oneshot::channel();
    let job = Pump { name, claimed_chunks, limit, path: settings.spool_files.dir().to_owned() };
    tokio::spawn(async move {
        let verdict = job.run(client, spool, &frames).await;
        if verdict.is_err() {
            // An error frame makes hyper abort the upstream request mid-body,
            // so Dolt never renames the file into its store.
            let _ = frames.send(Err("upload refused by doltgate".into())).await;
        }
        let _ = verdict_sender.send(verdict);
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|frame| (frame, receiver))
    });
    Ok(GuardedUpload { body: StreamBody::new(stream).boxed_unsync(), verdict })
}

struct Pump {
    name: UploadName,
    claimed_chunks: Option<u64>,
    limit: UploadLimit,
    path: PathBuf,
}

type FrameSender = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

impl Pump {
    async fn run(
        self,
        mut client: Incoming,
        spool: SpoolFile,
        frames: &FrameSender,
    ) -> Result<Verified, UploadRefused> {
        let spool_error = |e: std::io::Error| UploadRefused::Spool(format!("{}: {e}", self.path.display()));
        // Writing the spool and hashing the whole file (an archive's name) run
        // on a thread of their own, beside the relay, on another core if there
        // is one. That thread owns the file until its last write, so the file
        // goes back to `SpoolFiles` for another upload only when nothing writes
        // to it, however this upload ends.
        let (to_spool, spooled) = mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
        let spooler = tokio::task::spawn_blocking({
            let hash = self.name.kind == FileKind::Archive;
            move || spool_and_hash(&*spool, spooled, hash, None).map(|whole_file| (spool, whole_file))
        });
        let mut held: Option<Bytes> = None;
        let mut total = 0u64;
        while let Some(frame) = client.frame().await {
            let frame = frame.map_err(|e| UploadRefused::ClientBody(e.to_string()))?;
            let Ok(data) = frame.into_data() else { continue };
            total += data.len() as u64;
            if total > self.limit.bytes {
                return Err(self.limit.refuse(self.name, format!("more than {} bytes", self.limit.bytes)));
            }
            if to_spool.send(data.clone()).await.is_err() {
                break; // The spooler stopped on an error, which it returns below.
            }
            if let Some(previous) = held.replace(data) {
                frames.send(Ok(Frame::data(previous))).await.map_err(|_| UploadRefused::UpstreamGone)?;
            }
        }
        drop(to_spool);
        let (spool, whole_file) =
            spooler.await.map_err(|e| UploadRefused::Spool(format!("spooler stopped: {e}")))?.map_err(spool_error)?;
        let (name, path) = (self.name, self.path.clone());
        let reader = spool.try_clone().map_err(spool_error)?;
        let verified = tokio::task::spawn_blocking(move || {
            let verdict = verify_hashed(&DiskFile { file: reader, len: total, path }, name.name, name.kind, whole_file);
            drop(spool); // Kept for the next upload only once nothing reads it.
            verdict
        })
        .await
        .map_err(|e| UploadRefused::Spool(format!("verifier stopped: {e}")))??;
        if let Some(claimed) = self.claimed_chunks.filter(|&c| c != verified.chunk_count as u64) {
            return Err(UploadRefused::ChunkCount { name: name.to_string(), claimed, actual: verified.chunk_count });
        }
        if let Some(last) = held {
            frames.send(Ok(Frame::data(last))).await.map_err(|_| UploadRefused::UpstreamGone)?;
        }
        Ok(verified)
    }
}

/// Writes every frame from `frames` to `spool` and, when `hash`, returns the
/// SHA-512 address of all of them. With `on_written`, every frame reaches
/// the file before the callback hears how many bytes are there (readers
/// follow the file as it grows); without, writes are batched.
pub(crate) fn spool_and_hash(
    spool: impl std::io::Write,
    mut frames: mpsc::Receiver<Bytes>,
    hash: bool,
    on_written: Option<&dyn Fn(u64)>,
) -> std::io::Result<Option<Address>> {
    use std::io::Write;
    let capacity = if on_written.is_some() { 0 } else { SPOOL_BUFFER };
    let mut writer = std::io::BufWriter::with_capacity(capacity, spool);
    let mut hasher = hash.then(crate::storage::address::Hasher::new);
    let mut written = 0u64;
    while let Some(data) = frames.blocking_recv() {
        writer.write_all(&data)?;
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&data);
        }
        written += data.len() as u64;
        if let Some(report) = on_written {
            report(written);
        }
    }
    writer.flush()?;
    Ok(hasher.map(|hasher| hasher.finish()))
}

/// Files this process verified on their way in, by endpoint, so their
/// registration can be accepted. Kept across configuration reloads.
pub struct VerifiedUploads {
    seen: Mutex<HashMap<(String, Address), Instant>>,
}

/// How long a verified upload may wait for its registration: longer than any
/// upload URL lives (Dolt seals them for 15 minutes).
const REMEMBER_FOR: Duration = Duration::from_secs(2 * 60 * 60);
/// A bound on what is remembered; the oldest half goes when it is reached.
const REMEMBER_AT_MOST: usize = 100_000;

impl VerifiedUploads {
    /// The one registry of this process.
    pub fn get() -> &'static VerifiedUploads {
        static REGISTRY: OnceLock<VerifiedUploads> = OnceLock::new();
        REGISTRY.get_or_init(|| VerifiedUploads { seen: Mutex::default() })
    }

    pub fn record(&self, endpoint: &str, name: Address) {
        let mut seen = self.seen.lock().expect("verified uploads");
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < REMEMBER_FOR);
        if seen.len() >= REMEMBER_AT_MOST {
            let mut ages: Vec<Instant> = seen.values().copied().collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            seen.retain(|_, at| *at > cutoff);
        }
        seen.insert((endpoint.to_owned(), name), now);
    }

    pub fn contains(&self, endpoint: &str, name: &Address) -> bool {
        let seen = self.seen.lock().expect("verified uploads");
        seen.get(&(endpoint.to_owned(), *name)).is_some_and(|at| at.elapsed() < REMEMBER_FOR)
    }
}

/// Checks `GetUploadLocations`: every file it asks to upload must have a name
/// Dolt could store (Dolt itself panics on an id that is not 20 bytes) and
/// declare a size within `limit` (the PUT is held to it whatever it declares).
pub fn check_upload_request(request: &GetUploadLocsRequest, limit: &UploadLimit) -> Result<(), UploadRefused> {
    // Deprecated, but Dolt's server still reads it: it must not carry what details may not.
    #[allow(deprecated)]
    for hash in &request.table_file_hashes {
        UploadName::from_id(hash, "")?;
    }
    for details in &request.table_file_details {
        let name = UploadName::from_id(&details.id, &details.suffix)?;
        if details.content_length > limit.bytes {
            return Err(limit.refuse(name, format!("{} bytes", details.content_length)));
        }
    }
    Ok(())
}

/// Checks a registration (`AddTableFiles`, or the files a Commit names):
/// each file must have been verified on its way in, or be in the store's
/// manifest already. With `peers_verify` (replicas share the URL key, so an
/// upload may have passed through another replica, which verified it the same
/// way), a file neither this process saw nor the store lists is trusted as a
/// peer's, and logged.
pub async fn check_registration(
    repo: &UpstreamRepo<'_>,
    files: &[ChunkTableInfo],
    peers_verify: bool,
) -> Result<(), crate::error::GatewayError> {
    let registry = VerifiedUploads::get();
    let endpoint = repo.upstream.name();
    let mut unseen = Vec::new();
    for file in files {
        let name = UploadName::from_id(&file.hash, "")?;
        if !registry.contains(endpoint, &name.name) {
            unseen.push(name.name);
        }
    }
    if unseen.is_empty() {
        return Ok(());
    }
    // Peers verify every upload the same way: asking the store adds nothing.
    if peers_verify {
        tracing::debug!(files = unseen.len(), %endpoint, "registration of files another replica verified");
        return Ok(());
    }
    let listed = repo.list_table_files().await?;
    match unseen.into_iter().find(|name| !listed.contains(&name.to_string())) {
        Some(name) => Err(UploadRefused::NotVerified(name.to_string()).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUploadLimit;

    fn build(limits: &[(&[&str], u64)]) -> Result<UploadSettings, String> {
        let databases = limits
            .iter()
            .map(|(globs, bytes)| DatabaseUploadLimit {
                databases: globs.iter().map(|g| g.to_string()).collect(),
                max_file_bytes: *bytes,
            })
            .collect();
        let config = UploadsConfig { max_file_bytes: MIN_MAX_FILE_BYTES, databases, ..UploadsConfig::default() };
        UploadSettings::build(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn the_smallest_matching_database_limit_applies() {
        let settings = build(&[(&["App_*"], 5000), (&["app_eu", "crm"], 3000)]).unwrap();
        let limit = |db: &str| {
            let limit = settings.limit_for(db);
            (limit.bytes, limit.key)
        };
        assert_eq!(limit("app_us"), (5000, "uploads.databases[0].max_file_bytes".into()));
        assert_eq!(limit("app_eu"), (3000, "uploads.databases[1].max_file_bytes".into()));
        assert_eq!(limit("other"), (MIN_MAX_FILE_BYTES, "uploads.max_file_bytes".into()));
        let request = GetUploadLocsRequest {
            table_file_details: vec![crate::remotesapi::proto::TableFileDetails {
                id: Address::of(b"x").0.to_vec().into(),
                content_length: 4000,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(check_upload_request(&request, &settings.limit_for("app_us")).is_ok());
        let refused = check_upload_request(&request, &settings.limit_for("app_eu")).unwrap_err().to_string();
        assert!(refused.contains("(4000 bytes) is larger than uploads.databases[1].max_file_bytes"), "{refused}");
        let error = build(&[(&["x"], MIN_MAX_FILE_BYTES + 1)]).unwrap_err();
        assert!(error.contains("uploads.databases[0].max_file_bytes"), "{error}");
        assert!(build(&[(&[], 10)]).unwrap_err().contains("uploads.databases[0].databases"));
    }

    #[test]
    fn names_dolt_could_store() {
        let id = Address::of(b"x");
        assert_eq!(UploadName::from_id(&id.0, "").unwrap().kind, FileKind::Table);
        assert_eq!(UploadName::from_id(&id.0, ".darc").unwrap().kind, FileKind::Archive);
        assert!(matches!(UploadName::from_id(&id.0[..19], ""), Err(UploadRefused::BadIdLength(19))));
        assert!(matches!(UploadName::from_id(&[0; 21], ""), Err(UploadRefused::BadIdLength(21))));
        assert!(matches!(UploadName::from_id(&id.0, ".tmp"), Err(UploadRefused::BadSuffix(_))));
        assert!(matches!(UploadName::from_id(&[0xff; 20], ""), Err(UploadRefused::Journal(_))));
        assert!(matches!(UploadName::from_id(&[0xff; 20], ".darc"), Err(UploadRefused::Journal(_))));
        let journal = "v".repeat(32);
        assert!(matches!(
            UploadName::from_upload_path(&format!("/db/{journal}?num_chunks=1")),
            Err(UploadRefused::Journal(_))
        ));
        let good = format!("/db/{id}.darc?num_chunks=3");
        assert_eq!(UploadName::from_upload_path(&good).unwrap(), UploadName { name: id, kind: FileKind::Archive });
        assert_eq!(claimed_chunk_count(&good), Some(3));
        for bad in ["/db/", "/db/manifest", "/db/../x", &format!("/db/{id}.tmp"), &format!("/db/{}", "w".repeat(32))] {
            assert!(matches!(UploadName::from_upload_path(bad), Err(UploadRefused::BadName(_))), "{bad}");
        }
    }

    /// Spools `bytes` the way an upload does, into a file from `files`.
    fn spool(files: &Arc<SpoolFiles>, bytes: &[u8]) -> (SpoolFile, Vec<u8>) {
        use crate::storage::verify::ReadAt;
        let spool = files.take().unwrap();
        let (sender, frames) = mpsc::channel(FRAMES_IN_FLIGHT);
        let writer = spool.try_clone().unwrap();
        let spooler = std::thread::spawn(move || spool_and_hash(writer, frames, true, None).unwrap());
        for frame in bytes.chunks(1000) {
            sender.blocking_send(Bytes::copy_from_slice(frame)).unwrap();
        }
        drop(sender);
        assert_eq!(spooler.join().unwrap(), Some(Address::of(bytes)));
        let disk = DiskFile { file: spool.try_clone().unwrap(), len: bytes.len() as u64, path: "spool".into() };
        let read_back = disk.read_at(0, bytes.len()).unwrap();
        (spool, read_back)
    }

    #[test]
    fn spool_files_are_rewritten_by_later_uploads() {
        use std::os::unix::fs::MetadataExt;
        let files = SpoolFiles::new(std::env::temp_dir(), 2);
        let long: Vec<u8> = (0..50_000u32).map(|i| i as u8).collect();
        let (first, read_back) = spool(&files, &long);
        assert_eq!(read_back, long);
        let inode = first.metadata().unwrap().ino();
        drop(first);
        assert_eq!(files.kept(), 1);
        // The next upload gets the same file, from its start, whatever the
        // first one left past its end.
        let short = vec![7u8; 3_000];
        let (second, read_back) = spool(&files, &short);
        assert_eq!(second.metadata().unwrap().ino(), inode);
        assert_eq!(read_back, short);
        assert_eq!(files.kept(), 0);
        // Uploads at once get files of their own; no more than `keep` are kept.
        let (third, _) = spool(&files, &short);
        let (fourth, _) = spool(&files, &short);
        let inodes = [&second, &third, &fourth].map(|file| file.metadata().unwrap().ino());
        assert!(inodes[0] != inodes[1] && inodes[1] != inodes[2] && inodes[0] != inodes[2]);
        drop((second, third, fourth));
        assert_eq!(files.kept(), 2);
        let none_kept = SpoolFiles::new(std::env::temp_dir(), 0);
        drop(spool(&none_kept, &short));
        assert_eq!(none_kept.kept(), 0);
    }

    #[test]
    fn the_registry_remembers_per_endpoint() {
        let registry = VerifiedUploads { seen: Mutex::default() };
        let name = Address::of(b"file");
        registry.record("a", name);
        assert!(registry.contains("a", &name));
        assert!(!registry.contains("b", &name));
        assert!(!registry.contains("a", &Address::of(b"other")));
    }
}
