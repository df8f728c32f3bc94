//! Dolt's chunk storage as doltgate reads it from pushes and ranged downloads:
//! table files and archives (footer, index, records), one ranged chunk with or
//! without a zstd dictionary, and every flatbuffers message the push inspector
//! reads. Never a panic, never a chunk that does not hash to its address, never
//! an allocation past the chunk limit.
//!
//! The first byte picks the decoder (mod 3):
//! - 0: the rest is a whole table file or archive;
//! - 1: the rest is one chunk, read as each message kind;
//! - 2: `address[20] dictionary_len[u16 BE] dictionary data`, a ranged download.
//!
//! With `DOLTGATE_FUZZ_DUMP=<dir>` set, every chunk and record a file input
//! yields is also written there as a mode-1 or mode-2 input; `fuzz/seed-corpus`
//! uses that to turn real Dolt files into seeds for the other two modes.
#![no_main]

use bytes::Bytes;
use doltgate::storage::message::{
    self, AddressMapNode, Commit, CommitClosureNode, ForeignKey, RootValue, StoreRoot, Table, Tag, WorkingSet,
};
use doltgate::storage::source::ChunkFile;
use doltgate::storage::{decode_range_chunk, Address, MAX_CHUNK_LEN};
use libfuzzer_sys::fuzz_target;

/// Files with more chunks than this are only partly read, to keep each run short.
const MAX_CHUNKS_READ: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => file(rest),
        1 => messages(rest),
        _ => ranged(rest),
    }
});

fn file(bytes: &[u8]) {
    let Ok(file) = ChunkFile::parse(Bytes::copy_from_slice(bytes)) else { return };
    let addresses: Vec<Address> = match &file {
        ChunkFile::Table(table) => table.index().addresses().take(MAX_CHUNKS_READ).collect(),
        ChunkFile::Archive(archive) => archive.addresses().take(MAX_CHUNKS_READ).collect(),
    };
    assert!(addresses.len() <= file.chunk_count());
    for address in addresses {
        match file.get(&address) {
            Ok(Some(chunk)) => {
                assert_eq!(Address::of(&chunk), address, "a chunk that does not hash to its address");
                assert!(chunk.len() <= MAX_CHUNK_LEN);
                dump(1, &[], &chunk);
                messages(&chunk);
            }
            Ok(None) => panic!("an address the index lists is not found by lookup"),
            Err(_) => {}
        }
        dump_range(&file, bytes, &address);
    }
}

fn messages(chunk: &[u8]) {
    let address = Address::of(chunk);
    let _ = message::file_id(&address, chunk);
    let _ = StoreRoot::parse(&address, chunk);
    if let Ok(node) = AddressMapNode::parse(&address, chunk) {
        assert_eq!(node.keys.len(), node.addresses.len());
    }
    let _ = Commit::parse(&address, chunk);
    let _ = CommitClosureNode::parse(&address, chunk);
    let _ = Tag::parse(&address, chunk);
    let _ = WorkingSet::parse(&address, chunk);
    if let Ok(root) = RootValue::parse(&address, chunk) {
        assert_eq!(root.tables.keys.len(), root.tables.addresses.len());
    }
    let _ = Table::parse(&address, chunk);
    let _ = message::check_walkable(&address, chunk);
    let _ = ForeignKey::parse_collection(&address, chunk);
}

fn ranged(input: &[u8]) {
    if input.len() < 22 {
        return;
    }
    let (address, rest) = input.split_at(20);
    let address = Address::from_slice(address).expect("20 bytes");
    let dictionary_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let rest = &rest[2..];
    let (dictionary, data) = rest.split_at(dictionary_len.min(rest.len()));
    let dictionary = (!dictionary.is_empty()).then_some(dictionary);
    if let Ok(chunk) = decode_range_chunk(&address, data, dictionary) {
        assert_eq!(Address::of(&chunk), address);
        assert!(chunk.len() <= MAX_CHUNK_LEN);
    }
}

/// Writes the spans a ranged download of `address` would fetch, as a mode-2 input.
fn dump_range(file: &ChunkFile, bytes: &[u8], address: &Address) {
    if std::env::var_os("DOLTGATE_FUZZ_DUMP").is_none() {
        return;
    }
    let slice = |offset: u64, len: u64| bytes.get(offset as usize..(offset + len) as usize);
    let (dictionary, data) = match file {
        ChunkFile::Table(table) => match table.index().lookup(address) {
            Some(record) => (None, slice(record.offset, record.len.into())),
            None => return,
        },
        ChunkFile::Archive(archive) => match archive.lookup(address) {
            Some(spans) => {
                (spans.dictionary.and_then(|d| slice(d.offset, d.len)), slice(spans.data.offset, spans.data.len))
            }
            None => return,
        },
    };
    let (Some(data), Ok(dictionary_len)) = (data, u16::try_from(dictionary.map_or(0, <[u8]>::len))) else { return };
    let mut head = address.as_bytes().to_vec();
    head.extend_from_slice(&dictionary_len.to_be_bytes());
    head.extend_from_slice(dictionary.unwrap_or_default());
    dump(2, &head, data);
}

fn dump(mode: u8, head: &[u8], body: &[u8]) {
    let Some(dir) = std::env::var_os("DOLTGATE_FUZZ_DUMP") else { return };
    let mut input = vec![mode];
    input.extend_from_slice(head);
    input.extend_from_slice(body);
    let name = Address::of(&input).to_string();
    std::fs::write(std::path::Path::new(&dir).join(name), input).expect("write a seed");
}
