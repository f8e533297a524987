//! IIB's `is_bundle_version_valid`: whether a bundle's `com.redhat.openshift.versions` label
//! admits an OpenShift version (merge-index-image drops the bundles that do not). Pure.

use std::cmp::Ordering;

/// A dotted version as Python's `packaging.Version` compares release numbers (`v` dropped).
fn version(text: &str) -> Option<Vec<u64>> {
    let text = text.trim().replace('v', "");
    if text.is_empty() {
        return None;
    }
    text.split('.')
        .map(|part| part.trim().parse().ok())
        .collect()
}

fn compare(a: &[u64], b: &[u64]) -> Ordering {
    let length = a.len().max(b.len());
    (0..length)
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| *o != Ordering::Equal)
        .unwrap_or(Ordering::Equal)
}

/// The OpenShift version of an index (`v4.18`), or IIB's error for a bad one.
pub fn ocp_version(text: &str) -> Result<Vec<u64>, String> {
    version(text)
        .ok_or_else(|| format!("Invalid OCP version, \"{text}\", specified in Index Image"))
}

/// Whether `label` (the bundle's `com.redhat.openshift.versions`) admits `ocp`.
pub fn admits(label: Option<&str>, ocp: &[u64], allow_no_ocp_version: bool) -> bool {
    let label = label.unwrap_or("").trim();
    if label.is_empty() {
        return allow_no_ocp_version;
    }
    let at_least = |v: &str| version(v).is_some_and(|v| compare(&v, ocp) != Ordering::Greater);
    if label.contains('|') {
        let parts: Vec<&str> = label.split('|').map(str::trim).collect();
        if !parts
            .iter()
            .all(|p| p.starts_with('=') || p.starts_with(">="))
        {
            return false;
        }
        return parts.iter().any(|p| match p.strip_prefix(">=") {
            Some(minimum) => at_least(minimum),
            None => version(p.trim_start_matches('='))
                .is_some_and(|v| compare(&v, ocp) == Ordering::Equal),
        });
    }
    if let Some(exact) = label.strip_prefix('=') {
        return version(exact.trim_start_matches('='))
            .is_some_and(|v| compare(&v, ocp) == Ordering::Equal);
    }
    if let Some((low, high)) = label.split_once('-') {
        return match (version(low), version(high)) {
            (Some(low), Some(high)) => {
                compare(&low, ocp) != Ordering::Greater && compare(ocp, &high) != Ordering::Greater
            }
            _ => false,
        };
    }
    if label.contains(',') {
        let versions: Option<Vec<Vec<u64>>> = label.split(',').map(version).collect();
        return versions
            .and_then(|vs| vs.into_iter().min_by(|a, b| compare(a, b)))
            .is_some_and(|lowest| compare(&lowest, ocp) != Ordering::Greater);
    }
    at_least(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_admit_versions_as_iib_reads_them() {
        let ocp = ocp_version("v4.12").unwrap();
        assert!(admits(Some("v4.10"), &ocp, false));
        assert!(!admits(Some("v4.13"), &ocp, false));
        assert!(admits(Some("=v4.12"), &ocp, false));
        assert!(!admits(Some("=v4.11"), &ocp, false));
        assert!(admits(Some("v4.8-v4.12"), &ocp, false));
        assert!(!admits(Some("v4.8-v4.11"), &ocp, false));
        assert!(admits(Some("v4.12,v4.13"), &ocp, false));
        assert!(!admits(Some("v4.13,v4.14"), &ocp, false));
        assert!(admits(Some("=v4.11|>=v4.12"), &ocp, false));
        assert!(
            !admits(Some("v4.11|>=v4.12"), &ocp, false),
            "every part needs = or >="
        );
        assert!(!admits(Some("not a version"), &ocp, false));
        assert!(!admits(None, &ocp, false));
        assert!(admits(None, &ocp, true));
        // Numbers, not strings: 4.9 is below 4.12.
        assert!(admits(Some("v4.9"), &ocp, false));
        assert_eq!(
            ocp_version("vX").unwrap_err(),
            "Invalid OCP version, \"vX\", specified in Index Image"
        );
    }
}
