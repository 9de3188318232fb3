//! JSON to and from the broker's values: field tables (queue and exchange arguments, binding
//! arguments, message headers), message properties, and the loose typing of request bodies
//! (`rabbitmqadmin` sends `"true"` and `"1"` as strings, which RabbitMQ accepts).

use bytes::Bytes;
use lepus_protocol::content::BasicProperties;
use lepus_protocol::{FieldTable, FieldValue, ShortStr};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// Nesting of tables and arrays accepted from JSON (within what the codec encodes).
const JSON_DEPTH_MAX: usize = lepus_protocol::constants::TABLE_DEPTH_MAX - 1;

pub fn table_to_json(table: &FieldTable) -> Value {
    let mut map = Map::new();
    for (k, v) in table.iter() {
        map.insert(String::from_utf8_lossy(k.as_bytes()).into_owned(), value_to_json(v));
    }
    Value::Object(map)
}

fn value_to_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => json!(b),
        FieldValue::I8(n) => json!(n),
        FieldValue::U8(n) => json!(n),
        FieldValue::I16(n) => json!(n),
        FieldValue::U16(n) => json!(n),
        FieldValue::I32(n) => json!(n),
        FieldValue::U32(n) => json!(n),
        FieldValue::I64(n) => json!(n),
        FieldValue::F32(n) => json!(n),
        FieldValue::F64(n) => json!(n),
        FieldValue::Decimal { scale, value } => json!(f64::from(*value) / 10f64.powi(i32::from(*scale))),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => json!(String::from_utf8_lossy(b)),
        FieldValue::Array(items) => Value::Array(items.iter().map(value_to_json).collect()),
        FieldValue::Timestamp(t) => json!(t),
        FieldValue::Table(t) => table_to_json(t),
        FieldValue::Void => Value::Null,
    }
}

/// A JSON object as a field table (`null` or absent: empty).
pub fn json_to_table(v: Option<&Value>) -> ApiResult<FieldTable> {
    json_to_table_at(v, 0)
}

fn json_to_table_at(v: Option<&Value>, depth: usize) -> ApiResult<FieldTable> {
    let map = match v {
        None | Some(Value::Null) => return Ok(FieldTable::new()),
        Some(Value::Object(map)) => map,
        Some(other) => return Err(ApiError::BadRequest(format!("expected a JSON object, got {other}"))),
    };
    let mut table = FieldTable::new();
    for (k, v) in map {
        let key = ShortStr::try_from(k.as_str()).map_err(|_| ApiError::BadRequest("a key is over 255 bytes".into()))?;
        table.insert(key, json_to_value(v, depth + 1)?);
    }
    Ok(table)
}

fn json_to_value(v: &Value, depth: usize) -> ApiResult<FieldValue> {
    if depth > JSON_DEPTH_MAX {
        return Err(ApiError::BadRequest(format!("tables nested deeper than {JSON_DEPTH_MAX}")));
    }
    Ok(match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => FieldValue::LongStr(Bytes::copy_from_slice(s.as_bytes())),
        Value::Array(items) => {
            FieldValue::Array(items.iter().map(|i| json_to_value(i, depth + 1)).collect::<ApiResult<_>>()?)
        }
        Value::Object(_) => FieldValue::Table(json_to_table_at(Some(v), depth)?),
    })
}

/// The properties a message has, by RabbitMQ's names (those not set are left out).
pub fn properties_to_json(p: &BasicProperties) -> Value {
    let mut map = Map::new();
    let mut text = |k: &str, v: &Option<ShortStr>| {
        if let Some(v) = v {
            map.insert(k.into(), json!(String::from_utf8_lossy(v.as_bytes())));
        }
    };
    text("content_type", &p.content_type);
    text("content_encoding", &p.content_encoding);
    text("correlation_id", &p.correlation_id);
    text("reply_to", &p.reply_to);
    text("expiration", &p.expiration);
    text("message_id", &p.message_id);
    text("type", &p.kind);
    text("user_id", &p.user_id);
    text("app_id", &p.app_id);
    text("cluster_id", &p.cluster_id);
    if let Some(h) = &p.headers {
        map.insert("headers".into(), table_to_json(h));
    }
    if let Some(d) = p.delivery_mode {
        map.insert("delivery_mode".into(), json!(d));
    }
    if let Some(pr) = p.priority {
        map.insert("priority".into(), json!(pr));
    }
    if let Some(t) = p.timestamp {
        map.insert("timestamp".into(), json!(t));
    }
    Value::Object(map)
}

