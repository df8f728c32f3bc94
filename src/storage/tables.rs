//! A root value's tables, and which of them a change from one root value to
//! another touches, in data or in schema.
//!
//! What counts as which (documented for users in the README):
//! - **schema**: the table's `DSCH` chunk (columns, primary key, indexes,
//!   checks, comments), the foreign keys naming it as child or parent (kept at
//!   the root, `go/serial/foreign_key.fbs`), and its existence: a table created,
//!   dropped or renamed (a rename is a drop and a create) changes schema;
//! - **data**: everything else a table holds: rows, index contents, the
//!   auto-increment counter, conflicts and constraint violations. A created
//!   or dropped table changes data too (a drop destroys rows).
//!
//! Only tables whose address differs are read: the table map is diffed by
//! [`address_map`](super::address_map), then each changed table's two `DTBL`
//! chunks are fetched in one batch. A table whose chunk differs in a way this
//! module cannot name counts as a data change (fail closed).

use std::collections::{BTreeMap, HashSet};

use super::address_map::diff_maps;
use super::message::{AddressMapNode, ForeignKey, RootValue, Table};
use super::source::{get_all, ChunkSource};
use super::{Address, Result, StorageError};

/// One table a change touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange {
    /// The table's name as Dolt stores it (its case kept), without schema.
    pub name: String,
    /// The database schema it sits in, for roots that have them (Doltgres).
    pub schema_name: Option<String>,
    pub data: bool,
    pub schema: bool,
}

impl TableChange {
    /// `prices (data, schema)`.
    pub fn describe(&self) -> String {
        let kinds: Vec<&str> = [(self.data, "data"), (self.schema, "schema")]
            .into_iter()
            .filter_map(|(changed, kind)| changed.then_some(kind))
            .collect();
        let name = match &self.schema_name {
            Some(schema) => format!("{schema}.{}", self.name),
            None => self.name.clone(),
        };
        format!("{name} ({})", kinds.join(", "))
    }
}

/// Every table `new` changes relative to `old` (root value addresses; all
/// zeros is a root with no tables), sorted by name.
pub async fn changed_tables<S: ChunkSource>(source: &S, old: &Address, new: &Address) -> Result<Vec<TableChange>> {
    if old == new {
        return Ok(Vec::new());
    }
    let roots: Vec<Address> = [old, new].into_iter().filter(|a| !a.is_empty()).copied().collect();
    let chunks = get_all(source, &roots).await?;
    let root_value = |address: &Address| match address.is_empty() {
        true => Ok(RootValue { tables: AddressMapNode::default(), foreign_keys: None }),
        false => RootValue::parse(address, &chunks[address]),
    };
    let (old_root, new_root) = (root_value(old)?, root_value(new)?);
    let entries = diff_maps(source, (old, &old_root.tables), (new, &new_root.tables)).await?;
    let mut changes = ChangeSet::default();
    let mut both_sides = Vec::new();
    for (key, before, after) in entries {
        let (schema_name, name) = table_name(new, &key)?;
        match (before, after) {
            (Some(before), Some(after)) => both_sides.push((schema_name, name, before, after)),
            _ => changes.mark(schema_name, name, true, true),
        }
    }
    let wanted: Vec<Address> = both_sides.iter().flat_map(|(_, _, before, after)| [*before, *after]).collect();
    let tables = get_all(source, &wanted).await?;
    for (schema_name, name, before, after) in both_sides {
        let (before, after) = (Table::parse(&before, &tables[&before])?, Table::parse(&after, &tables[&after])?);
        let schema = before.schema != after.schema;
        // Same schema and same data, yet a different chunk: call it data.
        let data = before.data != after.data || !schema;
        changes.mark(schema_name, name, data, schema);
    }
    if old_root.foreign_keys != new_root.foreign_keys {
        for key in foreign_key_changes(source, old_root.foreign_keys, new_root.foreign_keys).await? {
            changes.mark(None, key.child_table.clone(), false, true);
            changes.mark(None, key.parent_table.clone(), false, true);
        }
    }
    Ok(changes.into_sorted())
}

/// Foreign keys one side has and the other does not (a changed key is both).
async fn foreign_key_changes<S: ChunkSource>(
    source: &S,
    old: Option<Address>,
    new: Option<Address>,
) -> Result<Vec<ForeignKey>> {
    let wanted: Vec<Address> = old.into_iter().chain(new).collect();
    let chunks = get_all(source, &wanted).await?;
    let read = |address: Option<Address>| -> Result<HashSet<ForeignKey>> {
        match address {
            Some(address) => Ok(ForeignKey::parse_collection(&address, &chunks[&address])?.into_iter().collect()),
            None => Ok(HashSet::new()),
        }
    };
    let (old, new) = (read(old)?, read(new)?);
    let mut changed: Vec<ForeignKey> = old.symmetric_difference(&new).cloned().collect();
    changed.sort();
    Ok(changed)
}

/// A table map key: a bare name, or `\0schema\0name` for a table in a
/// database schema (`encodeTableNameForSerialization` in
/// `go/libraries/doltcore/doltdb/root_val_storage.go`).
fn table_name(root: &Address, key: &[u8]) -> Result<(Option<String>, String)> {
    let bad = |reason: String| StorageError::BadTree { address: *root, reason };
    let text = std::str::from_utf8(key).map_err(|_| bad(format!("table name {key:?} is not UTF-8")))?;
    match text.strip_prefix('\0') {
        None => Ok((None, text.to_owned())),
        Some(rest) => match rest.rsplit_once('\0') {
            Some((schema, name)) if !name.is_empty() => Ok((Some(schema.to_owned()), name.to_owned())),
            _ => Err(bad(format!("table name {text:?} is neither bare nor schema-qualified"))),
        },
    }
}

