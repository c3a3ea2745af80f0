//! Lowering a flat batch into the guest with its large lists written as byte images.
//!
//! wasmtime's derived lowering stores a `list<record>` element by element, and every store of
//! every field looks the guest's memory up again (`LowerContext::get`); for the flat batch that
//! was the largest host-side share of a record's instructions. [`LoweredBatch`] lowers the same
//! `flat-batch` (same WIT type, checked by wasmtime's type check in the tests) but writes the
//! lists of fixed-size records (`options`, `fields`, `related`, `pairs`) as [`Images`]: one
//! `realloc` for the list, one look-up of memory, then each element's canonical-ABI image
//! copied into place. Every other part of the batch lowers as before.
//!
//! The images follow the canonical ABI of `wit/rules.wit` (field offsets, variant and option
//! discriminants, payload offsets); the tests check each layout against the sizes and offsets
//! wasmtime computes for the generated types, and each image against bytes written out by
//! hand. This module must never write outside the block that `realloc` returned.

use std::mem::MaybeUninit;

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
};
use wasmtime::component::{ComponentType, Lower};

use super::bindings::*;

/// A record of fixed size (no strings, no lists) that lowers as its canonical-ABI image.
pub trait Image: ComponentType + Sync {
    /// The image's size: `Self::SIZE32`.
    const SIZE: usize;

    /// Writes the image into `out`, which is [`Image::SIZE`] bytes long and zeroed.
    fn image(&self, out: &mut [u8]);
}

#[inline]
fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl Image for Span {
    const SIZE: usize = 8;
    #[inline]
    fn image(&self, out: &mut [u8]) {
        put_u32(out, 0, self.start);
        put_u32(out, 4, self.len);
    }
}

/// `option<span>`: the discriminant, then the span at offset 4.
#[inline]
fn option_span(out: &mut [u8], span: &Option<Span>) {
    if let Some(s) = span {
        out[0] = 1;
        s.image(&mut out[4..12]);
    }
}

/// `flat-value` (a variant of 8 cases, payload at offset 8, 24 bytes).
#[inline]
fn flat_value(out: &mut [u8], v: &FlatValue) {
    const PAYLOAD: usize = 8;
    let tag = match v {
        FlatValue::Null => 0,
        FlatValue::Text(s) => {
            s.image(&mut out[PAYLOAD..PAYLOAD + 8]);
            1
        }
        FlatValue::Decimal(d) => {
            // `decimal`: digits at 0, scale at 8.
            put_u64(out, PAYLOAD, d.digits as u64);
            out[PAYLOAD + 8] = d.scale;
            2
        }
        FlatValue::Integer(i) => {
            put_u64(out, PAYLOAD, *i as u64);
            3
        }
        FlatValue::Boolean(b) => {
            out[PAYLOAD] = u8::from(*b);
            4
        }
        FlatValue::Date(d) => {
            // `date`: year at 0, month at 4, day at 5.
            put_u32(out, PAYLOAD, d.year as u32);
            out[PAYLOAD + 4] = d.month;
            out[PAYLOAD + 5] = d.day;
            5
        }
        FlatValue::Datetime(t) => {
            put_u64(out, PAYLOAD, *t as u64);
            6
        }
        FlatValue::Multi(s) => {
            s.image(&mut out[PAYLOAD..PAYLOAD + 8]);
            7
        }
    };
    out[0] = tag;
}

impl Image for FlatField {
    const SIZE: usize = 32;
    #[inline]
    fn image(&self, out: &mut [u8]) {
        put_u32(out, 0, self.field);
        flat_value(&mut out[8..32], &self.value);
    }
}

/// `flat-record`: id at 0, modified-at at 8, fields at 16 (24 bytes).
#[inline]
fn flat_record(out: &mut [u8], r: &FlatRecord) {
    r.id.image(&mut out[0..8]);
    put_u64(out, 8, r.modified_at as u64);
    r.fields.image(&mut out[16..24]);
}

/// `flat-snapshot`: salesforce at 0, hubspot at 8, synced-at at 16 (24 bytes).
#[inline]
fn flat_snapshot(out: &mut [u8], s: &FlatSnapshot) {
    s.salesforce.image(&mut out[0..8]);
    s.hubspot.image(&mut out[8..16]);
    put_u64(out, 16, s.synced_at as u64);
}

