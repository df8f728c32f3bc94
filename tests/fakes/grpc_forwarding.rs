//! gRPC forwarding against an in-process fake upstream, for what a real Dolt
//! cannot be made to do on demand: answer one stream message at a time under
//! the test's control, return arbitrary statuses and headers, take messages
//! far above gRPC's usual 4 MiB. The real-peer proof of the same paths is in
//! the e2e tests; this file pins down the edges.

use std::net::SocketAddr;
use std::time::Duration;

use doltgate::config::{Config, UpstreamConfig};
use doltgate::remotesapi::proto::chunk_store_service_client::ChunkStoreServiceClient;
use doltgate::remotesapi::proto::chunk_store_service_server::{ChunkStoreService, ChunkStoreServiceServer};
use doltgate::remotesapi::proto::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

/// A `current` this long makes a CommitRequest just under Dolt's 128 MiB message limit.
const BIG: usize = 128 * 1024 * 1024 - 64;

#[derive(Default)]
struct FakeStore;

fn url(repo_path: &str, file: &str) -> String {
    format!("http://upstream.test:4000/single_symmetric_key_sealed_request/{repo_path}/{file}?exp=1&nonce=a%2Fb")
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ChunkStoreService for FakeStore {
    async fn get_repo_metadata(
        &self,
        request: Request<GetRepoMetadataRequest>,
    ) -> Result<Response<GetRepoMetadataResponse>, Status> {
        let seen_auth = request.metadata().get_all("authorization").iter().count();
        let mut response = Response::new(GetRepoMetadataResponse {
            nbf_version: "__DOLT__".into(),
            nbs_version: "5".into(),
            storage_size: seen_auth as u64,
            ..Default::default()
        });
        response.metadata_mut().insert("x-dolt-cluster-role", MetadataValue::from_static("primary"));
        Ok(response)
    }

    async fn has_chunks(&self, _: Request<HasChunksRequest>) -> Result<Response<HasChunksResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_download_locations(
        &self,
        _: Request<GetDownloadLocsRequest>,
    ) -> Result<Response<GetDownloadLocsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type StreamDownloadLocationsStream = Stream<GetDownloadLocsResponse>;

    async fn stream_download_locations(
        &self,
        _: Request<Streaming<GetDownloadLocsRequest>>,
    ) -> Result<Response<Self::StreamDownloadLocationsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type StreamChunkLocationsStream = Stream<StreamChunkLocationsResponse>;

    /// One response per request, sent as soon as the request arrives.
    async fn stream_chunk_locations(
        &self,
        request: Request<Streaming<StreamChunkLocationsRequest>>,
    ) -> Result<Response<Self::StreamChunkLocationsStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut index = 0u32;
            while let Some(Ok(req)) = incoming.next().await {
                if req.repo_path == "fail-mid-stream" && index == 1 {
                    let _ = tx.send(Err(Status::failed_precondition("fake refuses the second message"))).await;
                    return;
                }
                let response = StreamChunkLocationsResponse {
                    table_files: vec![stream_chunk_locations_response::TableFileRecord {
                        table_file_id: index,
                        url: url(&req.repo_path, &format!("file{index}")),
                        file_id: format!("file{index}"),
                        refresh_after: None,
                    }],
                    missing_indexes: vec![(req.chunk_hashes.len() / 20) as u32],
                    ..Default::default()
                };
                index += 1;
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_upload_locations(
        &self,
        _: Request<GetUploadLocsRequest>,
    ) -> Result<Response<GetUploadLocsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rebase(&self, _: Request<RebaseRequest>) -> Result<Response<RebaseResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn root(&self, request: Request<RootRequest>) -> Result<Response<RootResponse>, Status> {
        match request.get_ref().repo_path.as_str() {
            "refuse" => Err(Status::failed_precondition("fake refuses: 100% sure")),
            "missing" => Err(Status::unknown("database not found: missing")),
            _ => Ok(Response::new(RootResponse { root_hash: vec![7u8; 20].into(), repo_token: String::new() })),
        }
    }

    /// Echoes the size of `current`, to prove a huge message arrived whole.
    async fn commit(&self, request: Request<CommitRequest>) -> Result<Response<CommitResponse>, Status> {
        let req = request.into_inner();
        let ok = req.current.len() == BIG && req.current.iter().all(|b| *b == 0xAB);
        Ok(Response::new(CommitResponse { success: ok }))
    }

    async fn list_table_files(
        &self,
        request: Request<ListTableFilesRequest>,
    ) -> Result<Response<ListTableFilesResponse>, Status> {
        let repo = request.into_inner().repo_path;
        let info = |name: &str| TableFileInfo {
            file_id: name.into(),
            num_chunks: 3,
            url: url(&repo, name),
            ..Default::default()
        };
        Ok(Response::new(ListTableFilesResponse {
            root_hash: vec![1u8; 20].into(),
            table_file_info: vec![info("a"), info("b")],
            appendix_table_file_info: vec![info("c")],
            repo_token: String::new(),
        }))
    }

    async fn refresh_table_file_url(
        &self,
        _: Request<RefreshTableFileUrlRequest>,
    ) -> Result<Response<RefreshTableFileUrlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn add_table_files(
        &self,
        _: Request<AddTableFilesRequest>,
    ) -> Result<Response<AddTableFilesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves the fake on 127.0.0.1 with hyper; stops when the returned sender drops.
async fn start_fake_upstream() -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let service = ChunkStoreServiceServer::new(FakeStore)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = accepted.unwrap();
                    let service = TowerToHyperService::new(service.clone());
                    tokio::spawn(async move {
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    });
                }
                _ = &mut stopped => return,
            }
        }
    });
    (addr, stop)
}

