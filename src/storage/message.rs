//! The serialized messages a push's ref changes are read from.
//!
//! A chunk is `0x1B`, a 24-bit big-endian length, then a standard flatbuffer
//! whose 4-byte file identifier names the message (`go/serial/fileidentifiers.go`).
//! Our own field tables below follow Dolt's schemas (`go/serial/storeroot.fbs`,
//! `addressmap.fbs`, `commit.fbs`, `commitclosure.fbs`, `workingset.fbs`,
//! `tag.fbs`): the vtable offset and type of each field this module reads.
//! Every buffer goes through `flatbuffers::Verifier` for exactly those fields
//! before any is read, so hostile bytes yield an error, never a panic or an
//! out-of-bounds read. Fields Dolt marks `required` are optional here, since
//! Dolt itself omits some (a working set written by a push has no meta).

use flatbuffers::{
    ForwardsUOffset, InvalidFlatbuffer, Table as Flatbuffer, TableVerifier, VOffsetT, Vector, Verifiable, Verifier,
    VerifierOptions,
};

use super::address::ADDRESS_LEN;
use super::{Address, Result, StorageError};

pub const SERIAL_MESSAGE_KIND: u8 = 0x1B;
const PREFIX_LEN: usize = 4;
/// Prefix, root offset and file identifier: the least a message can be.
const MIN_MESSAGE_LEN: usize = PREFIX_LEN + 8;
/// Deeper trees than this would hold more refs than exist anywhere; refusing
/// them bounds every walk over a hostile tree.
pub const MAX_TREE_LEVEL: u8 = 16;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bytes,
    U16s,
    U32s,
    U64s,
    U64,
    U8,
    Strings,
    /// A vector of [`FOREIGN_KEY`] tables.
    ForeignKeys,
    /// A nested [`CONFLICTS`] table.
    Conflicts,
    /// A nested [`MERGE_STATE`] table.
    MergeState,
}

/// The fields of one message kind this module reads: (name, vtable offset, type).
struct Schema {
    id: &'static str,
    /// Dolt's `NumFields`; a table with more comes from a newer writer, which
    /// Dolt's own reader refuses too (`ErrTableHasUnknownFields`).
    num_fields: usize,
    fields: &'static [(&'static str, VOffsetT, Kind)],
}

const STORE_ROOT: Schema = Schema { id: "STRT", num_fields: 1, fields: &[("address_map", 4, Kind::Bytes)] };
const ADDRESS_MAP: Schema = Schema {
    id: "ADRM",
    num_fields: 6,
    fields: &[
        ("key_items", 4, Kind::Bytes),
        ("key_offsets", 6, Kind::U16s),
        ("address_array", 8, Kind::Bytes),
        ("subtree_counts", 10, Kind::Bytes),
        ("tree_count", 12, Kind::U64),
        ("tree_level", 14, Kind::U8),
    ],
};
/// Prolly tree nodes Dolt walks without reading them as address maps or
/// closures (`go/serial/prolly.fbs`, `mergeartifacts.fbs`, `blob.fbs`,
/// `vectorindexnode.fbs`): verified whole, since Dolt's generated readers
/// trust every offset they follow.
const PROLLY_TREE_NODE: Schema = Schema {
    id: "TUPM",
    num_fields: 11,
    fields: &[
        ("key_items", 4, Kind::Bytes),
        ("key_offsets", 6, Kind::U16s),
        ("key_type", 8, Kind::U8),
        ("value_items", 10, Kind::Bytes),
        ("value_offsets", 12, Kind::U16s),
        ("value_type", 14, Kind::U8),
        ("value_address_offsets", 16, Kind::U16s),
        ("address_array", 18, Kind::Bytes),
        ("subtree_counts", 20, Kind::Bytes),
        ("tree_count", 22, Kind::U64),
        ("tree_level", 24, Kind::U8),
    ],
};
const MERGE_ARTIFACTS: Schema = Schema {
    id: "ARTM",
    num_fields: 9,
    fields: &[
        ("key_items", 4, Kind::Bytes),
        ("key_offsets", 6, Kind::U16s),
        ("key_address_offsets", 8, Kind::U16s),
        ("value_items", 10, Kind::Bytes),
        ("value_offsets", 12, Kind::U16s),
        ("address_array", 14, Kind::Bytes),
        ("subtree_counts", 16, Kind::Bytes),
        ("tree_count", 18, Kind::U64),
        ("tree_level", 20, Kind::U8),
    ],
};
const BLOB: Schema = Schema {
    id: "BLOB",
    num_fields: 5,
    fields: &[
        ("payload", 4, Kind::Bytes),
        ("address_array", 6, Kind::Bytes),
        ("subtree_sizes", 8, Kind::Bytes),
        ("tree_size", 10, Kind::U64),
        ("tree_level", 12, Kind::U8),
    ],
};
const VECTOR_INDEX_NODE: Schema = Schema {
    id: "IVFF",
    num_fields: 10,
    fields: &[
        ("key_items", 4, Kind::Bytes),
        ("key_offsets", 6, Kind::U32s),
        ("value_items", 8, Kind::Bytes),
        ("value_offsets", 10, Kind::U32s),
        ("address_array", 12, Kind::Bytes),
        ("subtree_counts", 14, Kind::Bytes),
        ("tree_count", 16, Kind::U64),
        ("tree_level", 18, Kind::U8),
        ("log_chunk_size", 20, Kind::U8),
        ("distance_type", 22, Kind::U8),
    ],
};
const COMMIT: Schema = Schema {
    id: "DCMT",
    // `CommitNumFields` in go/gen/fb/serial/commit.go: a commit with more is
    // one Dolt 1.86 cannot read.
    num_fields: 10,
    fields: &[
        ("root", 4, Kind::Bytes),
        ("height", 6, Kind::U64),
        ("parent_addrs", 8, Kind::Bytes),
        ("parent_closure", 10, Kind::Bytes),
        ("name", 12, Kind::Bytes),
        ("email", 14, Kind::Bytes),
        ("description", 16, Kind::Bytes),
        ("signature", 22, Kind::Bytes),
    ],
};
const COMMIT_CLOSURE: Schema = Schema {
    id: "CMCL",
    num_fields: 5,
    fields: &[
        ("key_items", 4, Kind::Bytes),
        ("address_array", 6, Kind::Bytes),
        ("subtree_counts", 8, Kind::Bytes),
        ("tree_count", 10, Kind::U64),
        ("tree_level", 12, Kind::U8),
    ],
};
const WORKING_SET: Schema = Schema {
    id: "WRST",
    num_fields: 8,
    fields: &[("working_root_addr", 4, Kind::Bytes), ("staged_root_addr", 6, Kind::Bytes)],
};
const TAG: Schema = Schema { id: "DTAG", num_fields: 6, fields: &[("commit_addr", 4, Kind::Bytes)] };
const ROOT_VALUE: Schema =
    Schema { id: "RTVL", num_fields: 5, fields: &[("tables", 6, Kind::Bytes), ("foreign_key_addr", 8, Kind::Bytes)] };
