//! `/api/feature-flags`: RabbitMQ 3.10.8's feature flags whose behaviour Lepus has, all enabled
//! and stable (nothing to migrate: Lepus never ran without them), and `PUT .../enable`, a no-op
//! for those and RabbitMQ's 400 `unsupported` for any other name.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::ApiRef;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond};

/// Name, description and the component that provides it, as 3.10.8 lists them.
const FEATURE_FLAGS: [(&str, &str, &str); 5] = [
    ("empty_basic_get_metric", "Count AMQP `basic.get` on empty queues in stats", "rabbitmq_management_agent"),
    (
        "implicit_default_bindings",
        "Default bindings are now implicit, instead of being stored in the database",
        "rabbit",
    ),
    ("quorum_queue", "Support queues of type `quorum`", "rabbit"),
    ("user_limits", "Configure connection and channel limits for a user", "rabbit"),
    ("virtual_host_metadata", "Virtual host metadata (description, tags, etc)", "rabbit"),
];

pub fn routes() -> Router<ApiRef> {
    Router::new().route("/api/feature-flags", get(list)).route("/api/feature-flags/{name}/enable", put(enable))
}

async fn list(caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = FEATURE_FLAGS
        .iter()
        .map(|(name, desc, provided_by)| {
            json!({"name": name, "desc": desc, "doc_url": "", "state": "enabled", "stability": "stable",
                   "provided_by": provided_by})
        })
        .collect();
    Ok(Json(respond(items, &q, &[])?))
}

async fn enable(caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if FEATURE_FLAGS.iter().any(|(flag, _, _)| *flag == name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::BadRequest("unsupported".into()))
    }
}
