//! The state query language (`/v1.0-alpha1/state/{store}/query`): filters, sort and paging
//! over JSON values, and an evaluator stores can use when they cannot push a query down.

use std::cmp::Ordering;

use bytes::Bytes;
use serde_json::Value;

/// A parsed query. The runtime sets [`Query::key_prefix`]; stores only look at keys under it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// The filter, `None` to match every value.
    pub filter: Option<QueryFilter>,
    /// Sort keys, applied in order.
    pub sort: Vec<(String, SortOrder)>,
    /// Page size; `None` for everything.
    pub limit: Option<usize>,
    /// The token of the page to return, from a previous response.
    pub token: Option<String>,
    /// Only keys with this prefix are queried; it is stripped from result keys by the runtime.
    pub key_prefix: String,
}

/// A filter over dotted paths into the JSON value (`person.org`).
#[derive(Clone, Debug, PartialEq)]
pub enum QueryFilter {
    /// Equal.
    Eq(String, Value),
    /// Not equal.
    Neq(String, Value),
    /// Greater than.
    Gt(String, Value),
    /// Greater than or equal.
    Gte(String, Value),
    /// Less than.
    Lt(String, Value),
    /// Less than or equal.
    Lte(String, Value),
    /// Equal to one of the values.
    In(String, Vec<Value>),
    /// All must match.
    And(Vec<QueryFilter>),
    /// One must match.
    Or(Vec<QueryFilter>),
}

/// Sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortOrder {
    /// Ascending (the default).
    Asc,
    /// Descending.
    Desc,
}

/// The results of a query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryResponse {
    /// Matching items, in order.
    pub results: Vec<QueryResult>,
    /// The token of the next page, when there is one.
    pub token: Option<String>,
}

/// One matching item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryResult {
    /// The stored (prefixed) key.
    pub key: String,
    /// The stored bytes.
    pub data: Bytes,
    /// The ETag.
    pub etag: Option<String>,
}

/// A query that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct QueryError(pub String);

// === impl Query ===

