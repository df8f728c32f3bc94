//! One repository on a Dolt remotesapi endpoint as doltgate itself reads it:
//! the files its store lists, registering table files, and its chunks as a
//! [`ChunkSource`] for the push inspector: `StreamDownloadLocations` says where each chunk sits, and
//! ranged GETs of the sealed URLs fetch exactly those bytes (plus, for an
//! archive, its zstd dictionary, fetched once per file).
//!
//! The Commit's new chunks were uploaded moments ago but are not yet in the
//! upstream's manifest; [`UpstreamRepo::register_table_files`] adds the Commit's table files
//! first (`AddTableFiles` adds chunks and never moves a ref; the Commit adding
//! them again changes nothing), so the upstream serves old and new chunks
//! alike and no doltgate replica needs to have seen the upload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Limited};
use prost::Message;

use super::Upstream;
use crate::error::GatewayError;
use crate::remotesapi::proto::{
    download_loc, AddTableFilesRequest, AddTableFilesResponse, ChunkTableInfo, ClientRepoFormat,
    GetDownloadLocsRequest, GetDownloadLocsResponse, ListTableFilesRequest, ListTableFilesResponse, RepoId,
};
use crate::storage::archive::{decode_with_dictionary, ZstdDictionary};
use crate::storage::{decode_range_chunk, Address, ChunkSource, StorageError};

/// Which repository on which endpoint, and the credentials to use there.
pub struct UpstreamRepo<'a> {
    pub upstream: &'a Upstream,
    pub repo_id: Option<RepoId>,
    pub repo_path: String,
    pub authorization: HeaderValue,
}

impl UpstreamRepo<'_> {
    /// One call to a ChunkStoreService method about this repository.
    async fn call<Resp: Message + Default>(
        &self,
        method: &str,
        request: &impl Message,
    ) -> Result<Vec<Resp>, GatewayError> {
        self.upstream.call(method, request, &self.authorization).await
    }

    /// The ids of every file in the upstream store's manifest (the chunk
    /// journal among them, on a journaling store).
    pub async fn list_table_files(&self) -> Result<std::collections::HashSet<String>, GatewayError> {
        let request = ListTableFilesRequest {
            repo_id: self.repo_id.clone(),
            repo_path: self.repo_path.clone(),
            ..Default::default()
        };
        let responses: Vec<ListTableFilesResponse> = self.call("ListTableFiles", &request).await?;
        Ok(responses
            .into_iter()
            .flat_map(|r| r.table_file_info.into_iter().chain(r.appendix_table_file_info))
            .map(|info| info.file_id)
            .collect())
    }

    /// Adds the Commit's table files to the upstream's store (no ref moves).
    pub async fn register_table_files(
        &self,
        files: &[ChunkTableInfo],
        format: Option<ClientRepoFormat>,
    ) -> Result<(), GatewayError> {
        if files.is_empty() {
            return Ok(());
        }
        let request = AddTableFilesRequest {
            repo_id: self.repo_id.clone(),
            repo_path: self.repo_path.clone(),
            client_repo_format: format,
            chunk_table_info: files.to_vec(),
            ..Default::default()
        };
        let responses: Vec<AddTableFilesResponse> = self.call("AddTableFiles", &request).await?;
        if responses.first().is_some_and(|r| r.success) {
            Ok(())
        } else {
            Err(GatewayError::UpstreamFailed {
                address: self.upstream.address().to_owned(),
                reason: "AddTableFiles (push inspection) did not succeed".into(),
            })
        }
    }
}

/// Reads chunks of one upstream repository.
pub struct UpstreamChunks<'a> {
    repo: &'a UpstreamRepo<'a>,
    /// Parsed archive dictionaries by (file path, dictionary offset).
    dictionaries: Mutex<HashMap<(String, u64), Arc<ZstdDictionary>>>,
}

/// One chunk's place in a table file or archive.
struct Located {
    address: Address,
    path_and_query: String,
    offset: u64,
    length: u32,
    dictionary: Option<(u64, u32)>,
}

impl<'a> UpstreamChunks<'a> {
    pub fn new(repo: &'a UpstreamRepo<'a>) -> Self {
        Self { repo, dictionaries: Mutex::new(HashMap::new()) }
    }

