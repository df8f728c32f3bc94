//! The upload verifier, which decides whether Dolt may keep a pushed table
//! file or archive. Never a panic; and a file it passes (all but the name,
//! which a fuzzer cannot forge) is one the in-memory readers also read whole,
//! every indexed chunk hashing to its address.
//!
//! The first byte's low bit picks the kind the upload claims (0: table file,
//! 1: archive); the rest is the file.
#![no_main]

use bytes::Bytes;
use doltgate::storage::source::ChunkFile;
use doltgate::storage::verify::{verify, FileKind, VerifyError};
use doltgate::storage::Address;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, file)) = data.split_first() else { return };
    let kind = if kind & 1 == 0 { FileKind::Table } else { FileKind::Archive };
    let chunks_verified = match verify(file, Address::EMPTY, kind) {
        Ok(_) | Err(VerifyError::WrongName { .. }) => true,
        Err(_) => false,
    };
    if !chunks_verified {
        return;
    }
    let parsed = ChunkFile::parse(Bytes::copy_from_slice(file)).expect("a verified file parses");
    let addresses: Vec<Address> = match &parsed {
        ChunkFile::Table(table) => table.index().addresses().collect(),
        ChunkFile::Archive(archive) => archive.addresses().collect(),
    };
    for address in addresses {
        let chunk = parsed.get(&address).expect("a verified chunk reads").expect("an indexed chunk is there");
        assert_eq!(Address::of(&chunk), address);
    }
});
