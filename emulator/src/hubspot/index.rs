//! Secondary indexes of one HubSpot table: for a fixed set of commonly
//! filtered properties (pipeline, stage, owner, lifecycle stage, create and
//! close dates, amount), the active records keyed by the value search
//! compares, so that search can count and list the records an EQ, IN or range
//! filter matches without walking every record.
//!
//! Keys are computed exactly as search's filters read a stored value: text
//! lowercased, numbers parsed as `f64`, dates and datetimes parsed to epoch
//! ms. A value that does not parse is not indexed (no comparison filter can
//! match it). Text indexes keep, per lowercased value, the `(updated_ms, id)`
//! keys of its records: an EQ filter plus a last-modified range is then one
//! ordered range, countable and streamable in keyset order.
//!
//! Only [`super::store`] writes these, on every create, update, archive and
//! snapshot load; the calculated properties (stage flags, contact rollups) are
//! never indexed, so writes that skip the indexes cannot make them stale.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::schema::{ObjectType, PropType, PropertyDef, parse_datetime_ms};
use super::store::Record;

/// The indexed properties of each object type.
fn indexed_props(ot: ObjectType) -> &'static [&'static str] {
    match ot {
        ObjectType::Deals => &[
            "pipeline",
            "dealstage",
            "hubspot_owner_id",
            "createdate",
            "closedate",
            "amount",
        ],
        ObjectType::Contacts => &["hubspot_owner_id", "lifecyclestage", "createdate"],
        ObjectType::Companies => &["hubspot_owner_id", "createdate"],
    }
}

/// An order-preserving `i64` for a finite `f64` as search compares numbers:
/// `-0` and `0` are one key, otherwise distinct values get distinct keys in
/// numeric order. `None` for NaN (which compares to nothing).
pub fn num_key(x: f64) -> Option<i64> {
    if x.is_nan() {
        return None;
    }
    let x = if x == 0.0 { 0.0 } else { x };
    // The transform `f64::total_cmp` uses.
    let bits = x.to_bits() as i64;
    Some(bits ^ ((((bits >> 63) as u64) >> 1) as i64))
}

/// One property's index.
#[derive(Clone, Debug)]
pub enum ValueIndex {
    /// Text properties: lowercased value -> `(updated_ms, id)` of its records.
    Text(BTreeMap<String, BTreeSet<(i64, u64)>>),
    /// Numbers (`num`, keys from [`num_key`]) or dates and datetimes (epoch
    /// ms): `(key, id)` of every record with a value.
    Ordered {
        keys: BTreeSet<(i64, u64)>,
        num: bool,
    },
}

impl ValueIndex {
    fn for_type(ty: PropType) -> ValueIndex {
        match ty {
            PropType::Number => ValueIndex::Ordered {
                keys: BTreeSet::new(),
                num: true,
            },
            PropType::Date | PropType::Datetime => ValueIndex::Ordered {
                keys: BTreeSet::new(),
                num: false,
            },
            _ => ValueIndex::Text(BTreeMap::new()),
        }
    }

    /// The ordered key of a stored value (`None`: it does not parse).
    pub fn ordered_key(num: bool, stored: &str) -> Option<i64> {
        if num {
            stored.parse::<f64>().ok().and_then(num_key)
        } else {
            parse_datetime_ms(stored)
        }
    }

    fn insert(&mut self, value: &str, rec: &Record) {
        match self {
            ValueIndex::Text(map) => {
                map.entry(value.to_lowercase())
                    .or_default()
                    .insert((rec.updated_ms, rec.id));
            }
            ValueIndex::Ordered { keys, num } => {
                if let Some(k) = Self::ordered_key(*num, value) {
                    keys.insert((k, rec.id));
                }
            }
        }
    }

    fn remove(&mut self, value: &str, rec: &Record) {
        match self {
            ValueIndex::Text(map) => {
                let lower = value.to_lowercase();
                if let Some(set) = map.get_mut(&lower) {
                    set.remove(&(rec.updated_ms, rec.id));
                    if set.is_empty() {
                        map.remove(&lower);
                    }
                }
            }
            ValueIndex::Ordered { keys, num } => {
                if let Some(k) = Self::ordered_key(*num, value) {
                    keys.remove(&(k, rec.id));
                }
            }
        }
    }
}

/// The secondary indexes of one table.
#[derive(Clone, Debug, Default)]
pub struct ValueIndexes {
    by_prop: HashMap<String, ValueIndex>,
}

impl ValueIndexes {
    /// Empty indexes for the type's indexed properties that `props` defines.
    pub fn for_table(ot: ObjectType, props: &[PropertyDef]) -> ValueIndexes {
        let by_prop = indexed_props(ot)
            .iter()
            .filter_map(|name| {
                let def = props.iter().find(|d| d.name == *name)?;
                Some((name.to_string(), ValueIndex::for_type(def.ty)))
            })
            .collect();
        ValueIndexes { by_prop }
    }

    /// The index of a property, if it has one.
    pub fn get(&self, prop: &str) -> Option<&ValueIndex> {
        self.by_prop.get(prop)
    }

    /// Adds an active record (with its current `updated_ms`).
    pub fn insert(&mut self, rec: &Record) {
        for (name, index) in self.by_prop.iter_mut() {
            if let Some(v) = rec.props.get(name) {
                index.insert(v, rec);
            }
        }
    }

    /// Removes a record as it was indexed (same values and `updated_ms`).
    pub fn remove(&mut self, rec: &Record) {
        for (name, index) in self.by_prop.iter_mut() {
            if let Some(v) = rec.props.get(name) {
                index.remove(v, rec);
            }
        }
    }

    /// Whether two index sets hold the same entries (for tests).
    pub fn same_entries(&self, other: &ValueIndexes) -> bool {
        self.by_prop.len() == other.by_prop.len()
            && self.by_prop.iter().all(|(k, a)| {
                other.by_prop.get(k).is_some_and(|b| match (a, b) {
                    (ValueIndex::Text(x), ValueIndex::Text(y)) => x == y,
                    (
                        ValueIndex::Ordered { keys: x, num: n },
                        ValueIndex::Ordered { keys: y, num: m },
                    ) => x == y && n == m,
                    _ => false,
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_keys_keep_numeric_order() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -2.5,
            -1.0,
            -0.0,
            0.0,
            1e-300,
            1.0,
            2.5,
            1e300,
            f64::INFINITY,
        ];
        for a in xs {
            for b in xs {
                assert_eq!(
                    num_key(a).cmp(&num_key(b)),
                    a.partial_cmp(&b).unwrap(),
                    "{a} vs {b}"
                );
            }
        }
        assert_eq!(num_key(f64::NAN), None);
    }
}
