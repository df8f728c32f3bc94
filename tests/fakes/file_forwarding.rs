//! Table-file HTTP through the doltgate binary to an in-process fake upstream
//! that records what reached it: Range and query passed byte for byte,
//! 206 and Content-Range kept, credential headers stripped, a 1 GiB upload
//! streamed with doltgate's memory far below the body size, and clear errors.
//! URLs carry capabilities minted here with the key the gateways are given:
//! altered, expired, wrong-kind or foreign-key ones get 403 and never reach
//! the upstream, and a second gateway sharing the key honours them.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::support::{free_port, Doltgate};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const FILE_LEN: usize = 1 << 20;
const SEALED: &str = "/single_symmetric_key_sealed_request/db/.dolt/noms/0123456789abcdefghijklmnopqrstuv";
const QUERY: &str = "exp=4102444800000&nbf=1699999999000&nonce=ab%2Bcd&req=x_Y-z%3D";
const URL_KEY: &str = "file-forwarding-test-key-0123456789abcdef";

fn file_bytes() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

/// What the fake upstream saw of the last request.
#[derive(Default, Clone, Debug)]
struct Seen {
    path_and_query: String,
    headers: http::HeaderMap,
    body_len: u64,
    body_sum: u64,
}

async fn fake_upstream(seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, seen.clone()));
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

async fn handle(req: Request<Incoming>, seen: Arc<Mutex<Seen>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path_and_query = req.uri().path_and_query().unwrap().as_str().to_owned();
    let headers = req.headers().clone();
    let method = req.method().clone();
    let range = headers.get("range").map(|r| r.to_str().unwrap().to_owned());
    let mut body = req.into_body();
    let (mut len, mut sum) = (0u64, 0u64);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            len += data.len() as u64;
            sum = data.iter().fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64));
        }
    }
    *seen.lock().unwrap() = Seen { path_and_query, headers, body_len: len, body_sum: sum };
    let file = file_bytes();
    let response = match (method, range) {
        (http::Method::GET, Some(range)) => {
            let (start, end) = range.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
            let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
            Response::builder()
                .status(206)
                .header("content-range", format!("bytes {start}-{end}/{FILE_LEN}"))
                .header("accept-ranges", "bytes")
                .body(Full::new(Bytes::copy_from_slice(&file[start..=end])))
        }
        (http::Method::GET, None) => Response::builder().status(200).body(Full::new(Bytes::from(file))),
        _ => Response::builder().status(200).body(Full::new(Bytes::from(format!("received {len}")))),
    };
    Ok(response.unwrap())
}

fn client() -> Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>,
> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn signed_url(key: &str, gateway: &Doltgate, endpoint: &str, write: bool, path_and_query: &str) -> String {
    let signer = doltgate::file_url::UrlSigner::new(key.as_bytes(), std::time::Duration::from_secs(600)).unwrap();
    let grant = doltgate::file_url::CapabilityGrant { endpoint, database: "db", principal: "alice", write };
    let upstream = format!("http://127.0.0.1:1{path_and_query}");
    signer.to_client_url(&upstream, &grant, &format!("http://127.0.0.1:{}", gateway.port)).unwrap()
}

fn gateway_url(gateway: &Doltgate, endpoint: &str, path_and_query: &str) -> String {
    signed_url(URL_KEY, gateway, endpoint, false, path_and_query)
}

fn upload_url(gateway: &Doltgate, path_and_query: &str) -> String {
    signed_url(URL_KEY, gateway, "dolt", true, path_and_query)
}

/// A gateway in front of `upstream` holding `key` for table-file URLs.
fn gateway_with_key(dir: &std::path::Path, upstream: &str, key: &str) -> Doltgate {
    let config = dir.join(format!("doltgate-{}.toml", free_port()));
    let text =
        format!("[upstream]\nname = \"dolt\"\naddress = \"{upstream}\"\n[file_urls]\nkey_env = \"DOLTGATE_URL_KEY\"\n");
    std::fs::write(&config, text).unwrap();
    Doltgate::start_with_config_env(dir, &config, &[("DOLTGATE_URL_KEY", key)])
}

