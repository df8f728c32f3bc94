//! The edge cache: table files and archives kept on local disk, so a fleet
//! of clones costs Dolt one read of each file.
//!
//! Only names Dolt derives from contents are cached: `<hash>` (a table file,
//! named by its chunk addresses in order) and `<hash>.darc` (an archive,
//! named by the hash of its bytes). Dolt never rewrites such a file, and
//! doltgate refuses uploads over a name the store lists. The chunk journal
//! (`vvvv…`), the one file Dolt keeps changing, and any other name pass
//! through uncached. A file is cached only after it verified the way an
//! upload does (every chunk against its address, the name against the
//! contents), and a cached file's length is checked against the upstream's
//! again every `revalidate_after`.
//!
//! The capability in the URL is checked before the cache is consulted
//! ([`crate::files`]), and a hit holds the user's transfer slot like a miss.
//!
//! - whole-file GET, cached: answered from disk;
//! - whole-file GET, not cached: joins (or starts) the one fill of that file
//!   and streams it as it arrives;
//! - ranged GET, cached: answered from disk;
//! - ranged GET, not cached: passes through at once, and the whole file is
//!   fetched in the background.
//!
//! A fill reads the shared tier (`[cache.shared]`, an S3-compatible bucket)
//! before Dolt, and stores what it fetched from Dolt there for the other
//! replicas; either way the file verifies before it is kept.

mod fill;
mod shared_tier;
mod store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::BodyExt;

pub use fill::Source;
pub use shared_tier::SharedTier;
pub use store::{purge, stats, Key, StoreStats};

use crate::config::CacheConfig;
use crate::plumbing::ResponseBody;
use crate::uploads::UploadName;
use fill::{FileBody, Fill, Progress};
use store::Store;

/// The prefix Dolt's sealed table-file URLs carry in front of the file's path.
const SEALED_PREFIX: &str = "/single_symmetric_key_sealed_request/";

/// The cache of one directory, kept across configuration reloads.
pub struct EdgeCache {
    dir: PathBuf,
    state: Result<Arc<Shared>, String>,
}

impl std::fmt::Debug for EdgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCache").field("dir", &self.dir).field("usable", &self.state.is_ok()).finish()
    }
}

/// What the fills and the request path share.
pub struct Shared {
    store: Arc<Store>,
    fills: Mutex<HashMap<Key, Arc<Fill>>>,
    /// Files not to fill again (larger than `max_bytes`, or a fill the disk
    /// failed): later requests pass straight through.
    bypass: Mutex<HashSet<Key>>,
    /// The last write the cache directory refused, for `/readyz`.
    disk_trouble: Mutex<Option<String>>,
    revalidate_after: Mutex<Duration>,
    /// The bucket replicas share, when `[cache.shared]` is configured.
    tier: Mutex<Option<Arc<SharedTier>>>,
}

/// What a request for a cacheable file gets.
pub enum Answer {
    /// Answered from the cache.
    Served(Response<ResponseBody>),
    /// Pass the request through; for a ranged miss, call [`EdgeCache::passed_through`] with the answer.
    PassThrough,
}

impl EdgeCache {
    /// The cache `[cache]` describes. Opened once per directory and process;
    /// a reload that keeps the directory keeps the cache and applies the new
    /// limits. A directory that cannot be used leaves the cache off, not the
    /// gateway: files then pass through, and `/readyz` says why.
    pub fn shared(config: &CacheConfig, tier: Option<SharedTier>) -> Arc<EdgeCache> {
        let tier = tier.map(Arc::new);
        static OPEN: Mutex<Vec<Arc<EdgeCache>>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().expect("open caches");
        if let Some(cache) = open.iter().find(|cache| cache.dir == config.dir && cache.state.is_ok()) {
            if let Ok(shared) = &cache.state {
                shared.store.set_max_bytes(config.max_bytes);
                *shared.revalidate_after.lock().expect("revalidate_after") = config.revalidate_after;
                *shared.tier.lock().expect("tier") = tier;
            }
            return cache.clone();
        }
        let state = Store::open(&config.dir, config.max_bytes)
            .map(|store| {
                Arc::new(Shared {
                    store: Arc::new(store),
                    fills: Mutex::default(),
                    bypass: Mutex::default(),
                    disk_trouble: Mutex::default(),
                    revalidate_after: Mutex::new(config.revalidate_after),
                    tier: Mutex::new(tier),
                })
            })
            .map_err(|e| format!("edge cache off: cache.dir {}: {e}", config.dir.display()));
        if let Err(reason) = &state {
            tracing::error!(%reason, "serving table files uncached");
        }
        let cache = Arc::new(EdgeCache { dir: config.dir.clone(), state });
        open.retain(|known| known.dir != config.dir);
        open.push(cache.clone());
        cache
    }

