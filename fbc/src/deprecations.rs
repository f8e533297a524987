//! A package's `olm.deprecations` blob (IIB's `add-deprecations`): the deprecation schema a
//! user sends replaces the package's deprecations; the package must be in the catalog.

use super::add::AddError;
use super::declcfg::{DeclarativeConfig, Deprecation, SCHEMA_DEPRECATIONS};
use serde_json::Value;

/// Sets `package`'s deprecations to `schema` (a JSON `olm.deprecations` blob).
pub fn set_deprecations(
    config: &mut DeclarativeConfig,
    package: &str,
    schema: &Value,
) -> Result<(), AddError> {
    if !config.bundles.iter().any(|b| b.package == package) {
        return Err(AddError(vec![format!(
            "Cannot add deprecations for {package}, It is either not present in index or opted in fbc"
        )]));
    }
    let deprecation: Deprecation = serde_json::from_value(schema.clone()).map_err(|e| {
        AddError(vec![format!(
            "the deprecation schema of {package} is not valid: {e}"
        )])
    })?;
    if deprecation.schema != SCHEMA_DEPRECATIONS {
        return Err(AddError(vec![format!(
            "the deprecation schema of {package} must have schema {SCHEMA_DEPRECATIONS:?}, not {:?}",
            deprecation.schema
        )]));
    }
    if deprecation.package != package {
        return Err(AddError(vec![format!(
            "the deprecation schema is for package {:?}, not {package:?}",
            deprecation.package
        )]));
    }
    config.deprecations.retain(|d| d.package != package);
    config.deprecations.push(deprecation);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_files;
    use serde_json::json;

    #[test]
    fn deprecations_replace_the_packages_and_need_the_package() {
        let text = r#"{"schema":"olm.package","name":"demo","defaultChannel":"stable"}
{"schema":"olm.channel","package":"demo","name":"stable","entries":[{"name":"demo.v1"}]}
{"schema":"olm.bundle","package":"demo","name":"demo.v1","image":"registry.example/demo:1","properties":[{"type":"olm.package","value":{"packageName":"demo","version":"1.0.0"}}]}"#;
        let mut config = load_files([("c.json", text.as_bytes())]).unwrap();
        let schema = |message: &str| {
            json!({"schema": "olm.deprecations", "package": "demo", "entries": [
                {"reference": {"schema": "olm.bundle", "name": "demo.v1"}, "message": message}]})
        };
        set_deprecations(&mut config, "demo", &schema("first")).unwrap();
        set_deprecations(&mut config, "demo", &schema("second")).unwrap();
        assert_eq!(config.deprecations.len(), 1);
        assert_eq!(config.deprecations[0].entries[0]["message"], "second");
        crate::model::validate(&config).unwrap();
        assert_eq!(
            set_deprecations(&mut config, "ghost", &schema("x"))
                .unwrap_err()
                .to_string(),
            "Cannot add deprecations for ghost, It is either not present in index or opted in fbc"
        );
        let wrong = json!({"schema": "olm.deprecations", "package": "other", "entries": []});
        assert!(set_deprecations(&mut config, "demo", &wrong).is_err());
    }
}
