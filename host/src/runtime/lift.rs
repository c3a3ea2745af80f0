//! Lifting a flat plan from the guest with its `writes` read in one pass over memory.
//!
//! wasmtime's derived lifting reads a `list<record>` element by element through `WasmList`,
//! and recomputes every field's offset (`CanonicalAbiInfo::next_field32_size`) for every
//! element. [`LiftedPlan`] lifts the same `flat-plan` (same WIT type, checked by wasmtime's type
//! check in the tests) but reads its `writes` as [`Writes`]: the list is checked as wasmtime
//! checks it (bounds, the hostcall fuel of the copy, alignment), then each `flat-write` is read
//! from its canonical-ABI image at fixed offsets. Strings and lists of strings are still lifted
//! by wasmtime (encodings, UTF-8, bounds, fuel), and a bad discriminant is the error wasmtime
//! gives. `related` and `outcomes` lift as before.
//!
//! The offsets follow the canonical ABI of `wit/rules.wit`; the tests check them against the
//! layout wasmtime computes for the generated types, and the reading against images written
//! out by hand. This module must never read outside the list the guest returned.

use wasmtime::ValRaw;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext, bad_type_info,
};
use wasmtime::component::{ComponentType, Lift};

use super::bindings::*;

/// The size of a `flat-write`: the `field-ref` at 0 (its payload at 4), the `value` at 16 (its
/// payload at 24).
const WRITE_SIZE: usize = 40;
/// The alignment of a `flat-write`.
const WRITE_ALIGN: usize = 8;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Lifts the strings of a write from their pointer pairs (8 bytes each).
trait Strings {
    /// A `string`.
    fn string(&mut self, pair: &[u8]) -> wasmtime::Result<String>;
    /// A `list<string>` (a `multi` value).
    fn multi(&mut self, pair: &[u8]) -> wasmtime::Result<Vec<String>>;
}

/// Reads one `flat-write` from its image (`WRITE_SIZE` bytes), in the order wasmtime lifts it:
/// the field, then the value.
fn write_from(b: &[u8], strings: &mut impl Strings) -> wasmtime::Result<FlatWrite> {
    let field = match b[0] {
        0 => FieldRef::Known(u32_at(b, 4)),
        1 => FieldRef::Named(strings.string(&b[4..12])?),
        d => wasmtime::bail!("unexpected discriminant: {d}"),
    };
    let p = &b[24..WRITE_SIZE];
    let value = match b[16] {
        0 => Value::Null,
        1 => Value::Text(strings.string(&p[..8])?),
        // `decimal`: digits at 0, scale at 8.
        2 => Value::Decimal(Decimal {
            digits: i64_at(p, 0),
            scale: p[8],
        }),
        3 => Value::Integer(i64_at(p, 0)),
        // As wasmtime lifts a `bool`: any byte but 0 is true.
        4 => Value::Boolean(p[0] != 0),
        // `date`: year at 0, month at 4, day at 5.
        5 => Value::Date(Date {
            year: u32_at(p, 0) as i32,
            month: p[4],
            day: p[5],
        }),
        6 => Value::Datetime(i64_at(p, 0)),
        7 => Value::Multi(strings.multi(&p[..8])?),
        d => wasmtime::bail!("unexpected discriminant: {d}"),
    };
    Ok(FlatWrite { field, value })
}

/// The strings of the guest's memory, lifted by wasmtime.
struct Guest<'c, 'a> {
    cx: &'c mut LiftContext<'a>,
    /// The type of a `multi` value (`list<string>`) in this component.
    multi: InterfaceType,
}

impl Strings for Guest<'_, '_> {
    fn string(&mut self, pair: &[u8]) -> wasmtime::Result<String> {
        String::linear_lift_from_memory(self.cx, InterfaceType::String, pair)
    }

    fn multi(&mut self, pair: &[u8]) -> wasmtime::Result<Vec<String>> {
        Vec::<String>::linear_lift_from_memory(self.cx, self.multi, pair)
    }
}

