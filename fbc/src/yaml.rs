//! YAML written byte for byte as opm writes a file-based catalog's `catalog.yaml`.
//!
//! opm (`alpha/declcfg/write.go`, `WriteYAML`) writes each blob as: Go `encoding/json` compact
//! text (HTML escaping off) → `sigs.k8s.io/yaml.JSONToYAML`, which is go-yaml v2
//! (`go.yaml.in/yaml/v2` v2.4.4, the same sources as `gopkg.in/yaml.v2` v2.4.0) `Unmarshal` into
//! `interface{}` followed by `yaml.Marshal` → prefixed with `"---\n"`. Each blob is a fresh
//! `Marshal` call, so each is one implicit document with no `---` or `...` of its own.
//!
//! This module reproduces that chain from a [`serde_json::Value`], following the Go sources:
//! - `encode.go`: how each value becomes a scalar event and which style it asks for
//!   (`stringv`: literal `|` if the string holds a `"\n"`, else plain if `resolve` reads it back
//!   as a string and it is not a base-60 float, else double-quoted); `floatv` (Go's
//!   `strconv.FormatFloat(f, 'g', -1, 64)`, so `1e+06`, `1e-07`); `nilv`, `boolv`, `intv`;
//! - `resolve.go`: YAML 1.1 resolution (bool words, null, ints in any Go base with `_`, floats,
//!   timestamps through Go's `time.Parse`), see `resolves_to_str`;
//! - `sorter.go`: mapping keys in `keyList.Less` "natural" order, see `natural_less`;
//! - `emitterc.go` (a port of libyaml's emitter): `yaml_emitter_analyze_scalar`,
//!   `yaml_emitter_select_scalar_style`, the plain / single-quoted / double-quoted / literal
//!   writers with their folding at `best_width` 80 (columns count characters, not bytes), indent
//!   2, block sequences not indented inside a mapping, empty collections as flow `[]` / `{}`,
//!   and keys that cannot be simple (multi-line, or longer than 128 bytes) written as `? key`.
//!
//! The emitter here is the libyaml state machine reduced to what `Marshal` of JSON data can
//! produce: no anchors, tags, folded style, canonical mode or non-empty flow collections (the
//! flow level is therefore always 0 where a scalar is written). The state it keeps (`column`,
//! `indent`, `whitespace`, `indention`) and every write follow the C/Go code step for step.
//!
//! What JSONToYAML does to numbers: a JSON number is a plain scalar to go-yaml, resolved as an
//! int (int64, else uint64) or a float64. Integers print in decimal; anything else prints with
//! `FormatFloat('g')`. A `serde_json::Number` holding a u64 / i64 / f64 maps onto exactly that.

use serde_json::{Map, Number, Value};

/// One catalog blob as opm writes it in a catalog.yaml: "---\n" then the YAML document.
pub fn write_blob(value: &Value, out: &mut String) {
    out.push_str("---\n");
    let mut emitter = Emitter {
        out,
        column: 0,
        indent: -1,
        whitespace: true,
        indention: true,
    };
    emitter.node(value, Context::default());
    // DOCUMENT-END, implicit: `yaml_emitter_emit_document_end` only writes an indent (the
    // final line break); `encoder.finish` clears `open_ended`, so no `...` follows.
    emitter.write_indent();
}

/// libyaml's `best_indent` (go-yaml never sets it, so 2).
const BEST_INDENT: i64 = 2;
/// libyaml's `best_width`: go-yaml v2 leaves it 0, which `yaml_emitter_emit_stream_start` turns
/// into 80.
const BEST_WIDTH: usize = 80;
/// `yaml_emitter_check_simple_key`: a scalar key longer than this (in bytes) is written `? key`.
const MAX_SIMPLE_KEY_LENGTH: usize = 128;

/// The scalar styles go-yaml asks for or libyaml falls back to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Style {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    Literal,
}

/// The context flags `yaml_emitter_emit_node` sets for the node being written (`root_context`
/// and `sequence_context` change nothing go-yaml's output can show, so they are not kept).
#[derive(Clone, Copy, Default)]
struct Context {
    mapping: bool,
    simple_key: bool,
}

/// The emitter's state, as in `yaml_emitter_t`.
struct Emitter<'a> {
    out: &'a mut String,
    /// Characters (not bytes) written on the current line.
    column: usize,
    /// The current indentation; -1 before the root node.
    indent: i64,
    /// The last thing written was whitespace (or nothing yet on this line).
    whitespace: bool,
    /// Only indentation has been written on the current line so far.
    indention: bool,
}

