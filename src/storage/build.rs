//! Encoders for the serial messages [`message`](super::message) reads, so tests,
//! fuzz seeds and attack scenarios can craft chunks byte for byte.
//!
//! doltgate itself never writes Dolt's storage; nothing on the request path
//! calls this module. It lives in the library, not under `#[cfg(test)]`,
//! because the end-to-end tests forge commits and roots against a real Dolt
//! with the same code the unit tests use.

use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, VOffsetT, Vector, WIPOffset};

use super::message::{ClosureKey, SERIAL_MESSAGE_KIND};
use super::Address;

/// A field value for [`message`]: byte vectors, u16 vectors and scalars.
pub enum Value<'v> {
    Bytes(&'v [u8]),
    U16s(&'v [u16]),
    U64(u64),
    U8(u8),
}

/// Builds a serial message as Dolt frames one: `0x1B`, u24 length, flatbuffer
/// whose file identifier is `id`, with `fields` at their vtable offsets.
pub fn message(id: &str, fields: &[(VOffsetT, Value)]) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let vectors: Vec<Option<WIPOffset<Vector<u8>>>> = fields
        .iter()
        .map(|(_, value)| match value {
            Value::Bytes(b) => Some(builder.create_vector(b).as_union_value()),
            Value::U16s(v) => Some(builder.create_vector(v).as_union_value()),
            _ => None,
        })
        .map(|o| o.map(|o: WIPOffset<UnionWIPOffset>| WIPOffset::new(o.value())))
        .collect();
    let start = builder.start_table();
    for ((slot, value), vector) in fields.iter().zip(&vectors) {
        match (value, vector) {
            (Value::U64(v), _) => builder.push_slot_always::<u64>(*slot, *v),
            (Value::U8(v), _) => builder.push_slot_always::<u8>(*slot, *v),
            (_, Some(offset)) => builder.push_slot_always(*slot, *offset),
            (Value::Bytes(_) | Value::U16s(_), None) => unreachable!("every vector was created above"),
        }
    }
    let table = builder.end_table(start);
    builder.finish(table, Some(id));
    frame(builder.finished_data())
}

/// Wraps a finished flatbuffer in Dolt's chunk envelope.
pub fn frame(flatbuffer: &[u8]) -> Vec<u8> {
    let mut chunk = vec![SERIAL_MESSAGE_KIND];
    chunk.extend_from_slice(&(flatbuffer.len() as u32).to_be_bytes()[1..]);
    chunk.extend_from_slice(flatbuffer);
    chunk
}

/// An `ADRM` node with these keys (in order) and addresses.
pub fn address_map(level: u8, entries: &[(&[u8], Address)]) -> Vec<u8> {
    let items: Vec<u8> = entries.iter().flat_map(|(k, _)| k.iter().copied()).collect();
    let mut offsets = vec![0u16];
    for (key, _) in entries {
        offsets.push(offsets.last().expect("starts with 0") + key.len() as u16);
    }
    let addresses: Vec<u8> = entries.iter().flat_map(|(_, a)| a.0).collect();
    let counts: Vec<u8> = entries.iter().map(|_| 2u8).collect(); // zig-zag +1 each: counts 1, 2, 3...
    message(
        "ADRM",
        &[
            (4, Value::Bytes(&items)),
            (6, Value::U16s(&offsets)),
            (8, Value::Bytes(&addresses)),
            (10, Value::Bytes(if level > 0 { &counts } else { &[] })),
            (12, Value::U64(entries.len() as u64)),
            (14, Value::U8(level)),
        ],
    )
}

/// A `STRT` store root holding one inline ref-map node.
pub fn store_root(map: &[u8]) -> Vec<u8> {
    message("STRT", &[(4, Value::Bytes(map))])
}

/// A `DCMT` commit of `root` with these parents and parent closure.
pub fn commit_of(root: Address, height: u64, parents: &[Address], closure: Address) -> Vec<u8> {
    let parents: Vec<u8> = parents.iter().flat_map(|a| a.0).collect();
    message(
        "DCMT",
        &[
            (4, Value::Bytes(&root.0)),
            (6, Value::U64(height)),
            (8, Value::Bytes(&parents)),
            (10, Value::Bytes(&closure.0)),
        ],
    )
}

/// A `DCMT` commit whose root value is made up from its height and parents.
pub fn commit(height: u64, parents: &[Address], closure: Address) -> Vec<u8> {
    let root = Address::of(format!("root {height} {parents:?}").as_bytes());
    commit_of(root, height, parents, closure)
}

