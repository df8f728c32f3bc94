//! Field-level reading and rewriting of protobuf messages on the wire.
//!
//! doltgate touches only a handful of fields (`repo_path`, `repo_id`, the URL
//! strings of responses). Decoding whole messages with prost and encoding them
//! again would drop fields a newer Dolt adds and copy every chunk hash; instead
//! these functions walk the encoded fields, copy the ones they are not asked
//! about byte for byte, and recurse only into the sub-messages a [`Schema`]
//! names.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{decode_varint, encode_varint, WireType};

/// What a schema says about one field.
#[derive(Debug)]
pub enum Field {
    /// A field the caller wants to see, labelled so one visitor can serve many schemas.
    Leaf(Label),
    /// A sub-message to walk with its own schema.
    Message(Schema),
}

/// Field number -> what to do with it. Fields not listed are copied untouched.
pub type Schema = &'static [(u32, Field)];

/// The fields doltgate reads or rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// A table-file URL issued by the upstream.
    Url,
    /// `repo_path`: the database (and optional revision) a request names.
    RepoPath,
    /// `repo_id{org, repo_name}`: the DoltHub-style name of the database.
    RepoId,
}

/// What the visitor wants done with a leaf field.
#[derive(Debug)]
pub enum Edit {
    Keep,
    Replace(Bytes),
    Remove,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed protobuf message: {0}")]
    Malformed(&'static str),
    #[error("protobuf field {field} has wire type {found}, expected length-delimited")]
    WrongWireType { field: u32, found: u8 },
    #[error("protobuf nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Sees each leaf the schema names: its label and raw value.
pub type Visitor<'a, E> = dyn FnMut(Label, &[u8]) -> Result<(), E> + 'a;
/// Decides what becomes of each leaf the schema names.
pub type Editor<'a, E> = dyn FnMut(Label, &[u8]) -> Result<Edit, E> + 'a;

/// Sub-message recursion bound; our schemas are at most three levels deep, so
/// this only stops hostile input from exhausting the stack.
const MAX_DEPTH: usize = 8;

/// One raw field: number, wire type and the bytes of its value (for
/// length-delimited fields, without the length prefix).
struct RawField<'a> {
    number: u32,
    wire_type: WireType,
    /// The whole encoded field: key, length prefix (if any) and value.
    encoded: &'a [u8],
    /// The value of a length-delimited field; empty for other wire types.
    payload: &'a [u8],
}

/// Iterates over the top-level fields of one encoded message.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    fn read_field(&mut self) -> Result<RawField<'a>, WireError> {
        let start = self.rest;
        let mut cursor = self.rest;
        let key = decode_varint(&mut cursor).map_err(|_| WireError::Malformed("bad field key"))?;
        let number = u32::try_from(key >> 3).map_err(|_| WireError::Malformed("field number out of range"))?;
        if number == 0 {
            return Err(WireError::Malformed("field number 0"));
        }
        let wire_type = WireType::try_from(key & 0x7).map_err(|_| WireError::Malformed("unknown wire type"))?;
        let mut payload: &[u8] = &[];
        match wire_type {
            WireType::Varint => {
                decode_varint(&mut cursor).map_err(|_| WireError::Malformed("bad varint"))?;
            }
            WireType::SixtyFourBit => cursor = skip(cursor, 8)?,
            WireType::ThirtyTwoBit => cursor = skip(cursor, 4)?,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut cursor).map_err(|_| WireError::Malformed("bad length"))?;
                let len = usize::try_from(len).map_err(|_| WireError::Malformed("length out of range"))?;
                if len > cursor.len() {
                    return Err(WireError::Malformed("length past end of message"));
                }
                payload = &cursor[..len];
                cursor = &cursor[len..];
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(WireError::Malformed("groups are not used by remotesapi"))
            }
        }
        let used = start.len() - cursor.len();
        self.rest = cursor;
        Ok(RawField { number, wire_type, encoded: &start[..used], payload })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<RawField<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.read_field();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

