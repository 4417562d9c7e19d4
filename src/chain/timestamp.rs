//! UTC timestamps with microsecond precision, written exactly as Python's `isoformat()`.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;
/// 0001-01-01T00:00:00+00:00 in microseconds since the Unix epoch.
const MIN_MICROS: i64 = -62_135_596_800 * MICROS_PER_SECOND;
/// 9999-12-31T23:59:59.999999+00:00 in microseconds since the Unix epoch.
const MAX_MICROS: i64 = 253_402_300_799 * MICROS_PER_SECOND + 999_999;

/// A UTC instant: microseconds since the Unix epoch, limited to the years 0001-9999.
///
/// Built by [`Timestamp::parse`] or from a microsecond count; `Display` (and `Serialize`) write
/// Python's `datetime.isoformat()` form, which is also the form that enters the block hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a timestamp string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text does not have the `YYYY-MM-DDTHH:MM:SS[.ffffff]` shape.
    #[error("timestamp must look like YYYY-MM-DDTHH:MM:SS[.ffffff]+00:00")]
    Format,
    /// The fraction after `.` is empty or longer than six digits.
    #[error("timestamp fraction must have 1 to 6 digits")]
    Fraction,
    /// An offset other than `+00:00`/`Z`, or none at all.
    #[error("timestamp must be UTC (+00:00 or Z)")]
    NotUtc,
    /// The fields are well formed but name no real instant (month 13, Feb 30, 24:00, year 0).
    #[error("timestamp is not a valid date and time (years 0001-9999)")]
    OutOfRange,
}

impl Timestamp {
    /// The earliest representable instant, 0001-01-01T00:00:00+00:00.
    pub const MIN: Timestamp = Timestamp(MIN_MICROS);
    /// The latest representable instant, 9999-12-31T23:59:59.999999+00:00.
    pub const MAX: Timestamp = Timestamp(MAX_MICROS);

    /// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,6}]` followed by `+00:00` or `Z`.
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        let b = text.as_bytes();
        if b.len() < 19 {
            return Err(TimestampError::Format);
        }
        let (head, mut rest) = b.split_at(19);
        let fields = parse_head(head).ok_or(TimestampError::Format)?;
        let mut micros = 0;
        if let Some(after_dot) = rest.strip_prefix(b".") {
            let digits = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 6 {
                return Err(TimestampError::Fraction);
            }
            let (fraction, tail) = after_dot.split_at(digits);
            micros = number(fraction) * 10_i64.pow(6 - digits as u32);
            rest = tail;
        }
        check_offset(rest)?;
        let [year, month, day, hour, minute, second] = fields;
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimestampError::OutOfRange);
        }
        let seconds = days_from_civil(year, month, day) * SECONDS_PER_DAY
            + hour * 3600
            + minute * 60
            + second;
        Ok(Timestamp(seconds * MICROS_PER_SECOND + micros))
    }

    /// The instant `micros` microseconds after the epoch, clamped to
    /// [`Timestamp::MIN`]..=[`Timestamp::MAX`] (stored values are always in range).
    pub fn from_unix_micros(micros: i64) -> Timestamp {
        Timestamp(micros.clamp(MIN_MICROS, MAX_MICROS))
    }

    /// The instant `micros` microseconds after the epoch, or `None` outside years 0001-9999.
    pub fn try_from_unix_micros(micros: i64) -> Option<Timestamp> {
        (MIN_MICROS..=MAX_MICROS)
            .contains(&micros)
            .then_some(Timestamp(micros))
    }

    /// Converts a `SystemTime` (truncated to microseconds, clamped to the supported range).
    /// The caller reads the clock; this module never does.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
            Err(before) => i64::try_from(before.duration().as_micros())
                .map(|m| -m)
                .unwrap_or(i64::MIN),
        };
        Timestamp::from_unix_micros(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch, rounded down (also for instants before 1970).
    pub fn unix_seconds(self) -> i64 {
        self.0.div_euclid(MICROS_PER_SECOND)
    }
}

