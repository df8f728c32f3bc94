//! The chunk journal, `vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv` in a `.dolt/noms`
//! directory: where the CLI and sql-server append chunks and root updates
//! before `dolt gc` moves them into table files or archives
//! (`go/store/nbs/journal_record.go`).
//!
//! A record is `u32 length ‖ tagged fields ‖ u32 CRC32C` (big-endian; the
//! length counts the whole record, the CRC covers all before it). Tags: 1 kind
//! (1 byte: 1 root, 2 chunk), 2 address (20 bytes), 3 payload (the rest but the
//! CRC, written last), 4 timestamp (8 bytes). A chunk's payload is a table-style
//! record, so it decodes with [`decode_record`]. The newest root record is the
//! store's root, newer than the manifest's.

use std::collections::HashMap;
use std::ops::Range;

use bytes::Bytes;

use super::table_file::decode_record;
use super::{be_u32, Address, Result, StorageError};

pub const JOURNAL_NAME: &str = "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";
const LENGTH_LEN: usize = 4;
const CRC_LEN: usize = 4;
const KIND_ROOT: u8 = 1;
const KIND_CHUNK: u8 = 2;

#[derive(Debug)]
pub struct Journal {
    bytes: Bytes,
    chunks: HashMap<Address, Range<usize>>,
    root: Option<Address>,
}

#[derive(Default)]
struct Record {
    kind: u8,
    address: Option<Address>,
    payload: Option<Range<usize>>,
}

impl Journal {
    /// Reads every record. A zero length or a record running past the end
    /// marks where writing stopped (Dolt tolerates the same torn tail); a bad
    /// CRC before that is corruption.
    pub fn parse(bytes: Bytes) -> Result<Journal> {
        let mut journal = Journal { bytes: bytes.clone(), chunks: HashMap::new(), root: None };
        let mut offset = 0;
        while bytes.len() - offset >= LENGTH_LEN + CRC_LEN {
            let len = be_u32(&bytes, offset) as usize;
            if len == 0 || len > bytes.len() - offset {
                break;
            }
            let record = read_record(&bytes[offset..offset + len], offset)?;
            let payload = record.payload.map(|r| r.start + offset..r.end + offset);
            match (record.kind, record.address, payload) {
                (KIND_ROOT, Some(address), _) => journal.root = Some(address),
                (KIND_CHUNK, Some(address), Some(payload)) => {
                    journal.chunks.insert(address, payload);
                }
                (kind, ..) => return Err(bad(offset, format!("record of kind {kind} lacks its address or payload"))),
            }
            offset += len;
        }
        Ok(journal)
    }

    /// The newest root recorded, if any.
    pub fn root(&self) -> Option<Address> {
        self.root
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    pub fn get(&self, address: &Address) -> Result<Option<Bytes>> {
        let Some(range) = self.chunks.get(address) else { return Ok(None) };
        decode_record(address, &self.bytes[range.clone()]).map(Some)
    }
}

fn read_record(record: &[u8], offset: usize) -> Result<Record> {
    if record.len() < LENGTH_LEN + CRC_LEN {
        return Err(bad(offset, format!("a record of {} bytes is too short", record.len())));
    }
    let end = record.len() - CRC_LEN;
    let (stored, computed) = (be_u32(record, end), crc32c::crc32c(&record[..end]));
    if stored != computed {
        return Err(bad(offset, format!("bad CRC32C: stored {stored:08x}, computed {computed:08x}")));
    }
    let mut parsed = Record::default();
    let mut at = LENGTH_LEN;
    while at < end {
        let tag = record[at];
        at += 1;
        let field_len = match tag {
            1 => 1,
            2 => 20,
            3 => end - at,
            4 => 8,
            other => return Err(bad(offset, format!("unknown field tag {other}"))),
        };
        let field = record.get(at..at + field_len).filter(|_| at + field_len <= end);
        let field = field.ok_or_else(|| bad(offset, format!("field {tag} runs past the record")))?;
        match tag {
            1 => parsed.kind = field[0],
            2 => parsed.address = Address::from_slice(field),
            3 => parsed.payload = Some(at..end),
            _ => {}
        }
        at += field_len;
    }
    Ok(parsed)
}

fn bad(offset: usize, reason: String) -> StorageError {
    StorageError::BadJournal { offset: offset as u64, reason }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::table_file::tests::record;

    fn finish(mut body: Vec<u8>) -> Vec<u8> {
        let len = (body.len() + LENGTH_LEN + CRC_LEN) as u32;
        let mut out = len.to_be_bytes().to_vec();
        out.append(&mut body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub(crate) fn chunk_record(chunk: &[u8]) -> Vec<u8> {
        let mut body = vec![1, KIND_CHUNK, 2];
        body.extend_from_slice(&Address::of(chunk).0);
        body.push(3);
        body.extend_from_slice(&record(chunk));
        finish(body)
    }

    pub(crate) fn root_record(root: Address) -> Vec<u8> {
        let mut body = vec![1, KIND_ROOT, 4, 0, 0, 0, 0, 0, 0, 0, 9, 2];
        body.extend_from_slice(&root.0);
        finish(body)
    }

    #[test]
    fn reads_chunks_and_the_newest_root() {
        let (one, two) = (b"first chunk".as_slice(), b"second chunk".as_slice());
        let mut file = [chunk_record(one), root_record(Address::of(one)), chunk_record(two)].concat();
        file.extend_from_slice(&root_record(Address::of(two)));
        file.extend_from_slice(&[0; 64]);
        let journal = Journal::parse(file.into()).unwrap();
        assert_eq!(journal.root(), Some(Address::of(two)));
        assert_eq!(journal.chunk_count(), 2);
        assert_eq!(journal.get(&Address::of(one)).unwrap().unwrap(), one);
        assert_eq!(journal.get(&Address::of(b"absent")).unwrap(), None);
    }

    #[test]
    fn stops_at_a_torn_tail_and_refuses_corruption() {
        let whole = chunk_record(b"chunk");
        let mut torn = whole.clone();
        torn.extend_from_slice(&whole[..whole.len() - 3]);
        assert_eq!(Journal::parse(torn.into()).unwrap().chunk_count(), 1);
        let mut corrupt = whole.clone();
        corrupt[10] ^= 1;
        let error = Journal::parse(corrupt.into()).unwrap_err();
        assert!(error.to_string().contains("bad CRC32C"), "{error}");
        let unknown = finish(vec![9, 9]);
        assert!(Journal::parse(unknown.into()).unwrap_err().to_string().contains("unknown field tag 9"));
        let short_address = finish(vec![1, KIND_CHUNK, 2, 1, 2]);
        assert!(Journal::parse(short_address.into()).unwrap_err().to_string().contains("runs past"));
    }
}