/// The type of a `multi` value in `ty`, a `list<flat-write>`: the list's element, a
/// `flat-write`; its second field, the `value` variant; that variant's case 7, `multi`.
fn multi_type(cx: &LiftContext<'_>, ty: InterfaceType) -> Option<InterfaceType> {
    let InterfaceType::List(list) = ty else {
        return None;
    };
    let InterfaceType::Record(write) = cx.types[list].element else {
        return None;
    };
    let InterfaceType::Variant(value) = cx.types[write].fields.get(1)?.ty else {
        return None;
    };
    *cx.types[value].cases.get_index(7)?.1
}

/// The `writes` of a flat plan (`list<flat-write>`).
pub struct Writes(pub Vec<FlatWrite>);

impl Writes {
    fn lift(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        ptr: usize,
        len: usize,
    ) -> wasmtime::Result<Self> {
        // The checks of wasmtime's `WasmList::new`, in its order and with its errors.
        match len
            .checked_mul(WRITE_SIZE)
            .and_then(|size| ptr.checked_add(size))
        {
            Some(end) if end <= cx.memory().len() => {
                cx.consume_fuel_array(len, size_of::<FlatWrite>())?
            }
            _ => wasmtime::bail!("list pointer/length out of bounds of memory"),
        }
        if !ptr.is_multiple_of(WRITE_ALIGN) {
            wasmtime::bail!("list pointer is not aligned")
        }
        let multi = multi_type(cx, ty).unwrap_or_else(bad_type_info);
        let memory = cx.memory();
        let block = &memory[ptr..ptr + len * WRITE_SIZE];
        let mut strings = Guest { cx, multi };
        let mut writes = Vec::with_capacity(len);
        for image in block.chunks_exact(WRITE_SIZE) {
            writes.push(write_from(image, &mut strings)?);
        }
        Ok(Writes(writes))
    }
}

// SAFETY: `Lower` is `[ValRaw; 2]` and the ABI a pointer pair, as for `Vec<FlatWrite>`, whose
// type check this is; `lift` reads only inside the checked list.
unsafe impl ComponentType for Writes {
    type Lower = [ValRaw; 2];

    const ABI: CanonicalAbiInfo = CanonicalAbiInfo::POINTER_PAIR;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
        <[FlatWrite] as ComponentType>::typecheck(ty, types)
    }
}

// SAFETY: reads a pointer and a length as wasmtime does for a list (flat, or at `bytes`).
unsafe impl Lift for Writes {
    fn linear_lift_from_flat(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        src: &Self::Lower,
    ) -> wasmtime::Result<Self> {
        let ptr = usize::try_from(src[0].get_u32())?;
        let len = usize::try_from(src[1].get_u32())?;
        Self::lift(cx, ty, ptr, len)
    }

    fn linear_lift_from_memory(
        cx: &mut LiftContext<'_>,
        ty: InterfaceType,
        bytes: &[u8],
    ) -> wasmtime::Result<Self> {
        let ptr = usize::try_from(u32_at(bytes, 0))?;
        let len = usize::try_from(u32_at(bytes, 4))?;
        Self::lift(cx, ty, ptr, len)
    }
}

/// A `flat-plan` as lifted: its `writes` as [`Writes`].
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lift)]
#[component(record)]
pub struct LiftedPlan {
    #[component(name = "writes")]
    writes: Writes,
    #[component(name = "related")]
    related: Vec<Related>,
    #[component(name = "outcomes")]
    outcomes: Vec<FlatOutcome>,
}

