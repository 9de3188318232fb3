//! Who is asking and what they may do: HTTP basic auth against the broker's users
//! (`loopback_users` applies, by the peer's address), and the rights of RabbitMQ's
//! management tags:
//! - `management`: the API, for the vhosts it has permissions in (its own connections);
//! - `policymaker`: `management`, plus policies and parameters of its vhosts;
//! - `monitoring`: `management`, plus every vhost's and connection's details, and nodes;
//! - `administrator`: everything (users, vhosts, definitions).
//!
//! A user with none of these tags is refused every request (401).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::Response;
use base64::Engine;
use lepus_broker::Broker;

use crate::ApiRef;
use crate::error::{ApiError, ApiResult};

/// Whether `user` may use `vhost`: it has permissions there (a user with none neither sees
/// nor changes it). The one place the API asks about vhost access.
pub fn vhost_permitted(broker: &Broker, user: &str, vhost: &str) -> bool {
    broker.access(user, vhost).may_enter()
}

/// What a user's tags allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rights {
    pub management: bool,
    pub policymaker: bool,
    pub monitoring: bool,
    pub administrator: bool,
}

impl Rights {
    pub fn of(tags: &[String]) -> Rights {
        let has = |t: &str| tags.iter().any(|x| x == t);
        let administrator = has("administrator");
        let monitoring = administrator || has("monitoring");
        let policymaker = administrator || has("policymaker");
        Rights { management: monitoring || policymaker || has("management"), policymaker, monitoring, administrator }
    }
}

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub tags: Vec<String>,
    pub rights: Rights,
}

impl Caller {
    pub fn require_admin(&self) -> ApiResult<()> {
        if self.rights.administrator { Ok(()) } else { Err(ApiError::NotAuthorised("Not administrator user")) }
    }

    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.rights.monitoring { Ok(()) } else { Err(ApiError::NotAuthorised("Not monitor user")) }
    }

    /// Monitoring and administrator users see every vhost's objects and every connection.
    pub fn sees_all(&self) -> bool {
        self.rights.monitoring
    }

    /// The caller's permissions in `vhost`, for the commands it issues there.
    pub fn access(&self, broker: &Broker, vhost: &str) -> lepus_broker::permissions::Access {
        broker.access(&self.name, vhost)
    }

    /// Whether the caller may see what is in `vhost`.
    pub fn may_see(&self, broker: &Broker, vhost: &str) -> bool {
        self.sees_all() || vhost_permitted(broker, &self.name, vhost)
    }

    /// For a request about `vhost`: 404 if it does not exist, 401 if the caller may not use it.
    pub fn require_vhost(&self, broker: &Broker, vhost: &str) -> ApiResult<std::sync::Arc<lepus_broker::VHost>> {
        let v = broker.vhost(vhost).ok_or(ApiError::NotFound)?;
        if !vhost_permitted(broker, &self.name, vhost) {
            return Err(ApiError::NotAuthorised("Not_Authorised"));
        }
        Ok(v)
    }
}

impl FromRequestParts<ApiRef> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &ApiRef) -> Result<Caller, ApiError> {
        let (name, password) = basic_credentials(parts).ok_or(ApiError::NoCredentials)?;
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        let now_ms = api.broker.clock().now_ms();
        if !api.login_guard.allows(peer, now_ms) {
            tracing::info!(%peer, "management login refused unchecked: too many failed logins from this address in the last minute");
            return Err(ApiError::LoginFailed);
        }
        let users = api.broker.users();
        let user = users.login(&name, password.as_bytes(), peer).map_err(|e| {
            tracing::info!(%peer, reason = %e, "management login refused");
            if api.login_guard.failed(peer, now_ms) {
                let limit = api.http.login_failures_per_minute;
                tracing::warn!(%peer, limit, "failed-login limit reached (login_failures_per_minute): this address's management logins are refused for the rest of the minute");
            }
            ApiError::LoginFailed
        })?;
        let caller = Caller { name: user.name.clone(), tags: user.tags.clone(), rights: Rights::of(&user.tags) };
        if !caller.rights.management {
            return Err(ApiError::NotAuthorised("Not management user"));
        }
        Ok(caller)
    }
}

/// Marks the answer to a refused login (wrong credentials, or a source past its failed
/// logins): it leaves only after `login_failure_delay_ms`, so guessing is slow.
#[derive(Debug, Clone, Copy)]
pub struct LoginRefused;

/// Holds answers marked [`LoginRefused`] for the delay (a timer, no request slot held).
pub async fn delay_refused_login(State(api): State<ApiRef>, response: Response) -> Response {
    let delay_ms = api.http.login_failure_delay_ms;
    if delay_ms > 0 && response.extensions().get::<LoginRefused>().is_some() {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    response
}

/// The name and password of an `Authorization: Basic` header.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tags_imply_as_in_rabbitmq() {
        assert_eq!(Rights::of(&tags(&[])), Rights::default());
        assert_eq!(Rights::of(&tags(&["impersonator"])), Rights::default());
        let m = Rights::of(&tags(&["management"]));
        assert!(m.management && !m.monitoring && !m.policymaker && !m.administrator);
        let mon = Rights::of(&tags(&["monitoring"]));
        assert!(mon.management && mon.monitoring && !mon.policymaker && !mon.administrator);
        let p = Rights::of(&tags(&["policymaker"]));
        assert!(p.management && p.policymaker && !p.monitoring);
        let a = Rights::of(&tags(&["administrator"]));
        assert!(a.management && a.policymaker && a.monitoring && a.administrator);
    }
}
