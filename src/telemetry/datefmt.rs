//! strftime for `datefmt`: the directives Python's logging files use, in UTC.

use std::fmt::Write as _;
use time::OffsetDateTime;

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// [`strftime`] of a format with no sub-second directive, kept per thread for the second it
/// was made in: records in the same second reuse it (it dominated a request's log cost).
pub fn strftime_cached(out: &mut String, t: OffsetDateTime, format: &str) {
    // A byte scan: `str::contains` set up a substring searcher per call.
    if format.as_bytes().windows(2).any(|w| w == b"%f") {
        return strftime(out, t, format);
    }
    let second = t.unix_timestamp();
    SECOND.with_borrow_mut(|cache| {
        if let Some((_, at, text)) = cache.iter_mut().find(|(f, _, _)| f == format) {
            if *at != second {
                text.clear();
                strftime(text, t, format);
                *at = second;
            }
            out.push_str(text);
        } else if cache.len() < 4 {
            let mut text = String::new();
            strftime(&mut text, t, format);
            out.push_str(&text);
            cache.push((format.to_owned(), second, text));
        } else {
            strftime(out, t, format);
        }
    });
}

thread_local! {
    /// `(format, unix second, text)` of the last few formats this thread rendered.
    static SECOND: std::cell::RefCell<Vec<(String, i64, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// strftime subset (times are UTC): `%Y %y %m %d %e %H %I %M %S %f %p %j %a %A %b %h %B %z
/// %Z %s %F %T %D %R %c %x %X %%`; another directive is printed as it stands.
pub fn strftime(out: &mut String, t: OffsetDateTime, format: &str) {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(d) = chars.next() else {
            out.push('%');
            break;
        };
        let month = usize::from(u8::from(t.month())) - 1;
        let day = usize::from(t.weekday().number_days_from_monday());
        let hour12 = match t.hour() % 12 {
            0 => 12,
            h => h,
        };
        let _ = match d {
            'Y' => write!(out, "{:04}", t.year()),
            'y' => write!(out, "{:02}", t.year().rem_euclid(100)),
            'm' => write!(out, "{:02}", month + 1),
            'd' => write!(out, "{:02}", t.day()),
            'e' => write!(out, "{:2}", t.day()),
            'H' => write!(out, "{:02}", t.hour()),
            'I' => write!(out, "{hour12:02}"),
            'M' => write!(out, "{:02}", t.minute()),
            'S' => write!(out, "{:02}", t.second()),
            'f' => write!(out, "{:06}", t.microsecond()),
            'p' => write!(out, "{}", if t.hour() < 12 { "AM" } else { "PM" }),
            'j' => write!(out, "{:03}", t.ordinal()),
            'a' => write!(out, "{}", &DAYS[day][..3]),
            'A' => write!(out, "{}", DAYS[day]),
            'b' | 'h' => write!(out, "{}", &MONTHS[month][..3]),
            'B' => write!(out, "{}", MONTHS[month]),
            'z' => write!(out, "+0000"),
            'Z' => write!(out, "UTC"),
            's' => write!(out, "{}", t.unix_timestamp()),
            'F' => {
                strftime(out, t, "%Y-%m-%d");
                Ok(())
            }
            'T' | 'X' => {
                strftime(out, t, "%H:%M:%S");
                Ok(())
            }
            'D' | 'x' => {
                strftime(out, t, "%m/%d/%y");
                Ok(())
            }
            'R' => {
                strftime(out, t, "%H:%M");
                Ok(())
            }
            'c' => {
                strftime(out, t, "%a %b %e %H:%M:%S %Y");
                Ok(())
            }
            '%' => write!(out, "%"),
            other => write!(out, "%{other}"),
        };
    }
}

/// `2024-01-01T12:00:00.123456Z`.
pub fn rfc3339(out: &mut String, t: OffsetDateTime) {
    strftime(out, t, "%Y-%m-%dT%H:%M:%S.%fZ");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datefmt_directives_render_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_704_164_645_678_901_000)
            .expect("valid time");
        let mut s = String::new();
        strftime(&mut s, t, "%a %b %d %j %y %I%p %f %z %Z %q %%");
        assert_eq!(s, "Tue Jan 02 002 24 03AM 678901 +0000 UTC %q %");
    }

    #[test]
    fn cached_times_follow_the_second_and_sub_second_formats_are_never_cached() {
        let at = |nanos: i128| OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("time");
        let render = |t, f| {
            let mut s = String::new();
            strftime_cached(&mut s, t, f);
            s
        };
        let f = "%Y-%m-%d %H:%M:%S";
        assert_eq!(
            render(at(1_704_164_645_100_000_000), f),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            render(at(1_704_164_645_900_000_000), f),
            "2024-01-02 03:04:05"
        );
        assert_eq!(
            render(at(1_704_164_646_000_000_000), f),
            "2024-01-02 03:04:06"
        );
        assert_eq!(render(at(1_704_164_646_000_001_000), "%S.%f"), "06.000001");
        assert_eq!(render(at(1_704_164_646_000_002_000), "%S.%f"), "06.000002");
    }
}
