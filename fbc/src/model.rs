//! Catalog validation as `opm validate` judges it: operator-registry's `declcfg.ConvertToModel`
//! followed by `model.Validate` (`alpha/declcfg/declcfg_to_model.go`, `alpha/model/model.go`),
//! with opm's words.
//!
//! - The conversion's checks stop at the first problem ([`ValidationError::Conversion`]), in
//!   opm's order: packages (names), channels (names, duplicate entries), bundles (package,
//!   duplicates, properties as Go's `encoding/json` decodes them, image pull specs as
//!   `docker/reference` parses them, versions and releases as blang/semver parses them),
//!   channel entries without bundles, the default channel, deprecations.
//! - The model's checks are all gathered in opm's tree ([`ValidationError::Invalid`]), printed
//!   as opm's `validationError.Error()` prints it (`├──`, `└──`).
//!
//! Where opm's order is Go's map order, which is random, ours is sorted by name: packages,
//! channels and bundles in the tree, and the package named when several have channel entries
//! without bundles. Everything else, including opm's quirks, is reproduced: only the last
//! channel of a package is checked for entries without bundles, a default channel that names
//! no channel becomes an empty channel, blang's range parser drops one-character parts and
//! ignores an unknown operator before a wildcard.

use super::declcfg::{Bundle, Channel, ChannelEntry, DeclarativeConfig, Property};
use super::gojson::format_f64;
use super::gojson::json_kind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

// ------------------------------------------------------------------------------------------
// Errors: opm's conversion error, and its aggregated validation tree (`alpha/model/error.go`).
// ------------------------------------------------------------------------------------------

/// One node of opm's `validationError`: a message and the problems found under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorTree {
    /// This node's message, such as `invalid package "foo"`.
    pub message: String,
    /// The problems found under it, in opm's order.
    pub sub_errors: Vec<SubError>,
}

/// A problem under an [`ErrorTree`] node: a plain message, or a node of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubError {
    /// A problem with nothing under it.
    Leaf(String),
    /// A node with problems of its own.
    Tree(ErrorTree),
}

impl ErrorTree {
    fn new(message: impl Into<String>) -> Self {
        ErrorTree {
            message: message.into(),
            sub_errors: Vec::new(),
        }
    }

    fn leaf(&mut self, message: impl Into<String>) {
        self.sub_errors.push(SubError::Leaf(message.into()));
    }

    fn tree(&mut self, tree: Option<ErrorTree>) {
        if let Some(tree) = tree {
            self.sub_errors.push(SubError::Tree(tree));
        }
    }

    /// opm's `orNil`: a node without problems is no error.
    fn or_none(self) -> Option<ErrorTree> {
        (!self.sub_errors.is_empty()).then_some(self)
    }

    /// Every leaf problem below this node, each prefixed with the messages of the nodes that
    /// lead to it (this node's own message excluded), joined with `": "`, e.g.
    /// `invalid package "foo": invalid channel "alpha": no channel head found in graph`.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in &self.sub_errors {
            match sub {
                SubError::Leaf(message) => out.push(message.clone()),
                SubError::Tree(tree) => out.extend(
                    tree.problems()
                        .into_iter()
                        .map(|p| format!("{}: {p}", tree.message)),
                ),
            }
        }
        out
    }

    /// opm's `errorPrefix`.
    fn render(&self, prefix: &[char], last: bool, out: &mut String) {
        out.extend(prefix);
        out.push_str(&self.message);
        out.push_str(if self.sub_errors.is_empty() {
            "\n"
        } else {
            ":\n"
        });
        for (i, sub) in self.sub_errors.iter().enumerate() {
            let mut sub_prefix = prefix.to_vec();
            if sub_prefix.len() >= 4 {
                sub_prefix.truncate(sub_prefix.len() - 4);
                sub_prefix.extend(if last { "    " } else { "│   " }.chars());
            }
            let sub_last = i + 1 == self.sub_errors.len();
            sub_prefix.extend(if sub_last { "└── " } else { "├── " }.chars());
            match sub {
                SubError::Tree(tree) => tree.render(&sub_prefix, sub_last, out),
                SubError::Leaf(message) => {
                    out.extend(sub_prefix.iter());
                    out.push_str(message);
                    out.push('\n');
                }
            }
        }
    }
}

/// Exactly opm's `validationError.Error()`.
impl fmt::Display for ErrorTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.render(&[], true, &mut out);
        f.write_str(out.trim())
    }
}

/// Why `opm validate` would refuse a catalog; `Display` is opm's error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A problem that stops opm before validating (its conversion step).
    #[error("{0}")]
    Conversion(String),
    /// Every problem the model's checks found, as opm's tree (root: `invalid index`).
    #[error("{0}")]
    Invalid(ErrorTree),
}

impl ValidationError {
    /// One line per problem, each with where it is (see [`ErrorTree::problems`]).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ValidationError::Conversion(message) => vec![message.clone()],
            ValidationError::Invalid(tree) => tree.problems(),
        }
    }
}

fn conversion(message: String) -> ValidationError {
    ValidationError::Conversion(message)
}

// ------------------------------------------------------------------------------------------
// Go's text: `%q` (strconv.Quote) and struct field lookup as encoding/json does it.
// ------------------------------------------------------------------------------------------

/// Go's `unicode.IsPrint`, closely: letters, marks, numbers, punctuation, symbols and the
/// ASCII space. Unassigned code points cannot be told apart here and count as printable.
fn go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_or_private = matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F
        | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB
        | 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !format_or_private
}

/// Go's `%q` for a string (`strconv.Quote`).
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Whether a JSON key names a Go struct field: encoding/json matches exactly or, failing
/// that, case-insensitively.
fn go_key_matches(key: &str, field: &str) -> bool {
    key == field
        || key.eq_ignore_ascii_case(field)
        || (!key.is_ascii() && key.to_lowercase() == field.to_lowercase())
}

/// An object's entries in the order opm decodes them: loading re-encodes every blob with
/// sorted keys.
fn sorted_entries(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// The value encoding/json decodes into struct field `field` of `object`: the last matching
/// key wins.
fn go_field<'v>(object: &'v Value, field: &str) -> Option<&'v Value> {
    let map = object.as_object()?;
    sorted_entries(map)
        .into_iter()
        .filter(|(k, _)| go_key_matches(k, field))
        .map(|(_, v)| v)
        .next_back()
}

/// A string field as Go decodes it (a missing or null value is `""`).
fn go_string<'v>(object: &'v Value, field: &str) -> &'v str {
    go_field(object, field)
        .and_then(Value::as_str)
        .unwrap_or("")
}

// ------------------------------------------------------------------------------------------
// Package names: Kubernetes' `IsDNS1123Label`.
// ------------------------------------------------------------------------------------------

/// Kubernetes' `IsDNS1123Label`, as opm reports it.
fn dns1123_label_errors(name: &str) -> Vec<&'static str> {
    let mut errors = Vec::new();
    if name.len() > 63 {
        errors.push("must be no more than 63 characters");
    }
    let valid = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.bytes().next().is_some_and(|b| b != b'-')
            && s.bytes().last().is_some_and(|b| b != b'-')
    };
    if !valid(name) {
        if name.split('.').all(valid) {
            errors.push("must not contain dots");
        } else {
            errors.push(
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            );
        }
    }
    errors
}

// ------------------------------------------------------------------------------------------
// Versions and ranges: blang/semver v4.0.0 (`Parse`, `NewPRVersion`, `ParseRange`), and
// opm's releases (`model.NewRelease`).
// ------------------------------------------------------------------------------------------

/// A prerelease identifier (blang's `PRVersion`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PreId {
    Num(u64),
    Alpha(String),
}

impl fmt::Display for PreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreId::Num(n) => write!(f, "{n}"),
            PreId::Alpha(s) => f.write_str(s),
        }
    }
}

/// A version as blang/semver holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SemVer {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<PreId>,
    build: Vec<String>,
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        for (i, pre) in self.pre.iter().enumerate() {
            write!(f, "{}{pre}", if i == 0 { "-" } else { "." })?;
        }
        if !self.build.is_empty() {
            write!(f, "+{}", self.build.join("."))?;
        }
        Ok(())
    }
}

fn only_digits(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_digit())
}

fn only_alphanum(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn leading_zero(s: &str) -> bool {
    s.len() > 1 && s.starts_with('0')
}

/// Go's `strconv.ParseUint(s, 10, 64)` on a string of ASCII digits (maybe empty).
fn parse_uint(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err(format!(
            "strconv.ParseUint: parsing {}: invalid syntax",
            q(s)
        ));
    }
    s.parse::<u64>()
        .map_err(|_| format!("strconv.ParseUint: parsing {}: value out of range", q(s)))
}

/// blang's `NewPRVersion`.
fn new_pr_version(s: &str) -> Result<PreId, String> {
    if s.is_empty() {
        return Err("Prerelease is empty".into());
    }
    if only_digits(s) {
        if leading_zero(s) {
            return Err(format!(
                "Numeric PreRelease version must not contain leading zeroes {}",
                q(s)
            ));
        }
        Ok(PreId::Num(parse_uint(s)?))
    } else if only_alphanum(s) {
        Ok(PreId::Alpha(s.to_string()))
    } else {
        Err(format!("Invalid character(s) found in prerelease {}", q(s)))
    }
}

