//! The catalog engine against real catalogs as opm wrote them (../shared/fixtures is not
//! needed: the fixtures used here are copied under tests/data when they are small, and the
//! 29-package catalog is read from `IIB_FIXTURES` or ../shared/fixtures when present).

use iib::catalog::load::load_dir;
use std::path::PathBuf;

/// What the fixture's slurm-operator/catalog.yaml holds before it breaks off.
const SLURM_CHANNELS: usize = 2;
const SLURM_BUNDLES: usize = 5;

fn fixtures() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("IIB_FIXTURES").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures"
        ))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("catalogs/community-v4.18").is_dir())
}

#[test]
fn the_community_catalog_loads_and_a_truncated_file_is_refused() {
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let root = fixtures.join("catalogs/community-v4.18");
    let (mut packages, mut channels, mut bundles) = (0, 0, 0);
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        match load_dir(&dir) {
            Ok(config) => {
                packages += config.packages.len();
                channels += config.channels.len();
                bundles += config.bundles.len();
            }
            Err(e) => refused.push((
                dir.file_name().unwrap().to_string_lossy().into_owned(),
                e.to_string(),
            )),
        }
    }
    // The fixture's slurm-operator/catalog.yaml ends in the middle of its last bundle.
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "slurm-operator");
    assert_eq!(
        refused[0].1,
        "catalog.yaml: a blob has no \"schema\" string"
    );
    // The 29-package catalog has 70 channels and 651 complete bundles; slurm-operator holds
    // SLURM_CHANNELS of the channels and SLURM_BUNDLES of the complete bundles.
    assert_eq!(
        (packages, channels, bundles),
        (28, 70 - SLURM_CHANNELS, 651 - SLURM_BUNDLES)
    );
    let ecr = load_dir(&root.join("ecr-secret-operator")).unwrap();
    let bundle = ecr
        .bundles
        .iter()
        .find(|b| b.name == "ecr-secret-operator.v0.3.2")
        .unwrap();
    assert_eq!(bundle.version(), Some("0.3.2"));
    assert!(bundle
        .image
        .starts_with("quay.io/openshift-community-operators/ecr-secret-operator@sha256:"));
    assert_eq!(ecr.packages[0].default_channel.as_deref(), Some("alpha"));
}
