//! Filling the cache: one upstream fetch of a whole file per key at a time,
//! written to the temporary area, verified, then moved into place. Clients
//! asking for the file meanwhile read it from the temporary file as it grows
//! ([`FileBody`]); their answer ends only once the file has verified, so a
//! bad upstream read reaches them as a failed download, never as a whole one.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tokio::sync::{mpsc, watch};

use super::shared_tier::{ByteStream, SharedTier};
use super::store::Key;
use super::Shared;
use crate::cluster::Endpoint;
use crate::error::GatewayError;
use crate::storage::verify::{verify_hashed, DiskFile, FileKind};

/// Where a fill reads the file: the endpoint and the upstream path and query
/// of a request that was allowed to read it.
#[derive(Clone)]
pub struct Source {
    pub endpoint: Arc<Endpoint>,
    pub path_and_query: String,
}

impl Source {
    /// A GET of the file from the endpoint, of `range` or the whole file.
    pub async fn get(&self, range: Option<HeaderValue>) -> Result<Response<Incoming>, GatewayError> {
        let upstream = &self.endpoint.upstream;
        let mut request = Request::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
        *request.uri_mut() = upstream.uri(&self.path_and_query)?;
        if let Some(range) = range {
            request.headers_mut().insert(http::header::RANGE, range);
        }
        upstream.send_file(request).await
    }
}

/// How far a fill has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for the upstream's answer.
    Starting,
    /// This many bytes are in the temporary file.
    Running(u64),
    /// Verified and in place: the whole file, this long.
    Done(u64),
    /// Failed before its first byte: a request should pass through instead.
    Declined,
    /// Failed after bytes went out: readers must fail their download.
    Failed(String),
}

/// One fill in progress.
pub struct Fill {
    pub progress: watch::Receiver<Progress>,
    /// The temporary file, opened before any reader needs it.
    pub file: Arc<std::fs::File>,
}

/// Why a fill did not end in the cache.
#[derive(Debug, thiserror::Error)]
enum FillError {
    #[error("the upstream answered {0}")]
    Status(StatusCode),
    #[error("reading from the upstream: {0}")]
    Upstream(String),
    #[error("cache directory: {0}")]
    Disk(#[from] std::io::Error),
    #[error("larger than cache.max_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("the upstream's copy does not verify: {0}")]
    Corrupt(String),
}

impl FillError {
    fn outcome(&self) -> &'static str {
        match self {
            FillError::Status(_) | FillError::Upstream(_) => "upstream_error",
            FillError::Disk(_) => "disk_error",
            FillError::TooLarge(_) => "too_large",
            FillError::Corrupt(_) => "corrupt",
        }
    }
}

/// Frames waiting for the disk writer.
const FRAMES_IN_FLIGHT: usize = 16;

/// Starts fetching `key` into the cache; the returned fill reports progress.
pub fn start(shared: &Arc<Shared>, key: Key, source: Source) -> std::io::Result<Fill> {
    let temp = shared.store.temp_file()?;
    let file = Arc::new(temp.as_file().try_clone()?);
    let (report, progress) = watch::channel(Progress::Starting);
    let shared = shared.clone();
    tokio::spawn(async move {
        let result = run(&shared, &key, &source, temp, &report).await;
        let metrics = crate::metrics::metrics();
        let outcome = match result {
            Ok(filled) => {
                tracing::debug!(file = %key, bytes = filled.len, "cached");
                report.send_replace(Progress::Done(filled.len));
                if let (Origin::Upstream, Some(tier)) = (&filled.origin, shared.tier()) {
                    tokio::spawn(share(tier, key.clone(), filled));
                }
                "stored"
            }
            Err(err) => {
                tracing::warn!(file = %key, error = %err, "table file not cached");
                let failed = match (&*report.borrow(), &err) {
                    (Progress::Starting, _) => Progress::Declined,
                    // Its readers got every byte, and the bytes verified.
                    (_, FillError::TooLarge(len)) => Progress::Done(*len),
                    _ => Progress::Failed(err.to_string()),
                };
                // A file too large, or one the disk could not take, is not tried again:
                // the client's retry passes through and the clone goes on uncached.
                if matches!(err, FillError::TooLarge(_) | FillError::Disk(_)) {
                    shared.bypass.lock().expect("bypass set").insert(key.clone());
                }
                if let FillError::Disk(io) = &err {
                    let trouble = format!("edge cache: cannot write to cache.dir: {io}");
                    *shared.disk_trouble.lock().expect("disk trouble") = Some(trouble);
                }
                report.send_replace(failed);
                err.outcome()
            }
        };
        metrics.cache_fills.with_label_values(&[outcome]).inc();
        shared.fills.lock().expect("fills").remove(&key);
    });
    Ok(Fill { progress, file })
}

