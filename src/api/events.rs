//! `GET /builds/<id>/events`: a request's audit trail (every event of the request and of its
//! batch that concerns it, with time, actor and payload; secrets were never in events).
//! With `Accept: text/event-stream` the answer is a Server-Sent Events stream: the history,
//! then each new event as it is committed, until the request ends, so clients need not poll.

use crate::api::error::{ApiError, ApiResult};
use crate::api::{json_response, ApiState};
use crate::replay;
use crate::store::StoredEvent;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::Value;
use std::convert::Infallible;
use std::time::Duration;

fn is_final_event(event: &StoredEvent) -> bool {
    matches!(
        event.event_type.as_str(),
        "RequestCompleted" | "RequestFailed"
    )
}

#[utoipa::path(get, path = "/api/v1/builds/{id}/events", params(("id" = u64, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request's events; with Accept: text/event-stream, a stream until it ends"),
        (status = 404, description = "No such request", body = crate::api::openapi::ErrorBody),
        (status = 503, description = "Database unavailable", body = crate::api::openapi::ErrorBody)))]
pub async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id: u64 = id.parse().map_err(|_| ApiError::not_found())?;
    let history = replay::request_history(&state.store, id).await?;
    if history.is_empty() {
        return Err(ApiError::not_found());
    }
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        let items: Vec<Value> = history.iter().map(replay::to_json).collect();
        return Ok(json_response(StatusCode::OK, &Value::Array(items)));
    }
    // Each open stream holds a place until it ends; none left is a 503 to retry or poll.
    let Ok(place) = state.event_streams.clone().try_acquire_owned() else {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "As many event streams are open as IIB_MAX_EVENT_STREAMS allows; retry later or poll GET /api/v1/builds/<id>",
        )
        .into_response();
        busy.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        return Ok(busy);
    };
    Ok(Sse::new(stream_events(state, id, history, place))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Cursor {
    _place: tokio::sync::OwnedSemaphorePermit,
    state: ApiState,
    id: u64,
    pending: std::collections::VecDeque<StoredEvent>,
    last_sequence: i64,
    done: bool,
}

fn sse(event: &StoredEvent) -> Event {
    Event::default()
        .id(event.position.to_string())
        .event(event.event_type.clone())
        .data(replay::to_json(event).to_string())
}

fn stream_events(
    state: ApiState,
    id: u64,
    history: Vec<StoredEvent>,
    place: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let last_sequence = history
        .iter()
        .filter(|e| e.aggregate_type == "BuildRequest")
        .map(|e| e.sequence)
        .max()
        .unwrap_or(0);
    let cursor = Cursor {
        _place: place,
        state,
        id,
        pending: history.into(),
        last_sequence,
        done: false,
    };
    stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.pending.pop_front() {
                if is_final_event(&event) {
                    // The rest of the history (the batch's settlement) still goes out.
                    cursor.done = true;
                }
                return Some((Ok(sse(&event)), cursor));
            }
            if cursor.done || cursor.state.shutdown.is_triggered() {
                return None;
            }
            // Wait for a commit (this process, or another one through LISTEN/NOTIFY) or poll
            // (another process may commit: every second, or every few while notifications
            // arrive); a stopping service ends the stream (clients reconnect to another process).
            let wakeups = cursor.state.bus.wakeups();
            let committed = wakeups.committed();
            let poll = wakeups.poll_every(Duration::from_secs(1));
            tokio::select! {
                _ = committed.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                _ = cursor.state.shutdown.wait() => return None,
            }
            match cursor
                .state
                .store
                .load("BuildRequest", &cursor.id.to_string(), cursor.last_sequence)
                .await
            {
                Ok(new) => {
                    for event in new {
                        cursor.last_sequence = event.sequence;
                        cursor.pending.push_back(event);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event stream: reading new events failed");
                }
            }
        }
    })
}
