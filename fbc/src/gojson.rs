//! JSON written byte for byte as Go's `encoding/json` writes it, the encoder behind every
//! JSON file and base64 payload opm produces:
//! - struct fields in declaration order (our serde structs are declared in Go's order), map
//!   keys sorted (serde_json's `Value` map is a `BTreeMap`);
//! - `<`, `>` and `&` escaped as `\u003c`, `\u003e`, `\u0026` when HTML escaping is on (Go's
//!   `json.Marshal`), raw when off (an `Encoder` with `SetEscapeHTML(false)`, opm's writers);
//! - U+2028 and U+2029 always escaped; control characters as `\b \f \n \r \t` or `\u00XX`;
//! - floats in Go's shortest form: `1` for 1.0, `1e+21` and `1e-7` outside [1e-6, 1e21);
//! - indented output uses 4 spaces and `"key": value`, as `Encoder.SetIndent("", "    ")`.

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};
use std::io;

/// A field of a Go struct decoded from JSON: the exact key, else one equal ignoring case (Go's
/// decoder matches keys that way).
pub fn struct_field<'a>(
    object: &'a serde_json::Value,
    name: &str,
) -> Option<&'a serde_json::Value> {
    let map = object.as_object()?;
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The JSON type names Go's decoder uses in its errors (`cannot unmarshal number into ...`).
pub fn json_kind(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `float64` text (`encoding/json`'s floatEncoder).
pub fn format_f64(value: f64) -> String {
    let abs = value.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust writes `1e21` / `1e-7`; Go writes `1e+21` / `1e-7` (it strips the padding zero
        // of a one-digit negative exponent, and a positive one always has two digits here).
        let text = format!("{value:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => {
                format!("{mantissa}e+{exponent:0>2}")
            }
            _ => text,
        }
    } else if value.is_finite() {
        format!("{value}")
    } else {
        // Go refuses NaN and infinities; JSON input cannot hold them.
        "null".to_string()
    }
}

/// A serde_json formatter with Go's escaping and number rules, wrapping compact or pretty
/// output.
struct GoFormatter<F> {
    inner: F,
    escape_html: bool,
}

impl<F: Formatter> Formatter for GoFormatter<F> {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(format_f64(value).as_bytes())
    }

    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        writer.write_all(format_f64(f64::from(value)).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            let escaped = match c {
                '<' if self.escape_html => "\\u003c",
                '>' if self.escape_html => "\\u003e",
                '&' if self.escape_html => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..at])?;
            writer.write_all(escaped.as_bytes())?;
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        use serde_json::ser::CharEscape::*;
        let text: &[u8] = match escape {
            Quote => b"\\\"",
            ReverseSolidus => b"\\\\",
            Solidus => b"/",
            Backspace => b"\\b",
            FormFeed => b"\\f",
            LineFeed => b"\\n",
            CarriageReturn => b"\\r",
            Tab => b"\\t",
            AsciiControl(byte) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let bytes = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(byte >> 4) as usize],
                    HEX[(byte & 0xf) as usize],
                ];
                return writer.write_all(&bytes);
            }
        };
        writer.write_all(text)
    }

    // Everything else is the wrapped formatter's.
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.inner.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.inner.end_object_value(w)
    }
}

fn write<T: Serialize + ?Sized, F: Formatter>(
    value: &T,
    formatter: F,
    escape_html: bool,
) -> String {
    let mut out = Vec::new();
    let formatter = GoFormatter {
        inner: formatter,
        escape_html,
    };
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value
        .serialize(&mut serializer)
        .expect("serializing to memory cannot fail");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Go's `json.Marshal`: compact, HTML characters escaped.
pub fn marshal<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, CompactFormatter, true)
}

/// A Go `json.Encoder` with `SetEscapeHTML(false)`, without the trailing newline: compact.
pub fn compact<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, CompactFormatter, false)
}

/// A Go `json.Encoder` with `SetIndent("", "    ")` and `SetEscapeHTML(false)`, without the
/// trailing newline (opm's `WriteJSON`).
pub fn indented<T: Serialize + ?Sized>(value: &T) -> String {
    write(value, PrettyFormatter::with_indent(b"    "), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_are_written_as_go_writes_them() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (-0.25, "-0.25"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (1e-6, "0.000001"),
            (1.5e300, "1.5e+300"),
            (-2.5e-10, "-2.5e-10"),
            (0.0, "0"),
        ];
        for (value, want) in cases {
            assert_eq!(format_f64(value), want, "{value}");
        }
    }

    #[test]
    fn marshal_escapes_html_and_line_separators_like_go() {
        let value = json!({"b": "a<b>&c\u{2028}\u{1}\n\t\"\\", "a": [1, 2.0, 0.5]});
        assert_eq!(
            marshal(&value),
            r#"{"a":[1,2,0.5],"b":"a\u003cb\u003e\u0026c\u2028\u0001\n\t\"\\"}"#
        );
        assert_eq!(
            compact(&value),
            "{\"a\":[1,2,0.5],\"b\":\"a<b>&c\\u2028\\u0001\\n\\t\\\"\\\\\"}"
        );
    }

    #[test]
    fn indented_output_uses_four_spaces_and_keeps_empty_containers_flat() {
        let value = json!({"a": [], "b": {}, "c": [{"d": null}]});
        assert_eq!(
            indented(&value),
            "{\n    \"a\": [],\n    \"b\": {},\n    \"c\": [\n        {\n            \"d\": null\n        }\n    ]\n}"
        );
    }
}