/// `go/serial/table.fbs`. `conflicts` (slot 12) is a nested table of the
/// old storage format that doltgate does not read; [`Table::has_conflicts`]
/// only asks whether it is there.
const TABLE: Schema = Schema {
    id: "DTBL",
    num_fields: 7,
    fields: &[
        ("schema", 4, Kind::Bytes),
        ("primary_index", 6, Kind::Bytes),
        ("secondary_indexes", 8, Kind::Bytes),
        ("auto_increment_value", 10, Kind::U64),
        ("violations", 14, Kind::Bytes),
        ("artifacts", 16, Kind::Bytes),
    ],
};
/// The table as Dolt's address walk reads it (`WalkAddrs` in
/// `go/store/types/serial_message.go`): every address field, and the nested
/// conflicts table it dereferences whether or not it is there.
const TABLE_WALKED: Schema = Schema {
    id: "DTBL",
    num_fields: 7,
    fields: &[
        ("schema", 4, Kind::Bytes),
        ("secondary_indexes", 8, Kind::Bytes),
        ("conflicts", 12, Kind::Conflicts),
        ("violations", 14, Kind::Bytes),
        ("artifacts", 16, Kind::Bytes),
    ],
};
const CONFLICTS: Schema = Schema {
    id: "Conflicts",
    num_fields: 4,
    fields: &[
        ("data", 4, Kind::Bytes),
        ("our_schema", 6, Kind::Bytes),
        ("their_schema", 8, Kind::Bytes),
        ("ancestor_schema", 10, Kind::Bytes),
    ],
};
const WORKING_SET_WALKED: Schema = Schema {
    id: "WRST",
    num_fields: 8,
    fields: &[
        ("working_root_addr", 4, Kind::Bytes),
        ("staged_root_addr", 6, Kind::Bytes),
        ("merge_state", 16, Kind::MergeState),
    ],
};
const MERGE_STATE: Schema = Schema {
    id: "MergeState",
    num_fields: 8,
    fields: &[("pre_working_root_addr", 4, Kind::Bytes), ("from_commit_addr", 6, Kind::Bytes)],
};
const STASH_LIST: Schema = Schema { id: "SLST", num_fields: 1, fields: &[("address_map", 4, Kind::Bytes)] };
const STASH: Schema = Schema {
    id: "STSH",
    num_fields: 5,
    fields: &[("stash_root_addr", 4, Kind::Bytes), ("head_commit_addr", 6, Kind::Bytes)],
};
const STATISTIC: Schema = Schema { id: "STAT", num_fields: 1, fields: &[("root", 4, Kind::Bytes)] };
const FOREIGN_KEY_COLLECTION: Schema =
    Schema { id: "DFKC", num_fields: 1, fields: &[("foreign_keys", 4, Kind::ForeignKeys)] };
/// One entry of a `DFKC` (`go/serial/foreign_key.fbs`); nested, so no file id.
const FOREIGN_KEY: Schema = Schema {
    id: "ForeignKey",
    num_fields: 13,
    fields: &[
        ("name", 4, Kind::Bytes),
        ("child_table_name", 6, Kind::Bytes),
        ("child_table_index", 8, Kind::Bytes),
        ("child_table_columns", 10, Kind::U64s),
        ("parent_table_name", 12, Kind::Bytes),
        ("parent_table_index", 14, Kind::Bytes),
        ("parent_table_columns", 16, Kind::U64s),
        ("on_update", 18, Kind::U8),
        ("on_delete", 20, Kind::U8),
        ("unresolved_child_columns", 22, Kind::Strings),
        ("unresolved_parent_columns", 24, Kind::Strings),
        ("child_table_database_schema", 26, Kind::Strings),
        ("parent_table_database_schema", 28, Kind::Strings),
    ],
};

/// The file identifier of a serial message chunk, e.g. `*b"DCMT"`.
pub fn file_id(address: &Address, chunk: &[u8]) -> Result<[u8; 4]> {
    let flatbuffer = envelope(address, chunk)?;
    Ok(flatbuffer[4..8].try_into().expect("4 bytes"))
}

fn envelope<'a>(address: &Address, chunk: &'a [u8]) -> Result<&'a [u8]> {
    let bad = |reason: String| StorageError::BadEnvelope(format!("chunk {address} {reason}"));
    if chunk.len() < MIN_MESSAGE_LEN {
        return Err(bad(format!("is {} bytes, too short for a message", chunk.len())));
    }
    if chunk[0] != SERIAL_MESSAGE_KIND {
        return Err(bad(format!("starts with {:#04x}, not 0x1b (an old-format value?)", chunk[0])));
    }
    let declared = u32::from_be_bytes([0, chunk[1], chunk[2], chunk[3]]) as usize;
    if declared != chunk.len() - PREFIX_LEN {
        return Err(bad(format!("declares {declared} message bytes but holds {}", chunk.len() - PREFIX_LEN)));
    }
    Ok(&chunk[PREFIX_LEN..])
}

/// A verified table and the schema it was verified against; reads are allowed
/// only for fields of that schema, at the type it declares.
struct Fields<'a> {
    table: Flatbuffer<'a>,
    schema: &'static Schema,
}

