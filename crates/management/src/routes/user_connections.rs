//! `/api/connections/username/{user}`: a user's open connections, listed or all closed (320, as
//! `DELETE /api/connections/{name}` closes one). A management user may ask about itself only.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::connections::ConnectionRef;
use serde_json::Value;

use crate::ApiRef;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond};
use crate::views;

/// RabbitMQ's reason for connections closed this way.
const CLOSE_REASON: &str = "Closed via management plugin";

pub fn routes() -> Router<ApiRef> {
    Router::new().route("/api/connections/username/{user}", get(list).delete(close_all))
}

fn of_user(api: &ApiRef, caller: &Caller, user: &str) -> ApiResult<Vec<ConnectionRef>> {
    if !caller.sees_all() && caller.name != user {
        return Err(ApiError::NotAuthorised("Not_Authorised"));
    }
    Ok(api.broker.connections().list().into_iter().filter(|c| c.user == user).collect())
}

async fn list(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(user): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let items = of_user(&api, &caller, &user)?.iter().map(|c| views::connection(&api, c)).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

async fn close_all(State(api): State<ApiRef>, caller: Caller, Path(user): Path<String>) -> ApiResult<StatusCode> {
    of_user(&api, &caller, &user)?;
    let count = api.broker.connections().close_where(|c| c.user == user, CLOSE_REASON);
    tracing::info!(
        count,
        user = %user.escape_debug(),
        by = %caller.name.escape_debug(),
        "a user's connections closed through the management API"
    );
    Ok(StatusCode::NO_CONTENT)
}
