//! Lists as RabbitMQ's management API returns them: sorted (`sort`, a dotted column path,
//! `sort_reverse`), cut to `columns`, and, when `page` is given, filtered by `name`
//! (case-insensitive substring, or a regular expression with `use_regex=true`) and paged
//! (`page_size` up to 500) into `{filtered_count, item_count, items, page, page_count,
//! page_size, total_count}`.
//!
//! [`respond_lazily`] does the same for a long list of objects (100,000 queues, exchanges or
//! bindings) turning only the page asked for into JSON when the sort is by columns read
//! without building it: each object's sort key is computed alone, then the page is built.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// RabbitMQ's largest page.
pub const PAGE_SIZE_MAX: u64 = 500;
const PAGE_SIZE_DEFAULT: u64 = 100;
/// Longest `name` filter or regular expression accepted.
const NAME_FILTER_MAX_BYTES: usize = 1024;

/// The query parameters a list takes.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
    sort: Option<String>,
    sort_reverse: Option<String>,
    columns: Option<String>,
}

/// Sorts, pages and cuts `items` as `q` asks; `default_sort` are the columns RabbitMQ sorts
/// that list by when no `sort` is given.
pub fn respond(mut items: Vec<Value>, q: &ListQuery, default_sort: &[&str]) -> ApiResult<Value> {
    let sort: Vec<&str> = match q.sort.as_deref() {
        Some(s) if !s.is_empty() => vec![s],
        _ => default_sort.to_vec(),
    };
    items.sort_by(|a, b| {
        sort.iter().map(|c| compare(lookup(a, c), lookup(b, c))).find(|o| o.is_ne()).unwrap_or(Ordering::Equal)
    });
    if q.sort_reverse.as_deref() == Some("true") {
        items.reverse();
    }
    let Some(paging) = Paging::of(q)? else { return Ok(Value::Array(cut(items, q))) };
    let total = items.len();
    let matches = name_matcher(q)?;
    let filtered: Vec<Value> = items
        .into_iter()
        .filter(|i| matches.as_ref().is_none_or(|m| i.get("name").and_then(Value::as_str).is_some_and(m)))
        .collect();
    let range = paging.range(filtered.len())?;
    let filtered_count = filtered.len();
    let page_items: Vec<Value> = filtered.into_iter().skip(range.start).take(range.len()).collect();
    Ok(paging.reply(cut(page_items, q), filtered_count, total))
}

/// How a long list's objects are filtered and sorted without building their JSON.
pub struct Lazy<'a, T> {
    /// Whether a sort column (a dotted path) can be read without building an object's JSON.
    pub cheap: &'a dyn Fn(&str) -> bool,
    /// What the JSON `build` gives has at `column` (a cheap one, or `name`): None where it
    /// has nothing.
    pub value: &'a dyn Fn(&T, &str) -> Option<Value>,
    /// The columns RabbitMQ sorts the list by when no `sort` is given.
    pub default_sort: &'a [&'a str],
}

/// As [`respond`], for objects turned into JSON by `build`. With `page` and a sort by
/// `lazy.cheap` columns, the objects are filtered, sorted and paged by those columns' values
/// alone and only the page's are built; any other request builds them all and goes through
/// [`respond`] (without `page` the whole list is the answer anyway).
pub fn respond_lazily<T>(
    items: Vec<T>,
    q: &ListQuery,
    lazy: Lazy<'_, T>,
    build: impl Fn(&T) -> Value,
) -> ApiResult<Value> {
    let sort: Vec<&str> = match q.sort.as_deref() {
        Some(s) if !s.is_empty() => vec![s],
        _ => lazy.default_sort.to_vec(),
    };
    let Some(paging) = Paging::of(q)?.filter(|_| sort.iter().all(|c| (lazy.cheap)(c))) else {
        return respond(items.iter().map(build).collect(), q, lazy.default_sort);
    };
    let total = items.len();
    let matches = name_matcher(q)?;
    let kept = |i: &T| match &matches {
        None => true,
        Some(m) => (lazy.value)(i, "name").as_ref().and_then(Value::as_str).is_some_and(m),
    };
    // Each kept object with its sort keys and its place in the list, which breaks ties as the
    // stable sort (then reversed, for `sort_reverse`) of `respond` does.
    let mut keyed: Vec<(Vec<Option<Value>>, usize, &T)> = items
        .iter()
        .filter(|i| kept(i))
        .enumerate()
        .map(|(n, i)| (sort.iter().map(|c| (lazy.value)(i, c)).collect(), n, i))
        .collect();
    let reverse = q.sort_reverse.as_deref() == Some("true");
    let order = |(a, m, _): &(Vec<Option<Value>>, usize, &T), (b, n, _): &(Vec<Option<Value>>, usize, &T)| {
        let by_keys = a.iter().zip(b).map(|(x, y)| compare(x.as_ref(), y.as_ref())).find(|o| o.is_ne());
        let o = by_keys.unwrap_or_else(|| m.cmp(n));
        if reverse { o.reverse() } else { o }
    };
    let filtered_count = keyed.len();
    let range = paging.range(filtered_count)?;
    // Only the objects up to the page's end are put in order: the rest are just after them.
    if range.end < keyed.len() {
        keyed.select_nth_unstable_by(range.end, order);
        keyed.truncate(range.end);
    }
    keyed.sort_unstable_by(order);
    let page_items: Vec<Value> = keyed[range].iter().map(|(_, _, i)| build(i)).collect();
    Ok(paging.reply(cut(page_items, q), filtered_count, total))
}

