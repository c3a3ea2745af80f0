//! Exact decimal numbers (`digits × 10^-scale`): parsing config text and comparing by value.
//!
//! Money is never turned into a float here, and amounts are never rescaled or converted: this
//! module only compares. It must never round.

use std::cmp::Ordering;

/// A decimal worth `digits × 10^-scale`, the same shape as the WIT `decimal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dec {
    /// The unscaled digits with their sign.
    pub digits: i64,
    /// Digits after the point, 0 to 18.
    pub scale: u8,
}

/// The largest scale the contract allows.
pub const MAX_SCALE: u8 = 18;

/// Powers of ten that fit in an `i64`: `POW10[n] == 10^n` for `n` up to 18.
const POW10: [i64; 19] = {
    let mut t = [1i64; 19];
    let mut i = 1;
    while i < t.len() {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `FITS[n]`: the largest magnitude whose product with `10^n` still fits in an `i64`.
const FITS: [u64; 19] = {
    let mut t = [0u64; 19];
    let mut i = 0;
    while i < t.len() {
        t[i] = i64::MAX as u64 / POW10[i] as u64;
        i += 1;
    }
    t
};

/// `digits × 10^n` when it fits in an `i64`: what `checked_mul` gives, which WebAssembly
/// computes with a 128-bit multiplication (a library call); here it is one comparison. (For
/// `n >= 1` no product reaches `i64::MIN` exactly, since `2^63` is no multiple of 5.)
#[inline]
fn scaled(digits: i64, n: usize) -> Option<i64> {
    if n == 0 {
        return Some(digits);
    }
    (digits.unsigned_abs() <= FITS[n]).then(|| digits * POW10[n])
}

/// Compares two decimals by value (`1.50 == 1.5`). Scales above 18 are clamped for the
/// comparison only; the contract never sends them.
///
/// The usual case (both scaled to the larger scale without overflowing an `i64`) stays in
/// 64-bit arithmetic, which costs a few instructions in WebAssembly, where 128-bit
/// multiplication is a library call; the rest is compared exactly in 128 bits.
pub fn cmp(a: Dec, b: Dec) -> Ordering {
    let (sa, sb) = (a.scale.min(MAX_SCALE), b.scale.min(MAX_SCALE));
    if sa == sb {
        return a.digits.cmp(&b.digits);
    }
    let s = sa.max(sb);
    let (na, nb) = (usize::from(s - sa), usize::from(s - sb));
    if let (Some(x), Some(y)) = (scaled(a.digits, na), scaled(b.digits, nb)) {
        return x.cmp(&y);
    }
    let (fa, fb) = (POW10[na], POW10[nb]);
    // |digits| < 2^63 and 10^18 < 2^60, so the product fits in an i128.
    let x = i128::from(a.digits) * i128::from(fa);
    let y = i128::from(b.digits) * i128::from(fb);
    x.cmp(&y)
}

/// Parses `-1234.50`-style text (no exponent, no thousands separators).
pub fn parse(text: &str) -> Result<Dec, String> {
    let t = text.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(format!("`{text}` has no digits"));
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a plain decimal number"));
    }
    if frac.len() > usize::from(MAX_SCALE) {
        return Err(format!(
            "`{text}` has more than {MAX_SCALE} digits after the point"
        ));
    }
    let mut digits: i64 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        digits = digits
            .checked_mul(10)
            .and_then(|d| d.checked_add(i64::from(b - b'0')))
            .ok_or_else(|| format!("`{text}` is too large"))?;
    }
    Ok(Dec {
        digits: if neg { -digits } else { digits },
        scale: frac.len() as u8,
    })
}

/// Formats a decimal exactly as its digits and scale say (`{12345, 2}` → `123.45`).
pub fn format(d: Dec) -> String {
    let neg = d.digits < 0;
    let abs = d.digits.unsigned_abs().to_string();
    let scale = usize::from(d.scale);
    let body = if scale == 0 {
        abs
    } else if abs.len() > scale {
        format!(
            "{}.{}",
            &abs[..abs.len() - scale],
            &abs[abs.len() - scale..]
        )
    } else {
        format!("0.{}{}", "0".repeat(scale - abs.len()), abs)
    };
    if neg { format!("-{body}") } else { body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(digits: i64, scale: u8) -> Dec {
        Dec { digits, scale }
    }

    #[test]
    fn compares_by_value_not_by_representation() {
        assert_eq!(cmp(d(150, 2), d(15, 1)), Ordering::Equal);
        assert_eq!(cmp(d(100000, 2), d(1000, 0)), Ordering::Equal);
        assert_eq!(cmp(d(99999, 2), d(1000, 0)), Ordering::Less);
        assert_eq!(cmp(d(-1, 0), d(-999, 3)), Ordering::Less);
        assert_eq!(cmp(d(i64::MAX, 0), d(i64::MAX, 18)), Ordering::Greater);
        // Scaling overflows an i64: compared exactly in 128 bits.
        assert_eq!(cmp(d(i64::MAX, 0), d(i64::MAX, 1)), Ordering::Greater);
        assert_eq!(cmp(d(i64::MIN, 0), d(i64::MIN, 1)), Ordering::Less);
        assert_eq!(
            cmp(d(i64::MAX / 10, 17), d(i64::MAX / 10 * 10, 18)),
            Ordering::Equal
        );
        assert_eq!(
            cmp(d(-922_337_203_685_477_581, 0), d(i64::MIN, 1)),
            Ordering::Less
        );
        // Scales above the contract's 18 are clamped.
        assert_eq!(cmp(d(5, 30), d(5, 18)), Ordering::Equal);
    }

    #[test]
    fn scaling_is_exact_and_stops_where_an_i64_would_overflow() {
        for (n, &f) in POW10.iter().enumerate() {
            let edge = (i64::MAX / f) as u64;
            for digits in [
                0,
                1,
                -1,
                edge as i64,
                -(edge as i64),
                (edge as i64).saturating_add(1),
                -(edge as i64).saturating_add(1),
                i64::MAX,
                i64::MIN,
                i64::MIN + 1,
            ] {
                assert_eq!(
                    scaled(digits, n),
                    digits.checked_mul(f),
                    "{digits} × 10^{n}"
                );
            }
        }
    }

    #[test]
    fn parses_plain_decimals_exactly() {
        assert_eq!(parse("1234.50").unwrap(), d(123450, 2));
        assert_eq!(parse("-0.5").unwrap(), d(-5, 1));
        assert_eq!(parse("42").unwrap(), d(42, 0));
        assert_eq!(parse(".5").unwrap(), d(5, 1));
        assert!(parse("1e3").is_err());
        assert!(parse("1,000").is_err());
        assert!(parse("").is_err());
        assert!(parse("-").is_err());
        assert!(parse("99999999999999999999").is_err());
    }

    #[test]
    fn formats_exactly() {
        assert_eq!(format(d(123450, 2)), "1234.50");
        assert_eq!(format(d(-5, 3)), "-0.005");
        assert_eq!(format(d(7, 0)), "7");
    }
}
