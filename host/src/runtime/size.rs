//! Sizes of the values that cross the sandbox boundary, for the
//! `input_bytes` and `output_bytes` limits.
//!
//! The size is the canonical-ABI payload: the bytes of every string and list
//! element plus a fixed 8 bytes per scalar, option, variant case and record
//! field header. It is computed on the host value before anything is lowered
//! into the guest (input) and on the lifted value (output). It is an estimate
//! of the copied bytes, deterministic and monotonic in the data; it must
//! never allocate.

use super::bindings::*;

/// The canonical-ABI size estimate of a value, in bytes.
pub trait WireSize {
    /// The estimate.
    fn wire_size(&self) -> u64;
}

const SCALAR: u64 = 8;

impl WireSize for String {
    fn wire_size(&self) -> u64 {
        SCALAR + self.len() as u64
    }
}

impl<T: WireSize> WireSize for Vec<T> {
    fn wire_size(&self) -> u64 {
        SCALAR + self.iter().map(WireSize::wire_size).sum::<u64>()
    }
}

impl<T: WireSize> WireSize for Option<T> {
    fn wire_size(&self) -> u64 {
        SCALAR + self.as_ref().map_or(0, WireSize::wire_size)
    }
}

impl<T: WireSize, E: WireSize> WireSize for Result<T, E> {
    fn wire_size(&self) -> u64 {
        SCALAR
            + match self {
                Ok(v) => v.wire_size(),
                Err(e) => e.wire_size(),
            }
    }
}

macro_rules! scalar {
    ($($t:ty),*) => {$(impl WireSize for $t { fn wire_size(&self) -> u64 { SCALAR } })*};
}
scalar!(
    u8,
    u32,
    u64,
    i32,
    i64,
    bool,
    Crm,
    ObjectPair,
    Direction,
    Trigger,
    RelatedKind,
    SyncRule,
    ErrorKind,
    Date,
    Decimal
);

macro_rules! record {
    ($t:ty { $($f:ident),* }) => {
        impl WireSize for $t {
            fn wire_size(&self) -> u64 { 0 $(+ self.$f.wire_size())* }
        }
    };
}

impl WireSize for Value {
    fn wire_size(&self) -> u64 {
        SCALAR
            + match self {
                Value::Text(s) => s.wire_size(),
                Value::Multi(v) => v.wire_size(),
                _ => SCALAR,
            }
    }
}

record!(FieldValue { field, value });
record!(CrmRecord {
    id,
    modified_at,
    fields
});
record!(Snapshot {
    salesforce,
    hubspot,
    synced_at
});
record!(Related {
    kind,
    salesforce_id,
    hubspot_id,
    role,
    primary
});
record!(PairAssociations {
    salesforce,
    hubspot
});
record!(RecordPair {
    salesforce,
    hubspot,
    snapshot,
    salesforce_changed,
    hubspot_changed,
    associations
});
record!(Owner {
    email,
    salesforce_user_id,
    hubspot_owner_id
});
record!(Stage { id, label });
record!(Pipeline {
    id,
    label,
    record_type_id,
    record_type_name,
    stages
});
record!(Lookups { owners, pipelines });
record!(Batch {
    object_pair,
    direction,
    trigger,
    salesforce_fields,
    hubspot_fields,
    pairs,
    lookups
});
record!(FieldInfo {
    crm,
    object_pair,
    name,
    type_name,
    field_type
});
record!(FieldMapping {
    object_pair,
    salesforce_field,
    hubspot_field,
    rule
});
record!(ExtraField {
    crm,
    object_pair,
    name
});
record!(Description {
    name,
    version,
    object_pairs,
    mappings,
    extra_fields
});
record!(RuleError {
    kind,
    field,
    message
});
record!(FieldWrite { field, value });
record!(PairWrites {
    salesforce,
    hubspot,
    salesforce_associations,
    hubspot_associations
});

impl WireSize for Inclusion {
    fn wire_size(&self) -> u64 {
        SCALAR
            + match self {
                Inclusion::Include => 0,
                Inclusion::Exclude(s) => s.wire_size(),
            }
    }
}