/// A request's `page` and `page_size`, checked as RabbitMQ checks them.
struct Paging {
    page: u64,
    page_size: u64,
}

impl Paging {
    /// None without `page`: the whole list is answered.
    fn of(q: &ListQuery) -> ApiResult<Option<Paging>> {
        let Some(page) = &q.page else { return Ok(None) };
        let page_size_text = q.page_size.as_deref().unwrap_or("undefined");
        let (Ok(page), Ok(page_size)) =
            (page.parse::<u64>(), q.page_size.as_deref().map_or(Ok(PAGE_SIZE_DEFAULT), str::parse::<u64>))
        else {
            return Err(ApiError::BadRequest("Pagination parameters are invalid".into()));
        };
        if page == 0 || page_size == 0 || page_size > PAGE_SIZE_MAX {
            return Err(ApiError::BadRequestCode {
                error: "invalid_pagination_parameters",
                reason: format!("Invalid pagination parameters: page number {page}, page size {page_size_text}"),
            });
        }
        Ok(Some(Paging { page, page_size }))
    }

    /// Which of `filtered_count` items are on the page (400 `page_out_of_range` past the last).
    fn range(&self, filtered_count: usize) -> ApiResult<std::ops::Range<usize>> {
        let page_count = (filtered_count as u64).div_ceil(self.page_size);
        if self.page > page_count.max(1) {
            return Err(ApiError::BadRequestCode {
                error: "page_out_of_range",
                reason: format!(
                    "Page out of range, page: {} page size: {}, len: {filtered_count}",
                    self.page, self.page_size
                ),
            });
        }
        let start = ((self.page - 1) * self.page_size) as usize;
        Ok(start..filtered_count.min(start + self.page_size as usize))
    }

    fn reply(&self, items: Vec<Value>, filtered_count: usize, total: usize) -> Value {
        json!({
            "filtered_count": filtered_count,
            "item_count": items.len(),
            "items": items,
            "page": self.page,
            "page_count": (filtered_count as u64).div_ceil(self.page_size),
            "page_size": self.page_size,
            "total_count": total,
        })
    }
}

/// A single object cut to `columns`.
pub fn respond_one(item: Value, q: &ListQuery) -> Value {
    match &q.columns {
        Some(c) if !c.is_empty() => select(&item, &columns(c)),
        _ => item,
    }
}

type NameMatcher = Box<dyn Fn(&str) -> bool>;

/// The `name` filter: a case-insensitive substring, or a regular expression with
/// `use_regex=true`; None without one.
fn name_matcher(q: &ListQuery) -> ApiResult<Option<NameMatcher>> {
    let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) else { return Ok(None) };
    if name.len() > NAME_FILTER_MAX_BYTES {
        return Err(ApiError::BadRequest(format!("name filter longer than {NAME_FILTER_MAX_BYTES} bytes")));
    }
    let matches: NameMatcher = if q.use_regex.as_deref() == Some("true") {
        let re = regex::RegexBuilder::new(name)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| ApiError::BadRequest(format!("invalid regular expression: {e}")))?;
        Box::new(move |s| re.is_match(s))
    } else {
        let needle = name.to_lowercase();
        Box::new(move |s| s.to_lowercase().contains(&needle))
    };
    Ok(Some(matches))
}

fn cut(items: Vec<Value>, q: &ListQuery) -> Vec<Value> {
    match &q.columns {
        Some(c) if !c.is_empty() => {
            let cols = columns(c);
            items.iter().map(|i| select(i, &cols)).collect()
        }
        _ => items,
    }
}

fn columns(text: &str) -> Vec<Vec<&str>> {
    text.split(',').filter(|c| !c.is_empty()).map(|c| c.split('.').collect()).collect()
}

/// Keeps the dotted `paths` of `item` (a missing leaf keeps its parent, emptied, as RabbitMQ).
fn select(item: &Value, paths: &[Vec<&str>]) -> Value {
    let mut out = Map::new();
    for path in paths {
        copy_path(item, path, &mut out);
    }
    Value::Object(out)
}

fn copy_path(from: &Value, path: &[&str], into: &mut Map<String, Value>) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(value) = from.get(*first) else { return };
    if rest.is_empty() || !value.is_object() {
        into.insert((*first).to_owned(), value.clone());
        return;
    }
    let entry = into.entry((*first).to_owned()).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(child) = entry {
        copy_path(value, rest, child);
    }
}

fn lookup<'a>(item: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(item, |v, key| v.get(key))
}

