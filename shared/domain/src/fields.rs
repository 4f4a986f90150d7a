//! Values a client sends, parsed at the edge into types that cannot hold an
//! invalid value. Each type's bounds are constants used twice from one
//! place: by its `Deserialize` (the check) and by its `ToSchema` (the
//! OpenAPI document), so the document can never be looser than the server.
use std::borrow::Cow;

use chrono::{DateTime, TimeZone, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::error::{DomainError, DomainResult};

/// Control characters (Unicode category Cc, what `char::is_control` tests),
/// as a regex character-class body.
const CONTROL_CLASS: &str = r"\u0000-\u001F\u007F-\u009F";
/// White space as `str::trim` sees it (`char::is_whitespace`), minus the
/// one control character in it (U+0085), as a regex character-class body.
/// ECMA-262's `\s` differs (it has U+FEFF), hence the explicit list.
const SPACE_CLASS: &str = r"\t\n\u000B\f\r \u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// `^[^C]*[^CS][^C]*$`: no control character and at least one that is not
/// white space, which is exactly what [`check_text`] accepts.
fn name_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*[^{CONTROL_CLASS}{SPACE_CLASS}][^{CONTROL_CLASS}]*$")
}

/// `^[^C]*$`: no control character (blank allowed).
fn text_pattern() -> String {
    format!("^[^{CONTROL_CLASS}]*$")
}

/// A human-facing name: 1..=MAX characters (counted as the JSON Schema
/// `maxLength` counts them, in code points, before trimming), no control
/// characters, not blank. Stored trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name<const MAX: usize>(String);

impl<const MAX: usize> Name<MAX> {
    /// Parses `raw`; errors name `field`.
    pub fn parse(field: &str, raw: &str) -> DomainResult<Self> {
        parse_name(field, raw, MAX).map(Name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The rule of [`Name`], for names that do not arrive in a request body
/// (`capydb-local orgs create --name`): answers the name trimmed.
pub fn parse_name(field: &str, raw: &str, max: usize) -> DomainResult<String> {
    check_text(raw, 1, max).map_err(|why| DomainError::invalid(format!("{field} {why}")))?;
    if raw.trim().is_empty() {
        return Err(DomainError::invalid(format!("{field} must not be blank")));
    }
    Ok(raw.trim().to_string())
}

/// The bounds shared by [`check_text`]'s callers: length in code points
/// within `min..=max`, no control character.
fn check_text(raw: &str, min: usize, max: usize) -> Result<(), String> {
    let len = raw.chars().count();
    if len < min || len > max {
        return Err(if min > 0 {
            format!("must be {min} to {max} characters")
        } else {
            format!("must be at most {max} characters")
        });
    }
    if raw.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn de_error<'de, D: Deserializer<'de>>(e: DomainError) -> D::Error {
    // The message reads "<field> must ..."; the extractor prefixes the path.
    let msg = e.to_string();
    D::Error::custom(msg.strip_prefix("value ").unwrap_or(&msg).to_string())
}

impl<'de, const MAX: usize> Deserialize<'de> for Name<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        Name::parse("value", &raw).map_err(de_error::<D>)
    }
}

impl<const MAX: usize> PartialSchema for Name<MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX))
            .pattern(Some(name_pattern()))
            .description(Some(format!(
                "1 to {MAX} characters, no control characters, not blank; leading and trailing white space is trimmed"
            )))
            .into()
    }
}

impl<const MAX: usize> ToSchema for Name<MAX> {}

/// Free text that may be empty (a description): at most MAX characters,
/// no control characters. Blank text is stored as no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MAX: usize>(Option<String>);

impl<const MAX: usize> Text<MAX> {
    pub fn parse(field: &str, raw: &str) -> DomainResult<Self> {
        check_text(raw, 0, MAX).map_err(|why| DomainError::invalid(format!("{field} {why}")))?;
        let t = raw.trim();
        Ok(Text((!t.is_empty()).then(|| t.to_string())))
    }

    pub fn into_inner(self) -> Option<String> {
        self.0
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        Text::parse("value", &raw).map_err(de_error::<D>)
    }
}

impl<const MAX: usize> PartialSchema for Text<MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX))
            .pattern(Some(text_pattern()))
            .description(Some(format!("At most {MAX} characters, no control characters")))
            .into()
    }
}

impl<const MAX: usize> ToSchema for Text<MAX> {}

/// An http(s) URL as sent: at most MAX characters, starting with
/// `http://` or `https://` (any case). Whether it parses and where it may
/// point is the use case's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlText<const MAX: usize>(String);

impl<const MAX: usize> UrlText<MAX> {
    const PATTERN: &'static str = "^[Hh][Tt][Tt][Pp][Ss]?://";

