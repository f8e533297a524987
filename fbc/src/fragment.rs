//! Adding file-based catalog fragments (IIB's `fbc-operations`): every package a fragment
//! holds replaces that package in the catalog wholesale (package, channels, bundles,
//! deprecations, other blobs of the package).

use super::add::AddError;
use super::declcfg::{package_of, DeclarativeConfig};
use std::collections::BTreeSet;

/// The packages a fragment holds.
pub fn packages(fragment: &DeclarativeConfig) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    names.extend(fragment.packages.iter().map(|p| p.name.clone()));
    names.extend(fragment.channels.iter().map(|c| c.package.clone()));
    names.extend(fragment.bundles.iter().map(|b| b.package.clone()));
    names.extend(fragment.deprecations.iter().map(|d| d.package.clone()));
    names.remove("");
    names
}

/// Replaces the fragment's packages in `config` with the fragment's blobs; returns them.
/// `what` names the fragment in errors (its image).
pub fn add_fragment(
    config: &mut DeclarativeConfig,
    fragment: DeclarativeConfig,
    what: &str,
) -> Result<BTreeSet<String>, AddError> {
    let names = packages(&fragment);
    if names.is_empty() {
        return Err(AddError(vec![format!(
            "No operator packages in fbc_fragment {what}"
        )]));
    }
    let ours = |package: &str| names.contains(package);
    config.packages.retain(|p| !ours(&p.name));
    config.channels.retain(|c| !ours(&c.package));
    config.bundles.retain(|b| !ours(&b.package));
    config.deprecations.retain(|d| !ours(&d.package));
    config.others.retain(|o| !ours(package_of(o)));
    config.merge(fragment);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_files;

    fn catalog(package: &str, bundle: &str) -> DeclarativeConfig {
        let text = format!(
            r#"{{"schema":"olm.package","name":"{package}","defaultChannel":"stable"}}
{{"schema":"olm.channel","package":"{package}","name":"stable","entries":[{{"name":"{bundle}"}}]}}
{{"schema":"olm.bundle","package":"{package}","name":"{bundle}","image":"registry.example/{bundle}:1","properties":[{{"type":"olm.package","value":{{"packageName":"{package}","version":"1.0.0"}}}}]}}"#
        );
        load_files([("c.json", text.as_bytes())]).unwrap()
    }

    #[test]
    fn a_fragment_replaces_its_packages_and_leaves_the_others() {
        let mut config = catalog("kept", "kept.v1");
        config.merge(catalog("swapped", "swapped.v1"));
        let names = add_fragment(&mut config, catalog("swapped", "swapped.v2"), "frag:1").unwrap();
        assert_eq!(names, BTreeSet::from(["swapped".to_string()]));
        let bundles: Vec<&str> = config.bundles.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(bundles, vec!["kept.v1", "swapped.v2"]);
        crate::model::validate(&config).unwrap();
        assert_eq!(
            add_fragment(&mut config, DeclarativeConfig::default(), "frag:2")
                .unwrap_err()
                .to_string(),
            "No operator packages in fbc_fragment frag:2"
        );
    }
}