/// Missing < null < booleans < numbers < strings < anything else.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None => 0,
            Some(Value::Null) => 1,
            Some(Value::Bool(_)) => 2,
            Some(Value::Number(_)) => 3,
            Some(Value::String(_)) => 4,
            Some(_) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> ListQuery {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        serde_urlencoded_like(&text.join("&"))
    }

    fn serde_urlencoded_like(s: &str) -> ListQuery {
        axum::extract::Query::<ListQuery>::try_from_uri(&format!("/x?{s}").parse().expect("uri")).expect("query").0
    }

    fn items() -> Vec<Value> {
        (1..=7)
            .map(|i| json!({"name": format!("q{i}"), "vhost": "/", "messages": 8 - i, "arguments": {"a": i}}))
            .collect()
    }

    #[test]
    fn pages_as_rabbitmq() {
        let v = respond(items(), &q(&[("page", "2"), ("page_size", "3")]), &["name"]).expect("page");
        assert_eq!(v["page_count"], 3);
        assert_eq!(v["total_count"], 7);
        assert_eq!(v["filtered_count"], 7);
        assert_eq!(v["item_count"], 3);
        assert_eq!(v["items"][0]["name"], "q4");
        let err = respond(items(), &q(&[("page", "4"), ("page_size", "3")]), &["name"]).unwrap_err();
        assert!(matches!(err, ApiError::BadRequestCode { error: "page_out_of_range", .. }));
        let err = respond(items(), &q(&[("page", "1"), ("page_size", "501")]), &["name"]).unwrap_err();
        assert!(matches!(err, ApiError::BadRequestCode { error: "invalid_pagination_parameters", .. }));
        let empty = respond(Vec::new(), &q(&[("page", "1")]), &["name"]).expect("empty page 1");
        assert_eq!(empty["page_count"], 0);
    }

    #[test]
    fn lazily_answers_as_respond_and_builds_only_the_page() {
        let objects: Vec<(String, String)> =
            [("b", "q2"), ("a", "q9"), ("a", "Q10"), ("b", "q1"), ("a", "x")].map(|(v, n)| (v.into(), n.into())).into();
        let built = std::cell::Cell::new(0);
        let build = |o: &(String, String)| {
            built.set(built.get() + 1);
            json!({"vhost": o.0, "name": o.1, "messages": o.1.len()})
        };
        let value = |o: &(String, String), column: &str| match column {
            "vhost" => Some(json!(o.0)),
            "messages" => Some(json!(o.1.len())),
            "name" => Some(json!(o.1)),
            _ => None,
        };
        let is_cheap = |c: &str| ["vhost", "name", "messages", "memory"].contains(&c);
        let cheap = || Lazy { cheap: &is_cheap, value: &value, default_sort: &["vhost", "name"] };
        for pairs in [
            &[("page", "1"), ("page_size", "2")][..],
            &[("page", "2"), ("page_size", "2"), ("name", "q")],
            &[("page", "1"), ("name", "^q[0-9]$"), ("use_regex", "true"), ("sort", "name")],
            &[("page", "1"), ("sort", "vhost"), ("sort_reverse", "true"), ("columns", "name")],
            &[("page", "1"), ("sort", "messages")],
            &[("page", "1"), ("sort", "messages"), ("sort_reverse", "true")],
            &[("page", "1"), ("sort", "arguments")],
            &[("page", "2"), ("page_size", "2"), ("sort", "memory"), ("sort_reverse", "true")],
            &[("sort", "name")],
        ] {
            let all: Vec<Value> = objects.iter().map(build).collect();
            built.set(0);
            let lazy = respond_lazily(objects.clone(), &q(pairs), cheap(), build).expect("lazy");
            assert_eq!(lazy, respond(all, &q(pairs), &["vhost", "name"]).expect("respond"), "{pairs:?}");
            if pairs.iter().any(|(k, _)| *k == "page") && !pairs.contains(&("sort", "arguments")) {
                assert_eq!(built.get() as u64, lazy["item_count"].as_u64().expect("count"), "{pairs:?}");
            }
        }
        let err = respond_lazily(objects.clone(), &q(&[("page", "9")]), cheap(), build).unwrap_err();
        assert!(matches!(err, ApiError::BadRequestCode { error: "page_out_of_range", .. }));
    }

    #[test]
    fn filters_sorts_and_cuts() {
        let v =
            respond(items(), &q(&[("page", "1"), ("name", "Q[35]"), ("use_regex", "true")]), &["name"]).expect("re");
        assert_eq!(v["filtered_count"], 2);
        let v =
            respond(items(), &q(&[("sort", "messages"), ("columns", "name,arguments.b")]), &["name"]).expect("sort");
        assert_eq!(v[0], json!({"name": "q7", "arguments": {}}));
        let v = respond(items(), &q(&[("sort", "name"), ("sort_reverse", "true")]), &["vhost"]).expect("reverse");
        assert_eq!(v[0]["name"], "q7");
        let v = respond(items(), &q(&[("name", "q1")]), &["name"]).expect("no page: no filter");
        assert_eq!(v.as_array().map(Vec::len), Some(7));
    }
}