    /// Why the cache is off or failing, if it is.
    pub fn trouble(&self) -> Option<String> {
        match &self.state {
            Err(reason) => Some(reason.clone()),
            Ok(shared) => shared.disk_trouble.lock().expect("disk trouble").clone(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cache key of a GET for `path_and_query` on `cluster`, when the
    /// file is one the cache may hold.
    pub fn key(&self, cluster: &str, path_and_query: &str) -> Option<Key> {
        self.state.as_ref().ok()?;
        cache_key(cluster, path_and_query)
    }

    /// Answers a GET of `key` from the cache, or says to pass it through.
    pub async fn answer(&self, key: &Key, range: Option<&HeaderValue>, source: &Source) -> Answer {
        let Ok(shared) = &self.state else { return Answer::PassThrough };
        let metrics = crate::metrics::metrics();
        let range = match range.map(parse_range) {
            None => None,
            Some(Some(range)) => Some(range),
            // Dolt judges a range it does not take; so does the pass-through.
            Some(None) => return self.bypass(),
        };
        if let Some(response) = shared.hit(key, range, source).await {
            metrics.cache_requests.with_label_values(&["hit"]).inc();
            return Answer::Served(response);
        }
        if shared.bypass.lock().expect("bypass set").contains(key) {
            return self.bypass();
        }
        metrics.cache_requests.with_label_values(&["miss"]).inc();
        if range.is_some() {
            return Answer::PassThrough;
        }
        let Some(fill) = shared.join_or_start(key, source) else { return Answer::PassThrough };
        let mut progress = fill.progress.clone();
        // Wait for the upstream's answer: a refusal passes through, so the client hears Dolt's own.
        let started = progress.wait_for(|p| *p != Progress::Starting).await.map(|p| p.clone());
        match started {
            Ok(Progress::Declined) | Err(_) => Answer::PassThrough,
            Ok(_) => Answer::Served(whole_file_response(None, FileBody::following(&fill))),
        }
    }

    /// After a ranged miss passed through: fetch the whole file in the
    /// background when the answer shows it fits.
    pub fn passed_through(&self, key: Key, answer: &HeaderMap, source: &Source) {
        let Ok(shared) = &self.state else { return };
        let total = answer.get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(range_total);
        match total {
            Some(total) if total <= shared.store.max_bytes() => drop(shared.join_or_start(&key, source)),
            Some(_) => drop(shared.bypass.lock().expect("bypass set").insert(key)),
            None => {}
        }
    }

    fn bypass(&self) -> Answer {
        crate::metrics::metrics().cache_requests.with_label_values(&["bypass"]).inc();
        Answer::PassThrough
    }
}

impl Shared {
    fn tier(&self) -> Option<Arc<SharedTier>> {
        self.tier.lock().expect("tier").clone()
    }

    /// The cached file, answered from disk, once its length is confirmed if due.
    async fn hit(&self, key: &Key, range: Option<(u64, u64)>, source: &Source) -> Option<Response<ResponseBody>> {
        let hit = self.store.lookup(key)?;
        let revalidate_after = *self.revalidate_after.lock().expect("revalidate_after");
        if hit.checked.elapsed() >= revalidate_after {
            match upstream_length(source).await {
                Some(len) if len == hit.len => self.store.mark_checked(key),
                seen => {
                    tracing::info!(file = %key, cached = hit.len, upstream = ?seen, "cached file dropped: the upstream's differs");
                    self.store.forget(key);
                    return None;
                }
            }
        }
        let file = match std::fs::File::open(&hit.path) {
            Ok(file) => Arc::new(file),
            Err(err) => {
                tracing::warn!(file = %key, error = %err, "cached file unreadable; dropped");
                self.store.forget(key);
                return None;
            }
        };
        Some(match range {
            None => whole_file_response(Some(hit.len), FileBody::range(file, 0, hit.len)),
            Some((start, end)) if end < hit.len => range_response(start, end, hit.len, file),
            // Out of bounds: Dolt's own error.
            Some(_) => return None,
        })
    }

    /// The fill of `key` in progress, or a new one.
    fn join_or_start(self: &Arc<Self>, key: &Key, source: &Source) -> Option<Arc<Fill>> {
        let mut fills = self.fills.lock().expect("fills");
        if let Some(fill) = fills.get(key) {
            return Some(fill.clone());
        }
        match fill::start(self, key.clone(), source.clone()) {
            Ok(fill) => {
                let fill = Arc::new(fill);
                fills.insert(key.clone(), fill.clone());
                Some(fill)
            }
            Err(err) => {
                tracing::warn!(file = %key, error = %err, "cannot start a cache fill");
                None
            }
        }
    }
}

/// The key of a sealed download path: `…/<store>[/oldgen]/<name>`, when
/// every segment is plain (no escapes, no `.`/`..`, nothing empty) and the
/// name is a content-derived one.
pub fn cache_key(cluster: &str, path_and_query: &str) -> Option<Key> {
    let path = path_and_query.split('?').next()?.strip_prefix(SEALED_PREFIX)?;
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('%')) {
        return None;
    }
    let (file, dirs) = segments.split_last()?;
    let name = UploadName::from_file_name(file).ok()?;
    let dirs = match dirs.split_last() {
        Some((&"oldgen", rest)) => rest,
        _ => dirs,
    };
    if dirs.is_empty() {
        return None;
    }
    Some(Key { cluster: cluster.to_owned(), store: dirs.join("/"), name })
}

/// `bytes=<first>-<last>` as Dolt's file server reads it
/// (`offsetAndLenFromRange`, `go/libraries/doltcore/remotesrv/http.go`).
pub fn parse_range(value: &HeaderValue) -> Option<(u64, u64)> {
    let spec = value.to_str().ok()?.strip_prefix("bytes=")?;
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim().parse::<u64>().ok()?, last.trim().parse::<u64>().ok()?);
    (first <= last).then_some((first, last))
}

/// The total in `Content-Range: bytes a-b/<total>`.
fn range_total(value: &str) -> Option<u64> {
    value.rsplit_once('/')?.1.trim().parse().ok()
}

/// The file's length as the upstream has it now (a 1-byte ranged read).
async fn upstream_length(source: &Source) -> Option<u64> {
    let response = source.get(Some(HeaderValue::from_static("bytes=0-0"))).await.ok()?;
    let total = response.headers().get(http::header::CONTENT_RANGE)?.to_str().ok().and_then(range_total);
    let consumed = response.into_body().collect().await.ok()?.to_bytes().len();
    crate::metrics::metrics().upstream_file_bytes.inc_by(consumed as u64);
    total
}

fn whole_file_response(len: Option<u64>, body: FileBody) -> Response<ResponseBody> {
    let mut response = Response::new(body.into_response_body());
    let headers = response.headers_mut();
    headers.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(len) = len {
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    response
}

fn range_response(start: u64, end: u64, len: u64, file: Arc<std::fs::File>) -> Response<ResponseBody> {
    let mut response = Response::new(FileBody::range(file, start, end + 1).into_response_body());
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let headers = response.headers_mut();
    headers.insert(http::header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(end + 1 - start));
    let content_range = format!("bytes {start}-{end}/{len}");
    headers.insert(http::header::CONTENT_RANGE, HeaderValue::try_from(content_range).expect("ASCII"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn only_content_named_files_under_a_plain_path_are_cacheable() {
        let key = |path: &str| cache_key("eu", path).map(|k| format!("{}|{}", k.store, k.name));
        let sealed = |rest: &str| format!("{SEALED_PREFIX}{rest}?exp=1&nbf=0&nonce=n&req=r");
        assert_eq!(key(&sealed(&format!("db/.dolt/noms/{HASH}"))), Some(format!("db/.dolt/noms|{HASH}")));
        assert_eq!(
            key(&sealed(&format!("db/.dolt/noms/oldgen/{HASH}.darc"))),
            Some(format!("db/.dolt/noms|{HASH}.darc")),
            "oldgen is the same entry"
        );
        let journal = "v".repeat(32);
        for uncached in [
            sealed(&format!("db/.dolt/noms/{journal}")),
            sealed(&format!("db/.dolt/noms/{HASH}.tmp")),
            sealed(&format!("db/../other/.dolt/noms/{HASH}")),
            sealed(&format!("db//.dolt/noms/{HASH}")),
            sealed(&format!("db%2F..%2Fx/{HASH}")),
            sealed(HASH),
            format!("/elsewhere/db/.dolt/noms/{HASH}"),
        ] {
            assert_eq!(key(&uncached), None, "{uncached}");
        }
    }

    #[test]
    fn ranges_are_read_as_dolt_reads_them() {
        let range = |s: &'static str| parse_range(&HeaderValue::from_static(s));
        assert_eq!(range("bytes=0-99"), Some((0, 99)));
        assert_eq!(range("bytes= 5 - 5"), Some((5, 5)));
        for refused in ["bytes=5-", "bytes=-5", "bytes=9-1", "items=0-1", "bytes=0-1,3-4"] {
            assert_eq!(range(refused), None, "{refused}");
        }
        assert_eq!(range_total("bytes 0-0/1234"), Some(1234));
        assert_eq!(range_total("bytes 0-0/*"), None);
    }
}
