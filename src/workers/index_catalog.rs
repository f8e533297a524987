//! The catalog of an index image as files, which package each file holds, and a cache of them
//! shared by the worker's requests. A request that changes some packages loads, checks and
//! writes only the files of those packages (`Selection`), and the new index gets one more layer
//! holding just those files (`delta`): the time of an add grows with the changed package, not
//! with the catalog. Pure apart from the cache's lock.

use iib_fbc::declcfg::DeclarativeConfig;
use iib_fbc::load::{load_files, LoadError};
use iib_fbc::write::{to_files, Format, WriteError};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// The pseudo-package of blobs that name no package (they live in the root `catalog.json`).
const NO_PACKAGE: &str = "";

/// The catalog files of one index image (paths relative to its configs directory).
#[derive(Debug, Default)]
pub struct CatalogFiles {
    files: BTreeMap<String, Arc<[u8]>>,
    /// File → the packages its blobs belong to (`""` for blobs of no package).
    owners: BTreeMap<String, BTreeSet<String>>,
    /// Package → the files holding its blobs.
    holders: BTreeMap<String, BTreeSet<String>>,
    /// Bundle image → the packages listing it.
    images: HashMap<String, BTreeSet<String>>,
    bytes: usize,
}

/// The packages a request changes and every file it must rewrite for them: a file holding
/// blobs of another package pulls that package in too, so files are replaced whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub packages: BTreeSet<String>,
    pub files: BTreeSet<String>,
}

