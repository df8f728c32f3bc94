//! The per-call work doltgate adds on top of moving bytes, measured on the
//! crate's public API with messages shaped like Dolt's:
//!
//! - `frame`: splitting a gRPC body into messages (`FrameDecoder`), as every
//!   request and response passes through it, and framing one (`Framed::encode`);
//! - `wire`: reading the repository name of a request (`read_repo_name`, every
//!   call) and rewriting table-file URLs in a `GetDownloadLocations` response
//!   (`wire::rewrite`, with and without anything to change);
//! - `file_url`: sealing a table-file URL (`UrlSigner::to_client_url`, once per
//!   URL in a response) and checking one (`UrlSigner::open`, once per GET);
//! - `route`: resolving a database name against a table of routes (`Router::resolve`);
//! - `chunk_addresses`: hashing a pushed file's chunks, one at a time
//!   (`Address::of`, OpenSSL) and all at once (`Address::of_each`, eight per
//!   AVX-512 register where the CPU has them), reported in bytes per second.
//!
//! Run: `cargo bench --bench hot_paths` (add `-- wire` to pick a group).
//! `benches/harness.py` measures the whole proxy against a real Dolt server.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use doltgate::config::{ReadPolicy, RouteConfig};
use doltgate::file_url::{CapabilityGrant, UrlSigner};
use doltgate::remotesapi::frame::{FrameDecoder, Framed};
use doltgate::remotesapi::proto::{
    ClientRepoFormat, DownloadLoc, GetDownloadLocsResponse, GetRepoMetadataRequest, HttpGetRange, RangeChunk, RepoId,
};
use doltgate::remotesapi::wire::{self, Edit, Label, WireError};
use doltgate::remotesapi::{read_repo_name, Rpc};
use doltgate::route::Router;
use doltgate::storage::Address;
use prost::Message;

const UPSTREAM_URL: &str = "http://127.0.0.1:50052/bench/2pq2n0ri1bcnlbkb5f3p9fkhvmi6d4th?\
    dolt-exp=1776000000&dolt-sig=Wm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8";

fn metadata_request() -> Vec<u8> {
    GetRepoMetadataRequest {
        repo_id: Some(RepoId { org: String::new(), repo_name: String::new() }),
        repo_path: "bench".into(),
        client_repo_format: Some(ClientRepoFormat { nbf_version: "__DOLT__".into(), nbs_version: "5".into() }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A response like the ones a clone receives: `locs` download locations, each
/// a ranged GET of one table file with `ranges` chunk ranges.
fn download_locations(locs: usize, ranges: usize) -> Bytes {
    let loc = |i: usize| DownloadLoc {
        location: Some(doltgate::remotesapi::proto::download_loc::Location::HttpGetRange(HttpGetRange {
            url: format!("{UPSTREAM_URL}{i}"),
            ranges: (0..ranges as u64)
                .map(|r| RangeChunk {
                    hash: Bytes::from(vec![r as u8; 20]),
                    offset: r * 4096,
                    length: 4096,
                    ..Default::default()
                })
                .collect(),
        })),
        ..Default::default()
    };
    Bytes::from(GetDownloadLocsResponse { locs: (0..locs).map(loc).collect(), ..Default::default() }.encode_to_vec())
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    let small = Framed::encode(&metadata_request()).into_bytes();
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("decode_small_unary", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new(128 << 20);
            decoder.push(black_box(small.clone()));
            black_box(decoder.next_message().unwrap().unwrap())
        })
    });
    // A 4 MiB response arriving in 16 KiB HTTP/2 DATA frames.
    let big = Framed::encode(&vec![7u8; 4 << 20]).into_bytes();
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("decode_4mib_in_16kib_chunks", |b| {
        b.iter(|| {
            let mut decoder = FrameDecoder::new(128 << 20);
            let mut got = None;
            for chunk in big.chunks(16 << 10) {
                decoder.push(Bytes::copy_from_slice(chunk));
                if let Some(m) = decoder.next_message().unwrap() {
                    got = Some(m);
                }
            }
            black_box(got.unwrap())
        })
    });
    let message = metadata_request();
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function("encode_small", |b| b.iter(|| black_box(Framed::encode(black_box(&message)))));
    group.finish();
}

