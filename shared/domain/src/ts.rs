//! Timestamps on the wire: RFC 3339 UTC with exactly six fractional digits
//! (`2026-11-26T14:03:07.123456Z`), written by hand. Every response carries
//! several; chrono's `Display`-based serializer was ~5% of the CPU time of a
//! `GET /v1/projects/{id}` (see bench/api-throughput.sh).
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

fn digits(buf: &mut [u8], mut v: u32) {
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `t`'s 27 bytes when its year is 0..=9999 (chrono formats the others).
fn format_fixed(t: &DateTime<Utc>) -> Option<[u8; 27]> {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    digits(&mut b[0..4], year as u32);
    digits(&mut b[5..7], t.month());
    digits(&mut b[8..10], t.day());
    digits(&mut b[11..13], t.hour());
    digits(&mut b[14..16], t.minute());
    // A leap second shows as nanosecond >= 1e9 in chrono; clamp it into :59.999999.
    let nanos = t.nanosecond().min(999_999_999);
    digits(&mut b[17..19], t.second());
    digits(&mut b[20..26], nanos / 1000);
    Some(b)
}

/// Formats `t`; years outside 0..=9999 fall back to chrono's formatting.
pub fn format(t: &DateTime<Utc>) -> String {
    match format_fixed(t) {
        Some(b) => String::from_utf8(b.to_vec()).unwrap_or_default(),
        None => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

/// Serializes `t` as [`format`] writes it, from the stack.
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match format_fixed(t) {
        // Only ASCII digits and separators were written.
        Some(b) => s.serialize_str(std::str::from_utf8(&b).unwrap_or_default()),
        None => s.serialize_str(&format(t)),
    }
}

pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn matches_rfc3339_with_micros() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::nanoseconds(7_890_123);
        assert_eq!(format(&t), "2026-01-02T03:04:05.007890Z");
        assert_eq!(format(&t), t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        let parsed: DateTime<Utc> = format(&t).parse().unwrap();
        assert_eq!(parsed.timestamp_micros(), t.timestamp_micros());
        let mut json = Vec::new();
        serialize(&t, &mut serde_json::Serializer::new(&mut json)).unwrap();
        assert_eq!(json, b"\"2026-01-02T03:04:05.007890Z\"");
        let far = Utc.with_ymd_and_hms(12026, 1, 2, 3, 4, 5).unwrap();
        let mut json = Vec::new();
        serialize(&far, &mut serde_json::Serializer::new(&mut json)).unwrap();
        assert_eq!(String::from_utf8(json).unwrap(), format!("\"{}\"", format(&far)));
        assert!(format(&far).starts_with("+12026-01-02T03:04:05"), "{}", format(&far));
    }
}
