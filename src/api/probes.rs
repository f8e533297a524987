//! Kubernetes-style probes: `GET /livez` (the process runs and answers) and `GET /readyz`
//! (it can do its work: the database answers, every migration this iib knows is applied, and
//! the projector is not stuck). IIB's `/api/v1/healthcheck` stays as IIB has it.

use super::{json_response, ApiState};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

/// An event left unprojected longer than this means the projector is stuck (or no worker
/// process runs one): the read model the API answers from is that far behind.
pub const PROJECTOR_STUCK_AFTER_SECONDS: i64 = 120;

/// `GET /livez`: answers as long as the process serves HTTP.
pub async fn livez() -> Response {
    json_response(StatusCode::OK, &json!({"status": "live"}))
}

/// `GET /readyz`: 200 when every check passes, else 503; the body says each check's result.
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let mut checks = Map::new();
    let mut ready = true;
    let mut check = |name: &str, result: Result<String, String>| {
        ready &= result.is_ok();
        let text = result.unwrap_or_else(|problem| problem);
        checks.insert(name.to_string(), Value::String(text));
    };
    let store = &state.store;
    check(
        "database",
        store
            .ping()
            .await
            .map(|()| "ok".to_string())
            .map_err(|e| format!("unreachable: {e}")),
    );
    check(
        "migrations",
        match store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => Ok("ok".to_string()),
            Ok(pending) => Err(format!(
                "not applied: {} (run `iib migrate`, or start `iib serve`/`iib worker` once)",
                pending.join(", ")
            )),
            Err(e) => Err(format!("cannot be read: {e}")),
        },
    );
    check("projector", projector(&state).await);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"status": if ready { "ready" } else { "not ready" }, "checks": checks}),
    )
}

/// Whether the oldest event the read model has not applied waits longer than
/// `PROJECTOR_STUCK_AFTER_SECONDS`.
async fn projector(state: &ApiState) -> Result<String, String> {
    let store = &state.store;
    let position = store
        .read_model_position()
        .await
        .map_err(|e| format!("cannot be read: {e}"))?;
    let oldest = store
        .read_after(position, 1)
        .await
        .map_err(|e| format!("cannot be read: {e}"))?;
    let Some(oldest) = oldest.first() else {
        return Ok("ok".to_string());
    };
    let waiting = (chrono::Utc::now() - oldest.recorded_at).num_seconds();
    if waiting > PROJECTOR_STUCK_AFTER_SECONDS {
        Err(format!(
            "stuck: the event at position {} has waited {waiting} s to be applied (is a worker process running its projector?)",
            oldest.position
        ))
    } else {
        Ok("ok".to_string())
    }
}