impl Emitter<'_> {
    // ----- nodes (encode.go marshal + emitterc.go state machine) -----

    fn node(&mut self, value: &Value, context: Context) {
        match value {
            Value::Null => self.scalar("null", Style::Plain, context),
            Value::Bool(b) => self.scalar(if *b { "true" } else { "false" }, Style::Plain, context),
            Value::Number(n) => self.scalar(&format_number(n), Style::Plain, context),
            Value::String(s) => self.scalar(s, string_style(s), context),
            // `yaml_emitter_check_empty_sequence` / `_mapping`: an empty collection is flow.
            Value::Array(items) if items.is_empty() => self.empty_flow("[", "]"),
            Value::Object(map) if map.is_empty() => self.empty_flow("{", "}"),
            Value::Array(items) => self.block_sequence(items, context),
            Value::Object(map) => self.block_mapping(map),
        }
    }

    /// `yaml_emitter_emit_flow_sequence_item` / `_mapping_key` for a collection with no items.
    fn empty_flow(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.write_indicator(close, false, false, false);
    }

    /// `yaml_emitter_emit_block_sequence_item`.
    fn block_sequence(&mut self, items: &[Value], context: Context) {
        let saved = self.indent;
        // A sequence that is a mapping's value stays at the mapping's indent, unless its key
        // was complex (`? key`), which leaves `indention` set after the `:`.
        self.increase_indent(false, context.mapping && !self.indention);
        for item in items {
            self.write_indent();
            self.write_indicator("-", true, false, true);
            self.node(item, Context::default());
        }
        self.indent = saved;
    }

    /// `yaml_emitter_emit_block_mapping_key` / `_value`, keys in go-yaml's order.
    fn block_mapping(&mut self, map: &Map<String, Value>) {
        let saved = self.indent;
        self.increase_indent(false, false);
        for key in sorted_keys(map) {
            self.write_indent();
            if is_simple_key(key) {
                self.scalar(
                    key,
                    string_style(key),
                    Context {
                        mapping: true,
                        simple_key: true,
                    },
                );
                self.write_indicator(":", false, false, false);
            } else {
                self.write_indicator("?", true, false, true);
                self.scalar(
                    key,
                    string_style(key),
                    Context {
                        mapping: true,
                        simple_key: false,
                    },
                );
                self.write_indent();
                self.write_indicator(":", true, false, true);
            }
            self.node(
                &map[key],
                Context {
                    mapping: true,
                    simple_key: false,
                },
            );
        }
        self.indent = saved;
    }

    /// `yaml_emitter_emit_scalar`: pick the style, then write at one more indent level.
    fn scalar(&mut self, value: &str, requested: Style, context: Context) {
        let analysis = analyze_scalar(value);
        let style = select_scalar_style(requested, &analysis, value.is_empty(), context.simple_key);
        let saved = self.indent;
        self.increase_indent(true, false);
        let allow_breaks = !context.simple_key;
        match style {
            Style::Plain => self.write_plain(value, allow_breaks),
            Style::SingleQuoted => self.write_single_quoted(value, allow_breaks),
            Style::DoubleQuoted => self.write_double_quoted(value, allow_breaks),
            Style::Literal => self.write_literal(value),
        }
        self.indent = saved;
    }

    /// `yaml_emitter_increase_indent`.
    fn increase_indent(&mut self, flow: bool, indentless: bool) {
        if self.indent < 0 {
            self.indent = if flow { BEST_INDENT } else { 0 };
        } else if !indentless {
            self.indent += BEST_INDENT;
        }
    }

    // ----- low-level writes (emitterc.go put, put_break, write, write_break, ...) -----

    /// `put`: one ASCII byte.
    fn put(&mut self, byte: u8) {
        self.out.push(byte as char);
        self.column += 1;
    }

    /// `put_break`: the line break (go-yaml uses `\n`).
    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    /// `write`: copy the character at byte `*i` of `value`; a column is one character.
    fn write(&mut self, value: &str, i: &mut usize) {
        let w = width(value.as_bytes()[*i]);
        self.out.push_str(&value[*i..*i + w]);
        self.column += 1;
        *i += w;
    }

    /// `write_break`: `\n` becomes a line break; any other break character is copied and
    /// resets the column.
    fn write_break(&mut self, value: &str, i: &mut usize) {
        if value.as_bytes()[*i] == b'\n' {
            self.put_break();
            *i += 1;
        } else {
            self.write(value, i);
            self.column = 0;
        }
    }

    /// `yaml_emitter_write_indent`.
    fn write_indent(&mut self) {
        let indent = self.indent.max(0) as usize;
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(b' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    /// `yaml_emitter_write_indicator`.
    fn write_indicator(
        &mut self,
        indicator: &str,
        need_whitespace: bool,
        is_whitespace: bool,
        is_indention: bool,
    ) {
        if need_whitespace && !self.whitespace {
            self.put(b' ');
        }
        let mut i = 0;
        while i < indicator.len() {
            self.write(indicator, &mut i);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    // ----- scalar writers -----

    /// `yaml_emitter_write_plain_scalar`.
    fn write_plain(&mut self, value: &str, allow_breaks: bool) {
        let b = value.as_bytes();
        if !self.whitespace {
            self.put(b' ');
        }
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b' ' {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && at(b, i + 1) != b' ' {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else if is_break(b, i) {
                if !breaks && b[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(value, &mut i);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(value, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    /// `yaml_emitter_write_single_quoted_scalar`.
    fn write_single_quoted(&mut self, value: &str, allow_breaks: bool) {
        let b = value.as_bytes();
        self.write_indicator("'", true, false, false);
        let mut spaces = false;
        let mut breaks = false;
        let mut i = 0;
        while i < b.len() {
            if b[i] == b' ' {
                if allow_breaks
                    && !spaces
                    && self.column > BEST_WIDTH
                    && i > 0
                    && i < b.len() - 1
                    && at(b, i + 1) != b' '
                {
                    self.write_indent();
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else if is_break(b, i) {
                if !breaks && b[i] == b'\n' {
                    self.put_break();
                }
                self.write_break(value, &mut i);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                if b[i] == b'\'' {
                    self.put(b'\'');
                }
                self.write(value, &mut i);
                self.indention = false;
                spaces = false;
                breaks = false;
            }
        }
        self.write_indicator("'", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    /// `yaml_emitter_write_double_quoted_scalar`.
    fn write_double_quoted(&mut self, value: &str, allow_breaks: bool) {
        let b = value.as_bytes();
        // libyaml's `is_bom(value, i)` looks at the start of the string whatever `i` is: a
        // string that starts with U+FEFF has every one of its characters escaped.
        let starts_with_bom = b.starts_with(&[0xEF, 0xBB, 0xBF]);
        self.write_indicator("\"", true, false, false);
        let mut spaces = false;
        let mut i = 0;
        while i < b.len() {
            if !is_printable(b, i)
                || starts_with_bom
                || is_break(b, i)
                || b[i] == b'"'
                || b[i] == b'\\'
            {
                let c = value[i..]
                    .chars()
                    .next()
                    .expect("i is at a character boundary");
                i += c.len_utf8();
                self.put(b'\\');
                match c {
                    '\0' => self.put(b'0'),
                    '\u{7}' => self.put(b'a'),
                    '\u{8}' => self.put(b'b'),
                    '\t' => self.put(b't'),
                    '\n' => self.put(b'n'),
                    '\u{b}' => self.put(b'v'),
                    '\u{c}' => self.put(b'f'),
                    '\r' => self.put(b'r'),
                    '\u{1b}' => self.put(b'e'),
                    '"' => self.put(b'"'),
                    '\\' => self.put(b'\\'),
                    '\u{85}' => self.put(b'N'),
                    '\u{a0}' => self.put(b'_'),
                    '\u{2028}' => self.put(b'L'),
                    '\u{2029}' => self.put(b'P'),
                    _ => {
                        let v = c as u32;
                        let (letter, digits) = match v {
                            0..=0xFF => (b'x', 2),
                            0x100..=0xFFFF => (b'u', 4),
                            _ => (b'U', 8),
                        };
                        self.put(letter);
                        for k in (0..digits).rev() {
                            let digit = ((v >> (4 * k)) & 0xF) as u8;
                            self.put(if digit < 10 {
                                b'0' + digit
                            } else {
                                b'A' + digit - 10
                            });
                        }
                    }
                }
                spaces = false;
            } else if b[i] == b' ' {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i > 0 && i < b.len() - 1 {
                    self.write_indent();
                    if at(b, i + 1) == b' ' {
                        self.put(b'\\');
                    }
                    i += 1;
                } else {
                    self.write(value, &mut i);
                }
                spaces = true;
            } else {
                self.write(value, &mut i);
                spaces = false;
            }
        }
        self.write_indicator("\"", false, false, false);
        self.whitespace = false;
        self.indention = false;
    }

    /// `yaml_emitter_write_literal_scalar` with `yaml_emitter_write_block_scalar_hints`.
    fn write_literal(&mut self, value: &str) {
        let b = value.as_bytes();
        self.write_indicator("|", true, false, false);
        // Indentation indicator when the content starts with a space or a break.
        if at(b, 0) == b' ' || is_break(b, 0) {
            self.write_indicator(&BEST_INDENT.to_string(), false, false, false);
        }
        // Chomping: `-` without a final break, `+` with two (or a lone break), none with one.
        if let Some(chomp) = chomping_indicator(b) {
            self.write_indicator(chomp, false, false, false);
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        let mut i = 0;
        while i < b.len() {
            if is_break(b, i) {
                self.write_break(value, &mut i);
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent();
                }
                self.write(value, &mut i);
                self.indention = false;
                breaks = false;
            }
        }
    }
}

/// The chomping part of `yaml_emitter_write_block_scalar_hints`.
fn chomping_indicator(b: &[u8]) -> Option<&'static str> {
    if b.is_empty() {
        return Some("-");
    }
    let mut i = b.len() - 1;
    while b[i] & 0xC0 == 0x80 {
        i -= 1;
    }
    if !is_break(b, i) {
        return Some("-");
    }
    if i == 0 {
        return Some("+");
    }
    i -= 1;
    while b[i] & 0xC0 == 0x80 {
        i -= 1;
    }
    is_break(b, i).then_some("+")
}

// ----- style decisions -----

/// The style `encoder.stringv` asks for (valid UTF-8, no explicit tag).
fn string_style(s: &str) -> Style {
    if s.contains('\n') {
        Style::Literal
    } else if resolves_to_str(s) && !is_base60_float(s) {
        Style::Plain
    } else {
        Style::DoubleQuoted
    }
}

/// What `yaml_emitter_analyze_scalar` finds, reduced to the flags used at flow level 0.
struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

/// `yaml_emitter_analyze_scalar` (with `emitter.unicode` on, as go-yaml sets it).
fn analyze_scalar(value: &str) -> Analysis {
    let b = value.as_bytes();
    if b.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let mut block_indicators = b.starts_with(b"---") || b.starts_with(b"...");
    let mut line_breaks = false;
    let mut special_characters = false;
    let mut leading_space = false;
    let mut leading_break = false;
    let mut trailing_space = false;
    let mut trailing_break = false;
    let mut break_space = false;
    let mut space_break = false;
    let mut preceded_by_whitespace = true;
    let mut previous_space = false;
    let mut previous_break = false;

    let mut i = 0;
    while i < b.len() {
        let w = width(b[i]);
        let followed_by_whitespace = i + w >= b.len() || is_blank(b, i + w);
        if i == 0 {
            match b[i] {
                b'#' | b',' | b'[' | b']' | b'{' | b'}' | b'&' | b'*' | b'!' | b'|' | b'>'
                | b'\'' | b'"' | b'%' | b'@' | b'`' => block_indicators = true,
                b'?' | b':' | b'-' if followed_by_whitespace => block_indicators = true,
                _ => {}
            }
        } else {
            match b[i] {
                b':' if followed_by_whitespace => block_indicators = true,
                b'#' if preceded_by_whitespace => block_indicators = true,
                _ => {}
            }
        }

        if !is_printable(b, i) {
            special_characters = true;
        }
        if b[i] == b' ' {
            if i == 0 {
                leading_space = true;
            }
            if i + w == b.len() {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(b, i) {
            line_breaks = true;
            if i == 0 {
                leading_break = true;
            }
            if i + w == b.len() {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_whitespace = is_blankz(b, i);
        i += w;
    }

    let mut analysis = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        analysis.block_plain_allowed = false;
    }
    if trailing_space {
        analysis.block_allowed = false;
    }
    if break_space {
        analysis.block_plain_allowed = false;
        analysis.single_quoted_allowed = false;
    }
    if space_break || special_characters {
        analysis.block_plain_allowed = false;
        analysis.single_quoted_allowed = false;
        analysis.block_allowed = false;
    }
    if line_breaks || block_indicators {
        analysis.block_plain_allowed = false;
    }
    analysis
}

/// `yaml_emitter_select_scalar_style` at flow level 0 for an implicit, untagged scalar.
fn select_scalar_style(
    requested: Style,
    analysis: &Analysis,
    empty: bool,
    simple_key: bool,
) -> Style {
    let mut style = requested;
    if simple_key && analysis.multiline {
        style = Style::DoubleQuoted;
    }
    if style == Style::Plain && (!analysis.block_plain_allowed || (empty && simple_key)) {
        style = Style::SingleQuoted;
    }
    if style == Style::SingleQuoted && !analysis.single_quoted_allowed {
        style = Style::DoubleQuoted;
    }
    if style == Style::Literal && (!analysis.block_allowed || simple_key) {
        style = Style::DoubleQuoted;
    }
    style
}

/// `yaml_emitter_check_simple_key` for a string key.
fn is_simple_key(key: &str) -> bool {
    let b = key.as_bytes();
    let multiline = (0..b.len()).any(|i| is_break(b, i));
    !multiline && b.len() <= MAX_SIMPLE_KEY_LENGTH
}

// ----- numbers (encode.go intv / uintv / floatv) -----

fn format_number(n: &Number) -> String {
    if let Some(u) = n.as_u64() {
        u.to_string()
    } else if let Some(i) = n.as_i64() {
        i.to_string()
    } else {
        format_float(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// `floatv`: Go's `strconv.FormatFloat(f, 'g', -1, 64)`, with `.inf`/`-.inf`/`.nan`.
///
/// Shortest round-trip digits; `%e` form (`d.ddde±XX`, at least two exponent digits) when the
/// decimal exponent is below -4 or at least 6 (the `eprec = 6` rule for shortest precision),
/// else `%f` form with exactly the digits needed.
fn format_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_string();
    }
    let mut out = String::new();
    if f.is_sign_negative() {
        out.push('-');
    }
    if f == 0.0 {
        out.push('0');
        return out;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: "d.ddde-X" or "de21".
    let text = format!("{:e}", f.abs());
    let (mantissa, exponent) = text.split_once('e').expect("{:e} has an exponent");
    let digits: Vec<u8> = mantissa.bytes().filter(|c| *c != b'.').collect();
    let exp: i64 = exponent.parse().expect("{:e} exponent is an integer");
    let nd = digits.len() as i64;
    let dp = exp + 1;
    if !(-4..6).contains(&exp) {
        out.push(digits[0] as char);
        if nd > 1 {
            out.push('.');
            out.extend(digits[1..].iter().map(|d| *d as char));
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let e = exp.abs();
        if e < 10 {
            out.push('0');
        }
        out.push_str(&e.to_string());
    } else {
        let digit = |j: i64| {
            if (0..nd).contains(&j) {
                digits[j as usize] as char
            } else {
                '0'
            }
        };
        if dp > 0 {
            (0..dp).for_each(|j| out.push(digit(j)));
        } else {
            out.push('0');
        }
        let decimals = (nd - dp).max(0);
        if decimals > 0 {
            out.push('.');
            (0..decimals).for_each(|k| out.push(digit(dp + k)));
        }
    }
    out
}

// ----- resolve.go: what a plain scalar would be read back as -----

/// Whether go-yaml's `resolve("", s)` gives `!!str`, i.e. `s` may be written unquoted without
/// being read back as null, a bool, an int, a float or a timestamp (YAML 1.1 rules).
///
/// The first byte decides what is tried (`resolveTable`): `+`/`-` and digits try timestamps,
/// ints and floats; `yYnNtTfFoO~` only the word table; `.` the word table and Go's
/// `ParseFloat`; anything else (including `<`, so `<<` stays plain) is a string outright.
fn resolves_to_str(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no",
        "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "", "~", "null", "Null",
        "NULL", ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf",
        "-.Inf", "-.INF", "<<",
    ];
    let hint = match s.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return true,
    };
    if WORDS.contains(&s) {
        return false;
    }
    match hint {
        b'.' => !go_parse_float_ok(s),
        b'D' | b'S' => {
            if parse_timestamp(s) {
                return false;
            }
            let plain = s.replace('_', "");
            if go_parse_int(&plain, 0).is_some() || go_parse_uint(&plain, 0).is_some() {
                return false;
            }
            if is_yaml_style_float(&plain) && plain.parse::<f64>().is_ok_and(f64::is_finite) {
                return false;
            }
            if let Some(rest) = plain.strip_prefix("0b") {
                if go_parse_int(rest, 2).is_some() || go_parse_uint(rest, 2).is_some() {
                    return false;
                }
            } else if let Some(rest) = plain.strip_prefix("-0b") {
                if go_parse_int(&format!("-{rest}"), 2).is_some() {
                    return false;
                }
            }
            true
        }
        _ => true, // 'M': only the word table applies.
    }
}

/// encode.go `isBase60Float`: `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`. Such strings
/// resolve to `!!str` in go-yaml v2 but are quoted for other YAML 1.1 readers.
fn is_base60_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    if !at(b, i).is_ascii_digit() {
        return false;
    }
    i += 1;
    while at(b, i).is_ascii_digit() || at(b, i) == b'_' {
        i += 1;
    }
    let mut groups = 0;
    while at(b, i) == b':' {
        i += 1;
        // `[0-5]?[0-9]`: two digits only when the first is 0-5; after a group must come `:`,
        // `.` or the end, so taking the longest match is the only way to match.
        if matches!(at(b, i), b'0'..=b'5') && at(b, i + 1).is_ascii_digit() {
            i += 2;
        } else if at(b, i).is_ascii_digit() {
            i += 1;
        } else {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if at(b, i) == b'.' {
        i += 1;
        while at(b, i).is_ascii_digit() || at(b, i) == b'_' {
            i += 1;
        }
    }
    i == b.len()
}

/// resolve.go `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let digits_from = |mut i: usize| {
        while at(b, i).is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    if at(b, i) == b'.' {
        let end = digits_from(i + 1);
        if end == i + 1 {
            return false;
        }
        i = end;
    } else {
        let end = digits_from(i);
        if end == i {
            return false;
        }
        i = end;
        if at(b, i) == b'.' {
            i = digits_from(i + 1);
        }
    }
    if matches!(at(b, i), b'e' | b'E') {
        i += 1;
        if matches!(at(b, i), b'+' | b'-') {
            i += 1;
        }
        let end = digits_from(i);
        if end == i {
            return false;
        }
        i = end;
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` succeeding, for a string that starts with `.` (the only
/// case resolve passes unmodified text to it): decimal mantissa and exponent, `_` only between
/// digits (`underscoreOK`), the whole string consumed, and no overflow (`ErrRange`).
fn go_parse_float_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let mut saw_dot = false;
    let mut saw_digits = false;
    let mut underscores = false;
    while i < b.len() {
        match b[i] {
            b'_' => underscores = true,
            b'.' if !saw_dot => saw_dot = true,
            b'0'..=b'9' => saw_digits = true,
            _ => break,
        }
        i += 1;
    }
    if !saw_digits {
        return false;
    }
    if matches!(at(b, i), b'e' | b'E') {
        i += 1;
        if matches!(at(b, i), b'+' | b'-') {
            i += 1;
        }
        if !at(b, i).is_ascii_digit() {
            return false;
        }
        while at(b, i).is_ascii_digit() || at(b, i) == b'_' {
            underscores |= b[i] == b'_';
            i += 1;
        }
    }
    if i != b.len() || (underscores && !underscore_ok(s)) {
        return false;
    }
    s.replace('_', "").parse::<f64>().is_ok_and(f64::is_finite)
}

/// Go's `strconv.underscoreOK`: each `_` sits between digits (or after a base prefix).
fn underscore_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if matches!(b.first(), Some(b'+' | b'-')) {
        b = &b[1..];
    }
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || (hex && c.to_ascii_lowercase().is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// Go's `strconv.ParseUint(s, base, 64)` (base 0 or 2-36; called here on text whose `_` are
/// already removed, so `_` is simply an invalid digit).
fn go_parse_uint(s: &str, base: u32) -> Option<u64> {
    let mut b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut base = base;
    if base == 0 {
        base = 10;
        if b[0] == b'0' {
            match b.get(1).map(u8::to_ascii_lowercase) {
                Some(b'b') if b.len() >= 3 => (base, b) = (2, &b[2..]),
                Some(b'o') if b.len() >= 3 => (base, b) = (8, &b[2..]),
                Some(b'x') if b.len() >= 3 => (base, b) = (16, &b[2..]),
                _ => (base, b) = (8, &b[1..]),
            }
        }
    }
    let mut n: u64 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'a'..=b'z' => u32::from(c - b'a') + 10,
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return None,
        };
        if d >= base {
            return None;
        }
        n = n.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
    }
    Some(n)
}

/// Go's `strconv.ParseInt(s, base, 64)`: an optional sign, then `ParseUint`, in int64 range.
fn go_parse_int(s: &str, base: u32) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(digits, base)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// resolve.go `parseTimestamp`: `YYYY-` then one of go-yaml's layouts, parsed as Go's
/// `time.Parse` parses them.
fn parse_timestamp(s: &str) -> bool {
    use TimeField::{Day, Hour, Literal, Minute, Month, Second, Space, Year, ZoneZColon};
    let b = s.as_bytes();
    let year_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if year_digits != 4 || b.get(4) != Some(&b'-') {
        return false;
    }
    const DATE: [TimeField; 5] = [Year, Literal(b'-'), Month, Literal(b'-'), Day];
    const CLOCK: [TimeField; 6] = [
        Hour,
        Literal(b':'),
        Minute,
        Literal(b':'),
        Second,
        TimeField::FracSecond,
    ];
    let layouts: [Vec<TimeField>; 4] = [
        // "2006-1-2T15:4:5.999999999Z07:00"
        [
            &DATE[..],
            &[Literal(b'T')][..],
            &CLOCK[..],
            &[ZoneZColon][..],
        ]
        .concat(),
        // "2006-1-2t15:4:5.999999999Z07:00"
        [
            &DATE[..],
            &[Literal(b't')][..],
            &CLOCK[..],
            &[ZoneZColon][..],
        ]
        .concat(),
        // "2006-1-2 15:4:5.999999999"
        [&DATE[..], &[Space][..], &CLOCK[..]].concat(),
        // "2006-1-2"
        DATE.to_vec(),
    ];
    layouts.iter().any(|layout| go_time_parse(layout, b))
}

/// The layout elements of go-yaml's timestamp formats, as Go's `time` package reads them.
#[derive(Clone, Copy)]
enum TimeField {
    /// `2006`: exactly four digits.
    Year,
    /// `1`: month, one or two digits, 1-12.
    Month,
    /// `2`: day, one or two digits, checked against the month at the end.
    Day,
    /// `15`: hour, one or two digits, below 24.
    Hour,
    /// `4`: minute, one or two digits, below 60.
    Minute,
    /// `5`: second, one or two digits, below 60.
    Second,
    /// `.999999999`: optional `.` or `,` followed by any number of digits.
    FracSecond,
    /// `Z07:00`: `Z`, or `±hh:mm` with hh ≤ 24 and mm ≤ 60.
    ZoneZColon,
    /// A literal byte of the layout.
    Literal(u8),
    /// A space of the layout: one or more spaces.
    Space,
}

/// Go's `time.Parse(layout, value)` succeeding, for the fields above.
fn go_time_parse(layout: &[TimeField], value: &[u8]) -> bool {
    /// `getnum(s, false)`: one or two digits.
    fn getnum(v: &[u8]) -> Option<(u32, &[u8])> {
        let d0 = v.first().filter(|c| c.is_ascii_digit())?;
        match v.get(1).filter(|c| c.is_ascii_digit()) {
            Some(d1) => Some((u32::from(d0 - b'0') * 10 + u32::from(d1 - b'0'), &v[2..])),
            None => Some((u32::from(d0 - b'0'), &v[1..])),
        }
    }
    /// `getnum(s, true)` on a two-byte field.
    fn two_digits(v: &[u8]) -> Option<u32> {
        (v.len() == 2 && v.iter().all(u8::is_ascii_digit))
            .then(|| u32::from(v[0] - b'0') * 10 + u32::from(v[1] - b'0'))
    }
    let (mut year, mut month, mut day) = (0u32, 0u32, 0u32);
    let mut v = value;
    for field in layout {
        match *field {
            TimeField::Year => {
                if v.len() < 4 || !v[..4].iter().all(u8::is_ascii_digit) {
                    return false;
                }
                year = v[..4].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
                v = &v[4..];
            }
            TimeField::Month
            | TimeField::Day
            | TimeField::Hour
            | TimeField::Minute
            | TimeField::Second => {
                let Some((n, rest)) = getnum(v) else {
                    return false;
                };
                let in_range = match *field {
                    TimeField::Month => (1..=12).contains(&n),
                    TimeField::Day => true,
                    TimeField::Hour => n < 24,
                    _ => n < 60,
                };
                if !in_range {
                    return false;
                }
                match *field {
                    TimeField::Month => month = n,
                    TimeField::Day => day = n,
                    _ => {}
                }
                v = rest;
            }
            TimeField::FracSecond => {
                if v.len() >= 2 && matches!(v[0], b'.' | b',') && v[1].is_ascii_digit() {
                    let digits = v[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    v = &v[1 + digits..];
                }
            }
            TimeField::ZoneZColon => {
                if v.first() == Some(&b'Z') {
                    v = &v[1..];
                } else {
                    if v.len() < 6 || v[3] != b':' {
                        return false;
                    }
                    let (Some(hh), Some(mm)) = (two_digits(&v[1..3]), two_digits(&v[4..6])) else {
                        return false;
                    };
                    if hh > 24 || mm > 60 || !matches!(v[0], b'+' | b'-') {
                        return false;
                    }
                    v = &v[6..];
                }
            }
            TimeField::Literal(c) => {
                if v.first() != Some(&c) {
                    return false;
                }
                v = &v[1..];
            }
            TimeField::Space => {
                // `skip`: a layout space matches any run of spaces (none only at the end).
                if v.first().is_some_and(|c| *c != b' ') {
                    return false;
                }
                while v.first() == Some(&b' ') {
                    v = &v[1..];
                }
            }
        }
    }
    if !v.is_empty() {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days_in_month = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days_in_month).contains(&day)
}

// ----- sorter.go: mapping key order -----

/// The object's keys in go-yaml's order. A merge sort on [`natural_less`]: Rust's own sorts may
/// panic on an order that is not total, and this one, like Go's, is not always.
fn sorted_keys(map: &Map<String, Value>) -> Vec<&str> {
    fn merge_sort(mut keys: Vec<&str>) -> Vec<&str> {
        if keys.len() <= 1 {
            return keys;
        }
        let right = merge_sort(keys.split_off(keys.len() / 2));
        let left = merge_sort(keys);
        let mut merged = Vec::with_capacity(left.len() + right.len());
        let (mut l, mut r) = (left.into_iter().peekable(), right.into_iter().peekable());
        while let (Some(a), Some(b)) = (l.peek(), r.peek()) {
            if natural_less(b, a) {
                merged.extend(r.next());
            } else {
                merged.extend(l.next());
            }
        }
        merged.extend(l);
        merged.extend(r);
        merged
    }
    merge_sort(map.keys().map(String::as_str).collect())
}

/// sorter.go `keyList.Less` for two string keys: compare rune by rune; at the first difference,
/// two letters compare as runes, a non-letter sorts before a letter, and otherwise the runs of
/// digits starting there compare as numbers (then by length, then as runes). A key that is a
/// prefix of the other sorts first.
fn natural_less(a: &str, b: &str) -> bool {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    for i in 0..ar.len().min(br.len()) {
        if ar[i] == br[i] {
            continue;
        }
        let al = is_letter(ar[i]);
        let bl = is_letter(br[i]);
        if al && bl {
            return ar[i] < br[i];
        }
        if al || bl {
            return bl;
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            // A zero after other digits: both numbers get a leading 1 so zeros count.
            for j in (0..i).rev() {
                if !is_digit(ar[j]) {
                    break;
                }
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && is_digit(ar[ai]) {
            an = an
                .wrapping_mul(10)
                .wrapping_add(i64::from(ar[ai] as u32) - i64::from(b'0'));
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && is_digit(br[bi]) {
            bn = bn
                .wrapping_mul(10)
                .wrapping_add(i64::from(br[bi] as u32) - i64::from(b'0'));
            bi += 1;
        }
        if an != bn {
            return an < bn;
        }
        if ai != bi {
            return ai < bi;
        }
        return ar[i] < br[i];
    }
    ar.len() < br.len()
}

/// Go's `unicode.IsLetter` (categories L*). Exact for ASCII; for other characters Rust's
/// `char::is_alphabetic` (the Alphabetic property) minus numerics stands in, which also counts
/// some combining marks and circled letters that Go does not.
fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphabetic()
    } else {
        c.is_alphabetic() && !c.is_numeric()
    }
}

/// Go's `unicode.IsDigit` (category Nd, Unicode 15): each Nd block is ten consecutive code
/// points from its zero.
fn is_digit(c: char) -> bool {
    const ZEROS: [u32; 68] = [
        0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
        0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
        0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0,
        0xFF10, 0x104A0, 0x10D30, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
        0x11650, 0x116C0, 0x11730, 0x118E0, 0x11950, 0x11C50, 0x11D50, 0x11DA0, 0x11F50, 0x16A60,
        0x16AC0, 0x16B50, 0x1D7CE, 0x1D7D8, 0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0,
        0x1E950, 0x1FBF0,
    ];
    let c = c as u32;
    if c < 0x80 {
        return (0x30..0x3A).contains(&c);
    }
    ZEROS.iter().any(|zero| (*zero..zero + 10).contains(&c))
}

// ----- yamlprivateh.go character classes (byte-level, on valid UTF-8) -----

/// The byte at `i`, or 0 past the end (libyaml's strings are NUL-terminated).
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The length of the UTF-8 sequence starting with this byte.
fn width(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// `is_printable`: LF, printable ASCII, and U+00A0-U+D7FF, U+E000-U+FFFD except U+FEFF.
/// Characters beyond U+FFFF are not printable to libyaml (they get `\U` escapes).
fn is_printable(b: &[u8], i: usize) -> bool {
    let (c, next, next2) = (b[i], at(b, i + 1), at(b, i + 2));
    c == 0x0A
        || (0x20..=0x7E).contains(&c)
        || (c == 0xC2 && next >= 0xA0)
        || (c > 0xC2 && c < 0xED)
        || (c == 0xED && next < 0xA0)
        || c == 0xEE
        || (c == 0xEF
            && !(next == 0xBB && next2 == 0xBF)
            && !(next == 0xBF && (next2 == 0xBE || next2 == 0xBF)))
}

/// `is_blank`: space or tab.
fn is_blank(b: &[u8], i: usize) -> bool {
    matches!(at(b, i), b' ' | b'\t')
}

/// `is_break`: CR, LF, NEL (U+0085), LS (U+2028), PS (U+2029).
fn is_break(b: &[u8], i: usize) -> bool {
    let (c, next, next2) = (at(b, i), at(b, i + 1), at(b, i + 2));
    c == b'\r'
        || c == b'\n'
        || (c == 0xC2 && next == 0x85)
        || (c == 0xE2 && next == 0x80 && (next2 == 0xA8 || next2 == 0xA9))
}

/// `is_blankz`: blank, break or NUL.
fn is_blankz(b: &[u8], i: usize) -> bool {
    is_blank(b, i) || is_break(b, i) || at(b, i) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;
    use std::path::{Path, PathBuf};

    fn yaml(value: Value) -> String {
        let mut out = String::new();
        write_blob(&value, &mut out);
        out
    }

    /// The document for `{"k": s}`.
    fn value_line(s: &str) -> String {
        yaml(json!({ "k": s }))
    }

    // ----- strings that resolve.go reads as something else: double-quoted -----

    #[test]
    fn strings_that_resolve_to_other_types_are_double_quoted() {
        // resolveMap: YAML 1.1 bool words and null words.
        assert_eq!(value_line("true"), "---\nk: \"true\"\n");
        assert_eq!(value_line("no"), "---\nk: \"no\"\n");
        assert_eq!(value_line("Off"), "---\nk: \"Off\"\n");
        assert_eq!(value_line("y"), "---\nk: \"y\"\n");
        assert_eq!(value_line("null"), "---\nk: \"null\"\n");
        assert_eq!(value_line("~"), "---\nk: \"~\"\n");
        // "" is in resolveMap as null, so stringv asks for double quotes.
        assert_eq!(value_line(""), "---\nk: \"\"\n");
        // yamlStyleFloat matches, ParseFloat succeeds.
        assert_eq!(value_line("1.0"), "---\nk: \"1.0\"\n");
        assert_eq!(value_line("1e5"), "---\nk: \"1e5\"\n");
        assert_eq!(value_line(".5"), "---\nk: \".5\"\n");
        assert_eq!(value_line(".inf"), "---\nk: \".inf\"\n");
        // parseTimestamp: "YYYY-" then the RFC 3339 layout, the space layout, the date layout.
        assert_eq!(
            value_line("2021-02-21T00:00:00Z"),
            "---\nk: \"2021-02-21T00:00:00Z\"\n"
        );
        assert_eq!(
            value_line("2021-2-1 3:04:05.5"),
            "---\nk: \"2021-2-1 3:04:05.5\"\n"
        );
        assert_eq!(value_line("2021-02-21"), "---\nk: \"2021-02-21\"\n");
        // ParseInt(base 0) after removing "_": hex, underscores, octal, binary.
        assert_eq!(value_line("0x1F"), "---\nk: \"0x1F\"\n");
        assert_eq!(value_line("1_000"), "---\nk: \"1_000\"\n");
        assert_eq!(value_line("0o17"), "---\nk: \"0o17\"\n");
        assert_eq!(value_line("0b101"), "---\nk: \"0b101\"\n");
        assert_eq!(value_line("-42"), "---\nk: \"-42\"\n");
        // isBase60Float: resolves to !!str but is quoted anyway.
        assert_eq!(value_line("12:30:45"), "---\nk: \"12:30:45\"\n");
        assert_eq!(value_line("190:20:30.15"), "---\nk: \"190:20:30.15\"\n");
    }

    #[test]
    fn strings_that_stay_strings_are_plain() {
        // Not a date: the day is out of range for February (time.Parse fails).
        assert_eq!(value_line("2021-02-30"), "---\nk: 2021-02-30\n");
        // Versions, words, hint-less first bytes.
        assert_eq!(value_line("0.1.2"), "---\nk: 0.1.2\n");
        assert_eq!(value_line("v1.2.3"), "---\nk: v1.2.3\n");
        assert_eq!(value_line("yess"), "---\nk: yess\n");
        assert_eq!(value_line(">=1.0.0 <2.0.0"), "---\nk: '>=1.0.0 <2.0.0'\n");
        // '<' has no resolveTable hint, so resolve never consults the word table: "<<" is plain.
        assert_eq!(value_line("<<"), "---\nk: <<\n");
        // Overflow: ParseFloat returns ErrRange, so resolve falls through to !!str.
        assert_eq!(value_line("1e400"), "---\nk: 1e400\n");
        // Hex beyond 64 bits: ParseInt and ParseUint fail, and it is no yamlStyleFloat.
        assert_eq!(
            value_line("0x1FFFFFFFFFFFFFFFFF"),
            "---\nk: 0x1FFFFFFFFFFFFFFFFF\n"
        );
        // "12:60" does not match [0-5]?[0-9] after the colon: not base 60.
        assert_eq!(value_line("12:60"), "---\nk: 12:60\n");
    }

    // ----- strings plain would misread: analyze_scalar forbids plain, so single quotes -----

    #[test]
    fn indicators_and_edge_spaces_use_single_quotes() {
        // leading_space / trailing_space: no plain.
        assert_eq!(value_line(" a"), "---\nk: ' a'\n");
        assert_eq!(value_line("a "), "---\nk: 'a '\n");
        // '-' first and followed by whitespace: block indicator.
        assert_eq!(value_line("- a"), "---\nk: '- a'\n");
        assert_eq!(value_line("-a"), "---\nk: -a\n");
        // ':' followed by whitespace anywhere.
        assert_eq!(value_line("a: b"), "---\nk: 'a: b'\n");
        assert_eq!(value_line("a:b"), "---\nk: a:b\n");
        // '#' first, or after whitespace.
        assert_eq!(value_line("#x"), "---\nk: '#x'\n");
        assert_eq!(value_line("a #x"), "---\nk: 'a #x'\n");
        assert_eq!(value_line("a#x"), "---\nk: a#x\n");
        // Other first-character indicators, and "---" / "..." starts.
        assert_eq!(value_line("*a"), "---\nk: '*a'\n");
        assert_eq!(value_line("'q'"), "---\nk: '''q'''\n");
        assert_eq!(value_line("---x"), "---\nk: '---x'\n");
        assert_eq!(value_line("@x"), "---\nk: '@x'\n");
    }

    // ----- special characters: double quotes with escapes -----

    #[test]
    fn control_characters_are_escaped_in_double_quotes() {
        // is_printable fails for TAB, so no plain, no single quotes: double-quoted, `\t`.
        assert_eq!(value_line("a\tb"), "---\nk: \"a\\tb\"\n");
        // Other C0 controls: `\xXX` in upper-case hex; ESC has its own escape; DEL is \x7F.
        assert_eq!(value_line("a\u{1}b"), "---\nk: \"a\\x01b\"\n");
        assert_eq!(value_line("\u{1b}[0m"), "---\nk: \"\\e[0m\"\n");
        assert_eq!(value_line("x\u{7f}"), "---\nk: \"x\\x7F\"\n");
        // A CR is a break and is not printable: `\r`; `"` and `\` escaped inside.
        assert_eq!(value_line("a\rb\"c\\"), "---\nk: \"a\\rb\\\"c\\\\\"\n");
        // Beyond U+FFFF is not printable to libyaml: `\U` with eight digits.
        assert_eq!(value_line("ok 😀"), "---\nk: \"ok \\U0001F600\"\n");
        // NEL is a break and not printable.
        assert_eq!(value_line("a\u{85}b"), "---\nk: \"a\\Nb\"\n");
    }

    #[test]
    fn non_ascii_text_is_written_raw() {
        // unicode is on: printable non-ASCII characters need no quoting.
        assert_eq!(value_line("héllo wörld — ✓"), "---\nk: héllo wörld — ✓\n");
        assert_eq!(yaml(json!({ "ключ": "日本語" })), "---\nключ: 日本語\n");
    }

    // ----- literal block scalars -----

    #[test]
    fn multi_line_strings_are_literal_with_chomping() {
        // No final break: strip `-`.
        assert_eq!(value_line("a\nb"), "---\nk: |-\n  a\n  b\n");
        // One final break: clip (no indicator).
        assert_eq!(value_line("a\nb\n"), "---\nk: |\n  a\n  b\n");
        // Two final breaks: keep `+`; the document ends right after them.
        assert_eq!(value_line("a\nb\n\n"), "---\nk: |+\n  a\n  b\n\n");
        // Empty lines get no indentation; a lone "\n" is keep `+`.
        assert_eq!(value_line("a\n\nb"), "---\nk: |-\n  a\n\n  b\n");
        assert_eq!(value_line("\n"), "---\nk: |2+\n\n");
        // Leading space: the indentation indicator `2` comes before the chomping indicator.
        assert_eq!(value_line(" a\nb"), "---\nk: |2-\n   a\n  b\n");
        // Nested: the content is indented one level past the key's mapping.
        assert_eq!(
            yaml(json!({ "a": { "b": "x\ny\n" } })),
            "---\na:\n  b: |\n    x\n    y\n"
        );
        assert_eq!(yaml(json!({ "k": ["x\ny"] })), "---\nk:\n- |-\n  x\n  y\n");
    }

    #[test]
    fn multi_line_strings_that_cannot_be_literal_are_double_quoted() {
        // space_break (a space before a break): block style not allowed.
        assert_eq!(value_line("a \nb"), "---\nk: \"a \\nb\"\n");
        // trailing_space: block style not allowed.
        assert_eq!(value_line("a\nb "), "---\nk: \"a\\nb \"\n");
        // A special character anywhere.
        assert_eq!(value_line("a\n\tb"), "---\nk: \"a\\n\\tb\"\n");
    }

    // ----- folding at 80 columns -----

    fn words(word: &str, n: usize) -> String {
        vec![word; n].join(" ")
    }

    #[test]
    fn long_plain_strings_fold_past_column_80() {
        // "k: " + 20 words of 4 characters. After n words the column is 5n + 2; a space is
        // turned into a line break once the column is > 80 (n = 16, column 82), and the next
        // line starts at the scalar's indent (mapping indent 0 + 2).
        let expected = format!("---\nk: {}\n  {}\n", words("abcd", 16), words("abcd", 4));
        assert_eq!(value_line(&words("abcd", 20)), expected);
        // Columns count characters: four 2-byte characters per word fold at the same place.
        let expected = format!("---\nk: {}\n  {}\n", words("éééé", 16), words("éééé", 4));
        assert_eq!(value_line(&words("éééé", 20)), expected);
        // Keys never fold (allow_breaks is off in a simple key context).
        let key = words("abcd", 20);
        assert_eq!(yaml(json!({ key.clone(): 1 })), format!("---\n{key}: 1\n"));
        // No spaces, no folding.
        let long = "x".repeat(200);
        assert_eq!(value_line(&long), format!("---\nk: {long}\n"));
    }

    #[test]
    fn long_quoted_strings_fold_too() {
        // Single-quoted ('#' first): after `k: '` (column 4) and n words the column is 5n + 4;
        // the fold comes at n = 16 (column 84).
        let value = format!("#{}", words("abcd", 20));
        let expected = format!("---\nk: '#{}\n  {}'\n", words("abcd", 16), words("abcd", 4));
        assert_eq!(value_line(&value), expected);
        // Double-quoted (a BEL makes it special): after `k: "` the column is 5n + 3, fold at
        // n = 16 (column 83).
        let value = format!("{}\u{7}", words("abcd", 20));
        let expected = format!(
            "---\nk: \"{}\n  {}\\a\"\n",
            words("abcd", 16),
            words("abcd", 4)
        );
        assert_eq!(value_line(&value), expected);
        // When the folded space is followed by another space, the continuation line starts
        // with an escaped `\` so the kept space is not taken as indentation.
        let value = format!("{}  {}\u{7}", words("abcd", 16), words("abcd", 4));
        let expected = format!(
            "---\nk: \"{}\n  \\ {}\\a\"\n",
            words("abcd", 16),
            words("abcd", 4)
        );
        assert_eq!(value_line(&value), expected);
    }

    // ----- collections -----

    #[test]
    fn empty_collections_are_flow_and_sequences_are_indentless_in_mappings() {
        let value = json!({ "a": [], "b": {}, "c": [[]], "d": [{}], "e": [{ "x": 1, "y": [2] }] });
        let expected = "---\na: []\nb: {}\nc:\n- []\nd:\n- {}\ne:\n- x: 1\n  \"y\":\n  - 2\n";
        assert_eq!(yaml(value), expected);
        // A sequence inside a sequence is indented; a mapping item starts after "- ".
        assert_eq!(
            yaml(json!([[1, 2], { "a": null }])),
            "---\n- - 1\n  - 2\n- a: null\n"
        );
        assert_eq!(yaml(json!([])), "---\n[]\n");
        assert_eq!(yaml(json!({})), "---\n{}\n");
    }

    #[test]
    fn scalars_of_other_types() {
        // null, bools and ints plain; floats with FormatFloat 'g' (exponent form below 1e-4
        // and from 1e6 on, two exponent digits at least). The key "n" is a YAML 1.1 bool
        // word, so the key itself is double-quoted.
        let value = json!({
            "b": true, "n": null, "i": -3, "u": u64::MAX,
            "f1": 0.5, "f2": 1e21, "f3": 1e-7, "f4": 123456789.0, "f5": 100000.0, "f6": 1000000.0,
            "f7": 1.0, "f8": -2.5e-5, "f9": 0.0001,
        });
        let expected = "---\nb: true\nf1: 0.5\nf2: 1e+21\nf3: 1e-07\nf4: 1.23456789e+08\nf5: 100000\n\
                        f6: 1e+06\nf7: 1\nf8: -2.5e-05\nf9: 0.0001\ni: -3\n\"n\": null\nu: 18446744073709551615\n";
        assert_eq!(yaml(value), expected);
    }

    #[test]
    fn keys_in_natural_order() {
        // sorter.go: a non-letter sorts before a letter ("_x", "1" before "A"); two letters
        // compare as runes ("A" < "a2"); digit runs compare as numbers ("a2" < "a10"); between
        // "_x" and "1" the digit run 1 is larger than the empty run of "_".
        let value = json!({ "a10": 1, "a2": 2, "b": 3, "A": 4, "_x": 5, "1": 6 });
        // The key "1" resolves to an int, so it is double-quoted like a value would be.
        assert_eq!(
            yaml(value),
            "---\n_x: 5\n\"1\": 6\nA: 4\na2: 2\na10: 1\nb: 3\n"
        );
        assert!(natural_less("a1", "a01"));
        assert!(!natural_less("a01", "a1"));
        assert!(natural_less("v1.9", "v1.10"));
        assert!(natural_less("ab", "abc"));
    }

    #[test]
    fn keys_that_cannot_be_simple_use_the_complex_form() {
        // Multi-line key: `? ` then the key (literal is allowed outside a simple key context),
        // then `: ` at the mapping's indent.
        assert_eq!(yaml(json!({ "a\nb": "c" })), "---\n? |-\n  a\n  b\n: c\n");
        // Longer than 128 bytes.
        let key = "k".repeat(129);
        assert_eq!(
            yaml(json!({ key.clone(): [1] })),
            format!("---\n? {key}\n: - 1\n")
        );
        // Special characters in a simple key: double quotes.
        assert_eq!(yaml(json!({ "a\tb": 1 })), "---\n\"a\\tb\": 1\n");
        assert_eq!(yaml(json!({ "": 1 })), "---\n\"\": 1\n");
    }

    #[test]
    fn resolve_edge_cases() {
        assert!(!resolves_to_str("0b-1")); // the "0b" branch parses "-1" in base 2
        assert!(!resolves_to_str("+0x10"));
        assert!(!resolves_to_str("08")); // ParseInt fails (octal) but it is a yamlStyleFloat
        assert!(!resolves_to_str("9223372036854775808")); // ParseUint
        assert!(!resolves_to_str("-9223372036854775808"));
        assert!(!resolves_to_str("99999999999999999999")); // float
        assert!(!resolves_to_str("2021-02-21t10:00:00+02:00"));
        assert!(!resolves_to_str("2021-02-21T10:00:00,123-05:30"));
        assert!(!resolves_to_str("2020-02-29"));
        assert!(resolves_to_str("2021-02-29"));
        assert!(resolves_to_str("2021-02-21T24:00:00Z"));
        assert!(resolves_to_str("2021-02-21 10:00:00Z")); // the space layout has no zone
        assert!(!resolves_to_str(".5_5"));
        assert!(resolves_to_str("._5"));
        assert!(resolves_to_str("1.2.3"));
        assert!(resolves_to_str("-"));
        assert!(resolves_to_str("0x"));
        assert!(resolves_to_str("inf"));
    }

    // ----- fidelity against files opm wrote -----

    fn fixtures_dir() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("IIB_FIXTURES").map(PathBuf::from),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")),
            Some(PathBuf::from("/work/shared/fixtures")),
        ];
        candidates.into_iter().flatten().find(|dir| dir.is_dir())
    }

    /// How a file opm wrote compares with our rewrite of the blobs loaded from it.
    enum Fidelity {
        Identical,
        /// The file stops mid-line (no final line break: it was cut short after opm wrote
        /// it); our rewrite of what it holds is the file's bytes plus the final `\n`.
        IdenticalUpToTruncation,
        Differs(String),
    }

    /// Loads a multi-document YAML file and writes its blobs back with [`write_blob`].
    fn rewrite(path: &Path) -> Fidelity {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return Fidelity::Differs(format!("{}: {e}", path.display())),
        };
        let mut written = String::new();
        for document in serde_yaml_ng::Deserializer::from_slice(&bytes) {
            match Value::deserialize(document) {
                Ok(blob) => write_blob(&blob, &mut written),
                Err(e) => return Fidelity::Differs(format!("{}: {e}", path.display())),
            }
        }
        let original = String::from_utf8_lossy(&bytes);
        if written == original {
            return Fidelity::Identical;
        }
        if !original.ends_with('\n') && written.strip_suffix('\n') == Some(&*original) {
            return Fidelity::IdenticalUpToTruncation;
        }
        let mut ours = written.split('\n');
        let mut theirs = original.split('\n');
        let mut line = 1;
        loop {
            let (a, b) = (ours.next(), theirs.next());
            if a != b {
                return Fidelity::Differs(format!(
                    "{}: first difference at line {line}\n  opm:  {b:?}\n  ours: {a:?}",
                    path.display()
                ));
            }
            line += 1;
        }
    }

    /// Rewrites every `<dir>/*/catalog.yaml` and asserts each matches (a truncated file only
    /// up to its cut, reported on stderr).
    fn assert_fidelity(subdir: &str, expected_files: usize) {
        let Some(fixtures) = fixtures_dir() else {
            eprintln!("skipped: no fixtures directory (set IIB_FIXTURES)");
            return;
        };
        let dir = fixtures.join(subdir);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path().join("catalog.yaml"))
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        assert_eq!(
            files.len(),
            expected_files,
            "catalog.yaml files under {}",
            dir.display()
        );
        let (mut identical, mut truncated, mut failures) = (0, Vec::new(), Vec::new());
        for file in &files {
            match rewrite(file) {
                Fidelity::Identical => identical += 1,
                Fidelity::IdenticalUpToTruncation => truncated.push(file.display().to_string()),
                Fidelity::Differs(difference) => failures.push(difference),
            }
        }
        eprintln!(
            "{subdir}: {identical} of {} catalog.yaml files identical; truncated fixtures \
             identical up to their cut: {truncated:?}",
            files.len()
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn fidelity_community_v4_18_catalogs() {
        assert_fidelity("catalogs/community-v4.18", 29);
    }

    #[test]
    fn fidelity_community_operators_catalogs() {
        assert_fidelity("community-operators", 4);
    }
}