impl<'a> Fields<'a> {
    fn open(address: &Address, chunk: &'a [u8], schema: &'static Schema) -> Result<Fields<'a>> {
        let flatbuffer = envelope(address, chunk)?;
        let id = &flatbuffer[4..8];
        if id != schema.id.as_bytes() {
            let found = id.iter().flat_map(|b| std::ascii::escape_default(*b)).map(char::from).collect();
            return Err(StorageError::UnknownFileId { address: *address, found, expected: schema.id });
        }
        let bad = |reason: String| StorageError::BadFlatbuffer { id: schema.id, address: *address, reason };
        let position = verify(flatbuffer, schema).map_err(|e| bad(e.to_string()))?;
        // SAFETY: `verify` checked the table at `position`, its vtable, and every
        // field the accessors below can read, against this buffer.
        let table = unsafe { Flatbuffer::new(flatbuffer, position) };
        Fields::of_verified(table, schema).map_err(bad)
    }

    /// `table`, already verified against `schema`, once its vtable is sane.
    fn of_verified(table: Flatbuffer<'a>, schema: &'static Schema) -> std::result::Result<Fields<'a>, String> {
        // A vtable shorter than its own 4-byte header passes the verifier;
        // counting its fields would underflow.
        let vtable_bytes = table.vtable().num_bytes();
        if vtable_bytes < 4 {
            return Err(format!("vtable of {vtable_bytes} bytes is shorter than its header"));
        }
        let fields = (vtable_bytes - 4) / 2;
        if fields > schema.num_fields {
            return Err(format!(
                "has {fields} fields, this reader knows {} (written by a newer Dolt?)",
                schema.num_fields
            ));
        }
        Ok(Fields { table, schema })
    }

    /// Whether the field at `slot` is present at all, whatever its type.
    fn has(&self, slot: VOffsetT) -> bool {
        self.table.vtable().get(slot) != 0
    }

    /// A `[uint64]` field as its raw little-endian bytes; empty when absent.
    fn u64s_bytes(&self, slot: VOffsetT) -> &'a [u8] {
        let slot = self.checked(slot, Kind::U64s);
        // SAFETY: verified as a u64 vector at this slot.
        unsafe { self.table.get::<ForwardsUOffset<Vector<'a, u64>>>(slot, None) }.map_or(&[], |v| v.bytes())
    }

    /// A `[string]` field; empty when absent.
    fn strings(&self, slot: VOffsetT) -> Vec<String> {
        let slot = self.checked(slot, Kind::Strings);
        // SAFETY: verified as a vector of strings at this slot.
        let vector = unsafe { self.table.get::<ForwardsUOffset<Vector<'a, ForwardsUOffset<&'a str>>>>(slot, None) };
        vector.map_or_else(Vec::new, |v| v.iter().map(str::to_owned).collect())
    }

    /// The nested table at `slot`, verified as `schema`, if present.
    fn table(
        &self,
        slot: VOffsetT,
        kind: Kind,
        schema: &'static Schema,
    ) -> std::result::Result<Option<Fields<'a>>, String> {
        let slot = self.checked(slot, kind);
        // SAFETY: verified as a table of `schema` at this slot (see `checked`).
        let table = unsafe { self.table.get::<ForwardsUOffset<Flatbuffer<'a>>>(slot, None) };
        table.map(|table| Fields::of_verified(table, schema)).transpose()
    }

    /// The nested tables at `slot`, each verified as `schema`.
    fn tables(&self, slot: VOffsetT, schema: &'static Schema) -> std::result::Result<Vec<Fields<'a>>, String> {
        let slot = self.checked(slot, Kind::ForeignKeys);
        // SAFETY: verified as a vector of tables at this slot, each against `FOREIGN_KEY`.
        let vector =
            unsafe { self.table.get::<ForwardsUOffset<Vector<'a, ForwardsUOffset<Flatbuffer<'a>>>>>(slot, None) };
        vector.map_or_else(|| Ok(Vec::new()), |v| v.iter().map(|table| Fields::of_verified(table, schema)).collect())
    }

    fn checked(&self, slot: VOffsetT, kind: Kind) -> VOffsetT {
        let known = self.schema.fields.iter().any(|&(_, s, k)| s == slot && k == kind);
        assert!(known, "{} field at {slot} was not verified as read", self.schema.id);
        slot
    }

    fn bytes(&self, slot: VOffsetT) -> Option<&'a [u8]> {
        let slot = self.checked(slot, Kind::Bytes);
        // SAFETY: verified as a byte vector at this slot (see `checked`).
        unsafe { self.table.get::<ForwardsUOffset<Vector<'a, u8>>>(slot, None) }.map(|v| v.bytes())
    }

    /// A string field (a byte vector to the verifier), lossy UTF-8; empty when absent.
    fn text(&self, slot: VOffsetT) -> String {
        String::from_utf8_lossy(self.bytes(slot).unwrap_or_default()).into_owned()
    }

    fn u16s(&self, slot: VOffsetT) -> Option<Vector<'a, u16>> {
        let slot = self.checked(slot, Kind::U16s);
        // SAFETY: verified as a u16 vector at this slot.
        unsafe { self.table.get::<ForwardsUOffset<Vector<'a, u16>>>(slot, None) }
    }

    fn u64(&self, slot: VOffsetT) -> u64 {
        let slot = self.checked(slot, Kind::U64);
        // SAFETY: verified as a u64 at this slot.
        unsafe { self.table.get::<u64>(slot, Some(0)) }.unwrap_or(0)
    }

    fn u8(&self, slot: VOffsetT) -> u8 {
        let slot = self.checked(slot, Kind::U8);
        // SAFETY: verified as a u8 at this slot.
        unsafe { self.table.get::<u8>(slot, Some(0)) }.unwrap_or(0)
    }

    /// An optional 20-byte address field; any other length is corrupt.
    fn address(&self, slot: VOffsetT, address: &Address) -> Result<Option<Address>> {
        let Some(bytes) = self.bytes(slot) else { return Ok(None) };
        Address::from_slice(bytes).map(Some).ok_or_else(|| self.bad_length(slot, address, bytes.len()))
    }

    /// A field of concatenated addresses (parents, children).
    fn addresses(&self, slot: VOffsetT, address: &Address) -> Result<Vec<Address>> {
        let bytes = self.bytes(slot).unwrap_or_default();
        if !bytes.len().is_multiple_of(ADDRESS_LEN) {
            return Err(self.bad_length(slot, address, bytes.len()));
        }
        Ok(bytes.chunks_exact(ADDRESS_LEN).map(|b| Address::from_slice(b).expect("20 bytes")).collect())
    }

    fn bad_length(&self, slot: VOffsetT, address: &Address, len: usize) -> StorageError {
        let name = self.schema.fields.iter().find(|f| f.1 == slot).map_or("?", |f| f.0);
        StorageError::BadFlatbuffer {
            id: self.schema.id,
            address: *address,
            reason: format!("{name} is {len} bytes, not a whole number of 20-byte addresses"),
        }
    }
}

fn verify(flatbuffer: &[u8], schema: &Schema) -> std::result::Result<usize, InvalidFlatbuffer> {
    let options = VerifierOptions::default();
    let mut verifier = Verifier::new(&options, flatbuffer);
    let position = verifier.get_uoffset(0)? as usize;
    visit_fields(verifier.visit_table(position)?, schema)?.finish();
    Ok(position)
}