impl Query {
    /// Parses the JSON query body.
    pub fn parse(body: &[u8]) -> Result<Self, QueryError> {
        let v: Value = serde_json::from_slice(body).map_err(|e| QueryError(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| QueryError("the query must be an object".into()))?;
        let filter = match obj.get("filter") {
            None | Some(Value::Null) => None,
            Some(f) if f.as_object().is_some_and(|m| m.is_empty()) => None,
            Some(f) => Some(QueryFilter::parse(f)?),
        };
        let mut sort = Vec::new();
        if let Some(s) = obj.get("sort").filter(|s| !s.is_null()) {
            for item in s
                .as_array()
                .ok_or_else(|| QueryError("sort must be a list".into()))?
            {
                let key = item
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| QueryError("every sort item needs a key".into()))?;
                let order = match item.get("order").and_then(Value::as_str) {
                    None | Some("ASC") | Some("asc") => SortOrder::Asc,
                    Some("DESC") | Some("desc") => SortOrder::Desc,
                    Some(o) => return Err(QueryError(format!("unknown sort order '{o}'"))),
                };
                sort.push((key.to_owned(), order));
            }
        }
        let page = obj.get("page");
        let limit = match page.and_then(|p| p.get("limit")) {
            None | Some(Value::Null) => None,
            Some(l) => match l.as_u64() {
                Some(0) => None,
                Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                None => {
                    return Err(QueryError(
                        "page.limit must be a non-negative integer".into(),
                    ));
                }
            },
        };
        let token = page
            .and_then(|p| p.get("token"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Query {
            filter,
            sort,
            limit,
            token,
            key_prefix: String::new(),
        })
    }

    /// Evaluates the query over `(key, value, etag)` rows already limited to the key prefix.
    ///
    /// Rows whose value is not JSON never match a filter. The page token is an offset.
    pub fn evaluate(
        &self,
        rows: impl IntoIterator<Item = (String, Bytes, Option<String>)>,
    ) -> Result<QueryResponse, QueryError> {
        let offset = match &self.token {
            None => 0,
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| QueryError(format!("bad token '{t}'")))?,
        };
        let mut matched: Vec<(Value, QueryResult)> = rows
            .into_iter()
            .filter_map(|(key, data, etag)| {
                let value: Value = serde_json::from_slice(&data).ok()?;
                let keep = self.filter.as_ref().is_none_or(|f| f.matches(&value));
                keep.then_some((value, QueryResult { key, data, etag }))
            })
            .collect();
        matched.sort_by(|(a, ra), (b, rb)| {
            for (path, order) in &self.sort {
                let o = compare_opt(lookup(a, path), lookup(b, path));
                let o = if *order == SortOrder::Desc {
                    o.reverse()
                } else {
                    o
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            ra.key.cmp(&rb.key)
        });
        let total = matched.len();
        let end = self
            .limit
            .map_or(total, |l| offset.saturating_add(l).min(total));
        let results: Vec<QueryResult> = matched
            .into_iter()
            .skip(offset)
            .take(end.saturating_sub(offset))
            .map(|(_, r)| r)
            .collect();
        let token = (end < total).then(|| end.to_string());
        Ok(QueryResponse { results, token })
    }
}

// === impl QueryFilter ===

impl QueryFilter {
    fn parse(v: &Value) -> Result<Self, QueryError> {
        let obj = v.as_object().filter(|o| o.len() == 1).ok_or_else(|| {
            QueryError("a filter must be an object with exactly one operator".into())
        })?;
        let Some((op, arg)) = obj.iter().next() else {
            return Err(QueryError("empty filter".into()));
        };
        let list = |arg: &Value| -> Result<Vec<QueryFilter>, QueryError> {
            let items = arg
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| QueryError(format!("{op} needs a non-empty list of filters")))?;
            items.iter().map(QueryFilter::parse).collect()
        };
        let field = |arg: &Value| -> Result<(String, Value), QueryError> {
            let m = arg.as_object().filter(|m| m.len() == 1).ok_or_else(|| {
                QueryError(format!("{op} needs an object with exactly one field"))
            })?;
            let (k, v) = m
                .iter()
                .next()
                .ok_or_else(|| QueryError(format!("empty {op}")))?;
            Ok((k.clone(), v.clone()))
        };
        Ok(match op.as_str() {
            "AND" => QueryFilter::And(list(arg)?),
            "OR" => QueryFilter::Or(list(arg)?),
            "EQ" => field(arg).map(|(k, v)| QueryFilter::Eq(k, v))?,
            "NEQ" => field(arg).map(|(k, v)| QueryFilter::Neq(k, v))?,
            "GT" => field(arg).map(|(k, v)| QueryFilter::Gt(k, v))?,
            "GTE" => field(arg).map(|(k, v)| QueryFilter::Gte(k, v))?,
            "LT" => field(arg).map(|(k, v)| QueryFilter::Lt(k, v))?,
            "LTE" => field(arg).map(|(k, v)| QueryFilter::Lte(k, v))?,
            "IN" => {
                let (k, v) = field(arg)?;
                match v {
                    Value::Array(items) => QueryFilter::In(k, items),
                    _ => return Err(QueryError("IN needs a list of values".into())),
                }
            }
            other => return Err(QueryError(format!("unknown filter operator '{other}'"))),
        })
    }

    /// Whether `value` satisfies the filter.
    pub fn matches(&self, value: &Value) -> bool {
        let cmp = |path: &str, want: &Value| compare_opt(lookup(value, path), Some(want));
        let found = |path: &str| lookup(value, path).is_some();
        match self {
            QueryFilter::Eq(p, v) => lookup(value, p).is_some_and(|x| json_eq(x, v)),
            QueryFilter::Neq(p, v) => !lookup(value, p).is_some_and(|x| json_eq(x, v)),
            QueryFilter::Gt(p, v) => found(p) && comparable(value, p, v) && cmp(p, v).is_gt(),
            QueryFilter::Gte(p, v) => found(p) && comparable(value, p, v) && cmp(p, v).is_ge(),
            QueryFilter::Lt(p, v) => found(p) && comparable(value, p, v) && cmp(p, v).is_lt(),
            QueryFilter::Lte(p, v) => found(p) && comparable(value, p, v) && cmp(p, v).is_le(),
            QueryFilter::In(p, vs) => {
                lookup(value, p).is_some_and(|x| vs.iter().any(|v| json_eq(x, v)))
            }
            QueryFilter::And(fs) => fs.iter().all(|f| f.matches(value)),
            QueryFilter::Or(fs) => fs.iter().any(|f| f.matches(value)),
        }
    }
}

/// Follows a dotted path (`person.org`, `items.0.id`) into a JSON value.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn comparable(value: &Value, path: &str, want: &Value) -> bool {
    matches!(
        (lookup(value, path), want),
        (Some(Value::Number(_)), Value::Number(_)) | (Some(Value::String(_)), Value::String(_))
    )
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Orders JSON values: absent < null < bool < number < string < others; numbers numerically.
fn compare_opt(a: Option<&Value>, b: Option<&Value>) -> Ordering {
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
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<(String, Bytes, Option<String>)> {
        [
            ("a", r#"{"state":"CA","n":3,"person":{"org":"Dev"}}"#),
            ("b", r#"{"state":"WA","n":1,"person":{"org":"Fin"}}"#),
            ("c", r#"{"state":"CA","n":2,"person":{"org":"Fin"}}"#),
            ("d", "not json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Bytes::from(v), None))
        .collect()
    }

    fn keys(q: &str) -> (Vec<String>, Option<String>) {
        let r = Query::parse(q.as_bytes())
            .unwrap()
            .evaluate(rows())
            .unwrap();
        (r.results.into_iter().map(|r| r.key).collect(), r.token)
    }

    #[test]
    fn filters_sorts_and_pages() {
        assert_eq!(keys(r#"{"filter":{"EQ":{"state":"CA"}}}"#).0, ["a", "c"]);
        assert_eq!(
            keys(r#"{"filter":{"OR":[{"EQ":{"person.org":"Dev"}},{"AND":[{"EQ":{"person.org":"Fin"}},{"IN":{"state":["WA"]}}]}]}}"#).0,
            ["a", "b"]
        );
        assert_eq!(
            keys(r#"{"filter":{"GTE":{"n":2}},"sort":[{"key":"n"}]}"#).0,
            ["c", "a"]
        );
        assert_eq!(
            keys(r#"{"filter":{"LT":{"n":3}},"sort":[{"key":"n","order":"DESC"}]}"#).0,
            ["c", "b"]
        );
        assert_eq!(
            keys(r#"{"page":{"limit":2}}"#),
            (vec!["a".into(), "b".into()], Some("2".into()))
        );
        assert_eq!(
            keys(r#"{"page":{"limit":2,"token":"2"}}"#),
            (vec!["c".into()], None)
        );
    }

    #[test]
    fn rejects_bad_queries() {
        for q in [
            r#"{"filter":{"XX":{"a":1}}}"#,
            r#"{"filter":{"IN":{"a":1}}}"#,
            "[",
            r#"{"sort":[{"order":"ASC"}]}"#,
        ] {
            assert!(Query::parse(q.as_bytes()).is_err(), "{q}");
        }
    }
}