    async fn locate(&self, addresses: &[Address]) -> Result<Vec<Located>, GatewayError> {
        let request = GetDownloadLocsRequest {
            repo_id: self.repo.repo_id.clone(),
            repo_path: self.repo.repo_path.clone(),
            chunk_hashes: addresses.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect(),
            ..Default::default()
        };
        // The streaming form, because the unary one refuses chunks in archives.
        let responses: Vec<GetDownloadLocsResponse> = self.repo.call("StreamDownloadLocations", &request).await?;
        let mut located = Vec::with_capacity(addresses.len());
        for loc in responses.into_iter().flat_map(|r| r.locs) {
            let Some(download_loc::Location::HttpGetRange(range)) = loc.location else { continue };
            let path_and_query = path_and_query(&range.url).ok_or_else(|| GatewayError::UpstreamFailed {
                address: self.repo.upstream.address().to_owned(),
                reason: format!("unusable download URL {:.120}", range.url),
            })?;
            for chunk in range.ranges {
                let Some(address) = Address::from_slice(&chunk.hash) else { continue };
                let dictionary =
                    (chunk.dictionary_length != 0).then_some((chunk.dictionary_offset, chunk.dictionary_length));
                located.push(Located {
                    address,
                    path_and_query: path_and_query.to_owned(),
                    offset: chunk.offset,
                    length: chunk.length,
                    dictionary,
                });
            }
        }
        Ok(located)
    }

    async fn fetch_range(&self, path_and_query: &str, offset: u64, length: u32) -> Result<Bytes, GatewayError> {
        let upstream = &self.repo.upstream;
        let last = offset + u64::from(length).max(1) - 1;
        let mut request = Request::new(http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync());
        *request.uri_mut() = upstream.uri(path_and_query)?;
        request
            .headers_mut()
            .insert(http::header::RANGE, HeaderValue::from_str(&format!("bytes={offset}-{last}")).expect("ascii"));
        let response = upstream.send_file(request).await?;
        let status = response.status();
        let failed = |reason: String| GatewayError::UpstreamFailed {
            address: upstream.address().to_owned(),
            reason: format!("ranged GET (push inspection): {reason}"),
        };
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        let body = Limited::new(response.into_body(), length as usize + 1)
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let bytes = body.to_bytes();
        // A server ignoring Range answers 200 with the whole file.
        if status == http::StatusCode::OK && bytes.len() as u64 > u64::from(length) {
            return Err(failed("the server ignored the Range header".into()));
        }
        Ok(bytes)
    }

    async fn dictionary(
        &self,
        path_and_query: &str,
        offset: u64,
        length: u32,
    ) -> Result<Arc<ZstdDictionary>, StorageError> {
        let path = path_and_query.split('?').next().unwrap_or_default().to_owned();
        if let Some(found) = self.dictionaries.lock().unwrap_or_else(|p| p.into_inner()).get(&(path.clone(), offset)) {
            return Ok(found.clone());
        }
        let span = self.fetch_range(path_and_query, offset, length).await.map_err(unavailable)?;
        let parsed = Arc::new(ZstdDictionary::from_span(&span)?);
        self.dictionaries.lock().unwrap_or_else(|p| p.into_inner()).insert((path, offset), parsed.clone());
        Ok(parsed)
    }

    async fn read(&self, chunk: &Located) -> Result<Bytes, StorageError> {
        let data = self.fetch_range(&chunk.path_and_query, chunk.offset, chunk.length).await.map_err(unavailable)?;
        match chunk.dictionary {
            Some((offset, length)) => {
                let dictionary = self.dictionary(&chunk.path_and_query, offset, length).await?;
                decode_with_dictionary(&chunk.address, &data, &dictionary)
            }
            None => decode_range_chunk(&chunk.address, &data, None),
        }
    }
}

fn unavailable(err: GatewayError) -> StorageError {
    StorageError::Unavailable(err.to_string())
}

impl ChunkSource for UpstreamChunks<'_> {
    async fn get(&self, addresses: &[Address]) -> crate::storage::Result<HashMap<Address, Bytes>> {
        if addresses.is_empty() {
            return Ok(HashMap::new());
        }
        let located = self.locate(addresses).await.map_err(unavailable)?;
        let reads =
            located.iter().map(|chunk| async move { Ok::<_, StorageError>((chunk.address, self.read(chunk).await?)) });
        Ok(futures_util::future::try_join_all(reads).await?.into_iter().collect())
    }
}

/// The path and query of an absolute `http(s)://` URL.
fn path_and_query(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"))?;
    rest.find('/').map(|i| &rest[i..])
}
