//! `/api/bindings`: list (all, per vhost, between an exchange and a queue or exchange),
//! create (`POST`, 201 with a `Location` header ending in the binding's properties key), show
//! and delete by properties key — through `Command::Bind`/`Unbind`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lepus_broker::VHost;
use lepus_broker::command::{Binding, Command};
use lepus_broker::exchange::Destination;
use lepus_broker::vhost::BindingView;
use serde_json::Value;

use super::{exchange_name, vhosts_for};
use crate::ApiRef;
use crate::auth::Caller;
use crate::convert::{body_json, json_to_table, short, text};
use crate::error::{ApiError, ApiResult};
use crate::listing::{Lazy, ListQuery, respond_lazily, respond_one};
use crate::views;

pub fn routes() -> Router<ApiRef> {
    Router::new()
        .route("/api/bindings", get(list))
        .route("/api/bindings/{vhost}", get(list_in))
        .route("/api/bindings/{vhost}/e/{source}/{kind}/{destination}", get(between).post(create))
        .route("/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}", get(show).delete(delete))
}

async fn list(State(api): State<ApiRef>, caller: Caller, Query(q): Query<ListQuery>) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in vhosts_for(&api, &caller, None)? {
        items.extend(v.binding_views().into_iter().map(|b| (v.name.clone(), b)));
    }
    Ok(Json(respond_bindings(items, &q)?))
}

async fn list_in(
    State(api): State<ApiRef>,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    Ok(Json(respond_bindings(in_vhost(&v, v.binding_views()), &q)?))
}

/// `bindings` of `v`, each with its vhost's name.
pub(super) fn in_vhost(v: &VHost, bindings: Vec<BindingView>) -> Vec<(Arc<str>, BindingView)> {
    bindings.into_iter().map(|b| (v.name.clone(), b)).collect()
}

/// A list of bindings (each with its vhost's name) as `q` asks, in the order given unless it
/// asks for a sort: paged and sorted by their plain fields, only the page's are turned into
/// JSON.
pub(super) fn respond_bindings(items: Vec<(Arc<str>, BindingView)>, q: &ListQuery) -> ApiResult<Value> {
    let value = |(vhost, b): &(Arc<str>, BindingView), column: &str| views::binding_column(vhost, b, column);
    let lazy = Lazy { cheap: &views::binding_column_is_cheap, value: &value, default_sort: &[] };
    respond_lazily(items, q, lazy, |(vhost, b)| views::binding(vhost, b))
}

/// A path's source and destination, checked to exist.
struct Ends {
    source: String,
    destination: Destination,
}

fn ends(v: &VHost, source: &str, kind: &str, destination: &str) -> ApiResult<Ends> {
    let source = exchange_name(source).to_owned();
    let name = short(destination)?;
    let destination = match kind {
        "q" if v.queue_named(name.as_bytes()).is_some() => Destination::Queue(name),
        "e" if v.exchange_exists(exchange_name(destination).as_bytes()) => {
            Destination::Exchange(short(exchange_name(destination))?)
        }
        _ => return Err(ApiError::NotFound),
    };
    if !v.exchange_exists(source.as_bytes()) {
        return Err(ApiError::NotFound);
    }
    Ok(Ends { source, destination })
}

fn bindings_between(v: &VHost, e: &Ends) -> Vec<BindingView> {
    v.binding_views()
        .into_iter()
        .filter(|b| b.source.as_bytes() == e.source.as_bytes() && b.destination == e.destination)
        .collect()
}

type BindingPath = (String, String, String, String);

async fn between(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<BindingPath>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    let e = ends(&v, &source, &kind, &destination)?;
    Ok(Json(respond_bindings(in_vhost(&v, bindings_between(&v, &e)), &q)?))
}

async fn create(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<BindingPath>,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let body = body_json(&body)?;
    let e = ends(&v, &source, &kind, &destination)?;
    let binding = Binding {
        source: short(&e.source)?,
        destination: e.destination.clone(),
        routing_key: short(&text(&body, "routing_key").unwrap_or_default())?,
        arguments: json_to_table(body.get("arguments"))?,
    };
    let view = BindingView {
        source: binding.source.clone(),
        destination: binding.destination.clone(),
        routing_key: binding.routing_key.clone(),
        arguments: binding.arguments.clone(),
    };
    super::execute(&api, &caller, &v, Command::Bind(binding))?;
    // The binding's path, each part escaped as RabbitMQ escapes it, relative to the request's
    // path as RabbitMQ sends it (`{destination}/{properties key}` when the client escaped the
    // names the same way); clients take the properties key from its last segment.
    let path = format!(
        "/api/bindings/{}/e/{}/{kind}/{}/{}",
        views::segment(&vhost),
        views::segment(&source),
        views::segment(&destination),
        views::segment(&views::properties_key(&view))
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, relativise(uri.path(), &path))]).into_response())
}

/// `to` relative to `from` as RabbitMQ's `rabbit_web_dispatch_util:relativise` makes it: their
/// common leading segments dropped (the last of `from` kept if `to` goes on from it), then one
/// `..` for each segment of `from` left but its last.
fn relativise(from: &str, to: &str) -> String {
    let mut from: Vec<&str> = from.split('/').filter(|s| !s.is_empty()).collect();
    let mut to: Vec<&str> = to.split('/').filter(|s| !s.is_empty()).collect();
    while !from.is_empty() && from.first() == to.first() {
        if from.len() == 1 {
            return to.join("/");
        }
        from.remove(0);
        to.remove(0);
    }
    let mut parts = vec![".."; from.len().saturating_sub(1)];
    parts.extend(to);
    parts.join("/")
}

/// The binding whose properties key is `props` (as listed, or percent-decoded once more).
fn find(v: &VHost, e: &Ends, props: &str) -> ApiResult<BindingView> {
    bindings_between(v, e)
        .into_iter()
        .find(|b| {
            let key = views::properties_key(b);
            key == props || percent_encoding::percent_decode_str(&key.replace('+', " ")).decode_utf8_lossy() == props
        })
        .ok_or(ApiError::NotFound)
}

async fn show(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    let v = vhosts_for(&api, &caller, Some(&vhost))?.remove(0);
    let e = ends(&v, &source, &kind, &destination)?;
    let b = find(&v, &e, &props)?;
    Ok(Json(respond_one(views::binding(&v.name, &b), &q)))
}

async fn delete(
    State(api): State<ApiRef>,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let v = caller.require_vhost(&api.broker, &vhost)?;
    let e = ends(&v, &source, &kind, &destination)?;
    let b = find(&v, &e, &props)?;
    if b.source.is_empty() {
        return Err(ApiError::NotAuthorised("Access refused."));
    }
    let binding =
        Binding { source: b.source, destination: b.destination, routing_key: b.routing_key, arguments: b.arguments };
    super::execute(&api, &caller, &v, Command::Unbind(binding))?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::relativise;

    #[test]
    fn locations_relative_to_the_request_as_rabbitmq_makes_them() {
        let to = "/api/bindings/%2F/e/x/q/q+a%2Bb/k";
        assert_eq!(relativise("/api/bindings/%2F/e/x/q/q+a%2Bb", to), "q+a%2Bb/k");
        assert_eq!(relativise("/api/bindings/%2F/e/x/q/q%20a+b", to), "q+a%2Bb/k");
        assert_eq!(relativise("/api/bindings/%2F/e/x%7E/q/q%20a+b", to), "../../x/q/q+a%2Bb/k");
    }
}
