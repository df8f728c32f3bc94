//! Knowledge of Dolt's remotesapi: the generated message types, the table of
//! RPCs (read or write, unary or streaming), and where in each message the
//! fields doltgate cares about sit.

pub mod frame;
pub mod status;
pub mod wire;

use wire::{Field, Label, Schema};

/// Message types and gRPC stubs generated from `proto/`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("dolt.services.remotesapi.v1alpha1");
}

pub const CHUNK_STORE_SERVICE: &str = "dolt.services.remotesapi.v1alpha1.ChunkStoreService";
pub const CREDENTIALS_SERVICE: &str = "dolt.services.remotesapi.v1alpha1.CredentialsService";

/// Every RPC of `ChunkStoreService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    GetRepoMetadata,
    HasChunks,
    GetDownloadLocations,
    StreamDownloadLocations,
    StreamChunkLocations,
    GetUploadLocations,
    Rebase,
    Root,
    Commit,
    ListTableFiles,
    RefreshTableFileUrl,
    AddTableFiles,
}

impl Rpc {
    pub const ALL: [Rpc; 12] = [
        Rpc::GetRepoMetadata,
        Rpc::HasChunks,
        Rpc::GetDownloadLocations,
        Rpc::StreamDownloadLocations,
        Rpc::StreamChunkLocations,
        Rpc::GetUploadLocations,
        Rpc::Rebase,
        Rpc::Root,
        Rpc::Commit,
        Rpc::ListTableFiles,
        Rpc::RefreshTableFileUrl,
        Rpc::AddTableFiles,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rpc::GetRepoMetadata => "GetRepoMetadata",
            Rpc::HasChunks => "HasChunks",
            Rpc::GetDownloadLocations => "GetDownloadLocations",
            Rpc::StreamDownloadLocations => "StreamDownloadLocations",
            Rpc::StreamChunkLocations => "StreamChunkLocations",
            Rpc::GetUploadLocations => "GetUploadLocations",
            Rpc::Rebase => "Rebase",
            Rpc::Root => "Root",
            Rpc::Commit => "Commit",
            Rpc::ListTableFiles => "ListTableFiles",
            Rpc::RefreshTableFileUrl => "RefreshTableFileUrl",
            Rpc::AddTableFiles => "AddTableFiles",
        }
    }

    /// Resolves a gRPC `:path` such as
    /// `/dolt.services.remotesapi.v1alpha1.ChunkStoreService/Root`.
    pub fn from_path(path: &str) -> Option<Rpc> {
        let method = path.strip_prefix('/')?.strip_prefix(CHUNK_STORE_SERVICE)?.strip_prefix('/')?;
        Rpc::ALL.into_iter().find(|rpc| rpc.name() == method)
    }

    /// The RPCs that change the upstream's store; everything else only reads.
    pub fn is_write(self) -> bool {
        matches!(self, Rpc::GetUploadLocations | Rpc::AddTableFiles | Rpc::Commit)
    }

    /// Bidirectional streams answer exactly one response per request, in order.
    /// What a caller needs to be granted to make this call.
    pub fn permission(self) -> crate::config::Permission {
        if self.is_write() {
            crate::config::Permission::Write
        } else {
            crate::config::Permission::Read
        }
    }

    pub fn is_streaming(self) -> bool {
        matches!(self, Rpc::StreamDownloadLocations | Rpc::StreamChunkLocations)
    }

    /// Where `repo_path` and `repo_id` sit in this RPC's request message.
    pub fn request_schema(self) -> Schema {
        match self {
            Rpc::HasChunks | Rpc::GetDownloadLocations | Rpc::StreamDownloadLocations => REPO_PATH_4,
            Rpc::ListTableFiles | Rpc::RefreshTableFileUrl => REPO_PATH_4,
            Rpc::StreamChunkLocations | Rpc::Rebase | Rpc::Root | Rpc::GetRepoMetadata => REPO_PATH_3,
            Rpc::GetUploadLocations | Rpc::Commit => REPO_PATH_5,
            Rpc::AddTableFiles => REPO_PATH_6,
        }
    }

    /// Where the table-file URLs sit in this RPC's response message, if it has any.
    pub fn response_url_schema(self) -> Option<Schema> {
        match self {
            Rpc::GetDownloadLocations | Rpc::StreamDownloadLocations => Some(GET_DOWNLOAD_LOCS_RESPONSE),
            Rpc::StreamChunkLocations => Some(STREAM_CHUNK_LOCATIONS_RESPONSE),
            Rpc::GetUploadLocations => Some(GET_UPLOAD_LOCS_RESPONSE),
            Rpc::ListTableFiles => Some(LIST_TABLE_FILES_RESPONSE),
            Rpc::RefreshTableFileUrl => Some(REFRESH_TABLE_FILE_URL_RESPONSE),
            _ => None,
        }
    }
}