impl Image for FlatPair {
    const SIZE: usize = 128;
    #[inline]
    fn image(&self, out: &mut [u8]) {
        // Three options of 8-aligned records (32 bytes each, payload at 8), then four spans.
        if let Some(r) = &self.salesforce {
            out[0] = 1;
            flat_record(&mut out[8..32], r);
        }
        if let Some(r) = &self.hubspot {
            out[32] = 1;
            flat_record(&mut out[40..64], r);
        }
        if let Some(s) = &self.snapshot {
            out[64] = 1;
            flat_snapshot(&mut out[72..96], s);
        }
        self.salesforce_changed.image(&mut out[96..104]);
        self.hubspot_changed.image(&mut out[104..112]);
        self.salesforce_related.image(&mut out[112..120]);
        self.hubspot_related.image(&mut out[120..128]);
    }
}

impl Image for FlatRelated {
    const SIZE: usize = 44;
    #[inline]
    fn image(&self, out: &mut [u8]) {
        out[0] = match self.kind {
            RelatedKind::Company => 0,
            RelatedKind::Contact => 1,
        };
        option_span(&mut out[4..16], &self.salesforce_id);
        option_span(&mut out[16..28], &self.hubspot_id);
        option_span(&mut out[28..40], &self.role);
        out[40] = u8::from(self.primary);
    }
}

/// The largest [`Image::SIZE`].
const MAX_IMAGE: usize = 128;

/// A `list<T>` lowered as one block of images.
pub struct Images<'a, T>(pub &'a [T]);

impl<T: Image> Images<'_, T> {
    /// Allocates the list in the guest and writes every element's image: the list's pointer
    /// and length.
    fn store<U>(&self, cx: &mut LowerContext<'_, U>) -> wasmtime::Result<(usize, usize)> {
        const { assert!(T::SIZE <= MAX_IMAGE) };
        debug_assert_eq!(T::SIZE, T::SIZE32);
        let size = self
            .0
            .len()
            .checked_mul(T::SIZE)
            .ok_or_else(|| wasmtime::format_err!("size overflow copying a list"))?;
        let ptr = cx.realloc(0, 0, T::ALIGN32, size)?;
        // `realloc` checked that the block lies inside memory; checked again, not trusted.
        let block = cx
            .as_slice_mut()
            .get_mut(ptr..)
            .and_then(|m| m.get_mut(..size))
            .ok_or_else(|| wasmtime::format_err!("realloc return: beyond end of memory"))?;
        // Each image is built zeroed on the stack (padding and unused payload bytes are 0),
        // then copied into place.
        let mut scratch = [0u8; MAX_IMAGE];
        let scratch = &mut scratch[..T::SIZE];
        for (item, out) in self.0.iter().zip(block.chunks_exact_mut(T::SIZE)) {
            scratch.fill(0);
            item.image(scratch);
            out.copy_from_slice(scratch);
        }
        Ok((ptr, self.0.len()))
    }
}

// SAFETY: `Lower` is `[ValRaw; 2]` and the ABI a pointer pair, as for `[T]`, whose type check
// this is; `store` writes exactly the canonical image of each element (see the tests).
unsafe impl<T: Image> ComponentType for Images<'_, T> {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[T] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: lowers as `[T]` does (a pointer and a length, flat or at `offset`).
unsafe impl<T: Image> Lower for Images<'_, T> {
    fn linear_lower_to_flat<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        _ty: InterfaceType,
        dst: &mut MaybeUninit<[ValRaw; 2]>,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.store(cx)?;
        // As wasmtime writes a pointer pair: always as 64-bit integers.
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        _ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        let (ptr, len) = self.store(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}

/// A `flat-batch` to lower: the encoded [`FlatBatch`], its fixed-size lists as [`Images`].
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct LoweredBatch<'a> {
    #[component(name = "object-pair")]
    object_pair: ObjectPair,
    #[component(name = "direction")]
    direction: Direction,
    #[component(name = "trigger")]
    trigger: Trigger,
    #[component(name = "salesforce-fields")]
    salesforce_fields: &'a [String],
    #[component(name = "hubspot-fields")]
    hubspot_fields: &'a [String],
    #[component(name = "text")]
    text: &'a [u8],
    #[component(name = "options")]
    options: Images<'a, Span>,
    #[component(name = "fields")]
    fields: Images<'a, FlatField>,
    #[component(name = "changed")]
    changed: &'a [FieldIndex],
    #[component(name = "related")]
    related: Images<'a, FlatRelated>,
    #[component(name = "pairs")]
    pairs: Images<'a, FlatPair>,
    #[component(name = "lookups")]
    lookups: &'a Lookups,
}

