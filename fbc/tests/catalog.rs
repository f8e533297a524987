//! The catalog engine against real catalogs as opm wrote them: the 29-package community
//! catalog of the shared fixtures (`IIB_FIXTURES`, else `../shared/fixtures` beside the clone,
//! where CI puts it), and small catalogs made here.

mod support;

use iib_fbc::load::load_dir;
use std::path::PathBuf;

/// What the fixture's slurm-operator/catalog.yaml holds before it breaks off.
const SLURM_CHANNELS: usize = 2;
const SLURM_BUNDLES: usize = 5;

/// The shared fixtures (see `support::fixtures`).
fn fixtures() -> Option<PathBuf> {
    Some(support::fixtures())
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
    assert_eq!(ecr.packages[0].default_channel, "alpha");
}

use iib_fbc::load::load_files;
use iib_fbc::model::{validate, ValidationError};

#[test]
fn every_complete_community_package_is_valid() {
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let root = fixtures.join("catalogs/community-v4.18");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if dir.ends_with("slurm-operator") {
            continue;
        }
        let config = load_dir(&dir).unwrap();
        assert_eq!(validate(&config), Ok(()), "{}", dir.display());
        checked += 1;
    }
    assert_eq!(checked, 28);
}

/// A channel entry: (name, replaces, skips).
type Entry<'a> = (&'a str, &'a str, &'a [&'a str]);

/// A one-package catalog: `entries` per channel as (name, replaces, skips); bundles for
/// every entry name unless listed in `without_bundles`, each with its own version (opm
/// reports bundles sharing a version).
fn catalog(
    default_channel: &str,
    channels: &[(&str, &[Entry])],
    without_bundles: &[&str],
) -> String {
    let mut out =
        format!(r#"{{"schema":"olm.package","name":"demo","defaultChannel":"{default_channel}"}}"#);
    let mut names = std::collections::BTreeSet::new();
    for (channel, entries) in channels {
        let entries: Vec<String> = entries
            .iter()
            .map(|(name, replaces, skips)| {
                names.insert(name.to_string());
                let skips: Vec<String> = skips.iter().map(|s| format!("{s:?}")).collect();
                format!(
                    r#"{{"name":"{name}","replaces":"{replaces}","skips":[{}]}}"#,
                    skips.join(",")
                )
            })
            .collect();
        out.push_str(&format!(
            r#"{{"schema":"olm.channel","package":"demo","name":"{channel}","entries":[{}]}}"#,
            entries.join(",")
        ));
    }
    for (i, name) in names
        .iter()
        .enumerate()
        .filter(|(_, n)| !without_bundles.contains(&n.as_str()))
    {
        out.push_str(&format!(
            r#"{{"schema":"olm.bundle","package":"demo","name":"{name}","image":"quay.io/demo/bundle:{name}","properties":[{{"type":"olm.package","value":{{"packageName":"demo","version":"1.{i}.0"}}}}]}}"#
        ));
    }
    out
}

fn problems(text: &str) -> ValidationError {
    let config = load_files([("catalog.json", text.as_bytes())]).unwrap();
    validate(&config).unwrap_err()
}

/// The model problems opm reports for `text`, one line each with where it is.
fn invalid(text: &str) -> Vec<String> {
    match problems(text) {
        error @ ValidationError::Invalid(_) => error.problems(),
        other => panic!("expected model problems, got {other}"),
    }
}

#[test]
fn graph_problems_are_reported_as_opm_words_them() {
    let two_heads = catalog(
        "stable",
        &[("stable", &[("a", "", &[]), ("b", "", &[])])],
        &[],
    );
    assert_eq!(
        invalid(&two_heads),
        ["invalid package \"demo\": invalid channel \"stable\": multiple channel heads found in graph: a, b"]
    );
    // As `opm validate` prints it.
    assert_eq!(
        problems(&two_heads).to_string(),
        "invalid index:\n\
         └── invalid package \"demo\":\n\
         \x20   └── invalid channel \"stable\":\n\
         \x20       └── multiple channel heads found in graph: a, b"
    );
    let cycle = catalog(
        "stable",
        &[(
            "stable",
            &[("c", "b", &[]), ("b", "a", &[]), ("a", "b", &[])],
        )],
        &[],
    );
    assert_eq!(
        invalid(&cycle),
        ["invalid package \"demo\": invalid channel \"stable\": detected cycle in replaces chain of upgrade graph: b -> a -> b"]
    );
    let no_head = catalog(
        "stable",
        &[("stable", &[("a", "b", &[]), ("b", "a", &[])])],
        &[],
    );
    assert_eq!(
        invalid(&no_head),
        ["invalid package \"demo\": invalid channel \"stable\": no channel head found in graph"]
    );
    let skipped_is_fine = catalog(
        "stable",
        &[("stable", &[("b", "", &["a"]), ("a", "", &[])])],
        &[],
    );
    let config = load_files([("c.json", skipped_is_fine.as_bytes())]).unwrap();
    assert_eq!(validate(&config), Ok(()));
}

#[test]
fn package_and_channel_problems_are_reported() {
    let no_default = catalog("", &[("stable", &[("a", "", &[])])], &[]);
    assert_eq!(
        invalid(&no_default),
        ["invalid package \"demo\": default channel must be set"]
    );
    let missing_default = catalog("fast", &[("stable", &[("a", "", &[])])], &[]);
    assert_eq!(
        invalid(&missing_default),
        ["invalid package \"demo\": invalid channel \"fast\": channel must contain at least one bundle"]
    );
    // A default channel naming no channel becomes an empty channel of that name.
    let no_channel = r#"{"schema":"olm.package","name":"demo","defaultChannel":"stable"}"#;
    assert_eq!(
        invalid(no_channel),
        ["invalid package \"demo\": invalid channel \"stable\": channel must contain at least one bundle"]
    );
    let nothing = r#"{"schema":"olm.package","name":"demo","defaultChannel":""}"#;
    assert_eq!(
        invalid(nothing),
        [
            "invalid package \"demo\": default channel must be set",
            "invalid package \"demo\": package must contain at least one channel"
        ]
    );
    assert_eq!(
        problems(nothing).to_string(),
        "invalid index:\n\
         └── invalid package \"demo\":\n\
         \x20   ├── default channel must be set\n\
         \x20   └── package must contain at least one channel"
    );
}

#[test]
fn conversion_problems_stop_at_the_first() {
    let missing_bundle = catalog(
        "stable",
        &[("stable", &[("a", "", &[]), ("b", "a", &[])])],
        &["b"],
    );
    assert_eq!(
        problems(&missing_bundle),
        ValidationError::Conversion(
            "no olm.bundle blobs found in package \"demo\" for olm.channel entries [b]".into()
        )
    );
    let twice = format!(
        "{}{}",
        r#"{"schema":"olm.package","name":"demo","defaultChannel":"s"}"#,
        r#"{"schema":"olm.package","name":"demo","defaultChannel":"s"}"#
    );
    assert_eq!(problems(&twice).to_string(), "duplicate package \"demo\"");
    let bad_name = r#"{"schema":"olm.package","name":"Demo_1","defaultChannel":"s"}"#;
    assert!(problems(bad_name)
        .to_string()
        .starts_with("invalid package name \"Demo_1\": [a lowercase RFC 1123 label"));
    let stray = r#"{"schema":"olm.package","name":"demo","defaultChannel":"s"}{"schema":"olm.channel","package":"other","name":"s","entries":[]}"#;
    assert_eq!(
        problems(stray).to_string(),
        "unknown package \"other\" for channel \"s\""
    );
    let orphan = format!(
        "{}{}",
        catalog("stable", &[("stable", &[("a", "", &[])])], &[]),
        r#"{"schema":"olm.bundle","package":"demo","name":"z","image":"q/z:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"2.0.0"}}]}"#
    );
    assert_eq!(
        problems(&orphan).to_string(),
        "package \"demo\", bundle \"z\" not found in any channel entries"
    );
}

/// The community bundles of the fixtures: (package dir, bundle name, version dir).
fn community_bundles(fixtures: &std::path::Path) -> Vec<(PathBuf, String, PathBuf)> {
    let mut out = Vec::new();
    let root = fixtures.join("community-operators");
    let mut packages: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("bundles.json").is_file())
        .collect();
    packages.sort();
    for package in packages {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(package.join("bundles.json")).unwrap()).unwrap();
        for (name, dir) in index["bundles"].as_object().unwrap() {
            out.push((
                package.clone(),
                name.clone(),
                package.join(dir.as_str().unwrap()),
            ));
        }
    }
    out
}