impl WireSize for Skip {
    fn wire_size(&self) -> u64 {
        SCALAR
            + match self {
                Skip::UpToDate => 0,
                Skip::Excluded(s) | Skip::UnsyncedPipeline(s) => s.wire_size(),
            }
    }
}

impl WireSize for PairOutcome {
    fn wire_size(&self) -> u64 {
        SCALAR
            + match self {
                PairOutcome::Write(w) => w.wire_size(),
                PairOutcome::Skip(s) => s.wire_size(),
                PairOutcome::Error(e) => e.wire_size(),
            }
    }
}

/// A flat plan as the plugin returned it (before it is checked and decoded): what the host
/// lifted, items that no outcome points at included. Counted so that a plan whose every item
/// is used never measures more than the nested outcomes it decodes to (a field position counts
/// as one scalar where the decoded write carries the name; the `writes` and `related` lists
/// count their items only, as the nested outcomes have no such lists): the output limit then
/// stops the same plans on both paths, and unused items still count.
impl WireSize for FlatPlan {
    fn wire_size(&self) -> u64 {
        let items = |sizes: &mut dyn Iterator<Item = u64>| sizes.sum::<u64>();
        self.outcomes.wire_size()
            + items(&mut self.writes.iter().map(WireSize::wire_size))
            + items(&mut self.related.iter().map(WireSize::wire_size))
    }
}

/// A field position counts one scalar; a name, its text.
impl WireSize for FieldRef {
    fn wire_size(&self) -> u64 {
        match self {
            FieldRef::Known(_) => SCALAR,
            FieldRef::Named(name) => name.wire_size(),
        }
    }
}

record!(FlatWrite { field, value });

impl WireSize for FlatOutcome {
    fn wire_size(&self) -> u64 {
        SCALAR
            + match self {
                // Four spans, one scalar each: as the four lists of the decoded `pair-writes`.
                FlatOutcome::Write(_) => 4 * SCALAR,
                FlatOutcome::Skip(s) => s.wire_size(),
                FlatOutcome::Error(e) => e.wire_size(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_lists_count_their_payload() {
        assert_eq!(String::from("abcd").wire_size(), 12);
        assert_eq!(
            vec![String::from("ab"), String::from("c")].wire_size(),
            8 + 10 + 9
        );
        let small = Value::Text("x".into()).wire_size();
        let big = Value::Text("x".repeat(1000)).wire_size();
        assert_eq!(big - small, 999);
    }

    /// The lift budget (`Limits::lift_budget`) counts what wasmtime copies: a string's bytes
    /// and a list's elements at their host size. The smallest value of every type that a
    /// returned list holds takes at most `LIFT_BYTES_PER_OUTPUT_BYTE` host bytes per wire
    /// byte (a string's bytes count one for one on both sides), so any output within the
    /// output limit fits its budget.
    #[test]
    fn lift_budget_covers_every_well_formed_output() {
        use crate::runtime::LIFT_BYTES_PER_OUTPUT_BYTE;
        fn fits<T: WireSize>(smallest: T) {
            let host = std::mem::size_of::<T>() as u64;
            let wire = smallest.wire_size();
            assert!(
                host <= LIFT_BYTES_PER_OUTPUT_BYTE * wire,
                "{}: {host} host bytes for {wire} wire bytes",
                std::any::type_name::<T>()
            );
        }
        fits(String::new());
        fits(Value::Null);
        fits(Inclusion::Include);
        fits(PairOutcome::Skip(Skip::UpToDate));
        fits(FieldWrite {
            field: String::new(),
            value: Value::Null,
        });
        fits(Related {
            kind: RelatedKind::Company,
            salesforce_id: None,
            hubspot_id: None,
            role: None,
            primary: false,
        });
        fits(FlatWrite {
            field: FieldRef::Known(0),
            value: Value::Null,
        });
        fits(FlatOutcome::Skip(Skip::UpToDate));
        fits(ObjectPair::OpportunityDeal);
        fits(FieldMapping {
            object_pair: ObjectPair::OpportunityDeal,
            salesforce_field: String::new(),
            hubspot_field: String::new(),
            rule: SyncRule::DontSync,
        });
        fits(ExtraField {
            crm: Crm::Salesforce,
            object_pair: ObjectPair::OpportunityDeal,
            name: String::new(),
        });
    }
}
