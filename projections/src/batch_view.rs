//! The batch read model: IIB's batch message body (`annotations`, `batch`, `requests`,
//! `state`, `user`).

use iib_aggregates::batch::Annotations;
use iib_aggregates::{BatchMember, RequestState};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    pub id: u64,
    pub user: Option<String>,
    pub annotations: Option<Annotations>,
    pub members: Vec<BatchMember>,
    pub state: RequestState,
    /// The sequence number of the last batch event applied (see `RequestRecord`).
    #[serde(default)]
    pub last_sequence: i64,
}

impl BatchRecord {
    /// IIB's `batch.state` message body.
    pub fn to_json(&self) -> Value {
        json!({
            "annotations": self.annotations,
            "batch": self.id,
            "requests": self.members.iter().map(|m| json!({
                "id": m.id,
                "organization": m.organization,
                "request_type": m.request_type,
            })).collect::<Vec<_>>(),
            "state": self.state,
            "user": self.user,
        })
    }
}
