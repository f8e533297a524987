//! Which worker queue a request goes to: IIB's `_get_user_queue` over `IIB_USER_TO_QUEUE`.
//!
//! Keys are user names, optionally labelled `SERIAL:<user>` (requests that overwrite an index)
//! or `PARALLEL:<user>` (the rest); the labelled key wins, the bare name is the fallback.
//! A value is a queue name, or a map from `from_index` pull spec to queue name with `all` as
//! its default. Anonymous callers (auth off) use the default queue (`None`).

use serde_json::{Map, Value};

pub fn user_queue(
    user_to_queue: &Map<String, Value>,
    user: Option<&str>,
    serial: bool,
    from_index: Option<&str>,
) -> Option<String> {
    let user = user?;
    let label = if serial { "SERIAL" } else { "PARALLEL" };
    let truthy = |v: &&Value| match v {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Bool(true) => true,
    };
    let entry = user_to_queue
        .get(&format!("{label}:{user}"))
        .filter(truthy)
        .or_else(|| user_to_queue.get(user))?;
    match entry {
        Value::String(queue) => Some(queue.clone()),
        Value::Object(by_index) => {
            let default = by_index.get("all").and_then(Value::as_str);
            from_index
                .and_then(|index| by_index.get(index))
                .and_then(Value::as_str)
                .filter(|q| !q.is_empty())
                .or(default)
                .map(str::to_string)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn labelled_keys_win_and_fall_back_to_the_bare_user() {
        let config = map(json!({
            "SERIAL:bob": "iib_serial_bob",
            "bob": "iib_bob",
            "PARALLEL:carol": "",
            "carol": "iib_carol",
        }));
        assert_eq!(
            user_queue(&config, Some("bob"), true, None).as_deref(),
            Some("iib_serial_bob")
        );
        assert_eq!(
            user_queue(&config, Some("bob"), false, None).as_deref(),
            Some("iib_bob")
        );
        assert_eq!(
            user_queue(&config, Some("carol"), false, None).as_deref(),
            Some("iib_carol")
        );
        assert_eq!(user_queue(&config, Some("dave"), false, None), None);
        assert_eq!(user_queue(&config, None, true, None), None);
    }

    #[test]
    fn a_map_by_from_index_defaults_to_all() {
        let config = map(json!({
            "PARALLEL:bob": {"quay.io/ns/index:v4.18": "iib_418", "all": "iib_any"},
            "SERIAL:bob": {"quay.io/ns/index:v4.18": "iib_418_serial"},
        }));
        let q = |serial, index| user_queue(&config, Some("bob"), serial, index);
        assert_eq!(
            q(false, Some("quay.io/ns/index:v4.18")).as_deref(),
            Some("iib_418")
        );
        assert_eq!(
            q(false, Some("quay.io/ns/other:1")).as_deref(),
            Some("iib_any")
        );
        assert_eq!(q(false, None).as_deref(), Some("iib_any"));
        assert_eq!(q(true, Some("quay.io/ns/other:1")), None);
    }
}
