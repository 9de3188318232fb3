//! The management API client: blocking HTTP with basic auth, JSON in and out, and every
//! failure turned into a [`CtlError`] once (unreachable broker, refused login, API error).

use std::time::Duration;

use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;
use ureq::Agent;
use ureq::http::Response;

use crate::CtlError;

/// Longest a single request may take; a broker that stops answering is reported, not waited on.
const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// Everything but unreserved characters is encoded, so `/` in a vhost or name stays one segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A name as one path segment (`/` becomes `%2F`).
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

pub struct Api {
    base: String,
    user: String,
    authorization: String,
    agent: Agent,
}

impl Api {
    pub fn new(url: &str, user: &str, password: &str) -> Api {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_millis(REQUEST_TIMEOUT_MS)))
            .build()
            .into();
        Api {
            base: url.trim_end_matches('/').to_owned(),
            user: user.to_owned(),
            authorization: format!("Basic {token}"),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> Result<Value, CtlError> {
        let reply = self.agent.get(self.url(path)).header("authorization", &self.authorization).call();
        self.answer(reply)
    }

    pub fn delete(&self, path: &str) -> Result<Value, CtlError> {
        self.delete_with_reason(path, None)
    }

    /// A DELETE with RabbitMQ's `X-Reason` header (closing a connection).
    pub fn delete_with_reason(&self, path: &str, reason: Option<&str>) -> Result<Value, CtlError> {
        let mut request = self.agent.delete(self.url(path)).header("authorization", &self.authorization);
        if let Some(reason) = reason {
            request = request.header("x-reason", reason);
        }
        self.answer(request.call())
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        self.send("PUT", path, body)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CtlError> {
        self.send("POST", path, body)
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> Result<Value, CtlError> {
        let url = self.url(path);
        let request = match method {
            "PUT" => self.agent.put(url),
            _ => self.agent.post(url),
        };
        let reply = request
            .header("authorization", &self.authorization)
            .content_type("application/json")
            .send(body.to_string());
        self.answer(reply)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The body as JSON (`Null` when empty) on success; otherwise the error it stands for.
    fn answer(&self, reply: Result<Response<ureq::Body>, ureq::Error>) -> Result<Value, CtlError> {
        let mut reply = reply.map_err(|e| CtlError::Unreachable { url: self.base.clone(), detail: e.to_string() })?;
        let status = reply.status().as_u16();
        let text = reply
            .body_mut()
            .read_to_string()
            .map_err(|e| CtlError::Unreachable { url: self.base.clone(), detail: e.to_string() })?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        match status {
            200..=299 => Ok(body),
            // RabbitMQ answers 401 both to a failed login and to a user lacking a tag or permission.
            401 if body.get("error").and_then(Value::as_str) != Some("not_authorised") => {
                Err(CtlError::LoginRefused { url: self.base.clone(), user: self.user.clone() })
            }
            _ => Err(CtlError::Api { status, reason: reason_of(&body) }),
        }
    }
}

/// The API's `reason` (or `error`), or the body itself.
fn reason_of(body: &Value) -> String {
    ["reason", "error"]
        .iter()
        .find_map(|k| body.get(k).and_then(Value::as_str))
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string())
}
