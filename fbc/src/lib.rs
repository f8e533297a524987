//! opm's file-based catalog (FBC) work, done natively: operator catalogs read, changed,
//! validated and written byte for byte as `opm` (operator-registry) does, without running
//! opm. Each module names the opm sources it follows.
//!
//! A catalog is a [`DeclarativeConfig`](declcfg::DeclarativeConfig): its `olm.package`,
//! `olm.channel`, `olm.bundle` and `olm.deprecations` blobs, and blobs of any other schema kept
//! as they are. Around it:
//!
//! | opm / IIB step | here |
//! |---|---|
//! | read a catalog directory or image layer | [`load::load_files`], [`load::load_dir`] |
//! | `opm render` of a bundle image's `manifests/` and `metadata/` | [`render::render_bundle`] |
//! | `opm validate` | [`model::validate`] |
//! | `opm registry add` + `opm migrate` (add bundles; replaces/semver graphs) | [`add::add_bundles`] |
//! | `opm registry rm` | [`add::remove_packages`] |
//! | `opm registry deprecatetruncate` | [`deprecate::deprecate_truncate`] |
//! | IIB's merge-index-image | [`merge::merge_indexes`] |
//! | IIB's fbc-operations / add-deprecations | [`fragment::add_fragment`], [`deprecations::set_deprecations`] |
//! | `opm migrate` of a legacy SQLite index (`index.db`) | [`sqlite_index::migrate`] |
//! | opm's writers (`WriteJSON`, `WriteYAML`, `WriteFS`) | [`write::to_string`], [`write::to_files`], [`write::write_dir`] |
//!
//! Output is opm's to the byte: JSON as Go's `encoding/json` writes it ([`gojson`]), YAML as
//! go-yaml v2 writes it ([`yaml`]), and lists ordered with Go's unstable `sort.Slice`
//! ([`gosort`]) where opm sorts that way, so equal elements land where opm puts them. Errors
//! carry opm's messages.
//!
//! # What this crate does not do
//!
//! - No network and no registries: bundle and index images are pulled and unpacked by the
//!   caller, which hands over their files as `(path, bytes)` pairs.
//! - No I/O beyond what a call is given: [`load::load_dir`] reads the directory it is passed,
//!   [`write::write_dir`] writes the directory it is passed, [`sqlite_index::migrate`] opens the
//!   database file it is passed read-only. Everything else works on memory.
//! - No dependency on the IIB service (`iib`) or its domain crates: it can serve any tool
//!   that needs opm's catalog behaviour.
//!
//! # Example
//!
//! Load a catalog from files in memory, validate it as `opm validate` would, and write it as
//! `opm render -o yaml` would:
//!
//! ```
//! use iib_fbc::{load, model, write};
//!
//! let catalog = r#"
//! {"schema": "olm.package", "name": "etcd", "defaultChannel": "stable"}
//! {"schema": "olm.channel", "name": "stable", "package": "etcd",
//!  "entries": [{"name": "etcd.v1.0.0"}]}
//! {"schema": "olm.bundle", "name": "etcd.v1.0.0", "package": "etcd",
//!  "image": "quay.io/example/etcd-bundle:v1.0.0",
//!  "properties": [{"type": "olm.package", "value": {"packageName": "etcd", "version": "1.0.0"}}]}
//! "#;
//! let config = load::load_files([("etcd/catalog.json", catalog.as_bytes())])?;
//! model::validate(&config)?;
//!
//! let yaml = write::to_string(&config, write::Format::Yaml);
//! assert!(yaml.starts_with("---\ndefaultChannel: stable\nname: etcd\nschema: olm.package\n"));
//!
//! // A channel entry without its bundle is refused with opm's words.
//! let broken = load::load_files([(
//!     "catalog.json",
//!     br#"{"schema": "olm.package", "name": "etcd", "defaultChannel": "stable"}
//!         {"schema": "olm.channel", "name": "stable", "package": "etcd",
//!          "entries": [{"name": "etcd.v2.0.0"}]}"#.as_slice(),
//! )])?;
//! let error = model::validate(&broken).unwrap_err();
//! assert!(error.to_string().contains("etcd.v2.0.0"), "{error}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs, rustdoc::broken_intra_doc_links)]

pub mod add;
pub mod declcfg;
pub mod deprecate;
pub mod deprecations;
pub mod fragment;
pub mod gojson;
pub mod gosort;
pub mod load;
pub mod merge;
pub mod model;
pub mod render;
pub mod sqlite_index;
pub mod version;
pub mod write;
pub mod yaml;
