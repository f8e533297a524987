//! Greenwave gating of add requests (IIB's `gate_bundles`): when `IIB_GREENWAVE_CONFIG` has
//! the request's queue, every bundle's NVR must satisfy Greenwave's policies.

use super::TaskError;
use crate::registry::bundle::BundleImage;
use crate::workers::runner::TaskContext;
use serde_json::Value;
use std::time::Duration;

/// The most of a Greenwave answer read: a decision is a few kilobytes, so anything past this
/// is refused rather than buffered.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Greenwave's answer as text, refused once it passes `MAX_ANSWER_BYTES`.
async fn read_answer(answer: reqwest::Response) -> Result<String, String> {
    use futures_util::StreamExt;
    if answer
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
    {
        return Err(format!(
            "the answer is larger than {MAX_ANSWER_BYTES} bytes"
        ));
    }
    let mut body = Vec::new();
    let mut stream = answer.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(format!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

pub async fn gate(ctx: &TaskContext, bundles: &[(String, BundleImage)]) -> Result<(), TaskError> {
    let config = match &ctx.queue {
        Some(queue) => ctx.settings.greenwave_config.get(queue),
        None => ctx
            .settings
            .greenwave_config
            .get("null")
            .or_else(|| ctx.settings.greenwave_config.get("default")),
    };
    let Some(config) = config.filter(|c| c.as_object().is_some_and(|m| !m.is_empty())) else {
        ctx.log
            .info("Greenwave checks are disabled. Bundles will not be gated.");
        return Ok(());
    };
    let url = ctx.settings.greenwave_url.as_deref().ok_or_else(|| {
        TaskError::Failed("IIB is not configured to handle gating of bundles".into())
    })?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| TaskError::Failed(e.to_string()))?;
    let mut unsatisfied = Vec::new();
    let mut testcases: Vec<String> = Vec::new();
    for (bundle, image) in bundles {
        let label = |name: &str| {
            image.labels.get(name).cloned().ok_or_else(|| {
                TaskError::Failed(format!(
                    "The bundle {bundle} has no {name} label, which Greenwave gating needs for its NVR"
                ))
            })
        };
        let nvr = format!(
            "{}-{}-{}",
            label("com.redhat.component")?,
            label("version")?,
            label("release")?
        );
        let mut body = config.clone();
        body["subject_identifier"] = Value::String(nvr);
        let answer = http
            .post(format!("{}/decision", url.trim_end_matches('/')))
            .json(&body)
            .send()
            .await
            .map_err(|e| TaskError::Failed(format!("Gating check failed for {bundle}: {e}")))?;
        let ok = answer.status().is_success();
        let text = read_answer(answer)
            .await
            .map_err(|e| TaskError::Failed(format!("Gating check failed for {bundle}: {e}")))?;
        let data: Value = serde_json::from_str(&text).unwrap_or(Value::Object(Default::default()));
        if !ok {
            let message = data
                .get("message")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .unwrap_or(text);
            return Err(TaskError::Failed(format!(
                "Gating check failed for {bundle}: {message}"
            )));
        }
        match data.get("policies_satisfied") {
            None => {
                return Err(TaskError::Failed(format!(
                    "Key \"policies_satisfied\" missing in Greenwave response for {bundle}"
                )))
            }
            Some(satisfied) if satisfied.as_bool() != Some(true) => {
                unsatisfied.push(bundle.clone());
                // As IIB does, the test cases of the last unsatisfied bundle are reported.
                testcases = data
                    .get("unsatisfied_requirements")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(|r| {
                                r.get("testcase")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
            }
            Some(_) => {}
        }
    }
    if !unsatisfied.is_empty() {
        let text = |key: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Err(TaskError::Failed(format!(
            "Unsatisfied Greenwave policy for {} with decision_context: {}, product_version: {}, subject_type: {} and test cases: {}",
            unsatisfied.join(", "),
            text("decision_context"),
            text("product_version"),
            text("subject_type"),
            testcases.join(", ")
        )));
    }
    Ok(())
}