/// blang's strict `Parse`, with its error texts.
fn parse_semver(s: &str) -> Result<SemVer, String> {
    if s.is_empty() {
        return Err("Version string empty".into());
    }
    let parts: Vec<&str> = s.splitn(3, '.').collect();
    if parts.len() != 3 {
        return Err("No Major.Minor.Patch elements found".into());
    }
    let number = |text: &str, what: &str, title: &str| -> Result<u64, String> {
        if !only_digits(text) {
            return Err(format!(
                "Invalid character(s) found in {what} number {}",
                q(text)
            ));
        }
        if leading_zero(text) {
            return Err(format!(
                "{title} number must not contain leading zeroes {}",
                q(text)
            ));
        }
        parse_uint(text)
    };
    let major = number(parts[0], "major", "Major")?;
    let minor = number(parts[1], "minor", "Minor")?;
    let mut patch_text = parts[2];
    let mut build: Vec<&str> = Vec::new();
    let mut pre: Vec<&str> = Vec::new();
    if let Some(i) = patch_text.find('+') {
        build = patch_text[i + 1..].split('.').collect();
        patch_text = &patch_text[..i];
    }
    if let Some(i) = patch_text.find('-') {
        pre = patch_text[i + 1..].split('.').collect();
        patch_text = &patch_text[..i];
    }
    let patch = number(patch_text, "patch", "Patch")?;
    let mut version = SemVer {
        major,
        minor,
        patch,
        ..SemVer::default()
    };
    for p in pre {
        version.pre.push(new_pr_version(p)?);
    }
    for b in build {
        if b.is_empty() {
            return Err("Build meta data is empty".into());
        }
        if !only_alphanum(b) {
            return Err(format!(
                "Invalid character(s) found in build meta data {}",
                q(b)
            ));
        }
        version.build.push(b.to_string());
    }
    Ok(version)
}