fn visit_fields<'v, 'o, 'b>(
    mut table: TableVerifier<'v, 'o, 'b>,
    schema: &Schema,
) -> std::result::Result<TableVerifier<'v, 'o, 'b>, InvalidFlatbuffer> {
    for &(name, slot, kind) in schema.fields {
        table = match kind {
            Kind::Bytes => table.visit_field::<ForwardsUOffset<Vector<u8>>>(name, slot, false)?,
            Kind::U16s => table.visit_field::<ForwardsUOffset<Vector<u16>>>(name, slot, false)?,
            Kind::U32s => table.visit_field::<ForwardsUOffset<Vector<u32>>>(name, slot, false)?,
            Kind::U64s => table.visit_field::<ForwardsUOffset<Vector<u64>>>(name, slot, false)?,
            Kind::U64 => table.visit_field::<u64>(name, slot, false)?,
            Kind::U8 => table.visit_field::<u8>(name, slot, false)?,
            Kind::Strings => table.visit_field::<ForwardsUOffset<Vector<ForwardsUOffset<&str>>>>(name, slot, false)?,
            Kind::ForeignKeys => table
                .visit_field::<ForwardsUOffset<Vector<ForwardsUOffset<Nested<ForeignKeyTable>>>>>(name, slot, false)?,
            Kind::Conflicts => table.visit_field::<ForwardsUOffset<Nested<ConflictsTable>>>(name, slot, false)?,
            Kind::MergeState => table.visit_field::<ForwardsUOffset<Nested<MergeStateTable>>>(name, slot, false)?,
        };
    }
    Ok(table)
}

/// A table nested in a message, verified against its own schema.
struct Nested<T>(std::marker::PhantomData<T>);

trait NestedSchema {
    const SCHEMA: &'static Schema;
}

struct ForeignKeyTable;
struct ConflictsTable;
struct MergeStateTable;

impl NestedSchema for ForeignKeyTable {
    const SCHEMA: &'static Schema = &FOREIGN_KEY;
}
impl NestedSchema for ConflictsTable {
    const SCHEMA: &'static Schema = &CONFLICTS;
}
impl NestedSchema for MergeStateTable {
    const SCHEMA: &'static Schema = &MERGE_STATE;
}

impl<T: NestedSchema> Verifiable for Nested<T> {
    fn run_verifier(verifier: &mut Verifier, position: usize) -> std::result::Result<(), InvalidFlatbuffer> {
        visit_fields(verifier.visit_table(position)?, T::SCHEMA)?.finish();
        Ok(())
    }
}

/// The database root (`STRT`): the root node of the ref map, embedded whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRoot {
    pub refs: AddressMapNode,
}

impl StoreRoot {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<StoreRoot> {
        let fields = Fields::open(address, chunk, &STORE_ROOT)?;
        let refs = match fields.bytes(4) {
            Some(embedded) => AddressMapNode::parse(&Address::of(embedded), embedded)?,
            None => AddressMapNode::default(),
        };
        Ok(StoreRoot { refs })
    }
}

/// One node of an `ADRM` prolly tree (ref maps). In a leaf, `addresses[i]` is
/// what `keys[i]` names; in an internal node it is the child whose largest
/// key is `keys[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressMapNode {
    pub level: u8,
    pub tree_count: u64,
    pub keys: Vec<Vec<u8>>,
    pub addresses: Vec<Address>,
    /// Internal nodes only: how many leaf entries each child holds.
    pub subtree_counts: Vec<u64>,
}

impl AddressMapNode {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<AddressMapNode> {
        let fields = Fields::open(address, chunk, &ADDRESS_MAP)?;
        let bad = |reason: String| StorageError::BadTree { address: *address, reason };
        let items = fields.bytes(4).unwrap_or_default();
        let offsets: Vec<usize> = fields.u16s(6).map_or_else(|| vec![0], |v| v.iter().map(usize::from).collect());
        let well_formed = offsets.first() == Some(&0)
            && offsets.last() == Some(&items.len())
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        if !well_formed {
            return Err(bad(format!("key offsets {offsets:?} do not split {} key bytes", items.len())));
        }
        let keys: Vec<Vec<u8>> = offsets.windows(2).map(|w| items[w[0]..w[1]].to_vec()).collect();
        let node = AddressMapNode {
            level: fields.u8(14),
            tree_count: fields.u64(12),
            addresses: fields.addresses(8, address)?,
            subtree_counts: match fields.u8(14) {
                0 => Vec::new(),
                _ => decode_counts(fields.bytes(10).unwrap_or_default(), keys.len()).map_err(bad)?,
            },
            keys,
        };
        check_node(node.level, &node.keys, node.addresses.len(), Leaves::Addressed).map_err(bad)?;
        Ok(node)
    }
}

/// Whether a tree's leaves carry an address per key (ref maps) or only keys
/// (commit closures, whose keys are the whole entry).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaves {
    Addressed,
    KeysOnly,
}

/// Both tree kinds need these before anyone walks them: keys strictly
/// ascending (diffs and lookups rely on order), one address per key wherever
/// the tree has addresses, a sane depth, and no empty internal node. A ref
/// map leaf whose addresses fall short of its keys would hide refs from the
/// push diff, so it is an error, never a shorter zip.
fn check_node<K: Ord + std::fmt::Debug>(
    level: u8,
    keys: &[K],
    addresses: usize,
    leaves: Leaves,
) -> std::result::Result<(), String> {
    if level > MAX_TREE_LEVEL {
        return Err(format!("level {level} is deeper than {MAX_TREE_LEVEL}"));
    }
    if let Some(pair) = keys.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!("keys out of order: {:?} then {:?}", pair[0], pair[1]));
    }
    if level > 0 && keys.is_empty() {
        return Err("an internal node has no children".to_owned());
    }
    let addressed = level > 0 || leaves == Leaves::Addressed;
    if addressed && addresses != keys.len() || !addressed && addresses != 0 {
        return Err(format!("{} keys but {addresses} addresses", keys.len()));
    }
    Ok(())
}