fn skip(buf: &[u8], n: usize) -> Result<&[u8], WireError> {
    buf.get(n..).ok_or(WireError::Malformed("fixed-width value past end of message"))
}

fn lookup(schema: Schema, number: u32) -> Option<&'static Field> {
    schema.iter().find(|(n, _)| *n == number).map(|(_, f)| f)
}

fn expect_length_delimited(field: &RawField<'_>) -> Result<(), WireError> {
    if field.wire_type == WireType::LengthDelimited {
        Ok(())
    } else {
        Err(WireError::WrongWireType { field: field.number, found: field.wire_type as u8 })
    }
}

/// Calls `visit` with every leaf the schema names, in wire order, without
/// allocating. Returns the first error from the message or the visitor.
pub fn read<E: From<WireError>>(message: &[u8], schema: Schema, visit: &mut Visitor<'_, E>) -> Result<(), E> {
    read_at(message, schema, visit, 0)
}

fn read_at<E: From<WireError>>(
    message: &[u8],
    schema: Schema,
    visit: &mut Visitor<'_, E>,
    depth: usize,
) -> Result<(), E> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep.into());
    }
    for field in Fields::new(message) {
        let field = field?;
        match lookup(schema, field.number) {
            None => {}
            Some(Field::Leaf(label)) => {
                expect_length_delimited(&field)?;
                visit(*label, field.payload)?;
            }
            Some(Field::Message(inner)) => {
                expect_length_delimited(&field)?;
                read_at(field.payload, inner, visit, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// Rewrites the leaves the schema names as `edit` decides and copies every
/// other byte. Returns `None` when nothing changed, so callers can forward the
/// original buffer without a copy.
pub fn rewrite<E: From<WireError>>(
    message: &Bytes,
    schema: Schema,
    edit: &mut Editor<'_, E>,
) -> Result<Option<Bytes>, E> {
    Ok(rewrite_at(message, schema, edit, 0)?.map(BytesMut::freeze))
}

fn rewrite_at<E: From<WireError>>(
    message: &[u8],
    schema: Schema,
    edit: &mut Editor<'_, E>,
    depth: usize,
) -> Result<Option<BytesMut>, E> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep.into());
    }
    // Built lazily: the common case (nothing to change) allocates nothing.
    let mut out: Option<BytesMut> = None;
    let mut copied_upto = 0usize;
    let mut offset = 0usize;
    for field in Fields::new(message) {
        let field = field?;
        let field_start = offset;
        offset += field.encoded.len();
        let replacement: Option<Option<Vec<u8>>> = match lookup(schema, field.number) {
            None => None,
            Some(Field::Leaf(label)) => {
                expect_length_delimited(&field)?;
                match edit(*label, field.payload)? {
                    Edit::Keep => None,
                    Edit::Remove => Some(None),
                    Edit::Replace(value) => Some(Some(value.to_vec())),
                }
            }
            Some(Field::Message(inner)) => {
                expect_length_delimited(&field)?;
                rewrite_at(field.payload, inner, edit, depth + 1)?.map(|b| Some(b.to_vec()))
            }
        };
        let Some(replacement) = replacement else {
            continue;
        };
        let buf = out.get_or_insert_with(|| BytesMut::with_capacity(message.len() + 64));
        buf.put_slice(&message[copied_upto..field_start]);
        copied_upto = offset;
        if let Some(value) = replacement {
            encode_varint(u64::from(field.number) << 3 | WireType::LengthDelimited as u64, buf);
            encode_varint(value.len() as u64, buf);
            buf.put_slice(&value);
        }
    }
    if let Some(buf) = out.as_mut() {
        buf.put_slice(&message[copied_upto..]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remotesapi::proto::*;
    use prost::Message;

    static URLS: Schema = &[(2, Field::Message(&[(2, Field::Leaf(Label::Url))]))];

    fn chunk_locations_response() -> StreamChunkLocationsResponse {
        StreamChunkLocationsResponse {
            repo_token: "tok".into(),
            table_files: vec![
                stream_chunk_locations_response::TableFileRecord {
                    table_file_id: 0,
                    url: "http://up:1/a".into(),
                    refresh_after: None,
                    file_id: "a".into(),
                },
                stream_chunk_locations_response::TableFileRecord {
                    table_file_id: 1,
                    url: "http://up:1/b".into(),
                    refresh_after: None,
                    file_id: "b".into(),
                },
            ],
            locations: vec![stream_chunk_locations_response::ChunkLocation {
                table_file_id: 1,
                request_index: 7,
                offset: 1 << 40,
                length: 99,
                dictionary_offset: 3,
                dictionary_length: 4,
            }],
            missing_indexes: vec![1, 2, 3],
        }
    }

    #[test]
    fn rewrite_changes_only_the_named_leaves() {
        let original = chunk_locations_response();
        let encoded = Bytes::from(original.encode_to_vec());
        let out = rewrite::<WireError>(&encoded, URLS, &mut |label, value| {
            assert_eq!(label, Label::Url);
            let url = std::str::from_utf8(value).unwrap();
            Ok(Edit::Replace(Bytes::from(url.replace("http://up:1", "https://gw"))))
        })
        .unwrap()
        .expect("changed");
        let decoded = StreamChunkLocationsResponse::decode(out).unwrap();
        let mut expected = original;
        expected.table_files[0].url = "https://gw/a".into();
        expected.table_files[1].url = "https://gw/b".into();
        assert_eq!(decoded, expected);
    }

    #[test]
    fn rewrite_without_changes_returns_none() {
        let encoded = Bytes::from(chunk_locations_response().encode_to_vec());
        let out = rewrite::<WireError>(&encoded, URLS, &mut |_, _| Ok(Edit::Keep)).unwrap();
        assert!(out.is_none());
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let mut encoded = chunk_locations_response().encode_to_vec();
        // Field 99, varint 5, and field 100, bytes "xyz": unknown to our schema.
        encoded.extend_from_slice(&[0x98, 0x06, 0x05, 0xa2, 0x06, 0x03, b'x', b'y', b'z']);
        let encoded = Bytes::from(encoded);
        let out = rewrite::<WireError>(&encoded, URLS, &mut |_, _| Ok(Edit::Replace(Bytes::from_static(b"u"))))
            .unwrap()
            .unwrap();
        assert!(out.ends_with(&[0x98, 0x06, 0x05, 0xa2, 0x06, 0x03, b'x', b'y', b'z']));
    }

    #[test]
    fn remove_drops_the_field() {
        let req = RootRequest {
            repo_id: Some(RepoId { org: "o".into(), repo_name: "r".into() }),
            repo_token: String::new(),
            repo_path: "o/r".into(),
        };
        let schema: Schema = &[(1, Field::Leaf(Label::RepoId))];
        let encoded = Bytes::from(req.encode_to_vec());
        let out = rewrite::<WireError>(&encoded, schema, &mut |_, _| Ok(Edit::Remove)).unwrap().unwrap();
        let decoded = RootRequest::decode(out).unwrap();
        assert_eq!(decoded.repo_id, None);
        assert_eq!(decoded.repo_path, "o/r");
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        let encoded = chunk_locations_response().encode_to_vec();
        for cut in 1..encoded.len() {
            let res = read::<WireError>(&encoded[..cut], URLS, &mut |_, _| Ok(()));
            // A cut may land on a field boundary and still parse; it must never panic.
            let _ = res;
        }
        assert_eq!(
            read::<WireError>(&[0x12, 0x05, 0x01], URLS, &mut |_, _| Ok(())),
            Err(WireError::Malformed("length past end of message"))
        );
    }

    #[test]
    fn wrong_wire_type_on_a_named_field_is_refused() {
        // Field 2 as a varint where the schema expects a message.
        let res = read::<WireError>(&[0x10, 0x01], URLS, &mut |_, _| Ok(()));
        assert_eq!(res, Err(WireError::WrongWireType { field: 2, found: 0 }));
    }
}