impl From<LiftedPlan> for FlatPlan {
    fn from(p: LiftedPlan) -> Self {
        FlatPlan {
            writes: p.writes.0,
            related: p.related,
            outcomes: p.outcomes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::__internal::ComponentVariant;

    #[test]
    fn the_layout_of_a_write_is_the_one_wasmtime_computes() {
        assert_eq!(FieldRef::PAYLOAD_OFFSET32, 4);
        assert_eq!(FieldRef::SIZE32, 12);
        assert_eq!(Value::PAYLOAD_OFFSET32, 8);
        assert_eq!(Value::SIZE32, 24);
        let mut at = 0;
        let offsets = [FieldRef::ABI, Value::ABI].map(|f| f.next_field32_size(&mut at));
        assert_eq!(offsets, [0, 16]);
        assert_eq!((FlatWrite::SIZE32, FlatWrite::ALIGN32), (WRITE_SIZE, 8));
        assert_eq!(WRITE_ALIGN as u32, FlatWrite::ALIGN32);
    }

    /// Strings read from a pointer pair as `"<ptr>+<len>"`, so that the test sees which bytes
    /// were handed over; a pointer of 0xdead fails.
    struct Fake;

    impl Strings for Fake {
        fn string(&mut self, pair: &[u8]) -> wasmtime::Result<String> {
            assert_eq!(pair.len(), 8);
            if u32_at(pair, 0) == 0xdead {
                wasmtime::bail!("bad string");
            }
            Ok(format!("{}+{}", u32_at(pair, 0), u32_at(pair, 4)))
        }

        fn multi(&mut self, pair: &[u8]) -> wasmtime::Result<Vec<String>> {
            Ok(vec![self.string(pair)?, "second".into()])
        }
    }

    /// A 40-byte image: zeroes, with each of `parts` written at its offset.
    fn image(parts: &[(usize, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; WRITE_SIZE];
        for (at, b) in parts {
            out[*at..*at + b.len()].copy_from_slice(b);
        }
        out
    }

    fn read(parts: &[(usize, &[u8])]) -> wasmtime::Result<FlatWrite> {
        write_from(&image(parts), &mut Fake)
    }

    #[test]
    fn each_case_of_a_write_is_read_from_its_offsets() {
        let check = |parts: &[(usize, &[u8])], want: FlatWrite| {
            assert_eq!(read(parts).unwrap(), want, "{parts:?}");
        };
        let w = |field, value| FlatWrite { field, value };
        let known = (0, &[0u8, 0, 0, 0, 7, 0, 0, 0][..]);
        check(&[known], w(FieldRef::Known(7), Value::Null));
        check(
            &[(0, &[1, 0, 0, 0, 9, 0, 0, 0, 3]), (16, &[0])],
            w(FieldRef::Named("9+3".into()), Value::Null),
        );
        check(
            &[known, (16, &[1]), (24, &[5, 0, 0, 0, 2])],
            w(FieldRef::Known(7), Value::Text("5+2".into())),
        );
        check(
            &[
                known,
                (16, &[2]),
                (24, &[0xfe]),
                (25, &[0xff; 7]),
                (32, &[3]),
            ],
            w(
                FieldRef::Known(7),
                Value::Decimal(Decimal {
                    digits: -2,
                    scale: 3,
                }),
            ),
        );
        check(
            &[known, (16, &[3]), (24, &[0x22, 0x11])],
            w(FieldRef::Known(7), Value::Integer(0x1122)),
        );
        check(
            &[known, (16, &[4]), (24, &[0])],
            w(FieldRef::Known(7), Value::Boolean(false)),
        );
        check(
            &[known, (16, &[4]), (24, &[2])],
            w(FieldRef::Known(7), Value::Boolean(true)),
        );
        check(
            &[known, (16, &[5]), (24, &[0xea, 0x07, 0, 0, 6, 30])],
            w(
                FieldRef::Known(7),
                Value::Date(Date {
                    year: 2026,
                    month: 6,
                    day: 30,
                }),
            ),
        );
        check(
            &[known, (16, &[6]), (24, &[0xff; 8])],
            w(FieldRef::Known(7), Value::Datetime(-1)),
        );
        check(
            &[known, (16, &[7]), (24, &[4, 0, 0, 0, 1])],
            w(
                FieldRef::Known(7),
                Value::Multi(vec!["4+1".into(), "second".into()]),
            ),
        );
    }

    #[test]
    fn a_bad_discriminant_or_string_is_the_error_wasmtime_gives() {
        let e = read(&[(0, &[2])]).unwrap_err();
        assert_eq!(e.to_string(), "unexpected discriminant: 2");
        let e = read(&[(16, &[8])]).unwrap_err();
        assert_eq!(e.to_string(), "unexpected discriminant: 8");
        // The field is read before the value, as wasmtime reads a record.
        let e = read(&[(0, &[1, 0, 0, 0, 0xad, 0xde]), (16, &[9])]).unwrap_err();
        assert_eq!(e.to_string(), "bad string");
        let e = read(&[(16, &[1]), (24, &[0xad, 0xde])]).unwrap_err();
        assert_eq!(e.to_string(), "bad string");
    }
}