impl<'a> LoweredBatch<'a> {
    /// The batch to lower.
    pub fn new(b: &'a FlatBatch) -> Self {
        LoweredBatch {
            object_pair: b.object_pair,
            direction: b.direction,
            trigger: b.trigger,
            salesforce_fields: &b.salesforce_fields,
            hubspot_fields: &b.hubspot_fields,
            text: &b.text,
            options: Images(&b.options),
            fields: Images(&b.fields),
            changed: &b.changed,
            related: Images(&b.related),
            pairs: Images(&b.pairs),
            lookups: &b.lookups,
        }
    }
}

/// The bytes that lowering a flat batch copies into the guest: every list's elements at their
/// canonical-ABI size, every string's bytes and its pointer pair, and the lookups (small, and
/// not written as images) by their wire-size estimate. It reads only lengths. The input limit
/// counts this for a batch that arrives in the flat form.
pub fn lowered_size(b: &FlatBatch) -> u64 {
    let names = |t: &[String]| t.iter().map(|n| 8 + n.len() as u64).sum::<u64>();
    let list = |len: usize, size: usize| len as u64 * size as u64;
    names(&b.salesforce_fields)
        + names(&b.hubspot_fields)
        + b.text.len() as u64
        + list(b.options.len(), <Span as Image>::SIZE)
        + list(b.fields.len(), <FlatField as Image>::SIZE)
        + list(b.changed.len(), std::mem::size_of::<FieldIndex>())
        + list(b.related.len(), <FlatRelated as Image>::SIZE)
        + list(b.pairs.len(), <FlatPair as Image>::SIZE)
        + super::size::WireSize::wire_size(&b.lookups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::__internal::ComponentVariant;

    /// The offsets of a record's fields, as wasmtime lays them out.
    fn offsets(fields: &[CanonicalAbiInfo]) -> Vec<usize> {
        let mut at = 0;
        fields
            .iter()
            .map(|f| f.next_field32_size(&mut at))
            .collect()
    }

    #[test]
    fn every_layout_is_the_one_wasmtime_computes_for_the_contract_types() {
        assert_eq!(offsets(&[Span::ABI]), [0]);
        assert_eq!((Span::SIZE32, <Span as Image>::SIZE), (8, 8));
        assert_eq!(offsets(&[i64::ABI, u8::ABI]), [0, 8]);
        assert_eq!(Decimal::SIZE32, 16);
        assert_eq!(offsets(&[i32::ABI, u8::ABI, u8::ABI]), [0, 4, 5]);
        assert_eq!(Date::SIZE32, 8);
        assert_eq!(FlatValue::PAYLOAD_OFFSET32, 8);
        assert_eq!(FlatValue::SIZE32, 24);
        assert_eq!(offsets(&[u32::ABI, FlatValue::ABI]), [0, 8]);
        assert_eq!((FlatField::SIZE32, <FlatField as Image>::SIZE), (32, 32));
        assert_eq!(offsets(&[Span::ABI, i64::ABI, Span::ABI]), [0, 8, 16]);
        assert_eq!((FlatRecord::SIZE32, FlatSnapshot::SIZE32), (24, 24));
        assert_eq!(<Option<FlatRecord>>::PAYLOAD_OFFSET32, 8);
        assert_eq!(<Option<FlatSnapshot>>::PAYLOAD_OFFSET32, 8);
        const OPTION_RECORD: CanonicalAbiInfo = <Option<FlatRecord>>::ABI;
        const OPTION_SNAPSHOT: CanonicalAbiInfo = <Option<FlatSnapshot>>::ABI;
        assert_eq!(
            offsets(&[
                OPTION_RECORD,
                OPTION_RECORD,
                OPTION_SNAPSHOT,
                Span::ABI,
                Span::ABI,
                Span::ABI,
                Span::ABI
            ]),
            [0, 32, 64, 96, 104, 112, 120]
        );
        assert_eq!((FlatPair::SIZE32, <FlatPair as Image>::SIZE), (128, 128));
        assert_eq!(<Option<Span>>::PAYLOAD_OFFSET32, 4);
        const OPTION_SPAN: CanonicalAbiInfo = <Option<Span>>::ABI;
        assert_eq!(
            offsets(&[
                RelatedKind::ABI,
                OPTION_SPAN,
                OPTION_SPAN,
                OPTION_SPAN,
                bool::ABI
            ]),
            [0, 4, 16, 28, 40]
        );
        assert_eq!(
            (FlatRelated::SIZE32, <FlatRelated as Image>::SIZE),
            (44, 44)
        );
        assert_eq!(RelatedKind::SIZE32, 1);
    }

    fn image<T: Image>(item: &T) -> Vec<u8> {
        let mut out = vec![0u8; T::SIZE];
        item.image(&mut out);
        out
    }

    /// `n` bytes: zeroes, with each of `parts` written at its offset.
    fn bytes(n: usize, parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; n];
        for (at, b) in parts {
            out[*at..*at + b.len()].copy_from_slice(b);
        }
        out
    }

    #[test]
    fn each_case_of_a_value_is_written_with_its_discriminant_and_payload() {
        let field = |value| FlatField {
            field: 0x0102_0304,
            value,
        };
        let span = Span {
            start: 0x0a0b_0c0d,
            len: 5,
        };
        let id = (0, &[4u8, 3, 2, 1][..]);
        let cases: Vec<(FlatValue, Vec<u8>)> = vec![
            (FlatValue::Null, bytes(32, &[id])),
            (
                FlatValue::Text(span),
                bytes(32, &[id, (8, &[1]), (16, &[0x0d, 0x0c, 0x0b, 0x0a, 5])]),
            ),
            (
                FlatValue::Decimal(Decimal {
                    digits: -2,
                    scale: 3,
                }),
                bytes(
                    32,
                    &[
                        id,
                        (8, &[2]),
                        (16, &[0xfe; 1]),
                        (17, &[0xff; 7]),
                        (24, &[3]),
                    ],
                ),
            ),
            (
                FlatValue::Integer(0x1122),
                bytes(32, &[id, (8, &[3]), (16, &[0x22, 0x11])]),
            ),
            (FlatValue::Boolean(false), bytes(32, &[id, (8, &[4])])),
            (
                FlatValue::Boolean(true),
                bytes(32, &[id, (8, &[4]), (16, &[1])]),
            ),
            (
                FlatValue::Date(Date {
                    year: 2026,
                    month: 6,
                    day: 30,
                }),
                bytes(32, &[id, (8, &[5]), (16, &[0xea, 0x07, 0, 0, 6, 30])]),
            ),
            (
                FlatValue::Datetime(-1),
                bytes(32, &[id, (8, &[6]), (16, &[0xff; 8])]),
            ),
            (
                FlatValue::Multi(span),
                bytes(32, &[id, (8, &[7]), (16, &[0x0d, 0x0c, 0x0b, 0x0a, 5])]),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(image(&field(value)), want, "{value:?}");
        }
    }

    #[test]
    fn pairs_and_associations_are_written_with_their_options() {
        let s = |start: u32, len: u32| Span { start, len };
        let full = FlatPair {
            salesforce: Some(FlatRecord {
                id: s(1, 2),
                modified_at: 3,
                fields: s(4, 5),
            }),
            hubspot: Some(FlatRecord {
                id: s(6, 7),
                modified_at: 8,
                fields: s(9, 10),
            }),
            snapshot: Some(FlatSnapshot {
                salesforce: s(11, 12),
                hubspot: s(13, 14),
                synced_at: 15,
            }),
            salesforce_changed: s(16, 17),
            hubspot_changed: s(18, 19),
            salesforce_related: s(20, 21),
            hubspot_related: s(22, 23),
        };
        let want = bytes(
            128,
            &[
                (0, &[1]),
                (
                    8,
                    &[
                        1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 5,
                    ],
                ),
                (32, &[1]),
                (
                    40,
                    &[
                        6, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 10,
                    ],
                ),
                (64, &[1]),
                (
                    72,
                    &[11, 0, 0, 0, 12, 0, 0, 0, 13, 0, 0, 0, 14, 0, 0, 0, 15],
                ),
                (96, &[16, 0, 0, 0, 17, 0, 0, 0, 18, 0, 0, 0, 19, 0, 0, 0]),
                (112, &[20, 0, 0, 0, 21, 0, 0, 0, 22, 0, 0, 0, 23]),
            ],
        );
        assert_eq!(image(&full), want);
        let bare = FlatPair {
            salesforce: None,
            hubspot: None,
            snapshot: None,
            ..full
        };
        let want = bytes(
            128,
            &[
                (96, &[16, 0, 0, 0, 17, 0, 0, 0, 18, 0, 0, 0, 19, 0, 0, 0]),
                (112, &[20, 0, 0, 0, 21, 0, 0, 0, 22, 0, 0, 0, 23]),
            ],
        );
        assert_eq!(image(&bare), want);

        let related = FlatRelated {
            kind: RelatedKind::Contact,
            salesforce_id: Some(s(1, 2)),
            hubspot_id: None,
            role: Some(s(3, 4)),
            primary: true,
        };
        let want = bytes(
            44,
            &[
                (0, &[1]),
                (4, &[1, 0, 0, 0, 1, 0, 0, 0, 2]),
                (28, &[1, 0, 0, 0, 3, 0, 0, 0, 4]),
                (40, &[1]),
            ],
        );
        assert_eq!(image(&related), want);
        let company = FlatRelated {
            kind: RelatedKind::Company,
            salesforce_id: None,
            hubspot_id: Some(s(5, 6)),
            role: None,
            primary: false,
        };
        assert_eq!(
            image(&company),
            bytes(44, &[(16, &[1, 0, 0, 0, 5, 0, 0, 0, 6])])
        );
    }

    #[test]
    fn a_lowered_batch_and_a_lifted_plan_have_the_contract_types_in_the_default_rules() {
        use super::super::lift::LiftedPlan;
        use wasmtime::component::{Component, Linker};
        use wasmtime::{Config, Engine, Store};
        let mut config = Config::new();
        config.wasm_component_model(true);
        let engine = Engine::new(&config).unwrap();
        let bytes = std::fs::read(dealbridge_guests::DEFAULT_RULES).unwrap();
        let component = Component::new(&engine, &bytes).unwrap();
        let mut linker = Linker::<()>::new(&engine);
        linker.define_unknown_imports_as_traps(&component).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let iface = instance
            .get_export_index(&mut store, None, "dealbridge:rules/flat-rules@0.1.1")
            .expect("the default rules export `flat-rules`");
        let plan = instance
            .get_export_index(&mut store, Some(&iface), "plan")
            .unwrap();
        let condition = instance
            .get_export_index(&mut store, Some(&iface), "condition")
            .unwrap();
        instance
            .get_typed_func::<(LoweredBatch<'_>,), (Result<LiftedPlan, RuleError>,)>(
                &mut store, &plan,
            )
            .expect("`flat-rules.plan` takes a `LoweredBatch` and returns a `LiftedPlan`");
        instance
            .get_typed_func::<(LoweredBatch<'_>,), (Result<Vec<Inclusion>, RuleError>,)>(
                &mut store, &condition,
            )
            .expect("`flat-rules.condition` takes a `LoweredBatch`");
        // The check is wasmtime's own and does refuse another type.
        let wrong = instance
            .get_typed_func::<(Images<'_, FlatField>,), (Result<FlatPlan, RuleError>,)>(
                &mut store, &plan,
            );
        assert!(wrong.is_err());
        let wrong = instance
            .get_typed_func::<(LoweredBatch<'_>,), (Result<Vec<Inclusion>, RuleError>,)>(
                &mut store, &plan,
            );
        assert!(wrong.is_err());
    }

    #[test]
    fn the_lowered_size_counts_each_list_at_its_element_size_and_each_name_with_its_pointer_pair() {
        let span = Span { start: 0, len: 1 };
        let batch = FlatBatch {
            object_pair: ObjectPair::OpportunityDeal,
            direction: Direction::SalesforceToHubspot,
            trigger: Trigger::Incremental,
            salesforce_fields: vec!["Name".into()],
            hubspot_fields: vec!["dealname".into()],
            text: b"abc".to_vec(),
            options: vec![span],
            fields: vec![
                FlatField {
                    field: 0,
                    value: FlatValue::Text(span),
                };
                2
            ],
            changed: vec![0],
            related: vec![FlatRelated {
                kind: RelatedKind::Company,
                salesforce_id: Some(span),
                hubspot_id: None,
                role: None,
                primary: true,
            }],
            pairs: vec![FlatPair {
                salesforce: None,
                hubspot: None,
                snapshot: None,
                salesforce_changed: span,
                hubspot_changed: span,
                salesforce_related: span,
                hubspot_related: span,
            }],
            lookups: Lookups {
                owners: vec![],
                pipelines: vec![],
            },
        };
        // Names: 8 + 4 and 8 + 8; text 3; one span 8; two fields 2 × 32; one index 4; one
        // association 44; one pair 128; the empty lookups two list headers of 8.
        assert_eq!(
            lowered_size(&batch),
            12 + 16 + 3 + 8 + 64 + 4 + 44 + 128 + 16
        );
    }
}