/// Subtree counts: zig-zag varints of the deltas between consecutive counts
/// (`go/store/prolly/message/varint.go`).
fn decode_counts(mut bytes: &[u8], count: usize) -> std::result::Result<Vec<u64>, String> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut counts = Vec::with_capacity(count.min(bytes.len()));
    let mut previous = 0i64;
    for _ in 0..count {
        let (zigzag, used) = uvarint(bytes).ok_or("a subtree count is not a valid varint")?;
        bytes = &bytes[used..];
        let delta = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        previous = previous.wrapping_add(delta);
        counts.push(previous as u64);
    }
    match bytes.is_empty() {
        true => Ok(counts),
        false => Err(format!("{} bytes left after {count} subtree counts", bytes.len())),
    }
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte < 0x80 {
            return (i < 9 || byte <= 1).then_some((value, i + 1));
        }
    }
    None
}

/// A commit (`DCMT`): what ancestry needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// The root value (`RTVL`) it commits.
    pub root: Option<Address>,
    /// 1 for a parentless commit, else one more than its highest parent.
    pub height: u64,
    /// The first parent is the branch's previous head.
    pub parents: Vec<Address>,
    /// The `CMCL` tree of every strict ancestor; `None` for a parentless commit.
    pub parent_closure: Option<Address>,
    /// The author as `dolt commit` records them (lossy UTF-8).
    pub name: String,
    pub email: String,
    /// The commit message.
    pub description: String,
    /// What `dolt commit -S` stores: an armored OpenPGP clear-signed text;
    /// empty when unsigned.
    pub signature: String,
}

impl Commit {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<Commit> {
        let fields = Fields::open(address, chunk, &COMMIT)?;
        Ok(Commit {
            root: fields.address(4, address)?,
            height: fields.u64(6),
            parents: fields.addresses(8, address)?,
            parent_closure: fields.address(10, address)?.filter(|a| !a.is_empty()),
            name: fields.text(12),
            email: fields.text(14),
            description: fields.text(16),
            signature: fields.text(22),
        })
    }
}

/// A commit-closure key: Dolt orders them by height, then address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClosureKey {
    pub height: u64,
    pub commit: Address,
}

const CLOSURE_KEY_LEN: usize = 8 + ADDRESS_LEN;

impl ClosureKey {
    /// The stored form: height as `u64` LITTLE-endian, then the address
    /// (`go/store/prolly/commit_closure.go`).
    fn parse(bytes: &[u8]) -> ClosureKey {
        ClosureKey {
            height: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            commit: Address::from_slice(&bytes[8..]).expect("20 bytes"),
        }
    }
}

/// One node of a `CMCL` prolly tree. Leaves carry only keys; an internal
/// node's `children[i]` holds the keys up to `keys[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitClosureNode {
    pub level: u8,
    pub tree_count: u64,
    pub keys: Vec<ClosureKey>,
    pub children: Vec<Address>,
    pub subtree_counts: Vec<u64>,
}

impl CommitClosureNode {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<CommitClosureNode> {
        let fields = Fields::open(address, chunk, &COMMIT_CLOSURE)?;
        let bad = |reason: String| StorageError::BadTree { address: *address, reason };
        let items = fields.bytes(4).unwrap_or_default();
        if items.len() % CLOSURE_KEY_LEN != 0 {
            return Err(bad(format!("{} key bytes are not whole 28-byte keys", items.len())));
        }
        let keys: Vec<ClosureKey> = items.chunks_exact(CLOSURE_KEY_LEN).map(ClosureKey::parse).collect();
        let level = fields.u8(12);
        let children = if level > 0 { fields.addresses(6, address)? } else { Vec::new() };
        let subtree_counts = match level {
            0 => Vec::new(),
            _ => decode_counts(fields.bytes(8).unwrap_or_default(), keys.len()).map_err(bad)?,
        };
        check_node(level, &keys, children.len(), Leaves::KeysOnly).map_err(bad)?;
        Ok(CommitClosureNode { level, tree_count: fields.u64(10), keys, children, subtree_counts })
    }
}

/// A tag (`DTAG`): the commit it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub commit: Option<Address>,
}

impl Tag {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<Tag> {
        let fields = Fields::open(address, chunk, &TAG)?;
        Ok(Tag { commit: fields.address(4, address)? })
    }
}

/// A working set (`WRST`): its working and staged root values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingSet {
    pub working_root: Option<Address>,
    pub staged_root: Option<Address>,
}

impl WorkingSet {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<WorkingSet> {
        let fields = Fields::open(address, chunk, &WORKING_SET)?;
        Ok(WorkingSet { working_root: fields.address(4, address)?, staged_root: fields.address(6, address)? })
    }
}

/// A root value (`RTVL`): a commit's or working set's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootValue {
    /// The root node of the table map (name → `DTBL`), embedded whole.
    pub tables: AddressMapNode,
    /// The `DFKC` holding every foreign key of the database, if any.
    pub foreign_keys: Option<Address>,
}

impl RootValue {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<RootValue> {
        let fields = Fields::open(address, chunk, &ROOT_VALUE)?;
        let tables = match fields.bytes(6) {
            Some(embedded) => AddressMapNode::parse(&Address::of(embedded), embedded)?,
            None => AddressMapNode::default(),
        };
        Ok(RootValue { tables, foreign_keys: fields.address(8, address)?.filter(|a| !a.is_empty()) })
    }
}

/// A table (`DTBL`), split into what is schema and what is data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The `DSCH` chunk: columns, primary key, indexes, checks.
    pub schema: Option<Address>,
    /// Everything else: rows, index contents, the auto-increment counter,
    /// conflicts and constraint violations. Equal when no row-level state changed.
    pub data: TableData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableData {
    pub primary_index: Vec<u8>,
    pub secondary_indexes: Vec<u8>,
    pub auto_increment: u64,
    pub violations: Vec<u8>,
    pub artifacts: Vec<u8>,
    /// The old format's nested conflicts table is present.
    pub has_conflicts: bool,
}

impl Table {
    pub fn parse(address: &Address, chunk: &[u8]) -> Result<Table> {
        let fields = Fields::open(address, chunk, &TABLE)?;
        let bytes = |slot| fields.bytes(slot).unwrap_or_default().to_vec();
        Ok(Table {
            schema: fields.address(4, address)?,
            data: TableData {
                primary_index: bytes(6),
                secondary_indexes: bytes(8),
                auto_increment: fields.u64(10),
                violations: bytes(14),
                artifacts: bytes(16),
                has_conflicts: fields.has(12),
            },
        })
    }
}

/// One foreign key of a `DFKC`, every field kept so two can be compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ForeignKey {
    pub child_table: String,
    pub parent_table: String,
    /// The rest (name, indexes, columns, actions, schemas) as one comparable value.
    definition: Vec<Vec<u8>>,
}

