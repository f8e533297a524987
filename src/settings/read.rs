//! Typed reads of the raw settings: each read names its key, gets the value the table gives
//! it (the default included, so no default is written twice) and checks the range. A value
//! out of range is refused here, never clamped.

use super::source::{self, Config, SettingsError};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// An integer type a setting converts to, with the largest value it holds.
pub trait Bounded: TryFrom<i64> {
    const MAX: i64;
}

impl Bounded for u32 {
    const MAX: i64 = u32::MAX as i64;
}
impl Bounded for i32 {
    const MAX: i64 = i32::MAX as i64;
}
impl Bounded for u64 {
    const MAX: i64 = i64::MAX;
}
impl Bounded for i64 {
    const MAX: i64 = i64::MAX;
}
impl Bounded for usize {
    const MAX: i64 = if (usize::MAX as u128) < (i64::MAX as u128) {
        usize::MAX as i64
    } else {
        i64::MAX
    };
}

/// Reads the raw settings, remembering which keys were read (so a test can prove every
/// declared setting is either read or declared unused).
pub struct Reader<'a> {
    config: &'a Config,
    read: RefCell<BTreeSet<String>>,
}

impl<'a> Reader<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            config,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// The keys read so far.
    #[cfg(test)]
    pub fn keys_read(&self) -> BTreeSet<String> {
        self.read.borrow().clone()
    }

    fn value(&self, key: &str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.config.get(key)
    }

    /// A value the table always gives (every non-text setting has a default).
    fn required(&self, key: &str) -> Result<&'a Value, SettingsError> {
        self.value(key).ok_or_else(|| SettingsError::Invalid {
            key: key.to_string(),
            problem: if source::find(key).is_some() {
                "has no value and no default".to_string()
            } else {
                "is not declared in settings::source::SETTINGS".to_string()
            },
        })
    }

    /// A text setting that has a default: its value as given (an empty value included).
    pub fn text(&self, key: &str) -> Result<String, SettingsError> {
        Ok(self.required(key)?.as_str().unwrap_or_default().to_string())
    }

    /// An optional text setting: `None` when unset or empty.
    pub fn optional_text(&self, key: &str) -> Option<String> {
        self.value(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// An optional path setting: `None` when unset or empty.
    pub fn optional_path(&self, key: &str) -> Option<PathBuf> {
        self.optional_text(key).map(PathBuf::from)
    }

    pub fn flag(&self, key: &str) -> Result<bool, SettingsError> {
        Ok(self.required(key)?.as_bool().unwrap_or(false))
    }

    /// A list setting's strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, SettingsError> {
        Ok(self
            .required(key)?
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// An object setting as it is.
    pub fn object(&self, key: &str) -> Result<Map<String, Value>, SettingsError> {
        Ok(self.required(key)?.as_object().cloned().unwrap_or_default())
    }

    /// An object or list setting as a typed value; the error names the setting and says what
    /// serde found wrong.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, SettingsError> {
        serde_json::from_value(self.required(key)?.clone()).map_err(|e| SettingsError::Invalid {
            key: key.to_string(),
            problem: e.to_string(),
        })
    }

    fn integer(&self, key: &str) -> Result<i64, SettingsError> {
        self.required(key)?
            .as_i64()
            .ok_or_else(|| SettingsError::Invalid {
                key: key.to_string(),
                problem: "is not an integer".to_string(),
            })
    }

    /// An integer of at least `min` (and at most what `T` holds).
    pub fn at_least<T: Bounded>(&self, key: &str, min: i64) -> Result<T, SettingsError> {
        let value = self.integer(key)?;
        let accepted = if value < min {
            format!("at least {min}")
        } else {
            format!("from {min} to {}", T::MAX)
        };
        in_range::<T>(key, value, min, T::MAX, accepted)
    }

    /// An integer from `min` to `max`; `why` (may be empty) says why the bound is there.
    pub fn between<T: Bounded>(
        &self,
        key: &str,
        min: i64,
        max: i64,
        why: &str,
    ) -> Result<T, SettingsError> {
        let value = self.integer(key)?;
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        in_range::<T>(
            key,
            value,
            min,
            max.min(T::MAX),
            format!("from {min} to {}{why}", max.min(T::MAX)),
        )
    }
}

fn in_range<T: Bounded>(
    key: &str,
    value: i64,
    min: i64,
    max: i64,
    accepted: String,
) -> Result<T, SettingsError> {
    let out_of_range = || SettingsError::OutOfRange {
        key: key.to_string(),
        accepted: accepted.clone(),
        value,
    };
    if value < min || value > max {
        return Err(out_of_range());
    }
    T::try_from(value).map_err(|_| out_of_range())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(list: &[(&str, &str)]) -> Config {
        Config::from_pairs(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap()
    }

    #[test]
    fn integers_below_the_range_are_refused_naming_the_bound() {
        let config = config(&[("IIB_TOTAL_ATTEMPTS", "0")]);
        let err = Reader::new(&config)
            .at_least::<u32>("IIB_TOTAL_ATTEMPTS", 1)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting IIB_TOTAL_ATTEMPTS must be at least 1, got 0"
        );
    }

    #[test]
    fn integers_beyond_the_type_are_refused_naming_the_whole_range() {
        let config = config(&[("IIB_TOTAL_ATTEMPTS", "5000000000")]);
        let err = Reader::new(&config)
            .at_least::<u32>("IIB_TOTAL_ATTEMPTS", 1)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting IIB_TOTAL_ATTEMPTS must be from 1 to 4294967295, got 5000000000"
        );
    }

    #[test]
    fn bounded_integers_say_why() {
        let config = config(&[("IIB_MAX_JSON_DEPTH", "101")]);
        let err = Reader::new(&config)
            .between::<usize>(
                "IIB_MAX_JSON_DEPTH",
                1,
                100,
                "stored events must stay readable",
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting IIB_MAX_JSON_DEPTH must be from 1 to 100 (stored events must stay readable), got 101"
        );
        let config = super::super::source::Config::from_pairs(vec![]).unwrap();
        assert_eq!(
            Reader::new(&config)
                .between::<usize>("IIB_MAX_JSON_DEPTH", 1, 100, "")
                .unwrap(),
            32
        );
    }

    #[test]
    fn empty_optional_text_is_unset() {
        let registry = config(&[("IIB_REGISTRY", "")]);
        assert_eq!(Reader::new(&registry).optional_text("IIB_REGISTRY"), None);
        let template = config(&[("IIB_IMAGE_PUSH_TEMPLATE", "")]);
        assert_eq!(
            Reader::new(&template)
                .text("IIB_IMAGE_PUSH_TEMPLATE")
                .unwrap(),
            ""
        );
    }

    #[test]
    fn an_undeclared_key_is_a_programming_error_named_as_such() {
        let config = config(&[]);
        let err = Reader::new(&config).flag("IIB_NOT_DECLARED").unwrap_err();
        assert!(err.to_string().contains("not declared"), "{err}");
    }
}
