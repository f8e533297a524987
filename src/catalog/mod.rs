//! The catalog engine: file-based catalogs (FBC) in memory, read, validated and written as
//! opm does, without opm. Pure code over bytes: images are read by `registry`, not here.

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