/// opm's `model.NewRelease` (a non-empty release): dot-separated prerelease identifiers, at
/// most 20 characters.
fn new_release(text: &str) -> Result<Vec<PreId>, String> {
    if text.len() > 20 {
        return Err(format!(
            "invalid release {}: exceeds maximum length of 20 characters",
            q(text)
        ));
    }
    let mut release = Vec::new();
    let mut errors = Vec::new();
    for (i, segment) in text.split('.').enumerate() {
        match new_pr_version(segment) {
            Ok(id) => release.push(id),
            Err(e) => errors.push(format!("segment {i}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(release)
    } else {
        // errors.Join separates the messages with newlines.
        Err(format!(
            "invalid release {}: {}",
            q(text),
            errors.join("\n")
        ))
    }
}

/// Go's `unicode.IsDigit` (category Nd); beyond ASCII, Rust's numeric class stands in.
fn go_is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// blang's `splitAndTrim`: split on spaces not preceded by `>`, `<` or `=` (a part of one
/// character is dropped, as blang drops it), then remove the spaces inside each part.
fn range_split_and_trim(s: &str) -> Vec<String> {
    let bytes = s.as_bytes();
    let mut parts = Vec::new();
    let mut last = 0usize;
    let mut last_char = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b' ' && !matches!(last_char, b'>' | b'<' | b'=') {
            if last + 1 < i {
                parts.push(&s[last..i]);
            }
            last = i + 1;
        } else if b != b' ' {
            last_char = b;
        }
    }
    if last + 1 < bytes.len() {
        parts.push(&s[last..]);
    }
    parts.into_iter().map(|p| p.replace(' ', "")).collect()
}

/// blang's `splitORParts`.
fn range_split_or(parts: Vec<String>) -> Result<Vec<Vec<String>>, String> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let total = parts.len();
    let mut last = 0;
    for (i, part) in parts.into_iter().enumerate() {
        if part == "||" {
            if i == 0 {
                return Err("First element in range is '||'".into());
            }
            out.push(std::mem::take(&mut current));
            last = i + 1;
        } else {
            current.push(part);
        }
    }
    if last == total {
        return Err("Last element in range is '||'".into());
    }
    out.push(current);
    Ok(out)
}

/// blang's `splitComparatorVersion`.
fn range_split_comparator(s: &str) -> Result<(&str, &str), String> {
    match s.char_indices().find(|(_, c)| go_is_digit(*c)) {
        Some((i, _)) => Ok((s[..i].trim(), &s[i..])),
        None => Err(format!("Could not get version from string: {}", q(s))),
    }
}

/// Go's `strconv.Atoi` followed by `+1`, as blang's `increment*Version` use it.
fn atoi_plus_one(s: &str) -> Option<String> {
    s.parse::<i64>().ok().map(|n| n.wrapping_add(1).to_string())
}

/// blang's `expandWildcardVersion` for one part holding an `x`.
fn range_expand_wildcard(part: &str, out: &mut Vec<String>) -> Result<(), String> {
    let (op, version) = range_split_comparator(part)?;
    // getWildcardType: the number of dot-separated parts when the last one is "x".
    let pieces: Vec<&str> = version.split('.').collect();
    let wildcard = if pieces.last() == Some(&"x") {
        pieces.len()
    } else {
        0
    };
    // createVersionFromWildcard
    let mut flat = version.replacen(".x.x", ".x", 1).replacen(".x", ".0", 1);
    if flat.split('.').count() == 2 {
        flat.push_str(".0");
    }
    let (operator, increment) = match op {
        ">" => (">=", true),
        ">=" => (">=", false),
        "<" => ("<", false),
        "<=" => ("<", true),
        "" | "=" | "==" => {
            out.push(format!(">={flat}"));
            ("<", true)
        }
        "!=" | "!" => {
            out.push(format!("<{flat}"));
            (">=", true)
        }
        _ => ("", false),
    };
    let result = if increment {
        let mut pieces: Vec<String> = flat.split('.').map(str::to_string).collect();
        let at = match wildcard {
            3 => Some(1), // a patch wildcard increments the minor version
            2 => Some(0), // a minor wildcard increments the major version
            _ => None,
        };
        match at.and_then(|at| atoi_plus_one(&pieces[at]).map(|n| (at, n))) {
            Some((at, n)) => {
                pieces[at] = n;
                pieces.join(".")
            }
            None => String::new(),
        }
    } else {
        flat
    };
    out.push(format!("{operator}{result}"));
    Ok(())
}

/// blang/semver v4.0.0's `ParseRange`, for its errors: comparators `>`, `>=`, `<`, `<=`,
/// `=`, `==`, `!`, `!=` or none; parts joined by spaces (AND) and `||` (OR); `x` wildcards.
fn parse_range(s: &str) -> Result<(), String> {
    let or_parts = range_split_or(range_split_and_trim(s))?;
    let mut expanded = Vec::new();
    for parts in or_parts {
        let mut new_parts = Vec::new();
        for part in parts {
            if part.contains('x') {
                range_expand_wildcard(&part, &mut new_parts)?;
            } else {
                new_parts.push(part);
            }
        }
        expanded.push(new_parts);
    }
    for part in expanded.iter().flatten() {
        let (op, version) = range_split_comparator(part)?;
        let joined = format!("{op}{version}");
        let problem = if !matches!(op, "" | "=" | "==" | ">" | ">=" | "<" | "<=" | "!" | "!=") {
            Some(format!(
                "Could not parse comparator {} in {}",
                q(op),
                q(&joined)
            ))
        } else {
            parse_semver(version).err().map(|e| {
                format!(
                    "Could not parse version {} in {}: {e}",
                    q(version),
                    q(&joined)
                )
            })
        };
        if let Some(problem) = problem {
            return Err(format!("Could not parse Range {}: {problem}", q(part)));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// Image pull specs: `reference.ParseNormalizedNamed` (go.podman.io/image/v5 docker/reference)
// and go-digest v1.0.0's `Parse`.
// ------------------------------------------------------------------------------------------

/// `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`
fn reference_name_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &c[start..i];
        let dashes = separator.bytes().all(|b| b == b'-');
        if !(separator == "." || separator == "_" || separator == "__" || dashes) {
            return false;
        }
    }
    true
}

/// `(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:\.<that>)*(?::[0-9]+)?`
fn reference_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (d, None),
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
    };
    host.split('.').all(component)
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `(?:domain/)?nameComponent(?:/nameComponent)*`
fn reference_name(name: &str) -> bool {
    let path = |p: &str| p.split('/').all(reference_name_component);
    path(name)
        || name
            .split_once('/')
            .is_some_and(|(domain, rest)| reference_domain(domain) && path(rest))
}

/// `[\w][\w.-]{0,127}`
fn reference_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`
fn reference_digest(digest: &str) -> bool {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return false;
    };
    let algorithm_ok = algorithm.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The anchored `ReferenceRegexp`: the length of the name and the digest, when `s` matches.
fn reference_match(s: &str) -> Option<(usize, Option<&str>)> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    if digest.is_some_and(|d| !reference_digest(d)) {
        return None;
    }
    // A tag follows the last ':' unless a '/' comes after it (then the ':' is a port's).
    let (name, tag) = match rest.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, Some(tag)),
        _ => (rest, None),
    };
    if tag.is_some_and(|t| !reference_tag(t)) || !reference_name(name) {
        return None;
    }
    Some((name.len(), digest))
}

/// go-digest v1.0.0's `Digest.Validate` (sha256, sha384 and sha512 are available in opm).
fn validate_digest(d: &str) -> Result<(), &'static str> {
    const FORMAT: &str = "invalid checksum digest format";
    let Some(i) = d.find(':').filter(|&i| i > 0 && i + 1 < d.len()) else {
        return Err(FORMAT);
    };
    let (algorithm, encoded) = (&d[..i], &d[i + 1..]);
    let size = match algorithm {
        "sha256" => 32,
        "sha384" => 48,
        "sha512" => 64,
        _ => {
            // DigestRegexpAnchored: [a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+
            let lower = |c: &str| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            };
            let matches = algorithm.split(['.', '+', '_', '-']).all(lower)
                && encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
            return Err(if matches {
                "unsupported digest algorithm"
            } else {
                FORMAT
            });
        }
    };
    if encoded.len() != size * 2 {
        return Err("invalid checksum digest length");
    }
    if !encoded
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(FORMAT);
    }
    Ok(())
}

/// `reference.Parse` (its errors).
fn parse_reference(s: &str) -> Result<(), String> {
    match reference_match(s) {
        None if s.is_empty() => Err("repository name must have at least one component".into()),
        None if reference_match(&s.to_lowercase()).is_some() => {
            Err("repository name must be lowercase".into())
        }
        None => Err("invalid reference format".into()),
        Some((name_len, _)) if name_len > 255 => {
            Err("repository name must not be more than 255 characters".into())
        }
        Some((_, Some(digest))) => validate_digest(digest).map_err(str::to_string),
        Some(_) => Ok(()),
    }
}

/// `reference.ParseNormalizedNamed`, for its errors.
fn parse_normalized_named(s: &str) -> Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    // splitDockerDomain
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((d, r)) if d.contains(['.', ':']) || d == "localhost" => (d, r.to_string()),
        _ => ("docker.io", s.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io";
    }
    if domain == "docker.io" && !remainder.contains('/') {
        remainder = format!("library/{remainder}");
    }
    let remote = remainder.split(':').next().unwrap_or("");
    if remote.to_lowercase() != remote {
        return Err("invalid reference format: repository name must be lowercase".into());
    }
    parse_reference(&format!("{domain}/{remainder}"))
}

/// opm's `validateImagePullSpec`: empty specs are not checked.
fn validate_pull_spec(spec: &str, what: impl FnOnce() -> String) -> Result<(), ValidationError> {
    if spec.is_empty() {
        return Ok(());
    }
    parse_normalized_named(spec).map_err(|e| {
        conversion(format!(
            "{}: invalid image pull spec {}: {e}",
            what(),
            q(spec)
        ))
    })
}

// ------------------------------------------------------------------------------------------
// Properties: `property.Parse`, i.e. Go's encoding/json decoding each known property value
// into its struct, with Go's type errors.
// ------------------------------------------------------------------------------------------

/// The Go types a property value is decoded into.
#[derive(Clone, Copy)]
enum GoType {
    /// A string kind, with its Go type name.
    Str(&'static str),
    Bool,
    /// `[]byte`: base64 text (or an array of small numbers).
    Bytes,
    /// `map[string]T`.
    Map(&'static GoType),
    Slice(&'static GoType),
    Struct(&'static GoStruct),
}

struct GoStruct {
    /// Package-qualified, as `reflect.Type.String()` prints it.
    qualified: &'static str,
    /// As `reflect.Type.Name()` prints it.
    name: &'static str,
    /// JSON name and type; fields opm does not look into are left out (they are skipped as
    /// unknown keys, so errors inside them go unnoticed here).
    fields: &'static [(&'static str, GoType)],
}

impl GoType {
    fn name(&self) -> String {
        match self {
            GoType::Str(name) => name.to_string(),
            GoType::Bool => "bool".into(),
            GoType::Bytes => "[]uint8".into(),
            GoType::Map(t) => format!("map[string]{}", t.name()),
            GoType::Slice(t) => format!("[]{}", t.name()),
            GoType::Struct(s) => s.qualified.into(),
        }
    }
}

const GO_STRING: GoType = GoType::Str("string");
const fn go_struct(
    qualified: &'static str,
    name: &'static str,
    fields: &'static [(&'static str, GoType)],
) -> GoStruct {
    GoStruct {
        qualified,
        name,
        fields,
    }
}

static PROPERTY_PACKAGE: GoStruct = go_struct(
    "property.Package",
    "Package",
    &[
        ("packageName", GO_STRING),
        ("version", GO_STRING),
        ("release", GO_STRING),
    ],
);
static PROPERTY_PACKAGE_REQUIRED: GoStruct = go_struct(
    "property.PackageRequired",
    "PackageRequired",
    &[("packageName", GO_STRING), ("versionRange", GO_STRING)],
);
static PROPERTY_GVK: GoStruct = go_struct(
    "property.GVK",
    "GVK",
    &[
        ("group", GO_STRING),
        ("kind", GO_STRING),
        ("version", GO_STRING),
    ],
);
static PROPERTY_GVK_REQUIRED: GoStruct = go_struct(
    "property.GVKRequired",
    "GVKRequired",
    &[
        ("group", GO_STRING),
        ("kind", GO_STRING),
        ("version", GO_STRING),
    ],
);
static PROPERTY_BUNDLE_OBJECT: GoStruct = go_struct(
    "property.BundleObject",
    "BundleObject",
    &[("data", GoType::Bytes)],
);
static PROPERTY_CHANNEL: GoStruct =
    go_struct("property.Channel", "Channel", &[("channelName", GO_STRING)]);
static APP_LINK: GoStruct = go_struct(
    "v1alpha1.AppLink",
    "AppLink",
    &[("name", GO_STRING), ("url", GO_STRING)],
);
static MAINTAINER: GoStruct = go_struct(
    "v1alpha1.Maintainer",
    "Maintainer",
    &[("name", GO_STRING), ("email", GO_STRING)],
);
static INSTALL_MODE: GoStruct = go_struct(
    "v1alpha1.InstallMode",
    "InstallMode",
    &[
        ("type", GoType::Str("v1alpha1.InstallModeType")),
        ("supported", GoType::Bool),
    ],
);
static GROUP_VERSION_KIND: GoStruct = go_struct(
    "v1.GroupVersionKind",
    "GroupVersionKind",
    &[
        ("group", GO_STRING),
        ("version", GO_STRING),
        ("kind", GO_STRING),
    ],
);
static API_SERVICE_DESCRIPTION: GoStruct = go_struct(
    "v1alpha1.APIServiceDescription",
    "APIServiceDescription",
    &[],
);
static CRD_DESCRIPTION: GoStruct = go_struct("v1alpha1.CRDDescription", "CRDDescription", &[]);
static API_SERVICE_DEFINITIONS: GoStruct = go_struct(
    "v1alpha1.APIServiceDefinitions",
    "APIServiceDefinitions",
    &[
        (
            "owned",
            GoType::Slice(&GoType::Struct(&API_SERVICE_DESCRIPTION)),
        ),
        (
            "required",
            GoType::Slice(&GoType::Struct(&API_SERVICE_DESCRIPTION)),
        ),
    ],
);
static CUSTOM_RESOURCE_DEFINITIONS: GoStruct = go_struct(
    "v1alpha1.CustomResourceDefinitions",
    "CustomResourceDefinitions",
    &[
        ("owned", GoType::Slice(&GoType::Struct(&CRD_DESCRIPTION))),
        ("required", GoType::Slice(&GoType::Struct(&CRD_DESCRIPTION))),
    ],
);
static PROPERTY_CSV_METADATA: GoStruct = go_struct(
    "property.CSVMetadata",
    "CSVMetadata",
    &[
        ("annotations", GoType::Map(&GO_STRING)),
        (
            "apiServiceDefinitions",
            GoType::Struct(&API_SERVICE_DEFINITIONS),
        ),
        (
            "crdDescriptions",
            GoType::Struct(&CUSTOM_RESOURCE_DEFINITIONS),
        ),
        ("description", GO_STRING),
        ("displayName", GO_STRING),
        (
            "installModes",
            GoType::Slice(&GoType::Struct(&INSTALL_MODE)),
        ),
        ("keywords", GoType::Slice(&GO_STRING)),
        ("labels", GoType::Map(&GO_STRING)),
        ("links", GoType::Slice(&GoType::Struct(&APP_LINK))),
        ("maintainers", GoType::Slice(&GoType::Struct(&MAINTAINER))),
        ("maturity", GO_STRING),
        ("minKubeVersion", GO_STRING),
        (
            "nativeAPIs",
            GoType::Slice(&GoType::Struct(&GROUP_VERSION_KIND)),
        ),
        ("provider", GoType::Struct(&APP_LINK)),
    ],
);

/// Where encoding/json is while decoding: the innermost struct and the JSON field path.
#[derive(Default)]
struct GoContext {
    structure: Option<&'static str>,
    fields: Vec<&'static str>,
}

impl GoContext {
    /// `UnmarshalTypeError.Error()`.
    fn type_error(&self, what: &str, ty: &GoType) -> String {
        if self.structure.is_some() || !self.fields.is_empty() {
            format!(
                "json: cannot unmarshal {what} into Go struct field {}.{} of type {}",
                self.structure.unwrap_or(""),
                self.fields.join("."),
                ty.name()
            )
        } else {
            format!(
                "json: cannot unmarshal {what} into Go value of type {}",
                ty.name()
            )
        }
    }
}

/// Go's `base64.StdEncoding.Decode`, for its error (`illegal base64 data at input byte N`).
fn go_base64_error(text: &str) -> Option<String> {
    let src = text.as_bytes();
    let corrupt = |at: usize| Some(format!("illegal base64 data at input byte {at}"));
    let valid = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let newline = |b: u8| b == b'\n' || b == b'\r';
    let mut si = 0;
    while si < src.len() {
        // decodeQuantum
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                if j == 0 {
                    return None;
                }
                return corrupt(si - j);
            }
            let c = src[si];
            si += 1;
            if valid(c) {
                j += 1;
                continue;
            }
            if newline(c) {
                continue;
            }
            if c != b'=' {
                return corrupt(si - 1);
            }
            match j {
                0 | 1 => return corrupt(si - 1),
                2 => {
                    while si < src.len() && newline(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return corrupt(src.len());
                    }
                    if src[si] != b'=' {
                        return corrupt(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && newline(src[si]) {
                si += 1;
            }
            if si < src.len() {
                return corrupt(si);
            }
            return None;
        }
    }
    None
}

/// Decodes `value` into `ty` as encoding/json would, returning its first error.
fn go_decode(value: &Value, ty: &GoType, at: &mut GoContext) -> Result<(), String> {
    match (value, ty) {
        (Value::Null, _) => Ok(()),
        (Value::String(_), GoType::Str(_)) | (Value::Bool(_), GoType::Bool) => Ok(()),
        (Value::String(s), GoType::Bytes) => go_base64_error(s).map_or(Ok(()), Err),
        (Value::Array(items), GoType::Bytes) => {
            const BYTE: GoType = GoType::Str("uint8");
            for item in items {
                match item {
                    Value::Null => {}
                    Value::Number(n) => {
                        let text = format_f64(n.as_f64().unwrap_or(f64::NAN));
                        if !text.parse::<u64>().is_ok_and(|n| n <= 255) {
                            return Err(at.type_error(&format!("number {text}"), &BYTE));
                        }
                    }
                    other => return Err(at.type_error(json_kind(other), &BYTE)),
                }
            }
            Ok(())
        }
        (Value::Array(items), GoType::Slice(element)) => {
            for item in items {
                go_decode(item, element, at)?;
            }
            Ok(())
        }
        (Value::Object(map), GoType::Map(element)) => {
            for (_, item) in sorted_entries(map) {
                go_decode(item, element, at)?;
            }
            Ok(())
        }
        (Value::Object(map), GoType::Struct(structure)) => {
            for (key, item) in sorted_entries(map) {
                let Some((field, field_type)) = structure
                    .fields
                    .iter()
                    .find(|(name, _)| go_key_matches(key, name))
                else {
                    continue;
                };
                let saved = at.structure;
                at.fields.push(field);
                at.structure = Some(structure.name);
                let result = go_decode(item, field_type, at);
                at.fields.pop();
                at.structure = saved;
                result?;
            }
            Ok(())
        }
        (other, ty) => Err(at.type_error(json_kind(other), ty)),
    }
}

/// opm's `property.Parse`: the number of `olm.package` properties, or the first
/// `ParseError`.
fn parse_properties(properties: &[Property]) -> Result<usize, String> {
    let mut packages = 0;
    for (i, property) in properties.iter().enumerate() {
        let ty = match property.kind.as_str() {
            "olm.package" => {
                packages += 1;
                &PROPERTY_PACKAGE
            }
            "olm.package.required" => &PROPERTY_PACKAGE_REQUIRED,
            "olm.gvk" => &PROPERTY_GVK,
            "olm.gvk.required" => &PROPERTY_GVK_REQUIRED,
            "olm.bundle.object" => &PROPERTY_BUNDLE_OBJECT,
            "olm.csv.metadata" => &PROPERTY_CSV_METADATA,
            "olm.channel" => &PROPERTY_CHANNEL,
            // Any other type only has to be JSON, which a loaded value always is.
            _ => continue,
        };
        go_decode(
            &property.value,
            &GoType::Struct(ty),
            &mut GoContext::default(),
        )
        .map_err(|e| format!("parse property[{i}] of type {}: {e}", q(&property.kind)))?;
    }
    Ok(packages)
}

// ------------------------------------------------------------------------------------------
// The upgrade graph: `Channel.Head` and `validateReplacesChain`.
// ------------------------------------------------------------------------------------------

/// opm's `Channel.Head` and `validateReplacesChain` over a channel's entries (names unique).
fn chain_problem<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str, &'a [String])>,
) -> Option<String> {
    let entries: Vec<(&str, &str, &[String])> = entries.collect();
    let mut incoming: HashMap<&str, usize> = HashMap::new();
    for &(_, replaces, skips) in &entries {
        if !replaces.is_empty() {
            *incoming.entry(replaces).or_default() += 1;
        }
        for skip in skips {
            *incoming.entry(skip).or_default() += 1;
        }
    }
    let mut heads: Vec<&str> = entries
        .iter()
        .map(|e| e.0)
        .filter(|n| !incoming.contains_key(n))
        .collect();
    if heads.is_empty() {
        return Some("no channel head found in graph".into());
    }
    if heads.len() > 1 {
        heads.sort_unstable();
        return Some(format!(
            "multiple channel heads found in graph: {}",
            heads.join(", ")
        ));
    }
    let by_name: HashMap<&str, (&str, &str, &[String])> =
        entries.iter().map(|e| (e.0, *e)).collect();
    let skipped: BTreeSet<&str> = entries
        .iter()
        .flat_map(|e| e.2.iter().map(String::as_str))
        .collect();
    let mut chain_from: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut from_head: BTreeSet<&str> = BTreeSet::from([heads[0]]);
    let mut current = by_name.get(heads[0]).copied();
    while let Some((name, replaces, _)) = current {
        chain_from.entry(name).or_insert_with(|| vec![name]);
        if skipped.contains(replaces) {
            break;
        }
        for chain in chain_from.values_mut() {
            chain.push(replaces);
        }
        if from_head.contains(replaces) {
            return Some(format!(
                "detected cycle in replaces chain of upgrade graph: {}",
                chain_from[replaces].join(" -> ")
            ));
        }
        from_head.insert(replaces);
        current = by_name.get(replaces).copied();
    }
    let all: BTreeSet<&str> = by_name.keys().copied().collect();
    let stranded: Vec<&str> = all
        .into_iter()
        .filter(|n| !from_head.contains(n) && !skipped.contains(n))
        .collect();
    if !stranded.is_empty() {
        return Some(format!(
            "channel contains one or more stranded bundles: {}",
            stranded.join(", ")
        ));
    }
    None
}

/// opm's `Channel.Head` and `validateReplacesChain` for one channel blob (its entries'
/// names unique), or `None` when its upgrade graph is sound. An empty channel has no graph
/// to judge (opm reports it as empty instead).
pub fn replaces_chain_error(channel: &Channel) -> Option<String> {
    if channel.entries.is_empty() {
        return None;
    }
    chain_problem(
        channel
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.replaces.as_str(), e.skips.as_slice())),
    )
}

// ------------------------------------------------------------------------------------------
// The model (`alpha/model`), as far as validation needs it.
// ------------------------------------------------------------------------------------------

/// What a bundle blob gives the channel entries of its name.
#[derive(Debug, Clone)]
struct BundleFacts<'a> {
    image: &'a str,
    /// Whether it has `olm.bundle.object` properties (opm's `Objects`).
    has_objects: bool,
    version: SemVer,
    release: Vec<PreId>,
}

struct ModelBundle<'a> {
    entry: &'a ChannelEntry,
    /// `None` for an entry no bundle blob names.
    facts: Option<BundleFacts<'a>>,
    deprecation: Option<String>,
}

impl ModelBundle<'_> {
    /// opm's `Bundle.VersionString`: the version, then `-release` when there is one.
    fn version_string(&self) -> String {
        match &self.facts {
            None => "0.0.0".into(),
            Some(facts) if facts.release.is_empty() => facts.version.to_string(),
            Some(facts) => {
                let release: Vec<String> = facts.release.iter().map(|r| r.to_string()).collect();
                format!("{}-{}", facts.version, release.join("."))
            }
        }
    }

    /// opm's `Bundle.Validate`.
    fn validate(&self, package: &str) -> Option<ErrorTree> {
        let name = self.entry.name.as_str();
        let mut tree = ErrorTree::new(format!("invalid bundle {}", q(name)));
        if name.is_empty() {
            tree.leaf("name must be set");
        }
        let release = self.facts.as_ref().is_some_and(|f| !f.release.is_empty());
        if release {
            let normalized = format!("{package}-v{}", self.version_string());
            if name != normalized {
                tree.leaf(format!(
                    "name {} does not match normalized name {}",
                    q(name),
                    q(&normalized)
                ));
            }
        }
        for (i, skip) in self.entry.skips.iter().enumerate() {
            if skip.is_empty() {
                tree.leaf(format!("skip[{i}] is empty"));
            }
        }
        let skip_range = self.entry.skip_range.as_str();
        if !skip_range.is_empty() {
            if let Err(e) = parse_range(skip_range) {
                tree.leaf(format!("invalid skipRange {}: {e}", q(skip_range)));
            }
        }
        match &self.facts {
            None => {
                tree.leaf("must be exactly one property with type \"olm.package\"");
                tree.leaf("bundle image must be set");
            }
            Some(facts) if facts.image.is_empty() && !facts.has_objects => {
                tree.leaf("bundle image must be set");
            }
            Some(_) => {}
        }
        if self.deprecation.as_deref() == Some("") {
            tree.leaf("invalid deprecation: message must be set");
        }
        if self
            .facts
            .as_ref()
            .is_some_and(|f| !f.version.build.is_empty() && release)
        {
            tree.leaf("cannot use build metadata in version with a release version");
        }
        tree.or_none()
    }
}

struct ModelChannel<'a> {
    name: &'a str,
    bundles: BTreeMap<&'a str, ModelBundle<'a>>,
    deprecation: Option<String>,
}

impl ModelChannel<'_> {
    /// opm's `Channel.Validate`.
    fn validate(&self, package: &str) -> Option<ErrorTree> {
        let mut tree = ErrorTree::new(format!("invalid channel {}", q(self.name)));
        if self.name.is_empty() {
            tree.leaf("channel name must not be empty");
        }
        if self.bundles.is_empty() {
            tree.leaf("channel must contain at least one bundle");
        } else if let Some(problem) = chain_problem(self.bundles.values().map(|b| {
            (
                b.entry.name.as_str(),
                b.entry.replaces.as_str(),
                b.entry.skips.as_slice(),
            )
        })) {
            tree.leaf(problem);
        }
        for bundle in self.bundles.values() {
            tree.tree(bundle.validate(package));
        }
        if self.deprecation.as_deref() == Some("") {
            tree.leaf("invalid deprecation: message must be set");
        }
        tree.or_none()
    }
}

struct ModelPackage<'a> {
    name: &'a str,
    default_channel: Option<&'a str>,
    channels: BTreeMap<&'a str, ModelChannel<'a>>,
    deprecation: Option<String>,
}

impl ModelPackage<'_> {
    /// opm's `Package.Validate`.
    fn validate(&self) -> Option<ErrorTree> {
        let mut tree = ErrorTree::new(format!("invalid package {}", q(self.name)));
        if self.name.is_empty() {
            tree.leaf("package name must not be empty");
        }
        if self.default_channel.is_none() {
            tree.leaf("default channel must be set");
        }
        if self.channels.is_empty() {
            tree.leaf("package must contain at least one channel");
        }
        for channel in self.channels.values() {
            tree.tree(channel.validate(self.name));
        }
        // validateUniqueBundleVersions: version strings in string order, names sorted.
        let mut by_version: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for bundle in self.channels.values().flat_map(|c| c.bundles.values()) {
            by_version
                .entry(bundle.version_string())
                .or_default()
                .insert(bundle.entry.name.as_str());
        }
        let duplicates: Vec<String> = by_version
            .iter()
            .filter(|(_, names)| names.len() > 1)
            .map(|(version, names)| {
                let names: Vec<&str> = names.iter().copied().collect();
                format!("{{{version}: [{}]}}", names.join(", "))
            })
            .collect();
        if !duplicates.is_empty() {
            tree.leaf(format!(
                "duplicate versions found in bundles: [{}]",
                duplicates.join(" ")
            ));
        }
        if self.deprecation.as_deref() == Some("") {
            tree.leaf("invalid deprecation: message must be set");
        }
        tree.or_none()
    }
}

// ------------------------------------------------------------------------------------------
// declcfg → model: `ConvertToModel`'s checks, in its order.
// ------------------------------------------------------------------------------------------

fn convert(
    config: &DeclarativeConfig,
) -> Result<BTreeMap<&str, ModelPackage<'_>>, ValidationError> {
    let mut packages: BTreeMap<&str, ModelPackage> = BTreeMap::new();
    let mut default_channels: HashMap<&str, &str> = HashMap::new();
    for package in &config.packages {
        let name = package.name.as_str();
        if name.is_empty() {
            return Err(conversion("config contains package with no name".into()));
        }
        if packages.contains_key(name) {
            return Err(conversion(format!("duplicate package {}", q(name))));
        }
        let errors = dns1123_label_errors(name);
        if !errors.is_empty() {
            return Err(conversion(format!(
                "invalid package name {}: [{}]",
                q(name),
                errors.join(" ")
            )));
        }
        default_channels.insert(name, package.default_channel.as_str());
        packages.insert(
            name,
            ModelPackage {
                name,
                default_channel: None,
                channels: BTreeMap::new(),
                deprecation: None,
            },
        );
    }

    // opm keeps, per package, the entries of the LAST channel seen, minus those a bundle
    // blob names; only those are reported as entries without bundles.
    let mut undefined_entries: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for channel in &config.channels {
        let (package_name, name) = (channel.package.as_str(), channel.name.as_str());
        let Some(package) = packages.get_mut(package_name) else {
            return Err(conversion(format!(
                "unknown package {} for channel {}",
                q(package_name),
                q(name)
            )));
        };
        if name.is_empty() {
            return Err(conversion(format!(
                "package {} contains channel with no name",
                q(package_name)
            )));
        }
        if package.channels.contains_key(name) {
            return Err(conversion(format!(
                "package {} has duplicate channel {}",
                q(package_name),
                q(name)
            )));
        }
        let mut bundles = BTreeMap::new();
        let mut entries = BTreeSet::new();
        for entry in &channel.entries {
            if bundles.contains_key(entry.name.as_str()) {
                return Err(conversion(format!(
                    "invalid package {}, channel {}: duplicate entry {}",
                    q(package_name),
                    q(name),
                    q(&entry.name)
                )));
            }
            entries.insert(entry.name.as_str());
            bundles.insert(
                entry.name.as_str(),
                ModelBundle {
                    entry,
                    facts: None,
                    deprecation: None,
                },
            );
        }
        undefined_entries.insert(package_name, entries);
        package.channels.insert(
            name,
            ModelChannel {
                name,
                bundles,
                deprecation: None,
            },
        );
        if default_channels.get(package_name) == Some(&name) {
            package.default_channel = Some(name);
        }
    }

    let mut package_bundles: HashMap<&str, HashSet<&str>> = HashMap::new();
    for bundle in &config.bundles {
        let facts = bundle_facts(bundle, &packages, &mut package_bundles)?;
        let (package_name, name) = (bundle.package.as_str(), bundle.name.as_str());
        if let Some(entries) = undefined_entries.get_mut(package_name) {
            entries.remove(name);
        }
        let mut found = false;
        if let Some(package) = packages.get_mut(package_name) {
            for channel in package.channels.values_mut() {
                if let Some(model_bundle) = channel.bundles.get_mut(name) {
                    model_bundle.facts = Some(facts.clone());
                    found = true;
                }
            }
        }
        if !found {
            return Err(conversion(format!(
                "package {}, bundle {} not found in any channel entries",
                q(package_name),
                q(name)
            )));
        }
    }
    // opm walks a Go map here: with several such packages it names one at random, we the
    // first by name.
    for (package, entries) in &undefined_entries {
        if !entries.is_empty() {
            let names: Vec<&str> = entries.iter().copied().collect();
            return Err(conversion(format!(
                "no olm.bundle blobs found in package {} for olm.channel entries [{}]",
                q(package),
                names.join(" ")
            )));
        }
    }

    // A default channel that names no channel becomes an empty channel of that name.
    for package in packages.values_mut() {
        let default_channel = default_channels[package.name];
        if !default_channel.is_empty() && package.default_channel.is_none() {
            package.channels.insert(
                default_channel,
                ModelChannel {
                    name: default_channel,
                    bundles: BTreeMap::new(),
                    deprecation: None,
                },
            );
            package.default_channel = Some(default_channel);
        }
    }

    apply_deprecations(config, &mut packages, &package_bundles)?;
    Ok(packages)
}

/// Checks 8–15 of `ConvertToModel` for one bundle blob.
fn bundle_facts<'a>(
    bundle: &'a Bundle,
    packages: &BTreeMap<&str, ModelPackage>,
    package_bundles: &mut HashMap<&'a str, HashSet<&'a str>>,
) -> Result<BundleFacts<'a>, ValidationError> {
    let (package, name) = (bundle.package.as_str(), bundle.name.as_str());
    if package.is_empty() {
        return Err(conversion(format!(
            "package name must be set for bundle {}",
            q(name)
        )));
    }
    if !packages.contains_key(package) {
        return Err(conversion(format!(
            "unknown package {} for bundle {}",
            q(package),
            q(name)
        )));
    }
    if !package_bundles.entry(package).or_default().insert(name) {
        return Err(conversion(format!(
            "package {} has duplicate bundle {}",
            q(package),
            q(name)
        )));
    }
    let count = parse_properties(&bundle.properties)
        .map_err(|e| conversion(format!("parse properties for bundle {}: {e}", q(name))))?;
    if count != 1 {
        return Err(conversion(format!(
            "package {} bundle {} must have exactly 1 \"olm.package\" property, found {count}",
            q(package),
            q(name)
        )));
    }
    let property = bundle
        .properties_of("olm.package")
        .next()
        .unwrap_or(&Value::Null);
    let property_package = go_string(property, "packageName");
    if property_package != package {
        return Err(conversion(format!(
            "package {} does not match \"olm.package\" property {}",
            q(package),
            q(property_package)
        )));
    }
    validate_pull_spec(&bundle.image, || {
        format!("package {} bundle {} image", q(package), q(name))
    })?;
    for (i, related) in bundle.related_images.iter().enumerate() {
        validate_pull_spec(&related.image, || {
            format!(
                "package {} bundle {} relatedImages[{i}].image",
                q(package),
                q(name)
            )
        })?;
    }
    let raw_version = go_string(property, "version");
    let version = parse_semver(raw_version).map_err(|e| {
        conversion(format!(
            "error parsing bundle {} version {}: {e}",
            q(name),
            q(raw_version)
        ))
    })?;
    let raw_release = go_string(property, "release");
    let release = if raw_release.is_empty() {
        Vec::new()
    } else {
        new_release(raw_release).map_err(|e| {
            conversion(format!(
                "error parsing bundle {} release version {}: {e}",
                q(name),
                q(raw_release)
            ))
        })?
    };
    Ok(BundleFacts {
        image: &bundle.image,
        has_objects: bundle.properties_of("olm.bundle.object").next().is_some(),
        version,
        release,
    })
}

/// A deprecation entry's reference as opm prints it (`%#v`).
fn go_reference(schema: &str, name: &str) -> String {
    format!(
        "declcfg.PackageScopedReference{{Schema:{}, Name:{}}}",
        q(schema),
        q(name)
    )
}

/// Checks 18–21 of `ConvertToModel`: deprecations, attached to the model.
fn apply_deprecations(
    config: &DeclarativeConfig,
    packages: &mut BTreeMap<&str, ModelPackage>,
    package_bundles: &HashMap<&str, HashSet<&str>>,
) -> Result<(), ValidationError> {
    let mut deprecated: HashSet<&str> = HashSet::new();
    for (i, deprecation) in config.deprecations.iter().enumerate() {
        let package_name = deprecation.package.as_str();
        if package_name.is_empty() {
            return Err(conversion(format!(
                "package name must be set for deprecation item {i}"
            )));
        }
        let Some(package) = packages.get_mut(package_name) else {
            return Err(conversion(format!(
                "cannot apply deprecations to an unknown package {}",
                q(package_name)
            )));
        };
        if !deprecated.insert(package_name) {
            return Err(conversion(format!(
                "expected a maximum of one deprecation per package: {}",
                q(package_name)
            )));
        }
        let mut references: HashSet<(&str, &str)> = HashSet::new();
        for (j, entry) in deprecation.entries.iter().enumerate() {
            let reference = go_field(entry, "reference").unwrap_or(&Value::Null);
            let schema = go_string(reference, "schema");
            let name = go_string(reference, "name");
            let message = go_string(entry, "message").to_string();
            if schema.is_empty() {
                return Err(conversion(format!(
                    "schema must be set for deprecation entry [{j}] for package {}",
                    q(package_name)
                )));
            }
            if !references.insert((schema, name)) {
                return Err(conversion(format!(
                    "duplicate deprecation entry {} for package {}",
                    go_reference(schema, name),
                    q(package_name)
                )));
            }
            match schema {
                "olm.bundle" => {
                    if !package_bundles
                        .get(package_name)
                        .is_some_and(|names| names.contains(name))
                    {
                        return Err(conversion(format!(
                            "cannot deprecate bundle {} for package {}: bundle not found",
                            q(name),
                            q(package_name)
                        )));
                    }
                    for channel in package.channels.values_mut() {
                        if let Some(bundle) = channel.bundles.get_mut(name) {
                            bundle.deprecation = Some(message.clone());
                        }
                    }
                }
                "olm.channel" => {
                    let Some(channel) = package.channels.get_mut(name) else {
                        return Err(conversion(format!(
                            "cannot deprecate channel {} for package {}: channel not found",
                            q(name),
                            q(package_name)
                        )));
                    };
                    channel.deprecation = Some(message);
                }
                "olm.package" => {
                    if !name.is_empty() {
                        return Err(conversion(format!(
                            "package name must be empty for deprecated package {} (specified {})",
                            q(package_name),
                            q(name)
                        )));
                    }
                    package.deprecation = Some(message);
                }
                _ => {
                    return Err(conversion(format!(
                        "cannot deprecate object {} referenced by entry {j} for package {}: object schema unknown",
                        go_reference(schema, name),
                        q(package_name)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Validates a catalog as `opm validate` does: `Err` holds opm's error, whose `Display` is
/// the text opm prints.
pub fn validate(config: &DeclarativeConfig) -> Result<(), ValidationError> {
    let packages = convert(config)?;
    let mut root = ErrorTree::new("invalid index");
    for package in packages.values() {
        root.tree(package.validate());
    }
    match root.or_none() {
        None => Ok(()),
        Some(tree) => Err(ValidationError::Invalid(tree)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(blobs: Vec<Value>) -> DeclarativeConfig {
        let mut config = DeclarativeConfig::default();
        for blob in blobs {
            match blob["schema"].as_str().unwrap() {
                "olm.package" => config.packages.push(serde_json::from_value(blob).unwrap()),
                "olm.channel" => config.channels.push(serde_json::from_value(blob).unwrap()),
                "olm.bundle" => config.bundles.push(serde_json::from_value(blob).unwrap()),
                "olm.deprecations" => config
                    .deprecations
                    .push(serde_json::from_value(blob).unwrap()),
                _ => config.others.push(blob),
            }
        }
        config
    }

    fn package(name: &str, default_channel: &str) -> Value {
        json!({"schema": "olm.package", "name": name, "defaultChannel": default_channel})
    }

    fn channel(package: &str, name: &str, entries: Value) -> Value {
        json!({"schema": "olm.channel", "package": package, "name": name, "entries": entries})
    }

    fn bundle(package: &str, name: &str, version: &str) -> Value {
        json!({"schema": "olm.bundle", "package": package, "name": name,
               "image": "quay.io/demo/bundle:v1",
               "properties": [{"type": "olm.package",
                               "value": {"packageName": package, "version": version}}]})
    }

    /// A valid one-package catalog (`demo`, channel `stable`: `b` replaces `a`), plus `extra`.
    fn demo(extra: Vec<Value>) -> DeclarativeConfig {
        let mut blobs = vec![
            package("demo", "stable"),
            channel(
                "demo",
                "stable",
                json!([{"name": "a"}, {"name": "b", "replaces": "a"}]),
            ),
            bundle("demo", "a", "1.0.0"),
            bundle("demo", "b", "2.0.0"),
        ];
        blobs.extend(extra);
        config(blobs)
    }

    fn conversion_error(config: &DeclarativeConfig) -> String {
        match validate(config) {
            Err(ValidationError::Conversion(message)) => message,
            other => panic!("expected a conversion error, got {other:?}"),
        }
    }

    fn tree_text(config: &DeclarativeConfig) -> String {
        match validate(config) {
            Err(e @ ValidationError::Invalid(_)) => e.to_string(),
            other => panic!("expected model problems, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_catalog_passes() {
        assert_eq!(validate(&demo(vec![])), Ok(()));
    }

    #[test]
    fn the_tree_prints_as_opm_prints_it() {
        // opm's own example (declcfg_to_model_test.go).
        let mut release = bundle("foo", "foo.v0.1.0+alpha.1.0.0-0.0.1", "0.1.0+alpha.1.0.0");
        release["properties"][0]["value"]["release"] = json!("0.0.1");
        let catalog = config(vec![
            package("foo", "alpha"),
            channel(
                "foo",
                "alpha",
                json!([{"name": "foo.v0.1.0+alpha.1.0.0-0.0.1"}]),
            ),
            release,
        ]);
        assert_eq!(
            tree_text(&catalog),
            "invalid index:
└── invalid package \"foo\":
    └── invalid channel \"alpha\":
        └── invalid bundle \"foo.v0.1.0+alpha.1.0.0-0.0.1\":
            ├── name \"foo.v0.1.0+alpha.1.0.0-0.0.1\" does not match normalized name \"foo-v0.1.0+alpha.1.0.0-0.0.1\"
            └── cannot use build metadata in version with a release version"
        );
    }

    #[test]
    fn siblings_are_sorted_and_prefixed_as_opm_prefixes_them() {
        let catalog = config(vec![
            package("b", ""),
            package("a", ""),
            channel(
                "a",
                "x",
                json!([{"name": "q"}, {"name": "p", "skips": [""]}]),
            ),
            bundle("a", "p", "1.0.0"),
            bundle("a", "q", "2.0.0"),
        ]);
        let error = validate(&catalog).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid index:
├── invalid package \"a\":
│   ├── default channel must be set
│   └── invalid channel \"x\":
│       ├── multiple channel heads found in graph: p, q
│       └── invalid bundle \"p\":
│           └── skip[0] is empty
└── invalid package \"b\":
    ├── default channel must be set
    └── package must contain at least one channel"
        );
        assert_eq!(
            error.problems(),
            [
                "invalid package \"a\": default channel must be set",
                "invalid package \"a\": invalid channel \"x\": multiple channel heads found in graph: p, q",
                "invalid package \"a\": invalid channel \"x\": invalid bundle \"p\": skip[0] is empty",
                "invalid package \"b\": default channel must be set",
                "invalid package \"b\": package must contain at least one channel",
            ]
        );
    }

    #[test]
    fn go_quoting() {
        assert_eq!(q("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(q("\n\t\u{7}\u{1b}\u{7f}"), r#""\n\t\a\x1b\x7f""#);
        assert_eq!(q("é→\u{200b}\u{a0}"), "\"é→\\u200b\\u00a0\"");
    }

    fn range_error(range: &str) -> String {
        parse_range(range).unwrap_err()
    }

    #[test]
    fn ranges_fail_with_blangs_words() {
        assert_eq!(range_error("|| >=1.0.0"), "First element in range is '||'");
        assert_eq!(range_error(">=1.0.0 ||"), "Last element in range is '||'");
        assert_eq!(range_error(" "), "Last element in range is '||'");
        assert_eq!(
            range_error(">=a"),
            "Could not get version from string: \">=a\""
        );
        assert_eq!(
            range_error("xx"),
            "Could not get version from string: \"xx\""
        );
        // blang drops a part of one character: nothing is left.
        assert_eq!(range_error("x"), "Last element in range is '||'");
        assert_eq!(
            range_error("1.0.0 >= "),
            "Could not get version from string: \">=\""
        );
        assert_eq!(
            range_error(">=1.0.0 <<2"),
            "Could not parse Range \"<<2\": Could not parse comparator \"<<\" in \"<<2\""
        );
        assert_eq!(
            range_error(">=1.0"),
            "Could not parse Range \">=1.0\": Could not parse version \"1.0\" in \">=1.0\": No Major.Minor.Patch elements found"
        );
        assert_eq!(
            range_error("1.2.*"),
            "Could not parse Range \"1.2.*\": Could not parse version \"1.2.*\" in \"1.2.*\": Invalid character(s) found in patch number \"*\""
        );
        assert_eq!(
            range_error("1.X"),
            "Could not parse Range \"1.X\": Could not parse version \"1.X\" in \"1.X\": No Major.Minor.Patch elements found"
        );
        assert_eq!(
            range_error("<1.0.0-01"),
            "Could not parse Range \"<1.0.0-01\": Could not parse version \"1.0.0-01\" in \"<1.0.0-01\": Numeric PreRelease version must not contain leading zeroes \"01\""
        );
        // Any part with an `x` goes through blang's wildcard expansion: with no wildcard to
        // increment, only the operator is left.
        assert_eq!(
            range_error(">1.0.0-fix"),
            "Could not get version from string: \">=\""
        );
    }

    #[test]
    fn ranges_blang_accepts() {
        for ok in [
            ">=4.1.0 <4.2.0",
            ">= 4.1.0 < 4.2.0",
            "<4.2.0",
            "=1.0.0",
            "==1.0.0",
            "!1.0.0",
            "!=1.0.0",
            "1.0.0",
            ">1.0.0 <2.0.0 || >3.0.0 !4.2.1",
            ">=1.x",
            "<=1.2.x",
            ">1.x.x",
            "1.x",
            "!=1.2.x",
            // blang drops one-character parts and an unknown operator before a wildcard.
            ">=1.0.0 <2.0.0 a",
            "<<1.x",
            ">x1.x",
            ">=1.0.0-rc.x",
        ] {
            assert_eq!(parse_range(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn versions_fail_with_blangs_words() {
        let cases = [
            ("", "Version string empty"),
            ("1.0", "No Major.Minor.Patch elements found"),
            (
                "v1.0.0",
                "Invalid character(s) found in major number \"v1\"",
            ),
            (
                "01.0.0",
                "Major number must not contain leading zeroes \"01\"",
            ),
            ("1.a.0", "Invalid character(s) found in minor number \"a\""),
            (
                "1.00.0",
                "Minor number must not contain leading zeroes \"00\"",
            ),
            ("1.0.x", "Invalid character(s) found in patch number \"x\""),
            (
                "1.0.01",
                "Patch number must not contain leading zeroes \"01\"",
            ),
            (".1.0", "strconv.ParseUint: parsing \"\": invalid syntax"),
            (
                "99999999999999999999.0.0",
                "strconv.ParseUint: parsing \"99999999999999999999\": value out of range",
            ),
            ("1.0.0-", "Prerelease is empty"),
            ("1.0.0-a..b", "Prerelease is empty"),
            (
                "1.0.0-01",
                "Numeric PreRelease version must not contain leading zeroes \"01\"",
            ),
            (
                "1.0.0-a_b",
                "Invalid character(s) found in prerelease \"a_b\"",
            ),
            ("1.0.0+", "Build meta data is empty"),
            (
                "1.0.0+a_b",
                "Invalid character(s) found in build meta data \"a_b\"",
            ),
        ];
        for (version, error) in cases {
            assert_eq!(parse_semver(version), Err(error.to_string()), "{version}");
        }
        assert_eq!(
            parse_semver("1.2.3-rc.1+build.01").unwrap().to_string(),
            "1.2.3-rc.1+build.01"
        );
        let mut bad = bundle("demo", "b", "1.0");
        bad["image"] = json!("");
        let catalog = config(vec![
            package("demo", "stable"),
            channel("demo", "stable", json!([{"name": "b"}])),
            bad,
        ]);
        assert_eq!(
            conversion_error(&catalog),
            "error parsing bundle \"b\" version \"1.0\": No Major.Minor.Patch elements found"
        );
    }

    #[test]
    fn releases_are_checked_as_opm_checks_them() {
        let with_release = |release: &str| {
            let mut b = bundle("demo", "demo-v1.0.0-1", "1.0.0");
            b["properties"][0]["value"]["release"] = json!(release);
            config(vec![
                package("demo", "stable"),
                channel("demo", "stable", json!([{"name": "demo-v1.0.0-1"}])),
                b,
            ])
        };
        assert_eq!(validate(&with_release("1")), Ok(()));
        assert_eq!(
            conversion_error(&with_release("123456789012345678901")),
            "error parsing bundle \"demo-v1.0.0-1\" release version \"123456789012345678901\": invalid release \"123456789012345678901\": exceeds maximum length of 20 characters"
        );
        assert_eq!(
            conversion_error(&with_release("01..a_b")),
            "error parsing bundle \"demo-v1.0.0-1\" release version \"01..a_b\": invalid release \"01..a_b\": segment 0: Numeric PreRelease version must not contain leading zeroes \"01\"\nsegment 1: Prerelease is empty\nsegment 2: Invalid character(s) found in prerelease \"a_b\""
        );
        assert_eq!(
            tree_text(&with_release("2")),
            "invalid index:
└── invalid package \"demo\":
    └── invalid channel \"stable\":
        └── invalid bundle \"demo-v1.0.0-1\":
            └── name \"demo-v1.0.0-1\" does not match normalized name \"demo-v1.0.0-2\""
        );
    }

    fn reference_error(spec: &str) -> String {
        parse_normalized_named(spec).unwrap_err()
    }

    #[test]
    fn pull_specs_fail_with_the_reference_librarys_words() {
        let hex64 = "a".repeat(64);
        assert_eq!(
            reference_error(&hex64),
            format!(
                "invalid repository name ({hex64}), cannot specify 64-byte hexadecimal strings"
            )
        );
        assert_eq!(
            reference_error("UPPER/Case:tag"),
            "invalid reference format: repository name must be lowercase"
        );
        assert_eq!(
            reference_error("quay.io/Org/x@sha256:abc"),
            "invalid reference format: repository name must be lowercase"
        );
        for bad in [
            "quay.io/foo bar",
            "quay.io/foo:",
            "quay.io/foo:-tag",
            "quay.io/-foo",
            "quay.io/foo//bar",
            "quay.io/foo@sha256:abc",
            "quay.io/foo@@sha256:abc",
            "quay.io:port/foo",
            ":tag",
        ] {
            assert_eq!(reference_error(bad), "invalid reference format", "{bad}");
        }
        let long = format!("quay.io/{}", "a".repeat(250));
        assert_eq!(
            reference_error(&long),
            "repository name must not be more than 255 characters"
        );
        // Docker Hub names count with their implied `docker.io/library/`.
        assert_eq!(
            reference_error(&"a".repeat(240)),
            "repository name must not be more than 255 characters"
        );
        assert_eq!(
            reference_error(&format!("quay.io/foo@sha256:{}", "a".repeat(63))),
            "invalid checksum digest length"
        );
        assert_eq!(
            reference_error(&format!("quay.io/foo@sha256:{}", "A".repeat(64))),
            "invalid checksum digest format"
        );
        assert_eq!(
            reference_error(&format!("quay.io/foo@md5:{}", "a".repeat(32))),
            "unsupported digest algorithm"
        );
        assert_eq!(
            reference_error(&format!("quay.io/foo:v1@MD5:{}", "a".repeat(32))),
            "invalid checksum digest format"
        );
        assert_eq!(
            parse_reference(""),
            Err("repository name must have at least one component".into())
        );
        assert_eq!(
            parse_reference("quay.io/Foo"),
            Err("repository name must be lowercase".into())
        );
        for good in [
            "busybox",
            "library/busybox:latest",
            "index.docker.io/foo",
            "localhost/foo",
            "localhost:5000/foo/bar:v1.0_x-y",
            "Quay.IO/foo",
            "quay.io/a.b/c__d/e---f:Tag",
            &format!("quay.io/foo@sha256:{}", "0123456789abcdef".repeat(4)),
            &format!("quay.io/foo:1@sha512:{}", "a".repeat(128)),
        ] {
            assert_eq!(parse_normalized_named(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn pull_specs_are_checked_for_the_image_then_each_related_image() {
        let mut b = bundle("demo", "b", "2.0.0");
        b["relatedImages"] = json!([
            {"name": "ok", "image": "quay.io/demo/ok:1"},
            {"name": "empty", "image": ""},
            {"name": "bad", "image": "quay.io/demo/Bad:1"}
        ]);
        let catalog = config(vec![
            package("demo", "stable"),
            channel("demo", "stable", json!([{"name": "b"}])),
            b.clone(),
        ]);
        assert_eq!(
            conversion_error(&catalog),
            "package \"demo\" bundle \"b\" relatedImages[2].image: invalid image pull spec \"quay.io/demo/Bad:1\": invalid reference format: repository name must be lowercase"
        );
        b["image"] = json!("quay.io/demo/b:");
        let catalog = config(vec![
            package("demo", "stable"),
            channel("demo", "stable", json!([{"name": "b"}])),
            b,
        ]);
        assert_eq!(
            conversion_error(&catalog),
            "package \"demo\" bundle \"b\" image: invalid image pull spec \"quay.io/demo/b:\": invalid reference format"
        );
    }

    #[test]
    fn properties_are_decoded_as_go_decodes_them() {
        let with_properties = |properties: Value| {
            let mut b = bundle("demo", "b", "1.0.0");
            b["properties"] = properties;
            config(vec![
                package("demo", "stable"),
                channel("demo", "stable", json!([{"name": "b"}])),
                b,
            ])
        };
        let package_value =
            json!({"type": "olm.package", "value": {"packageName": "demo", "version": "1.0.0"}});
        let cases = [
            (
                json!([{"type": "olm.package", "value": {"packageName": 1, "version": "1.0.0"}}]),
                "parse properties for bundle \"b\": parse property[0] of type \"olm.package\": json: cannot unmarshal number into Go struct field Package.packageName of type string",
            ),
            (
                json!([package_value, {"type": "olm.gvk", "value": "x"}]),
                "parse properties for bundle \"b\": parse property[1] of type \"olm.gvk\": json: cannot unmarshal string into Go value of type property.GVK",
            ),
            (
                json!([package_value, {"type": "olm.csv.metadata", "value": {"links": [{"url": true}]}}]),
                "parse properties for bundle \"b\": parse property[1] of type \"olm.csv.metadata\": json: cannot unmarshal bool into Go struct field AppLink.links.url of type string",
            ),
            (
                json!([package_value, {"type": "olm.csv.metadata", "value": {"installModes": [{"type": 1}]}}]),
                "parse properties for bundle \"b\": parse property[1] of type \"olm.csv.metadata\": json: cannot unmarshal number into Go struct field InstallMode.installModes.type of type v1alpha1.InstallModeType",
            ),
            (
                json!([package_value, {"type": "olm.bundle.object", "value": {"data": "abc"}}]),
                "parse properties for bundle \"b\": parse property[1] of type \"olm.bundle.object\": illegal base64 data at input byte 0",
            ),
            (
                json!([package_value, {"type": "olm.bundle.object", "value": {"data": "ab!d"}}]),
                "parse properties for bundle \"b\": parse property[1] of type \"olm.bundle.object\": illegal base64 data at input byte 2",
            ),
            (
                json!([]),
                "package \"demo\" bundle \"b\" must have exactly 1 \"olm.package\" property, found 0",
            ),
            (
                json!([package_value, package_value]),
                "package \"demo\" bundle \"b\" must have exactly 1 \"olm.package\" property, found 2",
            ),
            (
                json!([{"type": "olm.package", "value": {"packageName": "other", "version": "1.0.0"}}]),
                "package \"demo\" does not match \"olm.package\" property \"other\"",
            ),
            (
                json!([{"type": "olm.package", "value": null}]),
                "package \"demo\" does not match \"olm.package\" property \"\"",
            ),
        ];
        for (properties, error) in cases {
            assert_eq!(conversion_error(&with_properties(properties)), error);
        }
        let fine = json!([
            {"type": "olm.package", "value": {"PackageName": "demo", "version": "1.0.0"}},
            {"type": "olm.bundle.object", "value": {"data": "eyJhIjoxfQ=="}},
            {"type": "olm.csv.metadata", "value": {"provider": {"name": "x"}, "unknown": 1}},
            {"type": "something.else", "value": [1, 2]}
        ]);
        assert_eq!(validate(&with_properties(fine)), Ok(()));
        assert_eq!(go_base64_error("YQ=\n="), None);
        assert_eq!(
            go_base64_error("YQ="),
            Some("illegal base64 data at input byte 3".into())
        );
        assert_eq!(
            go_base64_error("YQ==YQ=="),
            Some("illegal base64 data at input byte 4".into())
        );
        assert_eq!(
            go_base64_error("Y"),
            Some("illegal base64 data at input byte 0".into())
        );
    }

    #[test]
    fn names_and_structure_stop_the_conversion() {
        let cases: Vec<(Vec<Value>, &str)> = vec![
            (
                vec![package("", "s")],
                "config contains package with no name",
            ),
            (
                vec![package("a.b", "s")],
                "invalid package name \"a.b\": [must not contain dots]",
            ),
            (
                vec![package(&"a".repeat(64), "s")],
                &*Box::leak(
                    format!(
                        "invalid package name \"{}\": [must be no more than 63 characters]",
                        "a".repeat(64)
                    )
                    .into_boxed_str(),
                ),
            ),
            (
                vec![package("demo", "s"), channel("demo", "", json!([]))],
                "package \"demo\" contains channel with no name",
            ),
            (
                vec![
                    package("demo", "s"),
                    channel("demo", "s", json!([])),
                    channel("demo", "s", json!([])),
                ],
                "package \"demo\" has duplicate channel \"s\"",
            ),
            (
                vec![
                    package("demo", "s"),
                    channel("demo", "s", json!([{"name": "a"}, {"name": "a"}])),
                ],
                "invalid package \"demo\", channel \"s\": duplicate entry \"a\"",
            ),
            (
                vec![
                    package("demo", "s"),
                    channel("demo", "s", json!([{"name": "a"}])),
                    json!({"schema": "olm.bundle", "name": "a"}),
                ],
                "package name must be set for bundle \"a\"",
            ),
            (
                vec![package("demo", "s"), bundle("other", "a", "1.0.0")],
                "unknown package \"other\" for bundle \"a\"",
            ),
            (
                vec![
                    package("demo", "s"),
                    channel("demo", "s", json!([{"name": "a"}])),
                    bundle("demo", "a", "1.0.0"),
                    bundle("demo", "a", "1.0.0"),
                ],
                "package \"demo\" has duplicate bundle \"a\"",
            ),
        ];
        for (blobs, error) in cases {
            assert_eq!(conversion_error(&config(blobs)), error);
        }
    }

    #[test]
    fn only_the_last_channel_is_checked_for_entries_without_bundles() {
        // `x` is in the first channel only: opm lets it through to validation.
        let catalog = config(vec![
            package("demo", "stable"),
            channel(
                "demo",
                "fast",
                json!([{"name": "a"}, {"name": "x", "replaces": "a"}]),
            ),
            channel("demo", "stable", json!([{"name": "a"}])),
            bundle("demo", "a", "0.0.0"),
        ]);
        assert_eq!(
            tree_text(&catalog),
            "invalid index:
└── invalid package \"demo\":
    ├── invalid channel \"fast\":
    │   └── invalid bundle \"x\":
    │       ├── must be exactly one property with type \"olm.package\"
    │       └── bundle image must be set
    └── duplicate versions found in bundles: [{0.0.0: [a, x]}]"
        );
        // In the last channel, it stops the conversion.
        let catalog = config(vec![
            package("demo", "stable"),
            channel("demo", "stable", json!([{"name": "a"}])),
            channel(
                "demo",
                "fast",
                json!([{"name": "a"}, {"name": "y"}, {"name": "x", "replaces": "a"}]),
            ),
            bundle("demo", "a", "1.0.0"),
        ]);
        assert_eq!(
            conversion_error(&catalog),
            "no olm.bundle blobs found in package \"demo\" for olm.channel entries [x y]"
        );
    }

    #[test]
    fn duplicate_versions_are_reported_across_channels() {
        let catalog = config(vec![
            package("demo", "stable"),
            channel(
                "demo",
                "stable",
                json!([{"name": "a"}, {"name": "b", "replaces": "a"}, {"name": "c", "replaces": "b"}]),
            ),
            channel("demo", "fast", json!([{"name": "d"}, {"name": "c"}])),
            bundle("demo", "a", "1.0.0"),
            bundle("demo", "b", "1.0.0"),
            bundle("demo", "c", "10.0.0"),
            bundle("demo", "d", "10.0.0"),
        ]);
        let error = validate(&catalog).unwrap_err();
        assert_eq!(
            error.problems(),
            [
                "invalid package \"demo\": invalid channel \"fast\": multiple channel heads found in graph: c, d",
                "invalid package \"demo\": duplicate versions found in bundles: [{1.0.0: [a, b]} {10.0.0: [c, d]}]",
            ]
        );
    }

    #[test]
    fn bundle_problems_in_the_tree() {
        let mut image_less = bundle("demo", "b", "2.0.0");
        image_less["image"] = json!("");
        let catalog = config(vec![
            package("demo", "stable"),
            channel(
                "demo",
                "stable",
                json!([{"name": "a", "skipRange": "<1.0"},
                       {"name": "b", "replaces": "a", "skips": ["", "a"], "skipRange": ">=1.0.0 <2.0.0"}]),
            ),
            bundle("demo", "a", "1.0.0"),
            image_less,
        ]);
        assert_eq!(
            tree_text(&catalog),
            "invalid index:
└── invalid package \"demo\":
    └── invalid channel \"stable\":
        ├── invalid bundle \"a\":
        │   └── invalid skipRange \"<1.0\": Could not parse Range \"<1.0\": Could not parse version \"1.0\" in \"<1.0\": No Major.Minor.Patch elements found
        └── invalid bundle \"b\":
            ├── skip[0] is empty
            └── bundle image must be set"
        );
        // Bundle objects stand in for an image.
        let mut with_objects = bundle("demo", "a", "1.0.0");
        with_objects["image"] = json!("");
        with_objects["properties"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "olm.bundle.object", "value": {"data": "e30="}}));
        let catalog = config(vec![
            package("demo", "stable"),
            channel("demo", "stable", json!([{"name": "a"}])),
            with_objects,
        ]);
        assert_eq!(validate(&catalog), Ok(()));
    }

    fn deprecations(entries: Value) -> Value {
        json!({"schema": "olm.deprecations", "package": "demo", "entries": entries})
    }

    #[test]
    fn deprecations_stop_the_conversion_with_opms_words() {
        let cases = [
            (
                vec![json!({"schema": "olm.deprecations", "package": "", "entries": []})],
                "package name must be set for deprecation item 0",
            ),
            (
                vec![json!({"schema": "olm.deprecations", "package": "nope", "entries": []})],
                "cannot apply deprecations to an unknown package \"nope\"",
            ),
            (
                vec![deprecations(json!([])), deprecations(json!([]))],
                "expected a maximum of one deprecation per package: \"demo\"",
            ),
            (
                vec![deprecations(
                    json!([{"reference": {"schema": "olm.package"}, "message": "m"},
                           {"reference": {"name": "a"}, "message": "m"}]),
                )],
                "schema must be set for deprecation entry [1] for package \"demo\"",
            ),
            (
                vec![deprecations(
                    json!([{"reference": {"schema": "olm.bundle", "name": "a"}, "message": "m"},
                           {"reference": {"schema": "olm.bundle", "name": "a"}, "message": "n"}]),
                )],
                "duplicate deprecation entry declcfg.PackageScopedReference{Schema:\"olm.bundle\", Name:\"a\"} for package \"demo\"",
            ),
            (
                vec![deprecations(
                    json!([{"reference": {"schema": "olm.bundle", "name": "z"}, "message": "m"}]),
                )],
                "cannot deprecate bundle \"z\" for package \"demo\": bundle not found",
            ),
            (
                vec![deprecations(
                    json!([{"reference": {"schema": "olm.channel", "name": "fast"}, "message": "m"}]),
                )],
                "cannot deprecate channel \"fast\" for package \"demo\": channel not found",
            ),
            (
                vec![deprecations(
                    json!([{"reference": {"schema": "olm.package", "name": "demo"}, "message": "m"}]),
                )],
                "package name must be empty for deprecated package \"demo\" (specified \"demo\")",
            ),
            (
                vec![deprecations(
                    json!([{"reference": {"schema": "olm.foo", "name": "x"}, "message": "m"}]),
                )],
                "cannot deprecate object declcfg.PackageScopedReference{Schema:\"olm.foo\", Name:\"x\"} referenced by entry 0 for package \"demo\": object schema unknown",
            ),
        ];
        for (extra, error) in cases {
            assert_eq!(conversion_error(&demo(extra)), error);
        }
    }

    #[test]
    fn deprecations_without_a_message_are_invalid() {
        let fine = demo(vec![deprecations(json!([
            {"reference": {"schema": "olm.package"}, "message": "gone"},
            {"reference": {"schema": "olm.channel", "name": "stable"}, "message": "gone"},
            {"reference": {"schema": "olm.bundle", "name": "a"}, "message": "gone"}
        ]))]);
        assert_eq!(validate(&fine), Ok(()));
        let silent = demo(vec![deprecations(json!([
            {"reference": {"schema": "olm.package"}},
            {"reference": {"schema": "olm.channel", "name": "stable"}, "message": ""},
            {"reference": {"schema": "olm.bundle", "name": "a"}}
        ]))]);
        assert_eq!(
            tree_text(&silent),
            "invalid index:
└── invalid package \"demo\":
    ├── invalid channel \"stable\":
    │   ├── invalid bundle \"a\":
    │   │   └── invalid deprecation: message must be set
    │   └── invalid deprecation: message must be set
    └── invalid deprecation: message must be set"
        );
        // The empty channel opm makes for a missing default channel can be deprecated too.
        let mut missing_default = demo(vec![deprecations(json!([
            {"reference": {"schema": "olm.channel", "name": "fast"}, "message": "gone"}
        ]))]);
        missing_default.packages[0].default_channel = "fast".into();
        assert_eq!(
            validate(&missing_default).unwrap_err().problems(),
            ["invalid package \"demo\": invalid channel \"fast\": channel must contain at least one bundle"]
        );
    }

    #[test]
    fn replaces_chains_as_opm_walks_them() {
        let channel = |entries: Value| -> Channel {
            serde_json::from_value(
                json!({"schema": "olm.channel", "package": "p", "name": "c", "entries": entries}),
            )
            .unwrap()
        };
        assert_eq!(
            replaces_chain_error(&channel(json!([
                {"name": "a", "replaces": "b"}, {"name": "b", "replaces": "c"}, {"name": "c", "replaces": "b"}
            ]))),
            Some("detected cycle in replaces chain of upgrade graph: b -> c -> b".into())
        );
        assert_eq!(
            replaces_chain_error(&channel(json!([
                {"name": "c", "replaces": "b"}, {"name": "b"}, {"name": "a"}, {"name": "z", "skips": ["q"]}
            ]))),
            Some("multiple channel heads found in graph: a, c, z".into())
        );
        assert_eq!(
            replaces_chain_error(&channel(json!([
                {"name": "c", "replaces": "b", "skips": ["a"]}, {"name": "b", "replaces": "old"}, {"name": "x", "replaces": "b"}
            ]))),
            Some("multiple channel heads found in graph: c, x".into())
        );
        assert_eq!(
            replaces_chain_error(&channel(json!([
                {"name": "c", "replaces": "b", "skips": ["s"]}, {"name": "b", "replaces": "a"}, {"name": "a"}, {"name": "s"}
            ]))),
            None
        );
        assert_eq!(
            replaces_chain_error(&channel(json!([
                {"name": "c", "replaces": "b", "skips": ["x"]}, {"name": "b"}, {"name": "x", "replaces": "y"}, {"name": "y"}
            ]))),
            Some("channel contains one or more stranded bundles: y".into())
        );
        assert_eq!(replaces_chain_error(&channel(json!([]))), None);
    }
}