/// Reads the fixed-width `YYYY-MM-DDTHH:MM:SS` head into its six numbers.
fn parse_head(head: &[u8]) -> Option<[i64; 6]> {
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| head[i] != c) {
        return None;
    }
    let spans = [(0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19)];
    let mut out = [0; 6];
    for (slot, (start, end)) in out.iter_mut().zip(spans) {
        let digits = &head[start..end];
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *slot = number(digits);
    }
    Some(out)
}

/// Only UTC is accepted; a well-formed foreign offset gets the clearer `NotUtc` error.
fn check_offset(rest: &[u8]) -> Result<(), TimestampError> {
    match rest {
        b"Z" | b"+00:00" => Ok(()),
        [] => Err(TimestampError::NotUtc),
        [b'+' | b'-', h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            Err(TimestampError::NotUtc)
        }
        _ => Err(TimestampError::Format),
    }
}

/// Decimal value of a run of ASCII digits (the callers checked they are digits).
fn number(digits: &[u8]) -> i64 {
    digits
        .iter()
        .fold(0, |acc, d| acc * 10 + i64::from(d - b'0'))
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Proleptic Gregorian day arithmetic (Howard Hinnant's civil algorithms): exact, branch-light
// and infallible, so `Display` never has to report an error.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.div_euclid(MICROS_PER_SECOND);
        let micros = self.0.rem_euclid(MICROS_PER_SECOND);
        let (year, month, day) = civil_from_days(seconds.div_euclid(SECONDS_PER_DAY));
        let in_day = seconds.rem_euclid(SECONDS_PER_DAY);
        let (hour, minute, second) = (in_day / 3600, in_day % 3600 / 60, in_day % 60);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}"
        )?;
        // Python omits the fraction entirely when it is zero.
        if micros != 0 {
            write!(f, ".{micros:06}")?;
        }
        f.write_str("+00:00")
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;

        impl Visitor<'_> for TimestampVisitor {
            type Value = Timestamp;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a UTC ISO-8601 timestamp string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(TimestampVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(text: &str) -> String {
        Timestamp::parse(text).expect("valid timestamp").to_string()
    }

    #[test]
    fn writes_six_fraction_digits_and_utc_offset() {
        assert_eq!(
            round_trip("2024-01-01T12:00:00.123456+00:00"),
            "2024-01-01T12:00:00.123456+00:00"
        );
    }

    #[test]
    fn omits_the_fraction_when_microseconds_are_zero() {
        assert_eq!(
            round_trip("2024-01-01T12:00:00+00:00"),
            "2024-01-01T12:00:00+00:00"
        );
        assert_eq!(
            round_trip("2024-01-01T12:00:00.000000Z"),
            "2024-01-01T12:00:00+00:00"
        );
    }

    #[test]
    fn accepts_z_suffix_as_utc() {
        assert_eq!(
            round_trip("2024-01-01T00:00:10.5Z"),
            "2024-01-01T00:00:10.500000+00:00"
        );
    }

    #[test]
    fn normalises_short_fractions_to_six_digits() {
        let cases = [
            ("1", ".100000"),
            ("12", ".120000"),
            ("123", ".123000"),
            ("1234", ".123400"),
            ("12345", ".123450"),
        ];
        for (digits, written) in cases {
            let text = format!("2024-02-29T23:59:59.{digits}+00:00");
            assert_eq!(
                round_trip(&text),
                format!("2024-02-29T23:59:59{written}+00:00")
            );
        }
    }

    #[test]
    fn knows_the_unix_epoch_and_floors_seconds() {
        let epoch = Timestamp::parse("1970-01-01T00:00:00Z").expect("epoch");
        assert_eq!(epoch.unix_micros(), 0);
        let genesis = Timestamp::parse("2024-01-01T00:00:00+00:00").expect("genesis");
        assert_eq!(genesis.unix_seconds(), 1_704_067_200);
        let before = Timestamp::parse("1969-12-31T23:59:59.500000+00:00").expect("pre-epoch");
        assert_eq!(before.unix_micros(), -500_000);
        assert_eq!(before.unix_seconds(), -1);
    }

    #[test]
    fn rejects_offsets_other_than_utc() {
        for text in [
            "2024-01-01T12:00:00+01:00",
            "2024-01-01T12:00:00-05:30",
            "2024-01-01T12:00:00-00:00",
            "2024-01-01T12:00:00",
        ] {
            assert_eq!(
                Timestamp::parse(text),
                Err(TimestampError::NotUtc),
                "{text}"
            );
        }
        let message = TimestampError::NotUtc.to_string();
        assert_eq!(message, "timestamp must be UTC (+00:00 or Z)");
    }

    #[test]
    fn rejects_garbage_and_near_misses() {
        for text in [
            "",
            "yesterday",
            "2024-01-01",
            "2024-01-01 12:00:00+00:00",
            "2024-1-01T12:00:00+00:00",
            "2024-01-01T12:00:00+0000",
            "2024-01-01T12:00:00z",
            "2024-01-01T12:00:00+00:00 ",
            "2024-01-01T12:00:00.+00:00",
            "2024-01-01T12:00:00.1234567+00:00",
            "+024-01-01T12:00:00+00:00",
            "2024-01-01T12:00:00.12é+00:00",
            "2024-01-01T12:00:0é+00:00",
        ] {
            assert!(Timestamp::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn rejects_impossible_calendar_values() {
        for text in [
            "0000-01-01T00:00:00+00:00",
            "2024-13-01T00:00:00+00:00",
            "2024-00-10T00:00:00+00:00",
            "2023-02-29T00:00:00+00:00",
            "2100-02-29T00:00:00+00:00",
            "2024-04-31T00:00:00+00:00",
            "2024-01-01T24:00:00+00:00",
            "2024-01-01T23:60:00+00:00",
            "2016-12-31T23:59:60+00:00",
        ] {
            assert_eq!(
                Timestamp::parse(text),
                Err(TimestampError::OutOfRange),
                "{text}"
            );
        }
        assert!(Timestamp::parse("2000-02-29T00:00:00+00:00").is_ok());
    }

    #[test]
    fn covers_years_one_to_9999_exactly() {
        assert_eq!(Timestamp::MIN.to_string(), "0001-01-01T00:00:00+00:00");
        assert_eq!(
            Timestamp::MAX.to_string(),
            "9999-12-31T23:59:59.999999+00:00"
        );
        assert_eq!(Timestamp::from_unix_micros(i64::MIN), Timestamp::MIN);
        assert_eq!(Timestamp::from_unix_micros(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::try_from_unix_micros(MAX_MICROS + 1), None);
    }

    #[test]
    fn serializes_as_the_isoformat_string() {
        let ts = Timestamp::parse("2024-01-01T00:00:10.5+00:00").expect("valid");
        let json = serde_json::to_string(&ts).expect("serialize");
        assert_eq!(json, "\"2024-01-01T00:00:10.500000+00:00\"");
        let back: Timestamp = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, ts);
        assert!(serde_json::from_str::<Timestamp>("\"2024-01-01T00:00:00+02:00\"").is_err());
    }

    #[test]
    fn converts_system_time_to_microseconds() {
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_500_999);
        assert_eq!(Timestamp::from_system_time(t).unix_micros(), 1_500);
    }

    proptest! {
        #[test]
        fn every_instant_round_trips_through_its_text(micros in MIN_MICROS..=MAX_MICROS) {
            let ts = Timestamp::from_unix_micros(micros);
            prop_assert_eq!(Timestamp::parse(&ts.to_string()), Ok(ts));
        }

        #[test]
        fn calendar_agrees_with_the_time_crate(seconds in -62_135_596_800_i64..=253_402_300_799) {
            let ours = Timestamp::from_unix_micros(seconds * MICROS_PER_SECOND).to_string();
            let theirs = time::OffsetDateTime::from_unix_timestamp(seconds).expect("in range");
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
                theirs.year(), u8::from(theirs.month()), theirs.day(),
                theirs.hour(), theirs.minute(), theirs.second()
            );
            prop_assert_eq!(ours, expected);
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = Timestamp::parse(&text);
        }
    }
}
