//! `GET /v1/sources` and `POST /v1/mappings/reload`.

use crate::catalog::{LiveCatalog, Reload};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Each source with its file, content hash and load time.
pub async fn list(State(live): State<Arc<LiveCatalog>>) -> Json<serde_json::Value> {
    let cat = live.current();
    let mut sources: Vec<_> = cat
        .sources
        .values()
        .map(|s| {
            json!({
                "source": s.name,
                "file": s.file.display().to_string(),
                "sha256": s.hash,
                "loaded_at": rfc3339(s.loaded_at),
                "verify": s.inbound.verifier.as_ref().map(|v| v.preset().to_string()),
                "dedup": s.inbound.dedup.is_some(),
                "handshake": s.inbound.answers_get.then_some("get"),
                "rules": s.mapping.rule_count(),
                "warnings": s.warnings,
            })
        })
        .collect();
    sources.sort_by(|a, b| a["source"].as_str().cmp(&b["source"].as_str()));
    Json(json!({ "sources": sources }))
}

/// Reload now (even if nothing changed); 422 with every problem when the new set is invalid.
pub async fn reload(State(live): State<Arc<LiveCatalog>>) -> Response {
    let outcome = tokio::task::spawn_blocking(move || live.reload(true)).await;
    match outcome {
        Ok(Reload::Applied(n, warnings)) => {
            Json(json!({ "outcome": "applied", "sources": n, "warnings": warnings }))
                .into_response()
        }
        Ok(Reload::Unchanged) => Json(json!({ "outcome": "unchanged" })).into_response(),
        Ok(Reload::Rejected(problems)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": "invalid_mappings",
                "message": "the previous mappings keep serving",
                "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            })),
        )
            .into_response(),
        Err(e) => crate::error::Error::Internal(format!("reload task failed: {e}")).into_response(),
    }
}