fn wire_paths(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    let request = metadata_request();
    group.bench_function("read_repo_name", |b| {
        b.iter(|| black_box(read_repo_name(Rpc::GetRepoMetadata, black_box(&request)).unwrap()))
    });
    let response = download_locations(32, 64);
    let schema = Rpc::GetDownloadLocations.response_url_schema().unwrap();
    group.throughput(Throughput::Bytes(response.len() as u64));
    group.bench_function("rewrite_32_urls", |b| {
        b.iter(|| {
            let out = wire::rewrite::<WireError>(black_box(&response), schema, &mut |label, value| {
                Ok(match label {
                    Label::Url => {
                        let mut url = b"http://gateway:50051/_doltgate/files/x".to_vec();
                        url.extend_from_slice(value);
                        Edit::Replace(Bytes::from(url))
                    }
                    _ => Edit::Keep,
                })
            });
            black_box(out.unwrap().unwrap())
        })
    });
    group.bench_function("scan_32_urls_unchanged", |b| {
        b.iter(|| {
            let out = wire::rewrite::<WireError>(black_box(&response), schema, &mut |_, _| Ok(Edit::Keep));
            black_box(out.unwrap())
        })
    });
    group.finish();
}

fn file_urls(c: &mut Criterion) {
    let mut group = c.benchmark_group("file_url");
    let signer = UrlSigner::new(&[42u8; 32], Duration::from_secs(900)).unwrap();
    let grant = CapabilityGrant { endpoint: "dolt", database: "bench", principal: "alice", write: false };
    group.bench_function("to_client_url", |b| {
        b.iter(|| black_box(signer.to_client_url(black_box(UPSTREAM_URL), &grant, "http://gateway:50051").unwrap()))
    });
    let url = signer.to_client_url(UPSTREAM_URL, &grant, "http://gateway:50051").unwrap();
    let path_and_query = &url["http://gateway:50051".len()..];
    group.bench_function("open", |b| b.iter(|| black_box(signer.open(black_box(path_and_query), false).unwrap())));
    group.finish();
}

fn routes(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let route = |database: Option<&str>, prefix: Option<&str>, glob: Option<&str>, path: Option<&str>| RouteConfig {
        database: database.map(Into::into),
        database_prefix: prefix.map(Into::into),
        database_glob: glob.map(Into::into),
        path_prefix: path.map(Into::into),
        cluster: "main".into(),
        read_policy: ReadPolicy::Primary,
    };
    let mut table: Vec<RouteConfig> = (0..20).map(|i| route(Some(&format!("db{i}")), None, None, None)).collect();
    table.push(route(None, Some("team_"), None, None));
    table.push(route(None, None, Some("*"), Some("eu")));
    table.push(route(None, None, Some("*"), None));
    let router = Router::build(&table, |name| Some(name.to_owned())).expect("valid routes");
    group.bench_function("resolve_exact_first", |b| b.iter(|| black_box(router.resolve(black_box("db0")).unwrap())));
    group.bench_function("resolve_after_20_exact", |b| {
        b.iter(|| black_box(router.resolve(black_box("team_orders/main")).unwrap()))
    });
    group.bench_function("resolve_path_prefix_glob", |b| {
        b.iter_batched(|| "eu/shop@v1", |p| black_box(router.resolve(p).unwrap()), BatchSize::SmallInput)
    });
    group.finish();
}

/// 4 MiB of chunks of 1 to 7 KiB, the sizes Dolt's chunker produces.
fn chunk_addresses(c: &mut Criterion) {
    let bytes: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() > 8 << 10 {
        let (chunk, tail) = rest.split_at(1024 + (chunks.len() * 7919) % (6 << 10));
        chunks.push(chunk);
        rest = tail;
    }
    let mut group = c.benchmark_group("chunk_addresses");
    group.throughput(Throughput::Bytes(chunks.iter().map(|chunk| chunk.len() as u64).sum()));
    group.bench_function("one_at_a_time", |b| {
        b.iter(|| black_box(chunks.iter().map(|chunk| Address::of(chunk)).collect::<Vec<_>>()))
    });
    group.bench_function("all_at_once", |b| b.iter(|| black_box(Address::of_each(black_box(&chunks)))));
    group.finish();
}

criterion_group!(benches, frame, wire_paths, file_urls, routes, chunk_addresses);
criterion_main!(benches);
