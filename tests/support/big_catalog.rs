//! An index image whose catalog is large enough that reading it keeps a CPU busy for seconds
//! (in a debug build): one package, `filler`, of many small bundles, written as the JSON
//! stream opm reads. Nothing else is in it.

use iib_oci::build::{layer, ConfigChanges};
use iib_oci::{Reference, RegistryClient};
use std::collections::BTreeMap;

/// Pushes `target`: `binary` for `arches` plus `/configs/filler/catalog.json` with `bundles`
/// bundles, labelled as IIB labels an index.
pub async fn push_filler_index(
    client: &RegistryClient,
    binary: &Reference,
    target: &Reference,
    arches: &[&str],
    bundles: usize,
) {
    let mut catalog =
        String::from(r#"{"schema":"olm.package","name":"filler","defaultChannel":"stable"}"#);
    catalog.push('\n');
    for i in 0..bundles {
        catalog.push_str(&format!(
            r#"{{"schema":"olm.bundle","name":"filler.v0.0.{i}","package":"filler","image":"example.com/filler-bundle:0.0.{i}","properties":[{{"type":"olm.package","value":{{"packageName":"filler","version":"0.0.{i}"}}}}]}}"#
        ));
        catalog.push('\n');
    }
    let files = BTreeMap::from([(
        "configs/filler/catalog.json".to_string(),
        catalog.into_bytes(),
    )]);
    let changes = ConfigChanges {
        labels: BTreeMap::from([
            (
                "operators.operatorframework.io.index.configs.v1".to_string(),
                "/configs".to_string(),
            ),
            (
                "com.redhat.index.delivery.version".to_string(),
                "v4.18".to_string(),
            ),
        ]),
        ..Default::default()
    };
    let arches: Vec<String> = arches.iter().map(|a| a.to_string()).collect();
    client
        .build(binary, target, &arches, &[layer(&files)], &changes, None)
        .await
        .unwrap();
}