fn empty() -> http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error> {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

async fn body_bytes(response: Response<Incoming>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

struct Setup {
    _dir: tempfile::TempDir,
    gateway: Doltgate,
    seen: Arc<Mutex<Seen>>,
    upstream: SocketAddr,
}

impl Setup {
    fn gateway_upstream(&self) -> String {
        self.upstream.to_string()
    }
}

async fn setup() -> Setup {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let upstream = fake_upstream(seen.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = gateway_with_key(dir.path(), &upstream.to_string(), URL_KEY);
    Setup { _dir: dir, gateway, seen, upstream }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_get_is_passed_exactly() {
    let s = setup().await;
    let path = format!("{SEALED}?{QUERY}");
    let request = Request::get(gateway_url(&s.gateway, "dolt", &path))
        .header("range", "bytes=1000-4999")
        .header("x-proxy-token", "helper-secret")
        .header("authorization", "Bearer not-for-upstream")
        .body(empty())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], format!("bytes 1000-4999/{FILE_LEN}").as_str());
    let body = body_bytes(response).await;
    assert_eq!(&body[..], &file_bytes()[1000..5000]);

    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.path_and_query, path, "path and query reach the upstream byte for byte");
    assert_eq!(seen.headers["range"], "bytes=1000-4999");
    assert!(seen.headers.get("x-proxy-token").is_none(), "credential-helper headers stay behind");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_file_get_streams_back() {
    let s = setup().await;
    let request = Request::get(gateway_url(&s.gateway, "dolt", &format!("{SEALED}?{QUERY}"))).body(empty()).unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, Bytes::from(file_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_bounded_memory() {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let s = setup().await;
    // A real table file (doltgate verifies every upload): 1024 records of one
    // chunk of about 1 MiB (a blob message, a chunk Dolt can walk), each a
    // snappy literal block (so the file stays 1 GiB) and its CRC32C, then the
    // index and footer.
    let chunk = doltgate::storage::build::blob(&vec![0x5Au8; CHUNK - 64]);
    let address = doltgate::storage::Address::of(&chunk);
    let mut record = Vec::new();
    let mut uncompressed_len = chunk.len();
    while uncompressed_len >= 0x80 {
        record.push((uncompressed_len as u8 & 0x7f) | 0x80);
        uncompressed_len >>= 7;
    }
    record.push(uncompressed_len as u8);
    record.push(0xFC);
    record.extend_from_slice(&((chunk.len() - 1) as u32).to_le_bytes());
    record.extend_from_slice(&chunk);
    let crc = crc32c::crc32c(&record);
    record.extend_from_slice(&crc.to_be_bytes());
    let record = Bytes::from(record);
    let mut index = Vec::new();
    for ordinal in 0..CHUNKS as u32 {
        index.extend_from_slice(&address.prefix().to_be_bytes());
        index.extend_from_slice(&ordinal.to_be_bytes());
    }
    (0..CHUNKS).for_each(|_| index.extend_from_slice(&(record.len() as u32).to_be_bytes()));
    let suffixes: Vec<u8> = (0..CHUNKS).flat_map(|_| address.suffix().to_vec()).collect();
    index.extend_from_slice(&suffixes);
    index.extend_from_slice(&(CHUNKS as u32).to_be_bytes());
    index.extend_from_slice(&((chunk.len() * CHUNKS) as u64).to_be_bytes());
    index.extend_from_slice(&[0xff, 0xb5, 0xd8, 0xc2, 0x24, 0x63, 0xee, 0x50]);
    let name = doltgate::storage::Address::of(&suffixes);
    let index = Bytes::from(index);
    let total = record.len() * CHUNKS + index.len();
    let fold = |sum: u64, bytes: &[u8]| bytes.iter().fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64));
    let expected_sum = fold((0..CHUNKS).fold(0u64, |sum, _| fold(sum, &record)), &index);
    let frames = futures_util::stream::iter(
        (0..CHUNKS)
            .map(move |_| record.clone())
            .chain(std::iter::once(index))
            .map(|b| Ok::<_, std::io::Error>(Frame::data(b))),
    );
    let body = StreamBody::new(frames).boxed_unsync();
    let upload = format!("/single_symmetric_key_sealed_request/db/{name}?num_chunks={CHUNKS}&{QUERY}");
    let request = Request::put(upload_url(&s.gateway, &upload))
        .header("content-length", total.to_string())
        .header("content-md5", "1B2M2Y8AsgTpgAmY7PhCfg==")
        .body(body)
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_bytes(response).await, format!("received {total}"));
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.body_len, total as u64);
    assert_eq!(seen.body_sum, expected_sum, "the upstream received the bytes in order, intact");
    assert_eq!(seen.headers["content-md5"], "1B2M2Y8AsgTpgAmY7PhCfg==");

    let peak_mib = s.gateway.peak_rss_kib() / 1024;
    println!("doltgate peak RSS during a verified 1 GiB upload: {peak_mib} MiB");
    assert!(peak_mib < 64, "doltgate held {peak_mib} MiB for a streamed 1 GiB upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_http_errors() {
    let s = setup().await;
    let cases = [
        (
            "GET",
            format!("http://127.0.0.1:{}{SEALED}?{QUERY}", s.gateway.port),
            StatusCode::NOT_FOUND,
            "/_doltgate/files/",
        ),
        ("GET", gateway_url(&s.gateway, "other", SEALED), StatusCode::NOT_FOUND, "unknown upstream endpoint \"other\""),
        ("DELETE", gateway_url(&s.gateway, "dolt", SEALED), StatusCode::METHOD_NOT_ALLOWED, "DELETE"),
        ("PUT", gateway_url(&s.gateway, "dolt", SEALED), StatusCode::FORBIDDEN, "download URL"),
        ("GET", upload_url(&s.gateway, SEALED), StatusCode::FORBIDDEN, "upload URL"),
        (
            "GET",
            signed_url("another-key-0123456789abcdef0123456789", &s.gateway, "dolt", false, SEALED),
            StatusCode::FORBIDDEN,
            "signature",
        ),
        ("GET", gateway_url(&s.gateway, "dolt", &format!("{SEALED}?exp=1000")), StatusCode::FORBIDDEN, "expired"),
        ("GET", gateway_url(&s.gateway, "dolt", SEALED).replace("/db/", "/db2/"), StatusCode::FORBIDDEN, "signature"),
        (
            "GET",
            format!("http://127.0.0.1:{}/_doltgate/files/dolt{SEALED}", s.gateway.port),
            StatusCode::FORBIDDEN,
            "truncated",
        ),
    ];
    for (method, url, status, needle) in cases {
        let request = Request::builder().method(method).uri(&url).body(empty()).unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), status, "{method} {url}");
        let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
        assert!(text.contains(needle), "{method} {url}: {text}");
    }
    assert_eq!(s.seen.lock().unwrap().path_and_query, "", "none of them reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_bad_gateway_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let gateway = gateway_with_key(dir.path(), &dead, URL_KEY);
    let request = Request::get(gateway_url(&gateway, "dolt", SEALED)).body(empty()).unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let text = String::from_utf8(body_bytes(response).await.to_vec()).unwrap();
    assert!(text.contains(&dead), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_work_on_any_gateway_sharing_the_key_only() {
    let s = setup().await;
    let upstream = s.gateway_upstream();
    let dir = tempfile::tempdir().unwrap();
    let sibling = gateway_with_key(dir.path(), &upstream, URL_KEY);
    let stranger = gateway_with_key(dir.path(), &upstream, "a-different-key-for-another-deployment");
    let path = format!("{SEALED}?{QUERY}");
    // Issued for the first gateway, replayed on the others.
    let issued = gateway_url(&s.gateway, "dolt", &path);
    let on = |gateway: &Doltgate| issued.replace(&s.gateway.port.to_string(), &gateway.port.to_string());
    let response = client().request(Request::get(on(&sibling)).body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "a replica sharing the key honours the URL");
    assert_eq!(s.seen.lock().unwrap().path_and_query, path);
    *s.seen.lock().unwrap() = Seen::default();
    let response = client().request(Request::get(on(&stranger)).body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.seen.lock().unwrap().path_and_query, "", "a refused URL never reaches the upstream");
}
