//! The whole per-call path of a unary gRPC call, in this process: an HTTP/2
//! client's request into doltgate's listener, through authentication (none in
//! the quick-start configuration), routing and the gRPC proxy, out as frames to
//! an upstream, and the answer back. The upstream is a bare `h2` server that
//! answers every call with the same `GetRepoMetadataResponse`, so nearly all of
//! the time that is not the client's or the upstream's is doltgate's.
//!
//! Each group measures the same calls twice: `direct` (client to upstream) and
//! `doltgate` (client to doltgate to upstream). The difference between the two
//! is what doltgate adds per call; a regression in any phase of the request
//! path shows here without the harness, Dolt or another proxy. Concurrency 1
//! (one call at a time) and 50 (calls in flight on one connection, as ghz runs
//! them) are both measured. The access log is not installed here (the binary
//! installs it); `benches/harness.py` measures it against real Dolt.
//!
//! Run: `cargo bench --bench per_call` (add `-- c50` to pick a group).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use doltgate::config::{Config, UpstreamConfig};
use doltgate::remotesapi::frame::Framed;
use doltgate::remotesapi::proto::{ClientRepoFormat, GetRepoMetadataRequest, GetRepoMetadataResponse};
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const PATH: &str = "/dolt.services.remotesapi.v1alpha1.ChunkStoreService/GetRepoMetadata";

/// One message in gRPC's length-prefixed framing, as doltgate frames its own.
fn grpc_frame(message: impl Message) -> Bytes {
    Framed::encode(&message.encode_to_vec()).into_bytes()
}

fn request_message() -> Bytes {
    grpc_frame(GetRepoMetadataRequest {
        repo_path: "bench".into(),
        client_repo_format: Some(ClientRepoFormat { nbf_version: "__DOLT__".into(), nbs_version: "5".into() }),
        ..Default::default()
    })
}

fn response_message() -> Bytes {
    grpc_frame(GetRepoMetadataResponse {
        nbf_version: "__DOLT__".into(),
        nbs_version: "5".into(),
        storage_size: 1 << 30,
        ..Default::default()
    })
}

/// The upstream: every call is read to its end and answered with headers, one
/// message and `grpc-status: 0`, the shape of Dolt's unary answers.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
    let addr = listener.local_addr().expect("upstream address");
    let answer = response_message();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else { return };
                while let Some(Ok((request, respond))) = connection.accept().await {
                    tokio::spawn(answer_call(request, respond, answer.clone()));
                }
            });
        }
    });
    addr
}

async fn answer_call(
    request: Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    answer: Bytes,
) -> Result<(), h2::Error> {
    let mut body = request.into_body();
    while let Some(data) = body.data().await {
        let _ = body.flow_control().release_capacity(data?.len());
    }
    let head = Response::builder().header("content-type", "application/grpc").body(()).expect("static head");
    let mut send = respond.send_response(head, false)?;
    send.send_data(answer, false)?;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    send.send_trailers(trailers)
}

/// doltgate in this process, quick-start configuration, in front of `upstream`.
async fn start_doltgate(upstream: SocketAddr) -> SocketAddr {
    let mut config = Config::default();
    config.listener.address = "127.0.0.1:0".parse().expect("literal address");
    config.upstream = Some(UpstreamConfig { name: "bench-0".into(), ..UpstreamConfig::at(upstream.to_string()) });
    // Its connections become tasks on the bench's one thread, beside the client
    // and the upstream: the time per call is then CPU time, not wake-ups between threads.
    let server = doltgate::Server::bind(&config).await.expect("doltgate starts");
    let addr = server.local_addr();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

/// One HTTP/2 connection to `addr`, as ghz opens one per run.
async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let socket = TcpStream::connect(addr).await.expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let (send, connection) = h2::client::handshake(socket).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    send
}

/// One unary call; panics unless it ends in `grpc-status: 0` after one message.
async fn call(send: h2::client::SendRequest<Bytes>, authority: &str, message: Bytes) {
    let head = Request::post(format!("http://{authority}{PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // doltgate passes the user on to Dolt, which checks the password; the upstream here does not.
        .header("authorization", "Basic YmVuY2g6YmVuY2hwYXNz")
        .body(())
        .expect("static head");
    let mut send = send.ready().await.expect("connection open");
    let (response, mut stream) = send.send_request(head, false).expect("send request");
    stream.send_data(message, true).expect("send message");
    let response = response.await.expect("response head");
    let head_status = response.headers().get("grpc-status").cloned();
    assert!(head_status.is_none(), "doltgate answered {:?}", response.headers());
    let mut body = response.into_body();
    let mut received = 0;
    while let Some(data) = body.data().await {
        let data = data.expect("response data");
        received += data.len();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers present");
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]), "{trailers:?}");
    assert!(received > 5, "one message expected, got {received} bytes");
}

/// `iters` calls with `in_flight` of them outstanding at any time, over one connection.
async fn run_calls(target: SocketAddr, in_flight: u64, iters: u64) -> Duration {
    let send = connect(target).await;
    let authority = target.to_string();
    let message = request_message();
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..in_flight.min(iters) {
        let (send, authority, message) = (send.clone(), authority.clone(), message.clone());
        let share = iters / in_flight + u64::from(worker < iters % in_flight);
        workers.spawn(async move {
            for _ in 0..share {
                call(send.clone(), &authority, message.clone()).await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a call panicked");
    }
    started.elapsed()
}

fn per_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let (upstream, doltgate) = runtime.block_on(async {
        let upstream = start_upstream().await;
        (upstream, start_doltgate(upstream).await)
    });
    for in_flight in [1u64, 50] {
        let mut group = c.benchmark_group(format!("unary_c{in_flight}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(5));
        for (name, target) in [("direct", upstream), ("doltgate", doltgate)] {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| runtime.block_on(run_calls(target, in_flight, iters)));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, per_call);
criterion_main!(benches);