/// A bundle directory's files, relative to it.
fn bundle_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for sub in ["manifests", "metadata"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                files.push((format!("{sub}/{name}"), std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

/// opm's catalog for a fixture package, blob by blob, and the catalog version it was made for.
fn golden_blobs(package: &std::path::Path) -> (Vec<serde_json::Value>, String) {
    use serde::Deserialize;
    let text = std::fs::read_to_string(package.join("catalog.yaml")).unwrap();
    let blobs = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(package.join("bundles.json")).unwrap()).unwrap();
    (
        blobs,
        index["catalog_version"].as_str().unwrap().to_string(),
    )
}

/// Catalogs for OpenShift 4.12 were made by an opm that kept bundle objects; later ones carry
/// `olm.csv.metadata`.
fn objects_as_for(catalog_version: &str) -> iib_fbc::render::ObjectsAs {
    use iib_fbc::render::ObjectsAs;
    let minor: u32 = catalog_version
        .trim_start_matches("v4.")
        .parse()
        .unwrap_or(99);
    if minor <= 12 {
        ObjectsAs::BundleObjects
    } else {
        ObjectsAs::CsvMetadata
    }
}

#[test]
fn every_community_bundle_renders_as_opm_rendered_it() {
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let bundles = community_bundles(&fixtures);
    assert_eq!(bundles.len(), 16, "the fixtures hold 16 bundles");
    for (package, name, dir) in bundles {
        let (blobs, catalog_version) = golden_blobs(&package);
        let golden = blobs
            .iter()
            .find(|b| b["schema"] == "olm.bundle" && b["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not in {}", package.display()));
        let image = golden["image"].as_str().unwrap();
        let files = bundle_files(&dir);
        let rendered = iib_fbc::render::render_bundle(
            files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
            image,
            objects_as_for(&catalog_version),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = serde_json::to_value(&rendered.bundle).unwrap();
        if &ours != golden {
            for (key, want) in golden.as_object().unwrap() {
                if ours.get(key) != Some(want) {
                    if key == "properties" {
                        let ours_props = ours[key].as_array().cloned().unwrap_or_default();
                        for (i, want_prop) in want.as_array().unwrap().iter().enumerate() {
                            if ours_props.get(i) != Some(want_prop) {
                                panic!(
                                    "{name}: property {i} differs:\n ours: {}\n opm:  {}",
                                    ours_props
                                        .get(i)
                                        .map(|p| p.to_string())
                                        .unwrap_or_default()
                                        .chars()
                                        .take(600)
                                        .collect::<String>(),
                                    want_prop.to_string().chars().take(600).collect::<String>()
                                );
                            }
                        }
                    }
                    panic!(
                        "{name}: {key} differs:\n ours: {}\n opm:  {}",
                        ours.get(key).map(|v| v.to_string()).unwrap_or_default(),
                        want
                    );
                }
            }
            panic!("{name}: extra keys in ours: {ours}");
        }
    }
}

#[test]
fn every_community_package_is_written_back_byte_for_byte_as_opm_wrote_it() {
    use iib_fbc::write::{to_files, Format};
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let root = fixtures.join("catalogs/community-v4.18");
    let mut identical = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let package = dir.file_name().unwrap().to_string_lossy().to_string();
        let original = std::fs::read_to_string(dir.join("catalog.yaml")).unwrap();
        if package == "slurm-operator" {
            continue; // The fixture breaks off mid-line (see the load test).
        }
        let config = load_dir(&dir).unwrap();
        let files = to_files(&config, Format::Yaml).unwrap();
        assert_eq!(files.len(), 1, "{package}");
        let written = &files[&format!("{package}/catalog.yaml")];
        if written != &original {
            let line = written
                .lines()
                .zip(original.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "{package}: line {} differs:\n ours: {:?}\n opm:  {:?}",
                line + 1,
                written.lines().nth(line),
                original.lines().nth(line)
            );
        }
        identical += 1;
    }
    assert_eq!(identical, 28);
}

/// ~500 random one-package catalogs with sound upgrade graphs (1–12 bundles over 1–3
/// channels; replaces chains whose gaps are skipped; tails that replace missing bundles;
/// skipRanges) validate; each with ONE random corruption then fails, naming the package and
/// the channel or bundle at fault wherever opm's message names them.
#[test]
fn random_sound_catalogs_validate_and_each_corruption_is_reported() {
    use iib_fbc::declcfg::{Bundle, Channel, ChannelEntry, DeclarativeConfig, Package};
    use serde_json::json;

    /// xorshift64*: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn chance(&mut self, one_in: usize) -> bool {
            self.below(one_in) == 0
        }
    }

    fn bundle(name: &str, version: &str) -> Bundle {
        serde_json::from_value(json!({
            "schema": "olm.bundle", "package": "demo", "name": name,
            "image": format!("quay.io/demo/bundle:v{version}"),
            "properties": [{"type": "olm.package",
                            "value": {"packageName": "demo", "version": version}}]
        }))
        .unwrap()
    }

    fn entry(name: &str, replaces: &str, skips: &[String]) -> ChannelEntry {
        ChannelEntry {
            name: name.to_string(),
            replaces: replaces.to_string(),
            skips: skips.to_vec(),
            skip_range: String::new(),
        }
    }

    /// A sound channel over `members` (ascending versions): a replaces chain through some of
    /// them, the others skipped by the next bundle on the chain.
    fn sound_channel(rng: &mut Rng, name: &str, members: &[usize]) -> Channel {
        let names: Vec<String> = members.iter().map(|i| format!("demo.v1.{i}.0")).collect();
        let mut entries = Vec::new();
        let mut previous_on_chain: Option<usize> = None;
        let mut gap: Vec<String> = Vec::new();
        for (at, name) in names.iter().enumerate() {
            let on_chain = at == 0 || at + 1 == names.len() || !rng.chance(4);
            if !on_chain {
                // Skipped bundles may replace anything older: that edge does not count.
                let replaces = if rng.chance(2) { &names[at - 1] } else { "" };
                entries.push(entry(name, replaces, &[]));
                gap.push(name.clone());
                continue;
            }
            let replaces = match previous_on_chain {
                Some(p) => names[p].clone(),
                // The tail may replace a bundle that is not there.
                None if rng.chance(3) => "demo.v0.1.0".to_string(),
                None => String::new(),
            };
            let mut e = entry(name, &replaces, &std::mem::take(&mut gap));
            if rng.chance(3) {
                e.skip_range = format!(">=1.0.0 <1.{}.0", members[at]);
            }
            entries.push(e);
            previous_on_chain = Some(at);
        }
        // opm does not care about entry order.
        for i in (1..entries.len()).rev() {
            entries.swap(i, rng.below(i + 1));
        }
        Channel {
            schema: "olm.channel".into(),
            name: name.into(),
            package: "demo".into(),
            entries,
            properties: Vec::new(),
        }
    }

    fn sound_catalog(rng: &mut Rng) -> DeclarativeConfig {
        let bundles = 1 + rng.below(12);
        let channel_names = ["alpha", "beta", "stable"];
        let channels = 1 + rng.below(3);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); channels];
        for i in 1..=bundles {
            members[rng.below(channels)].push(i);
            for m in members.iter_mut() {
                if m.last() != Some(&i) && rng.chance(3) {
                    m.push(i);
                }
            }
        }
        for m in members.iter_mut() {
            if m.is_empty() {
                m.push(1 + rng.below(bundles));
            }
        }
        let default_channel = channel_names[rng.below(channels)];
        let package: Package = serde_json::from_value(json!({
            "schema": "olm.package", "name": "demo", "defaultChannel": default_channel
        }))
        .unwrap();
        DeclarativeConfig {
            packages: vec![package],
            channels: (0..channels)
                .map(|c| sound_channel(rng, channel_names[c], &members[c]))
                .collect(),
            bundles: (1..=bundles)
                .map(|i| bundle(&format!("demo.v1.{i}.0"), &format!("1.{i}.0")))
                .collect(),
            ..DeclarativeConfig::default()
        }
    }

    /// The chain of a sound channel from its head down (entries replaced in turn).
    fn on_chain(channel: &Channel) -> Vec<usize> {
        let replaced: std::collections::HashSet<&str> = channel
            .entries
            .iter()
            .flat_map(|e| {
                std::iter::once(e.replaces.as_str()).chain(e.skips.iter().map(String::as_str))
            })
            .collect();
        let mut at = channel
            .entries
            .iter()
            .position(|e| !replaced.contains(e.name.as_str()))
            .unwrap();
        let mut chain = vec![at];
        while let Some(next) = channel
            .entries
            .iter()
            .position(|e| e.name == channel.entries[at].replaces)
        {
            chain.push(next);
            at = next;
        }
        chain
    }

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seen = [0usize; 12];
    for case in 0..500 {
        let mut config = sound_catalog(&mut rng);
        assert_eq!(validate(&config), Ok(()), "case {case}: {config:#?}");

        let c = rng.below(config.channels.len());
        let channel_name = config.channels[c].name.clone();
        let e = rng.below(config.channels[c].entries.len());
        let entry_name = config.channels[c].entries[e].name.clone();
        let b = rng.below(config.bundles.len());
        let bundle_name = config.bundles[b].name.clone();
        let last_channel = c + 1 == config.channels.len();
        let kind = rng.below(12);
        seen[kind] += 1;
        // What one line of the report must name (opm's words name no more than this).
        let names: Vec<String> = match kind {
            0 => {
                config.packages[0].default_channel.clear();
                vec![r#"package "demo""#.into()]
            }
            1 => {
                config.packages[0].default_channel = "missing".into();
                vec![r#"package "demo""#.into(), r#"channel "missing""#.into()]
            }
            2 => {
                // The tail of the chain replaces the bundle above it (or itself).
                let chain = on_chain(&config.channels[c]);
                let tail = *chain.last().unwrap();
                let above = chain[chain.len().saturating_sub(2)];
                let target = config.channels[c].entries[above].name.clone();
                config.channels[c].entries[tail].replaces = target;
                vec![
                    r#"package "demo""#.into(),
                    format!("channel {channel_name:?}"),
                ]
            }
            3 => {
                config.channels[c]
                    .entries
                    .push(entry("demo.v2.0.0", "", &[]));
                config.bundles.push(bundle("demo.v2.0.0", "2.0.0"));
                vec![
                    r#"package "demo""#.into(),
                    format!("channel {channel_name:?}"),
                    "demo.v2.0.0".into(),
                ]
            }
            4 => {
                // `demo.v2.0.2` is skipped by the head and replaces `demo.v2.0.1`, which
                // nothing on the chain reaches.
                let head = on_chain(&config.channels[c])[0];
                let entries = &mut config.channels[c].entries;
                entries[head].skips.push("demo.v2.0.2".into());
                entries.push(entry("demo.v2.0.1", "", &[]));
                entries.push(entry("demo.v2.0.2", "demo.v2.0.1", &[]));
                config.bundles.push(bundle("demo.v2.0.1", "2.0.1"));
                config.bundles.push(bundle("demo.v2.0.2", "2.0.2"));
                vec![
                    r#"package "demo""#.into(),
                    format!("channel {channel_name:?}"),
                    "stranded bundles: demo.v2.0.1".into(),
                ]
            }
            5 => {
                let copy = config.bundles[b].clone();
                config.bundles.push(copy);
                vec![
                    r#"package "demo""#.into(),
                    format!("bundle {bundle_name:?}"),
                ]
            }
            6 => {
                config.channels[c]
                    .entries
                    .push(entry("demo.ghost", &entry_name, &[]));
                // Only the last channel of a package is checked before validation.
                let mut names = vec![r#"package "demo""#.to_string(), "demo.ghost".into()];
                if !last_channel {
                    names.push(format!("channel {channel_name:?}"));
                }
                names
            }
            7 => {
                config.channels[c].entries[e].skips.push(String::new());
                vec![
                    r#"package "demo""#.into(),
                    format!("channel {channel_name:?}"),
                    format!("bundle {entry_name:?}"),
                    "is empty".into(),
                ]
            }
            8 => {
                config.channels[c].entries[e].skip_range = ">=1.0.0 <<2".into();
                vec![
                    r#"package "demo""#.into(),
                    format!("channel {channel_name:?}"),
                    format!("bundle {entry_name:?}"),
                    r#"Could not parse comparator "<<" in "<<2""#.into(),
                ]
            }
            9 => {
                config.bundles[b].image = "UPPER/Case:tag".into();
                vec![
                    r#"package "demo""#.into(),
                    format!("bundle {bundle_name:?}"),
                    "repository name must be lowercase".into(),
                ]
            }
            10 => {
                config.bundles[b].properties[0].value["version"] = json!("1.0");
                // opm names the bundle here, not its package.
                vec![
                    format!("bundle {bundle_name:?}"),
                    r#"version "1.0": No Major.Minor.Patch elements found"#.into(),
                ]
            }
            _ => {
                let second = config.bundles[b].properties[0].clone();
                config.bundles[b].properties.push(second);
                vec![
                    r#"package "demo""#.into(),
                    format!("bundle {bundle_name:?}"),
                    "found 2".into(),
                ]
            }
        };
        let error = validate(&config).expect_err(&format!("case {case}, corruption {kind}"));
        let text = error.to_string();
        assert!(
            error
                .problems()
                .iter()
                .any(|line| names.iter().all(|n| line.contains(n.as_str()))),
            "case {case}, corruption {kind}: no line names all of {names:?} in:\n{text}"
        );
        // The printed text is opm's: a tree for model problems, one line otherwise.
        match &error {
            ValidationError::Invalid(_) => assert!(text.starts_with("invalid index:\n"), "{text}"),
            ValidationError::Conversion(message) => assert_eq!(&text, message),
        }
    }
    assert!(seen.iter().all(|&n| n > 20), "{seen:?}");
}

/// A deterministic mutation source for the loader fuzzing below.
struct Mutator(u64);
impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// Flips, inserts, deletes or duplicates a few bytes.
    fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(8) {
            let at = self.below(out.len() + 1);
            match self.below(5) {
                0 if at < out.len() => out[at] = self.next() as u8,
                1 => out.insert(at, b"{}[]:-&*!|>'\"#%@,\n\t "[self.below(20)]),
                2 if at < out.len() => {
                    out.remove(at);
                }
                3 => {
                    let end = (at + self.below(64)).min(out.len());
                    let chunk = out[at..end].to_vec();
                    out.splice(at..at, chunk);
                }
                _ => out.truncate(at),
            }
        }
        out
    }
}

