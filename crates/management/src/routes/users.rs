//! `/api/users`: list (all, or those without permissions), show, create or replace
//! (`password`, or `password_hash` with `hashing_algorithm`; `tags` as a comma-separated string
//! or a list), delete (one, or several with `bulk-delete`) — through
//! `NodeCommand::PutUser`/`DeleteUser`. Administrators only.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use lepus_broker::command::{Credential, NodeCommand};
use lepus_broker::users::HashingAlgorithm;
use serde_json::{Map, Value};

use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::{body_json, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{ListQuery, respond, respond_one};
use crate::views::{self, HASHING_ALGORITHM};

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/users", get(list))
        .route("/api/users/without-permissions", get(without_permissions))
        .route("/api/users/bulk-delete", post(bulk_delete))
        .route("/api/users/{name}", get(show).put(put).delete(delete))
}

/// The users with no permissions in any vhost.
async fn without_permissions(
    State(api): State<ApiRef>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = api
        .broker
        .users()
        .list()
        .into_iter()
        .filter(|u| super::access::permissions(&api, None, Some(&u.name)).is_empty())
        .map(views::user)
        .collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

/// `{"users": [names]}`: deletes them all, or none if one does not exist (400).
async fn bulk_delete(State(api): State<ApiRef>, caller: Caller, body: Bytes) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    let names: Vec<String> = match body.get("users") {
        Some(Value::Array(items)) => items.iter().filter_map(|n| n.as_str().map(String::from)).collect(),
        _ => return Err(ApiError::BadRequest("users must be a list of names".into())),
    };
    if let Some(missing) = names.iter().find(|n| api.broker.users().get(n).is_none()) {
        return Err(ApiError::BadRequest(format!("no_such_user {missing}")));
    }
    for name in names {
        api.broker.execute_node(NodeCommand::DeleteUser { name })?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = api.broker.users().list().into_iter().map(views::user).collect();
    Ok(Json(respond(items, &q, &["name"])?))
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let user = api.broker.users().get(&name).map(views::user).ok_or(ApiError::NotFound)?;
    Ok(Json(respond_one(user, &q)))
}

/// Tags as RabbitMQ takes them: `"a,b"` or `["a", "b"]`.
pub fn tags_of(body: &Map<String, Value>) -> ApiResult<Vec<String>> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| {
                t.as_str()
                    .map(|s| s.trim().to_owned())
                    .ok_or_else(|| ApiError::BadRequest("tags must be strings".into()))
            })
            .filter(|t| t.as_ref().map_or(true, |t| !t.is_empty()))
            .collect(),
        Some(_) => Err(ApiError::BadRequest("tags must be a string or a list".into())),
    }
}

/// The credential a user body gives, if any.
pub fn credential_of(body: &Map<String, Value>) -> ApiResult<Option<Credential>> {
    if let Some(hash) = text(body, "password_hash") {
        let name = text(body, "hashing_algorithm").unwrap_or_else(|| HASHING_ALGORITHM.into());
        let algorithm = HashingAlgorithm::from_name(&name)
            .ok_or_else(|| ApiError::BadRequest(format!("hashing algorithm {name} is not supported")))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(hash.trim())
            .map_err(|_| ApiError::BadRequest("password_hash is not valid base64".into()))?;
        if bytes.is_empty() {
            return Ok(Some(Credential::Passwordless));
        }
        if bytes.len() != algorithm.hash_len() {
            return Err(ApiError::BadRequest(format!("password_hash is not a {name} hash")));
        }
        return Ok(Some(Credential::Hash(bytes)));
    }
    Ok(text(body, "password").map(Credential::Password))
}

async fn put(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let body = body_json(&body)?;
    let tags = tags_of(&body)?;
    let existing = api.broker.users().get(&name).map(|u| u.password_hash().to_vec());
    let credential = match (credential_of(&body)?, &existing) {
        (Some(c), _) => c,
        // Without a new password an existing user keeps its own.
        (None, Some(hash)) => Credential::Hash(hash.clone()),
        // A new user without one has no password, as in RabbitMQ: it can log in only by
        // other means (a client certificate).
        (None, None) => Credential::Passwordless,
    };
    api.broker.execute_node(NodeCommand::PutUser { name, credential, tags })?;
    Ok(super::put_status(existing.is_some()))
}

async fn delete(State(api): State<ApiRef>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    api.broker.execute_node(NodeCommand::DeleteUser { name })?;
    Ok(StatusCode::NO_CONTENT)
}