/// Changes by table, one entry per table whatever case its name is spelled
/// in (Dolt's table names are case-insensitive, and foreign keys may name a
/// table in another case than the table map).
#[derive(Default)]
struct ChangeSet(BTreeMap<(Option<String>, String), TableChange>);

impl ChangeSet {
    fn mark(&mut self, schema_name: Option<String>, name: String, data: bool, schema: bool) {
        let key = (schema_name.as_ref().map(|s| s.to_lowercase()), name.to_lowercase());
        let entry = self.0.entry(key).or_insert(TableChange { name, schema_name, data: false, schema: false });
        entry.data |= data;
        entry.schema |= schema;
    }

    fn into_sorted(self) -> Vec<TableChange> {
        self.0.into_values().collect()
    }
}

/// Changes from several pairs of root values (a working set's working and
/// staged roots) merged per table.
pub fn merge(changes: impl IntoIterator<Item = TableChange>) -> Vec<TableChange> {
    let mut set = ChangeSet::default();
    for change in changes {
        set.mark(change.schema_name, change.name, change.data, change.schema);
    }
    set.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::build::{address_map, foreign_keys, root_value, table, ForeignKeySpec};
    use crate::storage::MemorySource;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    fn a(text: &str) -> Address {
        Address::of(text.as_bytes())
    }

    /// A root value over `tables` (name, table chunk), stored in `source`.
    fn root(source: &mut MemorySource, tables: &[(&str, Vec<u8>)], fks: Option<Address>) -> Address {
        let mut entries: Vec<(&[u8], Address)> =
            tables.iter().map(|(name, chunk)| (name.as_bytes(), source.insert(chunk.clone()))).collect();
        entries.sort();
        source.insert(root_value(&address_map(0, &entries), fks))
    }

    fn summary(changes: &[TableChange]) -> Vec<String> {
        changes.iter().map(TableChange::describe).collect()
    }

    #[test]
    fn tells_data_from_schema_and_counts_existence_as_both() {
        let mut source = MemorySource::new();
        let old = root(
            &mut source,
            &[
                ("prices", table(a("schema1"), b"rows1", 5)),
                ("orders", table(a("schema2"), b"rows2", 0)),
                ("gone", table(a("schema3"), b"rows3", 0)),
                ("same", table(a("schema4"), b"rows4", 0)),
            ],
            None,
        );
        let new = root(
            &mut source,
            &[
                // Rows inserted, so the auto-increment counter moved: data only.
                ("prices", table(a("schema1"), b"rows1+", 6)),
                // A column added: a new schema, and rows rewritten.
                ("orders", table(a("schema2+"), b"rows2", 0)),
                ("fresh", table(a("schema5"), b"", 0)),
                ("same", table(a("schema4"), b"rows4", 0)),
            ],
            None,
        );
        let changes = block_on(changed_tables(&source, &old, &new)).unwrap();
        assert_eq!(
            summary(&changes),
            ["fresh (data, schema)", "gone (data, schema)", "orders (schema)", "prices (data)"]
        );
        assert!(block_on(changed_tables(&source, &new, &new)).unwrap().is_empty());
        let from_nothing = block_on(changed_tables(&source, &Address::EMPTY, &new)).unwrap();
        assert_eq!(from_nothing.len(), 4);
    }

    #[test]
    fn a_changed_foreign_key_is_a_schema_change_to_both_its_tables() {
        let mut source = MemorySource::new();
        let key = |on_delete| ForeignKeySpec { name: "fk", child: "orders", parent: "Customers", on_delete };
        let before = source.insert(foreign_keys(&[key(0)]));
        let after = source.insert(foreign_keys(&[key(1)]));
        let tables = [("customers", table(a("s1"), b"r1", 0)), ("orders", table(a("s2"), b"r2", 0))];
        let old = root(&mut source, &tables, Some(before));
        let new = root(&mut source, &tables, Some(after));
        let changes = block_on(changed_tables(&source, &old, &new)).unwrap();
        // One entry per table, whichever case the foreign key spells it in.
        assert_eq!(summary(&changes), ["Customers (schema)", "orders (schema)"]);
        let dropped = root(&mut source, &tables, None);
        assert_eq!(block_on(changed_tables(&source, &old, &dropped)).unwrap().len(), 2);
    }

    #[test]
    fn schema_qualified_names_and_broken_tables_are_handled() {
        let mut source = MemorySource::new();
        let new = root(&mut source, &[("\0app\0prices", table(a("s"), b"r", 0))], None);
        let changes = block_on(changed_tables(&source, &Address::EMPTY, &new)).unwrap();
        assert_eq!(summary(&changes), ["app.prices (data, schema)"]);
        let missing = source.insert(root_value(&address_map(0, &[(b"t".as_slice(), a("absent"))]), None));
        let present = root(&mut source, &[("t", table(a("s"), b"r", 0))], None);
        let error = block_on(changed_tables(&source, &present, &missing)).unwrap_err();
        assert!(error.to_string().contains("missing chunk"), "{error}");
    }
}