    pub fn parse(field: &str, raw: &str) -> DomainResult<Self> {
        if raw.chars().count() > MAX {
            return Err(DomainError::invalid(format!("{field} must be at most {MAX} characters")));
        }
        let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(DomainError::invalid(format!("{field} must be an http:// or https:// URL")));
        }
        Ok(UrlText(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for UrlText<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        UrlText::parse("value", &raw).map_err(de_error::<D>)
    }
}

impl<const MAX: usize> PartialSchema for UrlText<MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(MAX))
            .pattern(Some(Self::PATTERN))
            .description(Some(format!("An http:// or https:// URL, at most {MAX} characters")))
            .into()
    }
}

impl<const MAX: usize> ToSchema for UrlText<MAX> {}

/// A preview's name: it goes into URLs and CI logs, so a safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewName(String);

impl PreviewName {
    pub const MAX: usize = 63;
    const PATTERN: &'static str = "^[A-Za-z0-9._-]+$";

    pub fn parse(raw: &str) -> DomainResult<Self> {
        if raw.is_empty() || raw.chars().count() > Self::MAX {
            return Err(DomainError::invalid(format!("name must be 1 to {} characters", Self::MAX)));
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(DomainError::invalid("name may contain only letters, digits, '-', '_' and '.'"));
        }
        Ok(PreviewName(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for PreviewName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        PreviewName::parse(&raw).map_err(de_error::<D>)
    }
}

impl PartialSchema for PreviewName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(Self::MAX))
            .pattern(Some(Self::PATTERN))
            .description(Some("Letters, digits, `-`, `_` and `.`, e.g. `pr-42`"))
            .into()
    }
}

impl ToSchema for PreviewName {}

/// An integer within `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded<const MIN: u32, const MAX: u32>(u32);

impl<const MIN: u32, const MAX: u32> Bounded<MIN, MAX> {
    pub fn parse(field: &str, v: u32) -> DomainResult<Self> {
        if !(MIN..=MAX).contains(&v) {
            return Err(DomainError::invalid(format!("{field} must be between {MIN} and {MAX}")));
        }
        Ok(Bounded(v))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // JSON Schema's `integer` is a number without a fraction, so 351.0
        // is one; read wide, so 2^40 is "out of range", not "invalid type".
        let n = serde_json::Number::deserialize(d)?;
        let whole = match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Some(i),
            (None, Some(f)) if f.fract() == 0.0 => Some(f.clamp(-1e18, 1e18) as i64),
            _ => None,
        };
        let v = whole.ok_or_else(|| D::Error::custom(format!("must be a whole number, not {n}")))?;
        let v = u32::try_from(v).unwrap_or(u32::MAX);
        Bounded::parse("value", v).map_err(de_error::<D>)
    }
}

impl<const MIN: u32, const MAX: u32> PartialSchema for Bounded<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(MIN)).maximum(Some(MAX)).into()
    }
}

impl<const MIN: u32, const MAX: u32> ToSchema for Bounded<MIN, MAX> {}

/// Hours a preview lives before the sweeper deletes it.
pub type TtlHours = Bounded<1, 720>;
/// Days until an API key expires.
pub type ExpiresInDays = Bounded<1, 3650>;

/// A list with at least one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty<T>(Vec<T>);

impl<T> NonEmpty<T> {
    pub fn new(field: &str, items: Vec<T>) -> DomainResult<Self> {
        if items.is_empty() {
            return Err(DomainError::invalid(format!("{field} must list at least one item")));
        }
        Ok(NonEmpty(items))
    }

    pub fn into_inner(self) -> Vec<T> {
        self.0
    }

    pub fn as_slice(&self) -> &[T] {
        &self.0
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        NonEmpty::new("value", items).map_err(de_error::<D>)
    }
}

// utoipa's derive composes the schema of a generic field type through this
// trait (its own derive writes the same impl for generic types).
impl<T: PartialSchema> utoipa::__dev::ComposeSchema for NonEmpty<T> {
    fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
        ArrayBuilder::new().items(T::schema()).min_items(Some(1)).into()
    }
}

impl<T: PartialSchema> ToSchema for NonEmpty<T> {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("NonEmpty")
    }
}

/// A timestamp a client sends: RFC 3339, within the range every store
/// holds exactly (DynamoDB keeps nanoseconds in an i64, which ends in 2262).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTime(DateTime<Utc>);

impl ClientTime {
    pub const EARLIEST: &'static str = "1970-01-01T00:00:00Z";
    pub const LATEST: &'static str = "2199-12-31T23:59:59Z";

    fn range() -> (DateTime<Utc>, DateTime<Utc>) {
        let earliest = Utc.timestamp_opt(0, 0).single().unwrap_or_default();
        let latest = Utc.with_ymd_and_hms(2199, 12, 31, 23, 59, 59).single().unwrap_or_default();
        (earliest, latest)
    }

    pub fn parse(field: &str, t: DateTime<Utc>) -> DomainResult<Self> {
        let (earliest, latest) = Self::range();
        if t < earliest || t > latest {
            return Err(DomainError::invalid(format!(
                "{field} must be between {} and {}",
                Self::EARLIEST,
                Self::LATEST
            )));
        }
        Ok(ClientTime(t))
    }