/// Where a fill's bytes came from.
enum Origin {
    Upstream,
    SharedTier(Arc<SharedTier>),
}

/// A fill that ended in the cache.
struct Filled {
    len: u64,
    origin: Origin,
    /// The file, open, for the upload to the shared tier.
    file: Arc<std::fs::File>,
}

async fn run(
    shared: &Shared,
    key: &Key,
    source: &Source,
    temp: tempfile::NamedTempFile,
    report: &watch::Sender<Progress>,
) -> Result<Filled, FillError> {
    let (mut bytes, origin) = open(shared, key, source).await?;
    report.send_replace(Progress::Running(0));

    let writer_file = temp.as_file().try_clone()?;
    let (to_disk, frames) = mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
    let hash = key.name.kind == FileKind::Archive;
    let writer = {
        let report = report.clone();
        tokio::task::spawn_blocking(move || {
            let on_written = |written| {
                report.send_replace(Progress::Running(written));
            };
            crate::uploads::spool_and_hash(writer_file, frames, hash, Some(&on_written))
        })
    };
    let metrics = crate::metrics::metrics();
    let counter = match origin {
        Origin::Upstream => &metrics.upstream_file_bytes,
        Origin::SharedTier(_) => &metrics.cache_shared_read_bytes,
    };
    let mut total = 0u64;
    let mut read_error = None;
    while let Some(chunk) = bytes.next().await {
        match chunk {
            Ok(data) => {
                total += data.len() as u64;
                counter.inc_by(data.len() as u64);
                if to_disk.send(data).await.is_err() {
                    break; // The writer failed; it says why below.
                }
            }
            Err(err) => {
                read_error = Some(err);
                break;
            }
        }
    }
    drop(to_disk);
    let whole_file = writer.await.map_err(|e| std::io::Error::other(e.to_string()))??;
    if let Some(reason) = read_error {
        return Err(FillError::Upstream(reason));
    }
    let path: PathBuf = temp.path().to_owned();
    let file = temp.as_file().try_clone()?;
    let name = key.name;
    let verified = tokio::task::spawn_blocking(move || {
        verify_hashed(&DiskFile { file, len: total, path }, name.name, name.kind, whole_file)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Err(err) = verified {
        if let Origin::SharedTier(tier) = &origin {
            metrics.cache_shared.with_label_values(&["corrupt"]).inc();
            tier.delete(key).await;
        }
        return Err(FillError::Corrupt(err.to_string()));
    }
    if total > shared.store.max_bytes() {
        return Err(FillError::TooLarge(total));
    }
    let file = Arc::new(temp.as_file().try_clone()?);
    let store = shared.store.clone();
    let key = key.clone();
    tokio::task::spawn_blocking(move || store.publish(&key, temp, total))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    Ok(Filled { len: total, origin, file })
}

/// The file's bytes: from the shared tier when it has them, else from Dolt.
async fn open(shared: &Shared, key: &Key, source: &Source) -> Result<(ByteStream, Origin), FillError> {
    let metrics = crate::metrics::metrics();
    if let Some(tier) = shared.tier() {
        match tier.read(key).await {
            Ok(Some(bytes)) => {
                metrics.cache_shared.with_label_values(&["hit"]).inc();
                return Ok((bytes, Origin::SharedTier(tier)));
            }
            Ok(None) => metrics.cache_shared.with_label_values(&["miss"]).inc(),
            Err(err) => {
                metrics.cache_shared.with_label_values(&["error"]).inc();
                tracing::warn!(file = %key, error = %err, "shared cache tier unreadable; asking the upstream");
            }
        }
    }
    let response = source.get(None).await.map_err(|e| FillError::Upstream(e.to_string()))?;
    if response.status() != StatusCode::OK {
        return Err(FillError::Status(response.status()));
    }
    let bytes = response.into_body().into_data_stream().map(|chunk| chunk.map_err(|e| e.to_string())).boxed();
    Ok((bytes, Origin::Upstream))
}

/// Uploads a file fetched from Dolt to the shared tier, for the other replicas.
async fn share(tier: Arc<SharedTier>, key: Key, filled: Filled) {
    let metrics = crate::metrics::metrics();
    match tier.write(&key, filled.file, filled.len).await {
        Ok(()) => {
            metrics.cache_shared.with_label_values(&["stored"]).inc();
            metrics.cache_shared_written_bytes.inc_by(filled.len);
        }
        Err(err) => {
            metrics.cache_shared.with_label_values(&["error"]).inc();
            tracing::warn!(file = %key, error = %err, "cannot store a file in the shared cache tier");
        }
    }
}

/// Bytes read from disk per frame of an answer.
const READ_BYTES: u64 = 256 * 1024;

/// An answer read from a cached file, or from a fill's temporary file as it grows.
pub struct FileBody {
    file: Arc<std::fs::File>,
    position: u64,
    /// Where the answer ends, when known from the start (a cached file, a range).
    end: Option<u64>,
    /// The fill to follow when the end is not known yet.
    follow: Option<watch::Receiver<Progress>>,
    finished: bool,
}

impl FileBody {
    pub fn range(file: Arc<std::fs::File>, start: u64, end: u64) -> FileBody {
        FileBody { file, position: start, end: Some(end), follow: None, finished: false }
    }

    pub fn following(fill: &Fill) -> FileBody {
        FileBody {
            file: fill.file.clone(),
            position: 0,
            end: None,
            follow: Some(fill.progress.clone()),
            finished: false,
        }
    }

    /// The next frame, `None` at the end, an error when the fill failed.
    pub async fn next(&mut self) -> Option<Result<Bytes, crate::BoxError>> {
        loop {
            if self.finished {
                return None;
            }
            let readable = match (self.end, &self.follow) {
                (Some(end), _) => end,
                (None, Some(follow)) => match &*follow.borrow() {
                    Progress::Starting | Progress::Declined => 0,
                    Progress::Running(written) => *written,
                    Progress::Done(len) => {
                        self.end = Some(*len);
                        *len
                    }
                    Progress::Failed(reason) => {
                        self.finished = true;
                        return Some(Err(format!("the cache fill failed: {reason}").into()));
                    }
                },
                (None, None) => unreachable!("a file body has an end or a fill"),
            };
            if self.position < readable {
                return Some(self.read(readable).await);
            }
            if self.end.is_some() {
                self.finished = true;
                return None;
            }
            let follow = self.follow.as_mut().expect("followed");
            if follow.changed().await.is_err() && !matches!(&*follow.borrow(), Progress::Done(_)) {
                self.finished = true;
                return Some(Err("the cache fill stopped".into()));
            }
        }
    }

    async fn read(&mut self, readable: u64) -> Result<Bytes, crate::BoxError> {
        let len = (readable - self.position).min(READ_BYTES) as usize;
        let (file, offset) = (self.file.clone(), self.position);
        let bytes = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let mut buffer = vec![0; len];
            file.read_exact_at(&mut buffer, offset).map(|()| Bytes::from(buffer))
        })
        .await
        .map_err(|e| -> crate::BoxError { e.to_string().into() })?;
        let bytes = bytes.inspect_err(|_| self.finished = true)?;
        self.position += bytes.len() as u64;
        crate::metrics::metrics().cache_served_bytes.inc_by(bytes.len() as u64);
        Ok(bytes)
    }

    pub fn into_response_body(self) -> crate::plumbing::ResponseBody {
        let stream = futures_util::stream::unfold(self, |mut body| async move {
            body.next().await.map(|frame| (frame.map(http_body::Frame::data), body))
        });
        http_body_util::StreamBody::new(stream).boxed_unsync()
    }
}
