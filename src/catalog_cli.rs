//! `iib catalog ...`: the catalog engine as a command, a native and faster `opm` for
//! pipelines. Reads bundle images through the registry client (or bundle directories from
//! disk), and file-based catalog directories; writes as opm writes.

use anyhow::{bail, Context, Result};
use iib_fbc::add::{add_bundles, remove_packages, AddOptions, GraphMode};
use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::load::load_dir;
use iib_fbc::render::{render_bundle, ObjectsAs, RenderedBundle};
use iib_fbc::write::{to_string, write_dir, Format};
use iib_oci::{ClientOptions, Reference, RegistryClient};
use std::path::{Path, PathBuf};

/// opm's `--migrate-level`: which migrations rendered bundles go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MigrateLevel {
    /// Keep one `olm.bundle.object` property per manifest.
    None,
    /// One `olm.csv.metadata` property instead (what IIB's opm produces).
    #[value(name = "bundle-object-to-csv-metadata")]
    BundleObjectToCsvMetadata,
}

impl MigrateLevel {
    fn objects_as(self) -> ObjectsAs {
        match self {
            MigrateLevel::None => ObjectsAs::BundleObjects,
            MigrateLevel::BundleObjectToCsvMetadata => ObjectsAs::CsvMetadata,
        }
    }
}

/// Where the bundles and catalogs named on the command line come from.
pub struct Sources {
    client: Option<RegistryClient>,
    options: ClientOptions,
}

impl Sources {
    pub fn new(options: ClientOptions) -> Self {
        Self {
            client: None,
            options,
        }
    }

    fn client(&mut self) -> Result<&RegistryClient> {
        if self.client.is_none() {
            self.client = Some(RegistryClient::new(self.options.clone())?);
        }
        Ok(self.client.as_ref().expect("just set"))
    }

    /// Renders one bundle reference: a bundle directory (`manifests/` and `metadata/`),
    /// standing for `image` when given, or a bundle image pull spec.
    pub async fn render_bundle(
        &mut self,
        reference: &str,
        image: Option<&str>,
        objects_as: ObjectsAs,
    ) -> Result<RenderedBundle> {
        let path = Path::new(reference);
        if path.is_dir() {
            if !is_bundle_dir(path) {
                bail!("{reference} is not a bundle directory: it needs manifests/ and metadata/");
            }
            let files = read_bundle_dir(path)?;
            return render_bundle(
                files.iter().map(|(p, b)| (p.as_str(), b.as_slice())),
                image.unwrap_or(""),
                objects_as,
            )
            .with_context(|| format!("render reference {reference:?}"));
        }
        let parsed: Reference = reference.parse().with_context(|| {
            format!("render reference {reference:?}: not a directory or an image pull spec")
        })?;
        let bundle = self
            .client()?
            .bundle_image(&parsed)
            .await
            .with_context(|| format!("render reference {reference:?}"))?;
        render_bundle(bundle.file_refs(), image.unwrap_or(reference), objects_as)
            .with_context(|| format!("render reference {reference:?}"))
    }
}

fn is_bundle_dir(path: &Path) -> bool {
    path.join("manifests").is_dir() && path.join("metadata").is_dir()
}

/// The files directly under a bundle directory's `manifests/` and `metadata/`.
fn read_bundle_dir(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for sub in ["manifests", "metadata"] {
        let dir = path.join(sub);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().to_string_lossy().to_string();
                let bytes = std::fs::read(entry.path())
                    .with_context(|| format!("cannot read {}", entry.path().display()))?;
                files.push((format!("{sub}/{name}"), bytes));
            }
        }
    }
    Ok(files)
}

/// `iib catalog render REF...`: bundles and catalog directories, printed as one catalog.
pub async fn render(
    sources: &mut Sources,
    references: &[String],
    image: Option<&str>,
    level: MigrateLevel,
    output: Format,
) -> Result<String> {
    if image.is_some() && references.len() != 1 {
        bail!("--image names the image of one bundle directory: give exactly one REF with it");
    }
    let mut config = DeclarativeConfig::default();
    for reference in references {
        let path = Path::new(reference);
        if path.is_dir() && !is_bundle_dir(path) {
            let loaded =
                load_dir(path).with_context(|| format!("render reference {reference:?}"))?;
            config.merge(loaded);
            continue;
        }
        let rendered = sources
            .render_bundle(reference, image, level.objects_as())
            .await?;
        config.bundles.push(rendered.bundle);
    }
    Ok(to_string(&config, output))
}

/// `iib catalog add --catalog DIR REF...`: adds bundles to a catalog directory (made when
/// missing) and writes it back as opm writes it. Returns a line per bundle for the user.
#[allow(clippy::too_many_arguments)]
pub async fn add(
    sources: &mut Sources,
    catalog: &Path,
    references: &[String],
    image: Option<&str>,
    mode: GraphMode,
    overwrite_latest: bool,
    level: MigrateLevel,
    output: Format,
) -> Result<Vec<String>> {
    if image.is_some() && references.len() != 1 {
        bail!("--image names the image of one bundle directory: give exactly one REF with it");
    }
    let mut config = if catalog.exists() {
        load_dir(catalog)
            .with_context(|| format!("cannot load the catalog {}", catalog.display()))?
    } else {
        DeclarativeConfig::default()
    };
    let mut rendered = Vec::with_capacity(references.len());
    for reference in references {
        rendered.push(
            sources
                .render_bundle(reference, image, level.objects_as())
                .await?,
        );
    }
    let report = add_bundles(
        &mut config,
        rendered,
        &AddOptions {
            mode,
            overwrite_latest,
        },
    )?;
    // IIB runs `opm validate` on what it built: an invalid catalog is never written.
    iib_fbc::model::validate(&config)
        .map_err(|e| anyhow::anyhow!("the catalog would be invalid, nothing was written:\n{e}"))?;
    write_dir(&config, catalog, output)?;
    Ok(report.lines())
}

/// `iib catalog rm --catalog DIR PACKAGE...`.
pub fn rm(catalog: &Path, packages: &[String], output: Format) -> Result<()> {
    let mut config = load_dir(catalog)
        .with_context(|| format!("cannot load the catalog {}", catalog.display()))?;
    remove_packages(&mut config, packages)?;
    write_dir(&config, catalog, output)?;
    Ok(())
}

/// `iib catalog migrate INDEX_DB --out DIR`: a legacy SQLite index as a file-based catalog.
pub async fn migrate(
    index_db: &Path,
    out: &Path,
    level: MigrateLevel,
    output: Format,
) -> Result<()> {
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!("output dir {:?} must be empty", out.display().to_string());
    }
    let config = iib_fbc::sqlite_index::migrate(index_db, level.objects_as())
        .await
        .with_context(|| format!("render catalog image: {}", index_db.display()))?;
    write_dir(&config, out, output)?;
    Ok(())
}

/// The default output directory layout check: a catalog path must be a directory.
pub fn catalog_dir(path: PathBuf) -> Result<PathBuf> {
    if path.exists() && !path.is_dir() {
        bail!("{} is not a directory", path.display());
    }
    Ok(path)
}
