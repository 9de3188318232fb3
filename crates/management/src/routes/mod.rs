//! The API's routes, one module per resource, and what they share: the command issuer for
//! HTTP, the vhosts a caller may see, `201`/`204` for a PUT, the `amq.default` alias.

mod access;
mod bindings;
mod connections;
mod definitions;
mod exchanges;
mod feature_flags;
mod health;
mod overview;
mod parameters;
mod policies;
mod queues;
mod user_connections;
mod users;
mod vhosts;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use lepus_broker::VHost;
use lepus_broker::command::{Applied, Command, Issuer};

use crate::ApiRef;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// Commands from the API are issued by no connection (connection ids start at 1): they may
/// not use another connection's exclusive queue. They carry the caller's permissions in the
/// vhost ([`Caller::access`]), as RabbitMQ's API acts as its user.
pub const HTTP_CONNECTION: u64 = 0;

pub fn all() -> Router<ApiRef> {
    Router::new()
        .merge(overview::routes())
        .merge(health::routes())
        .merge(feature_flags::routes())
        .merge(vhosts::routes())
        .merge(users::routes())
        .merge(access::routes())
        .merge(policies::routes())
        .merge(parameters::routes())
        .merge(connections::routes())
        .merge(user_connections::routes())
        .merge(exchanges::routes())
        .merge(queues::routes())
        .merge(bindings::routes())
        .merge(definitions::routes())
        .merge(crate::ui::routes())
        .fallback(|| async { ApiError::NotFound })
}

/// Runs `command` in `vhost` as `caller`, with its permissions there, from no connection.
pub fn execute(
    api: &ApiRef,
    caller: &Caller,
    vhost: &VHost,
    command: Command,
) -> Result<Applied, lepus_broker::BrokerError> {
    let access = caller.access(&api.broker, &vhost.name);
    vhost.execute(Issuer { connection_id: HTTP_CONNECTION, access: &access }, command)
}

/// The vhosts `caller` may see: one named in the path (404 if it does not exist or the
/// caller may not see it), or all it may see.
pub fn vhosts_for(api: &ApiRef, caller: &Caller, vhost: Option<&str>) -> ApiResult<Vec<Arc<VHost>>> {
    match vhost {
        Some(name) => {
            let v = api.broker.vhost(name).ok_or(ApiError::NotFound)?;
            if !caller.may_see(&api.broker, name) {
                return Err(ApiError::NotAuthorised("Not_Authorised"));
            }
            Ok(vec![v])
        }
        None => Ok(api.broker.vhosts().into_iter().filter(|v| caller.may_see(&api.broker, &v.name)).collect()),
    }
}

/// A PUT's answer: 201 when it made something, 204 when it was there already.
pub fn put_status(existed: bool) -> StatusCode {
    if existed { StatusCode::NO_CONTENT } else { StatusCode::CREATED }
}

/// The default exchange is `amq.default` in paths.
pub fn exchange_name(name: &str) -> &str {
    if name == crate::views::DEFAULT_EXCHANGE_ALIAS { "" } else { name }
}

/// A query flag such as `if-unused=true`.
pub fn query_flag(query: &std::collections::HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true")
}