/// Message properties from a publish request's `properties` object.
pub fn json_to_properties(v: Option<&Value>) -> ApiResult<BasicProperties> {
    let mut p = BasicProperties::default();
    let Some(Value::Object(map)) = v else { return Ok(p) };
    for (k, v) in map {
        match k.as_str() {
            "headers" => p.headers = Some(json_to_table(Some(v))?),
            "delivery_mode" => p.delivery_mode = Some(small_number(v, k)?),
            "priority" => p.priority = Some(small_number(v, k)?),
            "timestamp" => p.timestamp = Some(number(Some(v), k)?.unwrap_or(0)),
            _ => {
                let field = match k.as_str() {
                    "content_type" => &mut p.content_type,
                    "content_encoding" => &mut p.content_encoding,
                    "correlation_id" => &mut p.correlation_id,
                    "reply_to" => &mut p.reply_to,
                    "expiration" => &mut p.expiration,
                    "message_id" => &mut p.message_id,
                    "type" => &mut p.kind,
                    "user_id" => &mut p.user_id,
                    "app_id" => &mut p.app_id,
                    "cluster_id" => &mut p.cluster_id,
                    _ => return Err(ApiError::BadRequest(format!("invalid property '{k}'"))),
                };
                *field =
                    Some(short(&text_of(v).ok_or_else(|| ApiError::BadRequest(format!("{k} must be a string")))?)?);
            }
        }
    }
    Ok(p)
}

fn small_number(v: &Value, key: &str) -> ApiResult<u8> {
    let n = number(Some(v), key)?.unwrap_or(0);
    u8::try_from(n).map_err(|_| ApiError::BadRequest(format!("{key} must be 0 to 255")))
}

/// At most `max` bytes of `s`, cut at a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A name or short text: at most 255 bytes.
pub fn short(s: &str) -> ApiResult<ShortStr> {
    ShortStr::try_from(s).map_err(|_| ApiError::BadRequest(format!("'{}…' is longer than 255 bytes", prefix(s, 32))))
}

/// A request body as JSON: an empty body is `{}`; anything else must be a JSON object.
pub fn body_json(body: &[u8]) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::BadRequest("not_json".into())),
    }
}

/// A boolean field: `true`/`false`, or the strings `"true"`/`"false"`.
pub fn flag(body: &Map<String, Value>, key: &str, default: bool) -> ApiResult<bool> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(ApiError::BadRequest(format!("{key} must be true or false"))),
    }
}

/// A non-negative integer field, as a number or a string of digits.
pub fn number(v: Option<&Value>, key: &str) -> ApiResult<Option<u64>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| bad_number(key)),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad_number(key)),
        Some(_) => Err(bad_number(key)),
    }
}

fn bad_number(key: &str) -> ApiError {
    ApiError::BadRequest(format!("{key} must be a non-negative integer"))
}

/// A string field (numbers and booleans given for it are taken as their text).
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

pub fn text(body: &Map<String, Value>, key: &str) -> Option<String> {
    body.get(key).and_then(text_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_through_json() {
        let v = json!({"x-max-length": 10, "s": "text", "b": true, "n": null, "a": [1, "two"], "t": {"k": 1.5}});
        let table = json_to_table(Some(&v)).expect("table");
        assert_eq!(table.get("x-max-length"), Some(&FieldValue::I64(10)));
        assert_eq!(table_to_json(&table), v);
    }

    #[test]
    fn loose_booleans_and_numbers() {
        let body = body_json(br#"{"durable": "false", "auto_delete": true, "count": "5"}"#).expect("json");
        assert!(!flag(&body, "durable", true).expect("durable"));
        assert!(flag(&body, "auto_delete", false).expect("auto_delete"));
        assert!(flag(&body, "internal", true).expect("default"));
        assert_eq!(number(body.get("count"), "count").expect("count"), Some(5));
        assert!(body_json(b"{nope").is_err());
        assert!(body_json(b"").expect("empty").is_empty());
    }

    #[test]
    fn properties_round_trip_through_json() {
        let v = json!({"delivery_mode": 2, "headers": {"h": 1}, "content_type": "text/plain", "type": "t"});
        let p = json_to_properties(Some(&v)).expect("properties");
        assert_eq!(properties_to_json(&p), v);
        assert!(json_to_properties(Some(&json!({"bogus": 1}))).is_err());
    }
}
