//! Postgres's dates, times and timestamps read (and cursor values bound)
//! in their binary form, so that every value the column holds is carried:
//! `infinity` and `-infinity`, years BC, years after 9999, `24:00:00`.
//! chrono's `FromSql` refuses the infinities, and with them the whole poll.
//!
//! Binary forms: a date is int32 days since 2000-01-01, a timestamp (with
//! or without time zone) int64 microseconds since 2000-01-01 00:00 UTC, the
//! int extremes standing for the infinities; a time is int64 microseconds
//! since midnight. The Avro values are the ones `postgres_cdc` publishes
//! for the same values (`syncline_core::value`), so both sources agree.
//! Finite values beyond chrono's range (after year 262143) are refused with
//! a reason, as `postgres_cdc` refuses them: the sinks could not write them.

use bytes::BytesMut;
use chrono::{DateTime, NaiveDate};
use std::error::Error as StdError;
use syncline_core::value::{
    DATE_INFINITY, DATE_NEG_INFINITY, TIMESTAMP_INFINITY, TIMESTAMP_NEG_INFINITY,
};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

type BoxError = Box<dyn StdError + Sync + Send>;

/// Days from 1970-01-01 to 2000-01-01, Postgres's epoch.
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

fn fixed<const N: usize>(raw: &[u8], what: &str) -> Result<[u8; N], BoxError> {
    raw.try_into()
        .map_err(|_| format!("a binary {what} of {} bytes (expected {N})", raw.len()).into())
}

/// A date as days since 1970-01-01 ([`DATE_INFINITY`] for `infinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgDate(pub i32);

impl<'a> FromSql<'a> for PgDate {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(PgDate(match i32::from_be_bytes(fixed(raw, "date")?) {
            i32::MAX => DATE_INFINITY,
            i32::MIN => DATE_NEG_INFINITY,
            d => {
                let days = d + EPOCH_DAYS;
                NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
                    .ok_or("a date after year 262143, which syncline cannot carry")?;
                days
            }
        }))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }
}

/// A time of day in microseconds since midnight (`24:00:00` is
/// 86,400,000,000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTime(pub i64);

impl<'a> FromSql<'a> for PgTime {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(PgTime(i64::from_be_bytes(fixed(raw, "time")?)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIME
    }
}

/// A timestamp (with or without time zone) in microseconds since
/// 1970-01-01 00:00 UTC ([`TIMESTAMP_INFINITY`] for `infinity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgTimestamp(pub i64);

impl<'a> FromSql<'a> for PgTimestamp {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(PgTimestamp(
            match i64::from_be_bytes(fixed(raw, "timestamp")?) {
                i64::MAX => TIMESTAMP_INFINITY,
                i64::MIN => TIMESTAMP_NEG_INFINITY,
                us => us
                    .checked_add(EPOCH_MICROS)
                    .filter(|us| DateTime::from_timestamp_micros(*us).is_some())
                    .ok_or("a timestamp after year 262143, which syncline cannot carry")?,
            },
        ))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ
    }
}

impl ToSql for PgTimestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        let raw = match self.0 {
            TIMESTAMP_INFINITY => i64::MAX,
            TIMESTAMP_NEG_INFINITY => i64::MIN,
            us => us
                .checked_sub(EPOCH_MICROS)
                .ok_or("a timestamp before Postgres's range")?,
        };
        out.extend_from_slice(&raw.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP || *ty == Type::TIMESTAMPTZ
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_forms_map_to_the_values_postgres_cdc_publishes() {
        let date = |d: i32| PgDate::from_sql(&Type::DATE, &d.to_be_bytes()).map(|v| v.0);
        assert_eq!(date(0).unwrap(), EPOCH_DAYS);
        assert_eq!(date(i32::MAX).unwrap(), DATE_INFINITY);
        assert_eq!(date(i32::MIN).unwrap(), DATE_NEG_INFINITY);
        // 0044-03-15 BC: proleptic Gregorian, year -43.
        let ides = NaiveDate::from_ymd_opt(-43, 3, 15).unwrap();
        let since_2000 = (ides - NaiveDate::from_ymd_opt(2000, 1, 1).unwrap()).num_days() as i32;
        assert_eq!(
            date(since_2000).unwrap(),
            (ides - DateTime::UNIX_EPOCH.date_naive()).num_days() as i32
        );
        assert!(date(2_145_031_949).is_err(), "5874897-12-31 is past chrono");

        let ts = |us: i64| PgTimestamp::from_sql(&Type::TIMESTAMP, &us.to_be_bytes()).map(|v| v.0);
        assert_eq!(ts(0).unwrap(), EPOCH_MICROS);
        assert_eq!(ts(i64::MAX).unwrap(), TIMESTAMP_INFINITY);
        assert_eq!(ts(i64::MIN).unwrap(), TIMESTAMP_NEG_INFINITY);
        assert!(ts(i64::MAX - 1).is_err());
        assert!(PgDate::from_sql(&Type::DATE, &[0, 1]).is_err());

        for v in [
            TIMESTAMP_INFINITY,
            TIMESTAMP_NEG_INFINITY,
            0,
            -1,
            EPOCH_MICROS,
        ] {
            let mut out = BytesMut::new();
            PgTimestamp(v).to_sql(&Type::TIMESTAMPTZ, &mut out).unwrap();
            assert_eq!(
                ts(i64::from_be_bytes(out[..].try_into().unwrap())).unwrap(),
                v
            );
        }
    }
}
