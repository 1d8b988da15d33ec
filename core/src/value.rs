//! Conversions every source and sink needs between database values and Avro
//! values, kept in one place so the two directions cannot disagree.

use crate::error::{Error, Result};
use apache_avro::{types::Value, Decimal};
use num_bigint::BigInt;

/// Postgres's `infinity` date as an Avro `date` (days since 1970-01-01):
/// the int32 extreme, as Postgres stores it. No finite date a source
/// publishes comes near it (chrono ends at year 262143, ~95.7 million days).
pub const DATE_INFINITY: i32 = i32::MAX;
/// Postgres's `-infinity` date (see [`DATE_INFINITY`]).
pub const DATE_NEG_INFINITY: i32 = i32::MIN;
/// Postgres's `infinity` timestamp (with or without time zone) as an Avro
/// `timestamp-micros` / `local-timestamp-micros`: the int64 extreme, as
/// Postgres stores it (far past any finite timestamp chrono holds).
pub const TIMESTAMP_INFINITY: i64 = i64::MAX;
/// Postgres's `-infinity` timestamp (see [`TIMESTAMP_INFINITY`]).
pub const TIMESTAMP_NEG_INFINITY: i64 = i64::MIN;
/// `24:00:00`, the end of a day, which Postgres's `time` holds: as Avro
/// `time-micros`.
pub const TIME_END_OF_DAY: i64 = 86_400_000_000;

/// `"-12.5"` at scale 2 -> the Avro decimal with unscaled value -1250.
/// Errors if the text has more fractional digits than `scale` (no silent rounding).
pub fn decimal_from_text(text: &str, scale: u32) -> Result<Value> {
    let text = text.trim();
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > scale as usize {
        return Err(Error::data(format!(
            "decimal {text} has more than {scale} fractional digits"
        )));
    }
    let mut unscaled = String::with_capacity(int_part.len() + scale as usize + 1);
    if neg {
        unscaled.push('-');
    }
    unscaled.push_str(if int_part.is_empty() { "0" } else { int_part });
    unscaled.push_str(frac_trimmed);
    unscaled.extend(std::iter::repeat_n(
        '0',
        scale as usize - frac_trimmed.len(),
    ));
    let n: BigInt = unscaled
        .parse()
        .map_err(|_| Error::data(format!("`{text}` is not a decimal number")))?;
    Ok(Value::Decimal(Decimal::from(n.to_signed_bytes_be())))
}

/// `NaN` of a Postgres `numeric(p,s)` as an Avro `decimal(p,s)`: the
/// unscaled value 10^p, one digit longer than the precision allows, so that
/// no number the column holds equals it. (A numeric with a declared
/// precision cannot hold `Infinity`, so NaN is its only special value; an
/// unconstrained numeric travels as text and holds all three.)
pub fn decimal_nan(precision: u32) -> Value {
    Value::Decimal(Decimal::from(
        BigInt::from(10u8).pow(precision).to_signed_bytes_be(),
    ))
}

/// A `numeric(p,s)` value's text -> its Avro decimal: [`decimal_from_text`],
/// and `NaN` as [`decimal_nan`].
pub fn decimal_value(text: &str, precision: u32, scale: u32) -> Result<Value> {
    if text.trim().eq_ignore_ascii_case("nan") {
        return Ok(decimal_nan(precision));
    }
    decimal_from_text(text, scale)
}

/// An Avro `decimal(p,s)`'s bytes -> its canonical text, `NaN` for
/// [`decimal_nan`] (the inverse of [`decimal_value`]).
pub fn decimal_text(bytes: &[u8], precision: u32, scale: u32) -> String {
    let n = BigInt::from_signed_bytes_be(bytes);
    let digits = n.magnitude().to_string();
    let p = precision as usize;
    let nan = n.sign() != num_bigint::Sign::Minus
        && digits.len() == p + 1
        && digits.starts_with('1')
        && digits[1..].bytes().all(|b| b == b'0');
    if nan {
        return "NaN".into();
    }
    scaled_text(n.sign() == num_bigint::Sign::Minus, digits, scale)
}

/// The Avro decimal's two's-complement bytes at `scale` -> canonical text (`-12.50`).
pub fn decimal_to_text(bytes: &[u8], scale: u32) -> String {
    let n = BigInt::from_signed_bytes_be(bytes);
    scaled_text(
        n.sign() == num_bigint::Sign::Minus,
        n.magnitude().to_string(),
        scale,
    )
}

/// The text of an unscaled value's sign and `digits` at `scale`.
fn scaled_text(neg: bool, mut digits: String, scale: u32) -> String {
    let scale = scale as usize;
    if scale == 0 {
        return if neg { format!("-{digits}") } else { digits };
    }
    if digits.len() <= scale {
        digits = format!("{}{}", "0".repeat(scale - digits.len() + 1), digits);
    }
    let (i, f) = digits.split_at(digits.len() - scale);
    format!("{}{i}.{f}", if neg { "-" } else { "" })
}

/// Bytes of an Avro `Value::Decimal`.
pub fn decimal_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::Decimal(d) => Vec::<u8>::try_from(d.clone()).ok(),
        Value::Bytes(b) => Some(b.clone()),
        _ => None,
    }
}

/// Strip the `["null", T]` union wrapper: `None` for null.
pub fn unwrap_union(v: &Value) -> Option<&Value> {
    match v {
        Value::Null => None,
        Value::Union(_, inner) => unwrap_union(inner),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_through_avro_bytes() {
        for (text, scale, canon) in [
            ("12.5", 2, "12.50"),
            ("-12.5", 2, "-12.50"),
            ("0.01", 2, "0.01"),
            ("-0.01", 3, "-0.010"),
            (
                "123456789012345678901234567890",
                0,
                "123456789012345678901234567890",
            ),
            ("7", 4, "7.0000"),
        ] {
            let v = decimal_from_text(text, scale).unwrap();
            assert_eq!(
                decimal_to_text(&decimal_bytes(&v).unwrap(), scale),
                canon,
                "{text}"
            );
        }
    }

    #[test]
    fn numeric_nan_has_a_value_no_number_of_its_precision_takes() {
        let nan = decimal_value("NaN", 5, 2).unwrap();
        let bytes = decimal_bytes(&nan).unwrap();
        assert_eq!(decimal_text(&bytes, 5, 2), "NaN");
        for (text, canon) in [
            ("999.99", "999.99"),
            ("-999.99", "-999.99"),
            ("100", "100.00"),
        ] {
            let v = decimal_value(text, 5, 2).unwrap();
            assert_eq!(decimal_text(&decimal_bytes(&v).unwrap(), 5, 2), canon);
        }
        // 10^5 unscaled at another precision is a plain number.
        assert_eq!(decimal_text(&bytes, 6, 2), "1000.00");
    }

    #[test]
    fn decimal_refuses_to_round() {
        assert!(decimal_from_text("1.234", 2).is_err());
        assert!(decimal_from_text("abc", 2).is_err());
    }
}