impl std::fmt::Display for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// `repo_id` is field 1 of every request; `repo_path` moves with the message.
const REPO_PATH_3: Schema = &[(1, Field::Leaf(Label::RepoId)), (3, Field::Leaf(Label::RepoPath))];
const REPO_PATH_4: Schema = &[(1, Field::Leaf(Label::RepoId)), (4, Field::Leaf(Label::RepoPath))];
const REPO_PATH_5: Schema = &[(1, Field::Leaf(Label::RepoId)), (5, Field::Leaf(Label::RepoPath))];
const REPO_PATH_6: Schema = &[(1, Field::Leaf(Label::RepoId)), (6, Field::Leaf(Label::RepoPath))];

const URL_1: Schema = &[(1, Field::Leaf(Label::Url))];
// DownloadLoc: http_get = 1 { url = 1 }, http_get_range = 2 { url = 1 }.
const DOWNLOAD_LOC: Schema = &[(1, Field::Message(URL_1)), (2, Field::Message(URL_1))];
const GET_DOWNLOAD_LOCS_RESPONSE: Schema = &[(1, Field::Message(DOWNLOAD_LOC))];
// table_files = 2 { url = 2 }.
const STREAM_CHUNK_LOCATIONS_RESPONSE: Schema = &[(2, Field::Message(&[(2, Field::Leaf(Label::Url))]))];
// locs = 1 { http_post = 2 { url = 1 } }.
const GET_UPLOAD_LOCS_RESPONSE: Schema = &[(1, Field::Message(&[(2, Field::Message(URL_1))]))];
// table_file_info = 2 { url = 3 }, appendix_table_file_info = 3 { url = 3 }.
const TABLE_FILE_INFO: Schema = &[(3, Field::Leaf(Label::Url))];
const LIST_TABLE_FILES_RESPONSE: Schema = &[(2, Field::Message(TABLE_FILE_INFO)), (3, Field::Message(TABLE_FILE_INFO))];
const REFRESH_TABLE_FILE_URL_RESPONSE: Schema = URL_1;

/// The database a request names, as sql-server reads it: `repo_path` when set,
/// else `repo_id.org + "/" + repo_id.repo_name`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepoName {
    /// The name as the client sent it, e.g. `mydb` or `mydb/feature`.
    pub path: String,
}

impl RepoName {
    /// The database part: sql-server treats `/` and `@` as revision delimiters.
    pub fn database(&self) -> &str {
        database_of(&self.path)
    }

    pub fn is_empty(&self) -> bool {
        self.path.is_empty()
    }
}

/// The database a repository path names: sql-server reads `db/branch` and
/// `db@rev` as database `db` at a revision.
pub fn database_of(repo_path: &str) -> &str {
    repo_path.split(['/', '@']).next().unwrap_or_default()
}

/// The database sql-server acts on for a repository path: it lower-cases the
/// path with Go's `strings.ToLower` and cuts it at the first `/` or `@`
/// (`go/libraries/doltcore/sqle/database_provider.go`, `SessionDatabase`).
/// Go lower-cases rune by rune with the simple mapping, so `İ` (U+0130)
/// becomes a plain `i` and the Kelvin sign `K` a `k`: every spelling that
/// reaches a database's store comes out as that database's name here.
pub fn canonical_database(repo_path: &str) -> String {
    database_of(repo_path).chars().flat_map(go_to_lower).collect()
}

