//! Test support for the catalog engine's tests: where the shared fixtures are.

pub mod index_db;

use std::path::PathBuf;

/// The shared fixtures: `IIB_FIXTURES`, else `shared/fixtures` beside the clone (where CI puts
/// it), else `/work/shared/fixtures`.
pub fn fixtures() -> PathBuf {
    let candidates = [
        std::env::var_os("IIB_FIXTURES").map(PathBuf::from),
        Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures"
        ))),
        Some(PathBuf::from("/work/shared/fixtures")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.join("community-operators").is_dir())
        .expect("the shared fixtures are missing: set IIB_FIXTURES to the fixtures directory")
}