#[test]
fn mutated_catalogs_never_panic_the_loader_or_the_validator() {
    use iib_fbc::model::validate;
    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let yaml = std::fs::read(fixtures.join("community-operators/kube-green/catalog.yaml")).unwrap();
    let config = load_files([("catalog.yaml", yaml.as_slice())]).unwrap();
    let json = iib_fbc::write::to_string(&config, iib_fbc::write::Format::Json).into_bytes();
    // Small inputs mutate into more interesting shapes than 100 kB ones.
    let small_yaml: Vec<u8> = yaml.iter().copied().take(3000).collect();
    let mut mutator = Mutator(0x2545_f491_4f6c_dd1d);
    let mut loaded = 0;
    for case in 0..3000 {
        let (name, base) = match case % 3 {
            0 => ("catalog.yaml", &small_yaml),
            1 => ("catalog.json", &json),
            _ => ("catalog.yaml", &yaml),
        };
        let input = mutator.mutate(base);
        // Whatever the bytes, loading and validating return; they never panic.
        if let Ok(config) = load_files([(name, input.as_slice())]) {
            loaded += 1;
            let _ = validate(&config);
            let _ = iib_fbc::write::to_string(&config, iib_fbc::write::Format::Yaml);
        }
    }
    assert!(
        loaded > 100,
        "the mutations should keep some inputs loadable ({loaded})"
    );
}