/// One rune as Go's `unicode.ToLower` maps it. Rust's per-char mapping is
/// Unicode's full one, which differs from the simple one only for U+0130.
fn go_to_lower(c: char) -> std::char::ToLowercase {
    if c == '\u{130}' {
        'i'.to_lowercase()
    } else {
        c.to_lowercase()
    }
}

/// Reads the repository a request message names, without decoding the rest.
pub fn read_repo_name(rpc: Rpc, message: &[u8]) -> Result<RepoName, wire::WireError> {
    let mut repo_path = None;
    let mut repo_id = None;
    wire::read::<wire::WireError>(message, rpc.request_schema(), &mut |label, value| {
        match label {
            Label::RepoPath => {
                let path =
                    std::str::from_utf8(value).map_err(|_| wire::WireError::Malformed("repo_path is not UTF-8"))?;
                repo_path = Some(path.to_owned());
            }
            Label::RepoId => repo_id = Some(value.to_vec()),
            Label::Url => {}
        }
        Ok(())
    })?;
    if let Some(path) = repo_path.filter(|p| !p.is_empty()) {
        return Ok(RepoName { path });
    }
    let Some(repo_id) = repo_id else {
        return Ok(RepoName::default());
    };
    let id = <proto::RepoId as prost::Message>::decode(repo_id.as_slice())
        .map_err(|_| wire::WireError::Malformed("bad repo_id"))?;
    if id.org.is_empty() || id.repo_name.is_empty() {
        return Ok(RepoName::default());
    }
    Ok(RepoName { path: format!("{}/{}", id.org, id.repo_name) })
}

#[cfg(test)]
mod tests {
    use super::proto::*;
    use super::*;
    use prost::Message;

    #[test]
    fn every_rpc_resolves_from_its_path() {
        for rpc in Rpc::ALL {
            let path = format!("/{CHUNK_STORE_SERVICE}/{}", rpc.name());
            assert_eq!(Rpc::from_path(&path), Some(rpc));
        }
        assert_eq!(Rpc::from_path("/dolt.services.remotesapi.v1alpha1.CredentialsService/WhoAmI"), None);
        assert_eq!(Rpc::from_path("/x/Root"), None);
    }

    #[test]
    fn repo_name_comes_from_the_right_field_of_each_request() {
        let id = || Some(RepoId { org: "org".into(), repo_name: "repo".into() });
        let cases: Vec<(Rpc, Vec<u8>)> = vec![
            (Rpc::HasChunks, HasChunksRequest { repo_path: "db".into(), ..Default::default() }.encode_to_vec()),
            (Rpc::Root, RootRequest { repo_path: "db".into(), ..Default::default() }.encode_to_vec()),
            (Rpc::Commit, CommitRequest { repo_path: "db".into(), ..Default::default() }.encode_to_vec()),
            (Rpc::AddTableFiles, AddTableFilesRequest { repo_path: "db".into(), ..Default::default() }.encode_to_vec()),
            (
                Rpc::StreamChunkLocations,
                StreamChunkLocationsRequest {
                    repo_path: "db".into(),
                    chunk_hashes: vec![7; 40].into(),
                    ..Default::default()
                }
                .encode_to_vec(),
            ),
            (
                Rpc::GetUploadLocations,
                GetUploadLocsRequest { repo_path: "db".into(), ..Default::default() }.encode_to_vec(),
            ),
            (
                Rpc::ListTableFiles,
                ListTableFilesRequest { repo_path: "db".into(), ..Default::default() }.encode_to_vec(),
            ),
        ];
        for (rpc, msg) in cases {
            assert_eq!(read_repo_name(rpc, &msg).unwrap().path, "db", "{rpc}");
        }
        let by_id = RootRequest { repo_id: id(), ..Default::default() }.encode_to_vec();
        assert_eq!(read_repo_name(Rpc::Root, &by_id).unwrap().path, "org/repo");
    }

    #[test]
    fn database_strips_the_revision() {
        for (path, db) in [("db", "db"), ("db/feature", "db"), ("db@abc", "db"), ("", "")] {
            assert_eq!(RepoName { path: path.into() }.database(), db);
        }
    }
}