impl ForeignKey {
    /// Every foreign key of the `DFKC` chunk at `address`.
    pub fn parse_collection(address: &Address, chunk: &[u8]) -> Result<Vec<ForeignKey>> {
        let collection = Fields::open(address, chunk, &FOREIGN_KEY_COLLECTION)?;
        let bad = |reason: String| StorageError::BadFlatbuffer { id: FOREIGN_KEY.id, address: *address, reason };
        let entries = collection.tables(4, &FOREIGN_KEY).map_err(bad)?;
        Ok(entries.iter().map(ForeignKey::of).collect())
    }

    fn of(fields: &Fields<'_>) -> ForeignKey {
        let text = |slot| fields.bytes(slot).unwrap_or_default().to_vec();
        let strings = |slot| fields.strings(slot).join("\0").into_bytes();
        ForeignKey {
            child_table: fields.text(6),
            parent_table: fields.text(12),
            definition: vec![
                text(4),
                text(8),
                fields.u64s_bytes(10).to_vec(),
                text(14),
                fields.u64s_bytes(16).to_vec(),
                vec![fields.u8(18), fields.u8(20)],
                strings(22),
                strings(24),
                strings(26),
                strings(28),
            ],
        }
    }
}

/// Whether every offset of the `[uint16]` field at `offsets` starts a whole
/// 20-byte address inside the byte field at `items`.
fn addresses_inside(fields: &Fields<'_>, offsets: VOffsetT, items: VOffsetT) -> std::result::Result<(), String> {
    let len = fields.bytes(items).map_or(0, <[u8]>::len);
    match fields.u16s(offsets).into_iter().flatten().find(|&o| usize::from(o) + ADDRESS_LEN > len) {
        Some(offset) => Err(format!(
            "{} names an address at {offset}, past the {len} bytes of {}",
            field_name(fields, offsets),
            field_name(fields, items)
        )),
        None => Ok(()),
    }
}

/// Checks that Dolt can walk the addresses `chunk` holds without crashing.
///
/// Dolt walks every chunk of a file it is asked to add to its store
/// (`AddTableFiles`, and so every push): `WalkAddrs` in
/// `go/store/types/serial_message.go` reads each message without verifying
/// it, turns address fields into hashes with `hash.New`, which panics unless
/// given exactly 20 bytes, and dereferences a table's conflicts whether or not
/// they are there. Any of those panics takes the whole `sql-server` down. So
/// every message kind the walk reads field by field is verified here as the
/// walk will read it: a well-formed flatbuffer, every address it hashes 20
/// bytes, every nested table it dereferences present, every embedded
/// address map well formed; in row, artifact, blob and vector-index nodes,
/// every address an offset points at lies inside its items (`go/store/prolly/
/// message/prolly_map.go` `walkProllyMapAddresses` slices there unchecked).
///
/// Dolt's storage format writes nothing but serial messages, and the walk
/// (`AddrsFromNomsValue` in `go/store/types/value_store.go`) reads the first
/// byte of every chunk, so an empty chunk panics it and any other kind sends
/// it into the old format's decoder; both are refused.
pub fn check_walkable(address: &Address, chunk: &[u8]) -> Result<()> {
    let unwalkable = |reason: String| StorageError::Unwalkable { address: *address, reason };
    match chunk.first() {
        None => return Err(unwalkable("the chunk is empty, and Dolt reads its first byte".into())),
        Some(&SERIAL_MESSAGE_KIND) => {}
        Some(kind) => {
            return Err(unwalkable(format!(
                "kind byte {kind:#04x} is not a serial message (0x1b), the only kind Dolt's storage format writes"
            )))
        }
    }
    let exact = |fields: &Fields<'_>, slot: VOffsetT| -> Result<()> {
        match fields.bytes(slot).map_or(0, <[u8]>::len) {
            ADDRESS_LEN => Ok(()),
            len => Err(unwalkable(format!(
                "{} is {len} bytes, where Dolt reads a 20-byte address",
                field_name(fields, slot)
            ))),
        }
    };
    let embedded_map = |fields: &Fields<'_>, slot: VOffsetT| -> Result<()> {
        match fields.bytes(slot).filter(|b| !b.is_empty()) {
            Some(map) => AddressMapNode::parse(&Address::of(map), map).map(drop),
            None => Ok(()),
        }
    };
    match &file_id(address, chunk)? {
        b"STRT" => StoreRoot::parse(address, chunk).map(drop),
        b"SLST" => embedded_map(&Fields::open(address, chunk, &STASH_LIST)?, 4),
        b"STAT" => exact(&Fields::open(address, chunk, &STATISTIC)?, 4),
        b"STSH" => {
            let stash = Fields::open(address, chunk, &STASH)?;
            exact(&stash, 4).and(exact(&stash, 6))
        }
        b"DTAG" => exact(&Fields::open(address, chunk, &TAG)?, 4),
        b"WRST" => {
            let set = Fields::open(address, chunk, &WORKING_SET_WALKED)?;
            exact(&set, 4)?;
            if set.bytes(6).is_some_and(|b| !b.is_empty()) {
                exact(&set, 6)?;
            }
            match set.table(16, Kind::MergeState, &MERGE_STATE).map_err(unwalkable)? {
                Some(merge) => exact(&merge, 4).and(exact(&merge, 6)),
                None => Ok(()),
            }
        }
        b"RTVL" => {
            let root = Fields::open(address, chunk, &ROOT_VALUE)?;
            embedded_map(&root, 6).and(exact(&root, 8))
        }
        b"DTBL" => {
            let table = Fields::open(address, chunk, &TABLE_WALKED)?;
            [4, 14, 16].into_iter().try_for_each(|slot| exact(&table, slot))?;
            embedded_map(&table, 8)?;
            let conflicts = table.table(12, Kind::Conflicts, &CONFLICTS).map_err(unwalkable)?;
            let conflicts =
                conflicts.ok_or_else(|| unwalkable("conflicts is absent, and Dolt dereferences it".into()))?;
            [4, 6, 8, 10].into_iter().try_for_each(|slot| exact(&conflicts, slot))
        }
        b"DCMT" => {
            let commit = Fields::open(address, chunk, &COMMIT)?;
            exact(&commit, 4).and(exact(&commit, 10))
        }
        b"ADRM" => AddressMapNode::parse(address, chunk).map(drop),
        b"CMCL" => CommitClosureNode::parse(address, chunk).map(drop),
        b"TUPM" => {
            let node = Fields::open(address, chunk, &PROLLY_TREE_NODE)?;
            if node.has(18) && node.has(10) {
                return Err(unwalkable("has both address_array and value_items, which Dolt asserts against".into()));
            }
            addresses_inside(&node, 16, 10).map_err(unwalkable)
        }
        b"ARTM" => addresses_inside(&Fields::open(address, chunk, &MERGE_ARTIFACTS)?, 8, 4).map_err(unwalkable),
        b"BLOB" => Fields::open(address, chunk, &BLOB).map(drop),
        b"IVFF" => Fields::open(address, chunk, &VECTOR_INDEX_NODE).map(drop),
        _ => Ok(()),
    }
}

