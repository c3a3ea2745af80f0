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
//! [`CountedSet`] is the range-counting set the store keeps beside its
//! ordered indexes (active ids, `(updated_ms, id)` keys): search counts the
//! matches of a time or id range with it in `O(log n)`.
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

/// An ordered set that counts its keys in a range in `O(log n)` (plus the
/// few keys inserted out of order since the last compaction): a sorted array
/// with a Fenwick tree over which of its keys are present, an append path for
/// keys above every key held (new ids; a monotonic clock's new
/// `(last-modified, id)` keys), tombstones for removals, and a small ordered
/// overflow for keys inserted below the array's last key. The array is
/// rebuilt (`O(n)`) when the overflow outgrows `max(64, sqrt n)` or
/// tombstones are more than half of it, so both costs stay amortized small.
#[derive(Clone, Debug)]
pub struct CountedSet<K> {
    /// Ascending; removed keys stay as tombstones until the next compaction.
    sorted: Vec<K>,
    present: Vec<bool>,
    /// Fenwick tree over `present` (1-based: `tree[i - 1]` sums the
    /// positions `(i - lowbit(i), i]`).
    tree: Vec<u32>,
    tombstones: usize,
    /// Present keys that are below `sorted`'s last key and not in `sorted`.
    overflow: BTreeSet<K>,
}

impl<K> Default for CountedSet<K> {
    fn default() -> Self {
        CountedSet {
            sorted: Vec::new(),
            present: Vec::new(),
            tree: Vec::new(),
            tombstones: 0,
            overflow: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> CountedSet<K> {
    /// Built from keys in any order (duplicates counted once).
    pub fn from_keys(keys: impl Iterator<Item = K>) -> CountedSet<K> {
        let mut sorted: Vec<K> = keys.collect();
        sorted.sort_unstable();
        sorted.dedup();
        Self::from_sorted(sorted)
    }

    fn from_sorted(sorted: Vec<K>) -> CountedSet<K> {
        let n = sorted.len();
        let mut tree = vec![1u32; n];
        for i in 1..=n {
            let j = i + (i & i.wrapping_neg());
            if j <= n {
                tree[j - 1] += tree[i - 1];
            }
        }
        CountedSet {
            sorted,
            present: vec![true; n],
            tree,
            tombstones: 0,
            overflow: BTreeSet::new(),
        }
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.sorted.len() - self.tombstones + self.overflow.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a key (no change if present).
    pub fn insert(&mut self, key: K) {
        if self.sorted.last().is_none_or(|last| *last < key) {
            let i = self.sorted.len() + 1;
            let low = i & i.wrapping_neg();
            // The new node sums positions (i - low, i]: the earlier ones
            // are prefix(i - 1) - prefix(i - low).
            let node = self.prefix(i - 1) - self.prefix(i - low) + 1;
            self.sorted.push(key);
            self.present.push(true);
            self.tree.push(node);
            return;
        }
        match self.sorted.binary_search(&key) {
            Ok(pos) => {
                if !self.present[pos] {
                    self.tombstones -= 1;
                    self.toggle(pos, true);
                }
            }
            Err(_) => {
                self.overflow.insert(key);
                let limit = (self.sorted.len() as f64).sqrt() as usize;
                if self.overflow.len() > limit.max(64) {
                    self.compact();
                }
            }
        }
    }

    /// Removes a key (no change if absent).
    pub fn remove(&mut self, key: &K) {
        match self.sorted.binary_search(key) {
            Ok(pos) if self.present[pos] => {
                self.tombstones += 1;
                self.toggle(pos, false);
                if self.tombstones > 64 && self.tombstones * 2 > self.sorted.len() {
                    self.compact();
                }
            }
            Ok(_) => {}
            Err(_) => {
                self.overflow.remove(key);
            }
        }
    }

    /// How many keys lie in `[lo, hi]`.
    pub fn count(&self, lo: K, hi: K) -> usize {
        if lo > hi {
            return 0;
        }
        let from = self.sorted.partition_point(|k| *k < lo);
        let to = self.sorted.partition_point(|k| *k <= hi);
        let listed = (self.prefix(to) - self.prefix(from)) as usize;
        listed + self.overflow.range(lo..=hi).count()
    }

    /// Every key, ascending (for tests).
    pub fn keys(&self) -> Vec<K> {
        let mut keys: Vec<K> = self
            .sorted
            .iter()
            .zip(&self.present)
            .filter(|(_, p)| **p)
            .map(|(k, _)| *k)
            .chain(self.overflow.iter().copied())
            .collect();
        keys.sort_unstable();
        keys
    }

    fn toggle(&mut self, pos: usize, present: bool) {
        self.present[pos] = present;
        let mut i = pos + 1;
        while i <= self.tree.len() {
            if present {
                self.tree[i - 1] += 1;
            } else {
                self.tree[i - 1] -= 1;
            }
            i += i & i.wrapping_neg();
        }
    }

    /// Present keys among the first `n` positions of `sorted`.
    fn prefix(&self, mut n: usize) -> u32 {
        let mut sum = 0;
        while n > 0 {
            sum += self.tree[n - 1];
            n &= n - 1;
        }
        sum
    }

    fn compact(&mut self) {
        let keys = self.keys();
        *self = Self::from_sorted(keys);
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

    #[test]
    fn counted_sets_count_like_a_btree_set() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Mostly ascending inserts (a clock), some below the last key, many
        // removals: every path (append, overflow, tombstone, compaction).
        let mut set = CountedSet::default();
        let mut truth = BTreeSet::new();
        let mut clock = 0i64;
        for step in 0..6000 {
            match next() % 10 {
                0..=4 => {
                    clock += (next() % 3) as i64;
                    let key = (clock, next() % 50);
                    set.insert(key);
                    truth.insert(key);
                }
                5 => {
                    let key = ((next() % (clock as u64 + 1)) as i64, next() % 50);
                    set.insert(key);
                    truth.insert(key);
                }
                _ => {
                    if let Some(&key) = truth
                        .iter()
                        .nth((next() % (truth.len() as u64 + 1)) as usize)
                    {
                        set.remove(&key);
                        truth.remove(&key);
                    }
                    let absent = (clock + 1, 99);
                    set.remove(&absent);
                }
            }
            assert_eq!(set.len(), truth.len(), "step {step}");
            let a = ((next() % (clock as u64 + 2)) as i64, next() % 60);
            let b = ((next() % (clock as u64 + 2)) as i64, next() % 60);
            let want = if a <= b {
                truth.range(a..=b).count()
            } else {
                0
            };
            assert_eq!(set.count(a, b), want, "step {step}: [{a:?}, {b:?}]");
        }
        assert_eq!(set.keys(), truth.iter().copied().collect::<Vec<_>>());
        assert_eq!(
            CountedSet::from_keys(truth.iter().rev().copied()).keys(),
            set.keys()
        );
    }
}
