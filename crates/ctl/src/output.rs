//! Output: lists as aligned tables (a header, one row per object) or JSON arrays; the overview
//! as `key: value` lines or JSON. Strings print bare, other values as JSON.

use serde_json::{Map, Value};

use crate::Format;

/// A list's objects and the columns to show, in order (dotted paths reach nested fields).
pub struct Rows {
    pub columns: Vec<String>,
    pub items: Vec<Value>,
}

pub fn render(rows: Rows, format: Format) -> String {
    match format {
        Format::Json => json(&Value::Array(rows.items.iter().map(|i| pick(i, &rows.columns)).collect())),
        Format::Table => table(&rows),
    }
}

/// `status`: the overview's headline fields.
pub fn status(overview: &Value, format: Format) -> String {
    if format == Format::Json {
        return json(overview);
    }
    let fields = [
        "product_name",
        "product_version",
        "rabbitmq_version",
        "node",
        "cluster_name",
        "listeners",
        "object_totals",
        "queue_totals",
    ];
    fields.iter().filter_map(|f| overview.get(f).map(|v| format!("{f}: {}", cell(v)))).collect::<Vec<_>>().join("\n")
}

fn json(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// An object as its `columns`, in order, keyed by the column as given.
fn pick(item: &Value, columns: &[String]) -> Value {
    let object: Map<String, Value> =
        columns.iter().map(|c| (c.clone(), lookup(item, c).cloned().unwrap_or(Value::Null))).collect();
    Value::Object(object)
}

fn lookup<'a>(item: &'a Value, column: &str) -> Option<&'a Value> {
    column.split('.').try_fold(item, |v, key| v.get(key))
}

/// A value in a table: strings bare, a list of strings as rabbitmqctl prints one
/// (`[management, monitoring]`), anything else as JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let items: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

fn table(rows: &Rows) -> String {
    let mut lines: Vec<Vec<String>> = vec![rows.columns.clone()];
    lines.extend(
        rows.items.iter().map(|i| rows.columns.iter().map(|c| lookup(i, c).map(cell).unwrap_or_default()).collect()),
    );
    let widths: Vec<usize> =
        (0..rows.columns.len()).map(|col| lines.iter().map(|l| l[col].chars().count()).max().unwrap_or(0)).collect();
    lines
        .iter()
        .map(|l| {
            let padded: Vec<String> = l.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            padded.join("  ").trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