fn field_name(fields: &Fields<'_>, slot: VOffsetT) -> String {
    let name = fields.schema.fields.iter().find(|f| f.1 == slot).map_or("?", |f| f.0);
    format!("{}.{name}", fields.schema.id)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::build::{
        address_map, closure_node, commit, frame, message, store_root, tag as build_tag, Value,
    };

    fn a(n: u8) -> Address {
        Address([n; 20])
    }

    #[test]
    fn reads_an_address_map_leaf_inside_a_store_root() {
        let map = address_map(0, &[(b"refs/heads/main", a(1)), (b"workingSets/heads/main", a(2))]);
        let chunk = store_root(&map);
        let root = StoreRoot::parse(&Address::of(&chunk), &chunk).unwrap();
        assert_eq!(root.refs.level, 0);
        assert_eq!(root.refs.keys, vec![b"refs/heads/main".to_vec(), b"workingSets/heads/main".to_vec()]);
        assert_eq!(root.refs.addresses, vec![a(1), a(2)]);
        assert_eq!(root.refs.tree_count, 2);
        assert_eq!(file_id(&Address::EMPTY, &chunk).unwrap(), *b"STRT");
    }

    #[test]
    fn a_ref_map_leaf_with_keys_but_no_addresses_is_refused() {
        // Found by the storage fuzz target: zipping keys with a shorter
        // address list would hide refs from the push diff.
        let offsets = [0u16, 15];
        let chunk = message(
            "ADRM",
            &[
                (4, Value::Bytes(b"refs/heads/main")),
                (6, Value::U16s(&offsets)),
                (12, Value::U64(1)),
                (14, Value::U8(0)),
            ],
        );
        let error = AddressMapNode::parse(&Address::of(&chunk), &chunk).unwrap_err().to_string();
        assert!(error.contains("1 keys but 0 addresses"), "{error}");
    }

    #[test]
    fn reads_internal_nodes_and_their_counts() {
        let chunk = address_map(1, &[(b"a", a(1)), (b"m", a(2)), (b"z", a(3))]);
        let node = AddressMapNode::parse(&Address::of(&chunk), &chunk).unwrap();
        assert_eq!(node.level, 1);
        assert_eq!(node.subtree_counts, vec![1, 2, 3]);
        assert_eq!(decode_counts(&[0x0a, 0x03, 0x02], 3).unwrap(), vec![5, 3, 4]);
    }

    #[test]
    fn an_empty_store_root_has_no_refs() {
        let chunk = message("STRT", &[]);
        assert_eq!(StoreRoot::parse(&Address::EMPTY, &chunk).unwrap().refs, AddressMapNode::default());
    }

    #[test]
    fn reads_commits_tags_and_working_sets() {
        let chunk = commit(3, &[a(7), a(8)], a(9));
        let commit = Commit::parse(&Address::of(&chunk), &chunk).unwrap();
        assert_eq!((commit.height, commit.parents, commit.parent_closure), (3, vec![a(7), a(8)], Some(a(9))));
        let parentless = self::commit(1, &[], Address::EMPTY);
        assert_eq!(Commit::parse(&Address::EMPTY, &parentless).unwrap().parent_closure, None);
        let authored = message(
            "DCMT",
            &[
                (4, Value::Bytes(&a(1).0)),
                (12, Value::Bytes(b"Ann")),
                (14, Value::Bytes(b"ann@x")),
                (16, Value::Bytes(b"hi")),
            ],
        );
        let read = Commit::parse(&Address::EMPTY, &authored).unwrap();
        assert_eq!((read.name.as_str(), read.email.as_str(), read.description.as_str()), ("Ann", "ann@x", "hi"));
        let tag = build_tag(a(5));
        assert_eq!(Tag::parse(&Address::EMPTY, &tag).unwrap().commit, Some(a(5)));
        // A working set as a push writes it: no meta at all.
        let working_set = message("WRST", &[(4, Value::Bytes(&a(3).0)), (6, Value::Bytes(&a(3).0))]);
        let read = WorkingSet::parse(&Address::EMPTY, &working_set).unwrap();
        assert_eq!((read.working_root, read.staged_root), (Some(a(3)), Some(a(3))));
        assert_eq!(Tag::parse(&Address::EMPTY, &message("DTAG", &[])).unwrap().commit, None);
    }

    #[test]
    fn reads_closure_nodes() {
        let keys = [ClosureKey { height: 1, commit: a(4) }, ClosureKey { height: 2, commit: a(1) }];
        let chunk = closure_node(0, &keys, &[]);
        let node = CommitClosureNode::parse(&Address::EMPTY, &chunk).unwrap();
        assert_eq!(node.keys, keys);
        assert!(node.children.is_empty());
    }

    #[test]
    fn only_messages_dolt_can_walk_pass() {
        let walkable = [
            crate::storage::build::table(a(1), b"rows", 3),
            crate::storage::build::root_value(&address_map(0, &[(b"t", a(2))]), None),
            commit(2, &[a(3)], a(4)),
            build_tag(a(5)),
            message("WRST", &[(4, Value::Bytes(&a(6).0))]),
            store_root(&address_map(0, &[(b"refs/heads/main", a(7))])),
            // A row leaf whose one value is an address (a text or blob column).
            message("TUPM", &[(10, Value::Bytes(&[7; 24])), (16, Value::U16s(&[4]))]),
            message("TUPM", &[(18, Value::Bytes(&a(8).0))]),
            message("ARTM", &[(4, Value::Bytes(&[7; 20])), (8, Value::U16s(&[0]))]),
            message("BLOB", &[(4, Value::Bytes(b"payload"))]),
            message("IVFF", &[(12, Value::Bytes(&a(9).0))]),
        ];
        for chunk in &walkable {
            assert!(check_walkable(&Address::of(chunk), chunk).is_ok(), "{chunk:?}");
        }
        let crashing = [
            (
                message(
                    "DTBL",
                    &[(4, Value::Bytes(&a(1).0)), (14, Value::Bytes(&a(0).0)), (16, Value::Bytes(&a(0).0))],
                ),
                "conflicts is absent",
            ),
            (message("DTAG", &[]), "DTAG.commit_addr is 0 bytes"),
            (Vec::new(), "the chunk is empty"),
            (b"not a serial message".to_vec(), "kind byte 0x6e is not a serial message"),
            (
                message("WRST", &[(4, Value::Bytes(&a(6).0)), (6, Value::Bytes(&[1; 19]))]),
                "WRST.staged_root_addr is 19 bytes",
            ),
            (message("DCMT", &[(4, Value::Bytes(&a(1).0))]), "DCMT.parent_closure is 0 bytes"),
            (message("RTVL", &[(6, Value::Bytes(&address_map(0, &[])))]), "RTVL.foreign_key_addr is 0 bytes"),
            (message("STAT", &[(4, Value::Bytes(&[1; 21]))]), "STAT.root is 21 bytes"),
            (
                message("TUPM", &[(10, Value::Bytes(&[7; 24])), (16, Value::U16s(&[5]))]),
                "TUPM.value_address_offsets names an address at 5, past the 24 bytes of TUPM.value_items",
            ),
            (
                message("TUPM", &[(16, Value::U16s(&[0]))]),
                "names an address at 0, past the 0 bytes of TUPM.value_items",
            ),
            (
                message("TUPM", &[(10, Value::Bytes(&[])), (18, Value::Bytes(&a(8).0))]),
                "both address_array and value_items",
            ),
            (
                message("ARTM", &[(4, Value::Bytes(&[7; 20])), (8, Value::U16s(&[1]))]),
                "ARTM.key_address_offsets names an address at 1, past the 20 bytes of ARTM.key_items",
            ),
        ];
        for (chunk, reason) in &crashing {
            let error = check_walkable(&Address::of(chunk), chunk).unwrap_err().to_string();
            assert!(error.contains("would crash Dolt") && error.contains(reason), "{error}");
        }
        let garbled = address_map(0, &[(b"b", a(1)), (b"a", a(2))]);
        assert!(check_walkable(&Address::of(&garbled), &store_root(&garbled)).is_err());
        // A vector running past the buffer, and fields past the schema: not walked blindly.
        let mut overrun = message("BLOB", &[(4, Value::Bytes(b"payload"))]);
        let at = overrun.windows(7).position(|w| w == b"payload").unwrap();
        overrun[at - 4..at].copy_from_slice(&0xffffu32.to_le_bytes());
        for chunk in [overrun, message("IVFF", &[(24, Value::U8(1))])] {
            assert!(check_walkable(&Address::of(&chunk), &chunk).is_err(), "{chunk:?}");
        }
    }

    #[test]
    fn names_an_unexpected_file_id() {
        let chunk = message("DCMT", &[]);
        let error = Tag::parse(&Address::EMPTY, &chunk).unwrap_err();
        assert_eq!(error.to_string(), format!("unknown file id \"DCMT\" in chunk {}, expected DTAG", Address::EMPTY));
        let odd = message("\u{1}\u{2}ab", &[]);
        assert!(Tag::parse(&Address::EMPTY, &odd).unwrap_err().to_string().contains(r#""\x01\x02ab""#));
    }

    #[test]
    fn refuses_bad_envelopes() {
        let good = commit(1, &[], Address::EMPTY);
        let mut wrong_kind = good.clone();
        wrong_kind[0] = 0x0d;
        let mut wrong_length = good.clone();
        wrong_length[3] ^= 1;
        for chunk in [&wrong_kind, &wrong_length, &good[..8].to_vec()] {
            let error = Commit::parse(&Address::EMPTY, chunk).unwrap_err();
            assert!(matches!(error, StorageError::BadEnvelope(_)), "{error}");
        }
    }

    #[test]
    fn refuses_wrong_address_lengths_and_unsorted_keys() {
        let chunk = message("DCMT", &[(8, Value::Bytes(&[1; 30]))]);
        let error = Commit::parse(&Address::EMPTY, &chunk).unwrap_err();
        assert!(error.to_string().contains("parent_addrs is 30 bytes"), "{error}");
        let chunk = address_map(0, &[(b"b", a(1)), (b"a", a(2))]);
        let error = AddressMapNode::parse(&Address::EMPTY, &chunk).unwrap_err();
        assert!(error.to_string().contains("out of order"), "{error}");
        let chunk = message("ADRM", &[(4, Value::Bytes(b"abc")), (6, Value::U16s(&[0, 5]))]);
        let error = AddressMapNode::parse(&Address::EMPTY, &chunk).unwrap_err();
        assert!(error.to_string().contains("do not split"), "{error}");
    }

    #[test]
    fn refuses_tables_from_a_newer_schema() {
        let chunk = message("DTAG", &[(4, Value::Bytes(&a(1).0)), (16, Value::U64(1))]);
        let error = Tag::parse(&Address::EMPTY, &chunk).unwrap_err();
        assert!(error.to_string().contains("has 7 fields"), "{error}");
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let good = address_map(1, &[(b"refs/heads/a", a(1)), (b"refs/heads/b", a(2))]);
        for i in PREFIX_LEN..good.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let _ = AddressMapNode::parse(&Address::EMPTY, &bad);
            }
        }
        for len in 0..good.len() {
            let mut cut = frame(&good[PREFIX_LEN..PREFIX_LEN + len.max(8).min(good.len() - PREFIX_LEN)]);
            cut.truncate(cut.len().min(len + PREFIX_LEN));
            let _ = AddressMapNode::parse(&Address::EMPTY, &cut);
        }
    }
}

#[cfg(test)]
mod regression_tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// Found by fuzzing: vtables shorter than their own header passed the verifier.
    #[test]
    fn short_vtables_are_errors_not_panics() {
        let closure = hex("1b00004814000000434d434c000000000000000a000004000c000000010000000000000000000000040000001c00000001000000000000002efd0a221201f5d42a9d83209c8801740a67e8b3");
        let root = hex("1b0000881000000053545254000006000800040006000000040000006c0000001b0000681c0000004144524d00000001000000000000000010000c00000004000e00000001000000000000000c000000200000002400000014000000cbe202b5666dcba23f48f873f23afa4b1e807cc90200000000000f000f000000726566732f68656164732f6d61696e00");
        assert!(CommitClosureNode::parse(&Address::of(&closure), &closure).is_err());
        assert!(StoreRoot::parse(&Address::of(&root), &root).is_err());
    }
}