fn packages_of(config: &DeclarativeConfig) -> BTreeSet<String> {
    config
        .package_names()
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Where our writer puts a package's blobs (`to_files` with JSON).
fn written_path(package: &str) -> String {
    if package.is_empty() {
        "catalog.json".to_string()
    } else {
        format!("{package}/catalog.json")
    }
}

impl CatalogFiles {
    /// Reads every file (each parsed once, to learn the packages it holds).
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Self, LoadError> {
        let mut out = Self::default();
        for (path, bytes) in files {
            let config = load_files([(path.as_str(), bytes.as_slice())])?;
            out.insert(path, Arc::from(bytes), &config);
        }
        Ok(out)
    }

    /// The files our writer makes of `catalog` (`to_files`, JSON), indexed from the catalog
    /// itself instead of parsing them again.
    pub fn written(catalog: &DeclarativeConfig) -> Result<Self, WriteError> {
        Ok(Self::from_written(Self::write(catalog)?, catalog))
    }

    /// `written`, for files already written (`write(catalog)`).
    pub fn from_written(written: BTreeMap<String, Vec<u8>>, catalog: &DeclarativeConfig) -> Self {
        let mut out = Self::default();
        out.replace(&Selection::default(), written, catalog);
        out
    }

    fn insert(&mut self, path: String, bytes: Arc<[u8]>, config: &DeclarativeConfig) {
        let images = config
            .bundles
            .iter()
            .map(|b| (b.image.clone(), b.package.clone()));
        self.insert_with(path, bytes, packages_of(config), images);
    }

    fn insert_with(
        &mut self,
        path: String,
        bytes: Arc<[u8]>,
        owners: BTreeSet<String>,
        images: impl Iterator<Item = (String, String)>,
    ) {
        for package in &owners {
            self.holders
                .entry(package.clone())
                .or_default()
                .insert(path.clone());
        }
        for (image, package) in images {
            self.images.entry(image).or_default().insert(package);
        }
        self.bytes += bytes.len();
        self.owners.insert(path.clone(), owners);
        self.files.insert(path, bytes);
    }

    fn remove(&mut self, path: &str) {
        if let Some(bytes) = self.files.remove(path) {
            self.bytes -= bytes.len();
        }
        for package in self.owners.remove(path).unwrap_or_default() {
            if let Some(files) = self.holders.get_mut(&package) {
                files.remove(path);
                if files.is_empty() {
                    self.holders.remove(&package);
                }
            }
        }
    }

    /// The packages of the catalog (not the pseudo-package of blobs without one).
    pub fn packages(&self) -> impl Iterator<Item = &str> {
        self.holders
            .keys()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
    }

    pub fn has_package(&self, package: &str) -> bool {
        self.holders.contains_key(package)
    }

    /// The packages whose bundles have this image.
    pub fn packages_of_image(&self, image: &str) -> impl Iterator<Item = &str> {
        self.images
            .get(image)
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    /// Uncompressed bytes held.
    pub fn size(&self) -> usize {
        self.bytes
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The whole catalog.
    pub fn load_all(&self) -> Result<DeclarativeConfig, LoadError> {
        load_files(self.files.iter().map(|(p, b)| (p.as_str(), &b[..])))
    }

    /// The files a change of `packages` must rewrite, and the packages they hold (the fixed
    /// point: every file of a selected package, the file our writer would write for it, and
    /// every package of a selected file).
    pub fn select<'a>(&self, packages: impl IntoIterator<Item = &'a str>) -> Selection {
        let mut selection = Selection {
            packages: packages.into_iter().map(str::to_string).collect(),
            files: BTreeSet::new(),
        };
        loop {
            let mut files: BTreeSet<String> = selection
                .packages
                .iter()
                .flat_map(|p| self.holders.get(p).into_iter().flatten().cloned())
                .collect();
            files.extend(
                selection
                    .packages
                    .iter()
                    .map(|p| written_path(p))
                    .filter(|p| self.files.contains_key(p)),
            );
            let packages: BTreeSet<String> = files
                .iter()
                .flat_map(|f| self.owners.get(f).into_iter().flatten().cloned())
                .chain(selection.packages.iter().cloned())
                .collect();
            if files == selection.files && packages == selection.packages {
                return selection;
            }
            selection.files = files;
            selection.packages = packages;
        }
    }

    /// Whether the selection is every catalog file (a change of it rewrites everything).
    pub fn covers_all(&self, selection: &Selection) -> bool {
        self.owners
            .iter()
            .filter(|(_, owners)| !owners.is_empty())
            .all(|(path, _)| selection.files.contains(path))
    }

    /// The selected part of the catalog.
    pub fn load(&self, selection: &Selection) -> Result<DeclarativeConfig, LoadError> {
        load_files(
            selection
                .files
                .iter()
                .filter_map(|p| self.files.get(p).map(|b| (p.as_str(), &b[..]))),
        )
    }

    /// Everything but the selected part.
    pub fn load_rest(&self, selection: &Selection) -> Result<DeclarativeConfig, LoadError> {
        load_files(
            self.files
                .iter()
                .filter(|(p, _)| !selection.files.contains(*p))
                .map(|(p, b)| (p.as_str(), &b[..])),
        )
    }

    /// The files `changed` (the selected packages after the request) is written as.
    pub fn write(changed: &DeclarativeConfig) -> Result<BTreeMap<String, Vec<u8>>, WriteError> {
        Ok(to_files(changed, Format::Json)?
            .into_iter()
            .map(|(path, text)| (path, text.into_bytes()))
            .collect())
    }

    /// This catalog with the selected files replaced by `written` (`write(changed)`): the
    /// files the delta layer on this catalog gives. Unchanged files are shared, not copied.
    pub fn replaced(
        &self,
        selection: &Selection,
        written: BTreeMap<String, Vec<u8>>,
        changed: &DeclarativeConfig,
    ) -> Self {
        let mut out = Self {
            files: self.files.clone(),
            owners: self.owners.clone(),
            holders: self.holders.clone(),
            images: self.images.clone(),
            bytes: self.bytes,
        };
        out.replace(selection, written, changed);
        out
    }

    fn replace(
        &mut self,
        selection: &Selection,
        written: BTreeMap<String, Vec<u8>>,
        changed: &DeclarativeConfig,
    ) {
        for path in &selection.files {
            self.remove(path);
        }
        self.images.retain(|_, packages| {
            packages.retain(|p| !selection.packages.contains(p));
            !packages.is_empty()
        });
        for (path, bytes) in written {
            let package = path
                .strip_suffix("/catalog.json")
                .unwrap_or(NO_PACKAGE)
                .to_string();
            let images = changed
                .bundles
                .iter()
                .filter(|b| b.package == package)
                .map(|b| (b.image.clone(), b.package.clone()));
            let owners = BTreeSet::from([package.clone()]);
            self.remove(&path);
            self.insert_with(path, Arc::from(bytes), owners, images);
        }
    }

    /// The entries of a layer that turns this catalog into `next` for the selection: the
    /// rewritten files, and whiteouts for the selected files that are gone (a whole top-level
    /// directory at once when nothing of it is left). Paths are relative to the configs dir.
    pub fn delta(
        &self,
        selection: &Selection,
        written: &BTreeMap<String, Vec<u8>>,
    ) -> BTreeMap<String, Vec<u8>> {
        let mut entries = written.clone();
        let gone: BTreeSet<&String> = selection
            .files
            .iter()
            .filter(|p| !written.contains_key(*p))
            .collect();
        let mut whole_dirs = BTreeSet::new();
        for path in &gone {
            let Some((dir, _)) = path.split_once('/') else {
                continue;
            };
            let prefix = format!("{dir}/");
            let emptied = self
                .files
                .keys()
                .filter(|p| p.starts_with(&prefix))
                .all(|p| gone.contains(p))
                && !written.keys().any(|p| p.starts_with(&prefix));
            if emptied {
                whole_dirs.insert(dir.to_string());
            }
        }
        for dir in &whole_dirs {
            entries.insert(format!(".wh.{dir}"), Vec::new());
        }
        for path in gone {
            if whole_dirs
                .iter()
                .any(|d| path.starts_with(&format!("{d}/")))
            {
                continue;
            }
            let (dir, name) = match path.rsplit_once('/') {
                Some((dir, name)) => (format!("{dir}/"), name),
                None => (String::new(), path.as_str()),
            };
            entries.insert(format!("{dir}.wh.{name}"), Vec::new());
        }
        entries
    }
}

/// Catalogs of index images this worker read or built, by arch manifest digest, so a request
/// on an index the worker has seen parses only the packages it changes. Bounded by bytes
/// (files shared between entries count once per entry, so the real use is lower).
#[derive(Debug)]
pub struct CatalogCache {
    budget: usize,
    entries: Mutex<VecDeque<(String, Arc<CatalogFiles>)>>,
}

impl CatalogCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<CatalogFiles>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = entries.iter().position(|(k, _)| k == key);
        crate::metrics::catalog_cache_lookup(at.is_some());
        let entry = entries.remove(at?)?;
        let value = entry.1.clone();
        entries.push_back(entry);
        Some(value)
    }

    pub fn put(&self, key: String, value: Arc<CatalogFiles>) {
        if value.size() > self.budget {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(k, _)| *k != key);
        entries.push_back((key, value));
        let mut total: usize = entries.iter().map(|(_, v)| v.size()).sum();
        while total > self.budget {
            match entries.pop_front() {
                Some((_, v)) => total -= v.size(),
                None => break,
            }
        }
        crate::metrics::catalog_cache_bytes(total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, bundles: &[&str]) -> String {
        let mut text = format!(
            "{{\"schema\":\"olm.package\",\"name\":\"{name}\",\"defaultChannel\":\"stable\"}}\n"
        );
        let entries: Vec<String> = bundles
            .iter()
            .map(|b| format!("{{\"name\":\"{b}\"}}"))
            .collect();
        text.push_str(&format!(
            "{{\"schema\":\"olm.channel\",\"package\":\"{name}\",\"name\":\"stable\",\"entries\":[{}]}}\n",
            entries.join(",")
        ));
        for b in bundles {
            text.push_str(&format!(
                "{{\"schema\":\"olm.bundle\",\"package\":\"{name}\",\"name\":\"{b}\",\"image\":\"r.example/{b}:1\",\"properties\":[]}}\n"
            ));
        }
        text
    }

    fn catalog() -> CatalogFiles {
        CatalogFiles::from_files(vec![
            (
                "a/catalog.yaml".into(),
                package("a", &["a.v1"])
                    .replace("}\n{", "}\n---\n{")
                    .into_bytes(),
            ),
            ("b/index.json".into(), package("b", &["b.v1"]).into_bytes()),
            (
                "shared/both.json".into(),
                (package("c", &["c.v1"]) + &package("d", &["d.v1"])).into_bytes(),
            ),
            (
                "e/catalog.json".into(),
                package("e", &["e.v1"]).into_bytes(),
            ),
            ("README.md".into(), b"not a catalog".to_vec()),
        ])
        .unwrap()
    }

    #[test]
    fn a_selection_takes_whole_files_and_their_packages() {
        let files = catalog();
        assert_eq!(
            files.select(["a"]),
            Selection {
                packages: ["a".to_string()].into(),
                files: ["a/catalog.yaml".to_string()].into()
            }
        );
        let both = files.select(["c"]);
        assert_eq!(both.packages, ["c".to_string(), "d".to_string()].into());
        assert_eq!(both.files, ["shared/both.json".to_string()].into());
        // A new package selects nothing of the catalog.
        assert!(files.select(["new"]).files.is_empty());
        assert!(!files.covers_all(&both));
        assert!(files.covers_all(&files.select(["a", "b", "c", "e"])));
        assert_eq!(
            files
                .packages_of_image("r.example/d.v1:1")
                .collect::<Vec<_>>(),
            ["d"]
        );
    }

    #[test]
    fn the_delta_replaces_files_and_whites_out_what_is_gone() {
        let files = catalog();
        let selection = files.select(["a", "c", "e"]);
        let mut changed = files.load(&selection).unwrap();
        // a gets a bundle, c goes, d and e stay (rewritten).
        changed.bundles.push(
            serde_json::from_str(
                r#"{"schema":"olm.bundle","package":"a","name":"a.v2","image":"r.example/a.v2:1","properties":[]}"#,
            )
            .unwrap(),
        );
        iib_fbc::add::remove_packages(&mut changed, &["c".to_string()]).unwrap();
        let written = CatalogFiles::write(&changed).unwrap();
        let delta = files.delta(&selection, &written);
        let paths: Vec<&str> = delta.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                ".wh.shared",
                "a/.wh.catalog.yaml",
                "a/catalog.json",
                "d/catalog.json",
                "e/catalog.json"
            ]
        );
        // The next catalog, as the delta makes it, matches the files indexed after it.
        let next = files.replaced(&selection, written, &changed);
        let mut expected: Vec<String> = vec![
            "README.md".into(),
            "a/catalog.json".into(),
            "b/index.json".into(),
            "d/catalog.json".into(),
            "e/catalog.json".into(),
        ];
        expected.sort();
        assert_eq!(next.files.keys().cloned().collect::<Vec<_>>(), expected);
        assert_eq!(
            next.select(["d"]).files,
            ["d/catalog.json".to_string()].into()
        );
        assert!(!next.has_package("c"));
        assert_eq!(
            next.packages_of_image("r.example/a.v2:1")
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert!(next.packages_of_image("r.example/c.v1:1").next().is_none());
        let all = next.load_all().unwrap();
        assert_eq!(all.bundles.len(), 5);
        // The original is untouched.
        assert!(files.has_package("c"));
    }

    #[test]
    fn the_cache_keeps_recent_catalogs_within_its_budget() {
        let one = Arc::new(catalog());
        let size = one.size();
        let cache = CatalogCache::new(size * 2);
        cache.put("x".into(), one.clone());
        cache.put("y".into(), one.clone());
        assert!(cache.get("x").is_some());
        cache.put("z".into(), one.clone());
        // y was the least recently used.
        assert!(cache.get("y").is_none());
        assert!(cache.get("x").is_some());
        assert!(cache.get("z").is_some());
    }
}
