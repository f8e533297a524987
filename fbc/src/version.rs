//! Bundle versions as opm compares them: strict semver (blang/semver's `Parse`), ordered by
//! semver precedence and then, for versions equal but for build metadata, by the build ids
//! compared as prerelease identifiers (`1.0.0 < 1.0.0+1 < 1.0.0+2`), opm's `BuildIdCompare`.

use std::cmp::Ordering;

pub use semver::Version;

/// Parses a version as opm does (no leading `v`, no leading zeros, three parts).
pub fn parse(text: &str) -> Result<Version, String> {
    Version::parse(text).map_err(|e| e.to_string())
}

/// opm's `BuildIdCompare`.
pub fn build_id_compare(a: &Version, b: &Version) -> Result<Ordering, String> {
    let plain = a.cmp_precedence(b);
    if plain != Ordering::Equal {
        return Ok(plain);
    }
    let as_pre = |v: &Version| -> Result<Version, String> {
        if v.build.is_empty() {
            Ok(Version::new(0, 0, 0))
        } else {
            let text = format!("1.0.0-{}", v.build.as_str());
            Version::parse(&text).map_err(|e| {
                format!(
                    "failed to convert build-id of {v} to prerelease version for comparison: {e}"
                )
            })
        }
    };
    Ok(as_pre(a)?.cmp_precedence(&as_pre(b)?))
}

/// Precedence only (blang's `Compare`: build metadata ignored).
pub fn compare(a: &Version, b: &Version) -> Ordering {
    a.cmp_precedence(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        parse(text).unwrap()
    }

    #[test]
    fn build_ids_break_ties_as_opm_does() {
        assert_eq!(
            build_id_compare(&v("1.0.0"), &v("1.0.0+1")),
            Ok(Ordering::Less)
        );
        assert_eq!(
            build_id_compare(&v("1.0.0+2"), &v("1.0.0+10")),
            Ok(Ordering::Less)
        );
        assert_eq!(
            build_id_compare(&v("1.0.1"), &v("1.0.0+9")),
            Ok(Ordering::Greater)
        );
        assert_eq!(
            build_id_compare(&v("1.0.0-rc.1"), &v("1.0.0")),
            Ok(Ordering::Less)
        );
        assert_eq!(
            build_id_compare(&v("1.0.0"), &v("1.0.0")),
            Ok(Ordering::Equal)
        );
        assert!(build_id_compare(&v("1.0.0+01"), &v("1.0.0")).is_err());
    }

    #[test]
    fn strict_parsing_refuses_what_blang_refuses() {
        assert!(parse("v1.0.0").is_err());
        assert!(parse("1.0").is_err());
        assert!(parse("01.0.0").is_err());
        assert!(parse("1.0.0-01").is_err());
        assert!(parse("1.0.0-rc.1+build.5").is_ok());
    }
}