/// A leaf `BLOB` message holding `payload`: the simplest chunk Dolt can walk.
pub fn blob(payload: &[u8]) -> Vec<u8> {
    message("BLOB", &[(4, Value::Bytes(payload))])
}

/// A two-level closure tree of `keys` (sorted) in leaves of 8, its nodes
/// stored in `source`; the empty address for no keys, as Dolt writes it.
pub fn closure_tree(source: &mut super::MemorySource, keys: &[ClosureKey]) -> Address {
    if keys.is_empty() {
        return Address::EMPTY;
    }
    let leaves: Vec<(ClosureKey, Address)> = keys
        .chunks(8)
        .map(|leaf| (*leaf.last().expect("chunks are not empty"), source.insert(closure_node(0, leaf, &[]))))
        .collect();
    let (separators, children): (Vec<ClosureKey>, Vec<Address>) = leaves.into_iter().unzip();
    source.insert(closure_node(1, &separators, &children))
}

/// A `CMCL` commit-closure node.
pub fn closure_node(level: u8, keys: &[ClosureKey], children: &[Address]) -> Vec<u8> {
    let items: Vec<u8> = keys.iter().flat_map(|k| k.height.to_le_bytes().into_iter().chain(k.commit.0)).collect();
    let children: Vec<u8> = children.iter().flat_map(|a| a.0).collect();
    message(
        "CMCL",
        &[
            (4, Value::Bytes(&items)),
            (6, Value::Bytes(&children)),
            (10, Value::U64(keys.len() as u64)),
            (12, Value::U8(level)),
        ],
    )
}

/// A `DTAG` tag naming `commit`.
pub fn tag(commit: Address) -> Vec<u8> {
    message("DTAG", &[(4, Value::Bytes(&commit.0))])
}

/// An `RTVL` root value holding one inline table-map node and the address of
/// its foreign-key collection (all zeros for none, as Dolt writes it).
pub fn root_value(tables: &[u8], foreign_keys: Option<Address>) -> Vec<u8> {
    let foreign_keys = foreign_keys.unwrap_or(Address::EMPTY);
    message("RTVL", &[(6, Value::Bytes(tables)), (8, Value::Bytes(&foreign_keys.0))])
}

/// A `DTBL` table as Dolt writes one: its schema chunk, its rows (the
/// embedded primary index, here any bytes), its auto-increment counter, no
/// secondary indexes, and empty conflicts, violations and artifacts.
pub fn table(schema: Address, rows: &[u8], auto_increment: u64) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let no_indexes = address_map(0, &[]);
    let [schema, rows, indexes] = [&schema.0[..], rows, &no_indexes].map(|bytes| builder.create_vector(bytes));
    let empty = builder.create_vector(&Address::EMPTY.0);
    let conflicts = builder.start_table();
    for slot in [4, 6, 8, 10] {
        builder.push_slot_always(slot, empty);
    }
    let conflicts = builder.end_table(conflicts);
    let table = builder.start_table();
    builder.push_slot_always(4, schema);
    builder.push_slot_always(6, rows);
    builder.push_slot_always(8, indexes);
    builder.push_slot_always::<u64>(10, auto_increment);
    builder.push_slot_always(12, conflicts);
    builder.push_slot_always(14, empty);
    builder.push_slot_always(16, empty);
    let table = builder.end_table(table);
    builder.finish(table, Some("DTBL"));
    frame(builder.finished_data())
}

/// The parts of a foreign key the tests vary.
pub struct ForeignKeySpec<'s> {
    pub name: &'s str,
    pub child: &'s str,
    pub parent: &'s str,
    pub on_delete: u8,
}

/// A `DFKC` foreign-key collection.
pub fn foreign_keys(keys: &[ForeignKeySpec]) -> Vec<u8> {
    let mut builder = FlatBufferBuilder::new();
    let entries: Vec<_> = keys
        .iter()
        .map(|key| {
            let name = builder.create_string(key.name);
            let child = builder.create_string(key.child);
            let parent = builder.create_string(key.parent);
            let columns = builder.create_vector(&[1u64]);
            let start = builder.start_table();
            builder.push_slot_always(4, name);
            builder.push_slot_always(6, child);
            builder.push_slot_always(10, columns);
            builder.push_slot_always(12, parent);
            builder.push_slot_always(16, columns);
            builder.push_slot::<u8>(20, key.on_delete, 0);
            builder.end_table(start)
        })
        .collect();
    let vector = builder.create_vector(&entries);
    let start = builder.start_table();
    builder.push_slot_always(4, vector);
    let collection = builder.end_table(start);
    builder.finish(collection, Some("DFKC"));
    frame(builder.finished_data())
}