#[test]
fn yaml_alias_bombs_and_deep_nesting_are_refused_quickly() {
    // The billion laughs: nine levels of nine aliases.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (level, previous) in ["b", "c", "d", "e", "f", "g", "h", "i"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g", "h"])
    {
        bomb.push_str(&format!("{level}: &{level} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]\n"));
    }
    bomb.push_str("schema: olm.package\nname: bomb\n");
    let started = std::time::Instant::now();
    let result = load_files([("catalog.yaml", bomb.as_bytes())]);
    assert!(result.is_err(), "a billion laughs must not load");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    let deep_yaml = format!(
        "schema: olm.package\nname: deep\nx: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(load_files([("catalog.yaml", deep_yaml.as_bytes())]).is_err());
    let deep_json = format!(
        "{{\"schema\":\"olm.package\",\"name\":\"deep\",\"x\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(load_files([("catalog.json", deep_json.as_bytes())]).is_err());
}

#[test]
fn json_is_written_in_opms_field_order_and_layout_and_reads_back_the_same() {
    use iib_fbc::write::{to_string, Format};
    let text = r#"{"schema":"olm.bundle","package":"demo","name":"demo.v1","image":"q.io/demo@sha256:1","properties":[{"type":"olm.package","value":{"version":"1.0.0","packageName":"demo"}}],"relatedImages":[{"image":"q.io/x:1","name":"x"}]}
{"schema":"olm.channel","package":"demo","name":"stable","entries":[{"skipRange":"<1.0.0","name":"demo.v1"}]}
{"name":"demo","schema":"olm.package","defaultChannel":"stable","description":"a <b> & c"}"#;
    let config = load_files([("c.json", text.as_bytes())]).unwrap();
    // Go's encoder: struct field order, 4-space indents, no HTML escaping, one value per line
    // run with no separator, map keys (property values) sorted.
    let want = r#"{
    "schema": "olm.package",
    "name": "demo",
    "defaultChannel": "stable",
    "description": "a <b> & c"
}
{
    "schema": "olm.channel",
    "name": "stable",
    "package": "demo",
    "entries": [
        {
            "name": "demo.v1",
            "skipRange": "<1.0.0"
        }
    ]
}
{
    "schema": "olm.bundle",
    "name": "demo.v1",
    "package": "demo",
    "image": "q.io/demo@sha256:1",
    "properties": [
        {
            "type": "olm.package",
            "value": {
                "packageName": "demo",
                "version": "1.0.0"
            }
        }
    ],
    "relatedImages": [
        {
            "name": "x",
            "image": "q.io/x:1"
        }
    ]
}
"#;
    assert_eq!(to_string(&config, Format::Json), want);

    let Some(fixtures) = fixtures() else {
        panic!("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory");
    };
    let dir = fixtures.join("catalogs/community-v4.18/kube-green");
    let config = load_dir(&dir).unwrap();
    let json = to_string(&config, Format::Json);
    let back = load_files([("catalog.json", json.as_bytes())]).unwrap();
    assert_eq!(back, config);
    assert_eq!(
        to_string(&back, Format::Yaml),
        std::fs::read_to_string(dir.join("catalog.yaml")).unwrap()
    );
}