struct Harness {
    client: ChunkStoreServiceClient<Channel>,
    gateway: SocketAddr,
    _stop_upstream: oneshot::Sender<()>,
    _stop_gateway: oneshot::Sender<()>,
}

async fn harness() -> Harness {
    let (upstream, stop_upstream) = start_fake_upstream().await;
    let mut config = Config::default();
    config.listener.address = "127.0.0.1:0".parse().unwrap();
    config.upstream = Some(UpstreamConfig { name: "fake-0".into(), ..UpstreamConfig::at(upstream.to_string()) });
    let (gateway, stop_gateway, client) = serve_gateway(&config).await;
    Harness { client, gateway, _stop_upstream: stop_upstream, _stop_gateway: stop_gateway }
}

/// doltgate in-process with `config`, and a client of it; dropping the
/// sender stops it.
async fn serve_gateway(config: &Config) -> (SocketAddr, oneshot::Sender<()>, ChunkStoreServiceClient<Channel>) {
    let server = doltgate::Server::bind(config).await.unwrap();
    let gateway = server.local_addr();
    let (stop_gateway, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{gateway}")).unwrap().connect().await.unwrap();
    let client = ChunkStoreServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    (gateway, stop_gateway, client)
}

/// The URL leads to doltgate, carries a capability, and keeps the upstream's
/// path and query byte for byte.
fn assert_routes_back(url: &str, gateway: std::net::SocketAddr, upstream_path_and_query: &str) {
    let rest = url.strip_prefix(&format!("http://{gateway}/_doltgate/files/")).unwrap_or_else(|| panic!("{url}"));
    let capability = rest.strip_suffix(upstream_path_and_query).unwrap_or_else(|| panic!("{url}"));
    assert!(
        capability.len() > 40 && capability.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{url}"
    );
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", MetadataValue::from_static("Basic YWxpY2U6cHc="));
    request
}

#[tokio::test]
async fn stream_answers_each_message_before_the_next_is_sent() {
    let mut h = harness().await;
    let (tx, rx) = mpsc::channel(1);
    let mut responses = h.client.stream_chunk_locations(authed(ReceiverStream::new(rx))).await.unwrap().into_inner();
    for i in 0..5u32 {
        let hashes = vec![0u8; 20 * (i as usize + 1)];
        tx.send(StreamChunkLocationsRequest {
            repo_path: "db".into(),
            chunk_hashes: hashes.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        // The next request is not sent until this response is here: nothing may wait for more input.
        let response = tokio::time::timeout(Duration::from_secs(5), responses.next())
            .await
            .expect("response to an outstanding request must not be held back")
            .unwrap()
            .unwrap();
        assert_eq!(response.missing_indexes, vec![i + 1], "responses come in request order");
        let upstream = format!("/single_symmetric_key_sealed_request/db/file{i}?exp=1&nonce=a%2Fb");
        assert_routes_back(&response.table_files[0].url, h.gateway, &upstream);
    }
    drop(tx);
    assert!(responses.next().await.is_none(), "stream ends cleanly after the client half-closes");
}

#[tokio::test]
async fn upstream_error_mid_stream_reaches_the_client() {
    let mut h = harness().await;
    let requests = tokio_stream::iter(
        (0..3).map(|_| StreamChunkLocationsRequest { repo_path: "fail-mid-stream".into(), ..Default::default() }),
    );
    let mut responses = h.client.stream_chunk_locations(authed(requests)).await.unwrap().into_inner();
    assert!(responses.next().await.unwrap().is_ok());
    let err = responses.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "fake refuses the second message");
}

#[tokio::test]
async fn statuses_and_response_headers_pass_through() {
    let mut h = harness().await;
    let err =
        h.client.root(authed(RootRequest { repo_path: "refuse".into(), ..Default::default() })).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.message(), "fake refuses: 100% sure");

    let err =
        h.client.root(authed(RootRequest { repo_path: "missing".into(), ..Default::default() })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("\"missing\""), "{}", err.message());

    let response = h
        .client
        .get_repo_metadata(authed(GetRepoMetadataRequest { repo_path: "db".into(), ..Default::default() }))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-dolt-cluster-role").unwrap(), "primary");
    assert_eq!(response.get_ref().storage_size, 1, "upstream saw exactly one authorization value");
}

#[tokio::test]
async fn every_table_file_url_is_rewritten() {
    let mut h = harness().await;
    let response = h
        .client
        .list_table_files(authed(ListTableFilesRequest { repo_path: "db".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let urls: Vec<&str> =
        response.table_file_info.iter().chain(&response.appendix_table_file_info).map(|i| i.url.as_str()).collect();
    assert_eq!(urls.len(), 3);
    for (url, name) in urls.iter().zip(["a", "b", "c"]) {
        let upstream = format!("/single_symmetric_key_sealed_request/db/{name}?exp=1&nonce=a%2Fb");
        assert_routes_back(url, h.gateway, &upstream);
    }
    assert_eq!(response.table_file_info[0].num_chunks, 3, "other fields survive the rewrite");
}

#[tokio::test]
async fn messages_up_to_128_mib_pass_and_larger_are_refused() {
    let mut h = harness().await;
    let current = bytes::Bytes::from(vec![0xABu8; BIG]);
    let commit = |current: bytes::Bytes| CommitRequest { repo_path: "db".into(), current, ..Default::default() };
    let response = h.client.commit(authed(commit(current.clone()))).await.unwrap();
    assert!(response.get_ref().success, "the upstream received all {BIG} bytes intact");

    let mut too_big = current.to_vec();
    too_big.extend_from_slice(&[0xAB; 1024]);
    let err = h.client.commit(authed(commit(too_big.into()))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("134217728-byte limit"), "{}", err.message());
}

#[tokio::test]
async fn requests_without_credentials_or_database_are_refused_here() {
    let mut h = harness().await;
    let err =
        h.client.root(Request::new(RootRequest { repo_path: "db".into(), ..Default::default() })).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let err = h.client.root(authed(RootRequest::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("repo_path"), "{}", err.message());
}

#[tokio::test]
async fn unknown_services_are_unimplemented() {
    let h = harness().await;
    let channel = Channel::from_shared(format!("http://{}", h.gateway)).unwrap().connect().await.unwrap();
    let mut client = doltgate::remotesapi::proto::credentials_service_client::CredentialsServiceClient::new(channel);
    let err = client.who_am_i(authed(WhoAmIRequest {})).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("WhoAmI"), "{}", err.message());
}

/// Push inspection fails closed, and says whether to retry: an upstream that
/// cannot be reached while a Commit is being inspected is UNAVAILABLE (Dolt's
/// client retries), and the Commit is never forwarded.
#[tokio::test]
async fn a_commit_whose_inspection_cannot_reach_the_upstream_is_unavailable() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let hash = doltgate::authn::password::hash_password("pw").unwrap();
    let text = format!(
        r#"
[listener]
address = "127.0.0.1:0"
[upstream]
address = "{dead}"
[auth]
upstream_credentials = "passthrough"
[[auth.users]]
name = "bob"
password_hash = "{hash}"
[[auth.grants]]
databases = ["*"]
users = ["bob"]
permission = "write"
"#
    );
    let (_gateway, _stop, mut client) = serve_gateway(&Config::parse(&text).unwrap()).await;
    let mut request = Request::new(CommitRequest {
        repo_path: "shop".into(),
        current: vec![1; 20].into(),
        last: vec![2; 20].into(),
        ..Default::default()
    });
    let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bob:pw"));
    request.metadata_mut().insert("authorization", basic.parse().unwrap());
    let status = client.commit(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("push not inspected (try again)"), "{}", status.message());
    assert!(status.message().contains(&dead.to_string()), "names the upstream: {}", status.message());
}