    pub fn get(self) -> DateTime<Utc> {
        self.0
    }
}

impl<'de> Deserialize<'de> for ClientTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Cow::<str>::deserialize(d)?;
        let t = DateTime::parse_from_rfc3339(&raw).map_err(|_| {
            D::Error::custom(format!(
                "value must be an RFC 3339 timestamp such as 2030-01-31T12:00:00Z, between {} and {}",
                Self::EARLIEST,
                Self::LATEST
            ))
        })?;
        ClientTime::parse("value", t.with_timezone(&Utc)).map_err(de_error::<D>)
    }
}

impl PartialSchema for ClientTime {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(format!("RFC 3339, between {} and {}", Self::EARLIEST, Self::LATEST)))
            .into()
    }
}

impl ToSchema for ClientTime {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pattern's classes must be what the check tests, char for char.
    #[test]
    fn pattern_classes_match_the_checks_for_every_char() {
        let ranges = |class: &str| -> Vec<(u32, u32)> {
            let mut out = Vec::new();
            let mut chars: Vec<u32> = Vec::new();
            let mut it = class.chars().peekable();
            let mut pending_range = false;
            while let Some(c) = it.next() {
                let code = match c {
                    '\\' => match it.next() {
                        Some('u') => {
                            let hex: String = (0..4).filter_map(|_| it.next()).collect();
                            u32::from_str_radix(&hex, 16).unwrap()
                        }
                        Some('t') => 9,
                        Some('n') => 10,
                        Some('f') => 12,
                        Some('r') => 13,
                        other => panic!("unexpected escape {other:?}"),
                    },
                    '-' => {
                        pending_range = true;
                        continue;
                    }
                    c => c as u32,
                };
                if pending_range {
                    let start = chars.pop().unwrap();
                    out.push((start, code));
                    pending_range = false;
                } else {
                    chars.push(code);
                }
            }
            out.extend(chars.into_iter().map(|c| (c, c)));
            out
        };
        let control = ranges(CONTROL_CLASS);
        let space = ranges(SPACE_CLASS);
        let within = |rs: &[(u32, u32)], c: u32| rs.iter().any(|(a, b)| (*a..=*b).contains(&c));
        for code in 0..=0x10FFFFu32 {
            let Some(c) = char::from_u32(code) else { continue };
            assert_eq!(within(&control, code), c.is_control(), "control class disagrees at U+{code:04X}");
            if !c.is_control() {
                assert_eq!(within(&space, code), c.is_whitespace(), "space class disagrees at U+{code:04X}");
            }
        }
    }

    #[test]
    fn names_are_bounded_in_code_points_and_trimmed() {
        assert_eq!(Name::<5>::parse("name", " ab ").unwrap().as_str(), "ab");
        assert!(Name::<5>::parse("name", "ééééé").is_ok());
        assert!(Name::<5>::parse("name", "ab    ").unwrap_err().to_string().contains("1 to 5"));
        assert!(Name::<5>::parse("name", "").is_err());
        assert!(Name::<5>::parse("name", "   ").unwrap_err().to_string().contains("blank"));
        assert!(Name::<5>::parse("name", "a\u{85}").unwrap_err().to_string().contains("control"));
    }

    #[test]
    fn bounded_integers_reject_out_of_range_and_huge_values() {
        let ok: TtlHours = serde_json::from_str("720").unwrap();
        assert_eq!(ok.get(), 720);
        assert_eq!(serde_json::from_str::<TtlHours>("351.0").unwrap().get(), 351);
        assert!(serde_json::from_str::<TtlHours>("1.5").unwrap_err().to_string().contains("whole number"));
        for bad in ["0", "721", "-1", "1099511627776", "1e300"] {
            let e = serde_json::from_str::<TtlHours>(bad).unwrap_err().to_string();
            assert!(e.contains("between 1 and 720"), "{bad}: {e}");
        }
    }

    #[test]
    fn client_times_outside_the_stored_range_are_refused() {
        assert!(serde_json::from_str::<ClientTime>("\"2199-12-31T23:59:59Z\"").is_ok());
        let e = serde_json::from_str::<ClientTime>("\"2300-01-01T00:00:00Z\"").unwrap_err().to_string();
        assert!(e.contains("between 1970-01-01T00:00:00Z and 2199-12-31T23:59:59Z"), "{e}");
        assert!(serde_json::from_str::<ClientTime>("\"1969-12-31T23:59:59Z\"").is_err());
        assert!(serde_json::from_str::<ClientTime>("\"yesterday\"").is_err());
    }

    #[test]
    fn empty_lists_are_refused() {
        assert!(serde_json::from_str::<NonEmpty<u8>>("[]").unwrap_err().to_string().contains("at least one"));
        assert_eq!(serde_json::from_str::<NonEmpty<u8>>("[1]").unwrap().into_inner(), [1]);
    }
}
