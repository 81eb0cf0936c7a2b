//! The state query API pushed down into SQL over the `jsonb` value column.
//!
//! The semantics follow `mecha_core::state::QueryFilter::matches`: a dotted path `person.org`
//! becomes the bound path array `{person,org}` of `value #> $n`; EQ, NEQ and IN compare `jsonb`
//! values (numbers numerically); GT, GTE, LT and LTE match only a number compared with a number
//! or a string with a string (in code point order, `COLLATE "C"`); a missing path matches
//! nothing but NEQ. Sorting orders missing < null < booleans < numbers < strings < others, then
//! by key. Non-JSON values are never returned. The page token is the offset. Every value and
//! path is a bound parameter; only the validated table name is formatted into the SQL.

use mecha_core::state::{Query, QueryFilter, SortOrder, StateError};
use serde_json::Value;

use super::sql::{DATA, LIVE};

/// A bound parameter of a query.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Param {
    /// A `text` value (a key prefix, a JSON document, a string).
    Text(String),
    /// A `text[]` JSON path.
    Path(Vec<String>),
    /// A `bigint` (limit, offset).
    Int(i64),
}

/// A query translated to SQL.
#[derive(Clone, Debug)]
pub(super) struct Translated {
    /// The statement, returning `key`, the stored bytes and the ETag.
    pub(super) sql: String,
    /// Its parameters, `$1` first.
    pub(super) params: Vec<Param>,
    /// The page size, if any; one more row is fetched to tell whether a next page exists.
    pub(super) limit: Option<usize>,
    /// The offset the page starts at.
    pub(super) offset: usize,
}

struct Builder {
    params: Vec<Param>,
}

// === impl Translated ===

impl Translated {
    /// Translates `query` for the quoted table `table`.
    pub(super) fn new(table: &str, query: &Query) -> Result<Self, StateError> {
        let offset = match &query.token {
            None => 0,
            Some(t) => t
                .parse::<usize>()
                .map_err(|_| StateError::BadRequest(format!("invalid query token '{t}'")))?,
        };
        let mut b = Builder { params: Vec::new() };
        let prefix = b.bind(Param::Text(query.key_prefix.clone()));
        let mut sql = format!(
            "SELECT key, {DATA}, xmin::text FROM {table} \
             WHERE starts_with(key, {prefix}) AND NOT isbinary AND {LIVE}"
        );
        if let Some(filter) = &query.filter {
            sql.push_str(" AND ");
            sql.push_str(&b.filter(filter));
        }
        sql.push_str(" ORDER BY ");
        for (path, order) in &query.sort {
            sql.push_str(&b.sort(path, *order));
            sql.push_str(", ");
        }
        sql.push_str("key COLLATE \"C\"");
        if let Some(limit) = query.limit {
            let n = b.bind(Param::Int(to_i64(limit.saturating_add(1))));
            sql.push_str(&format!(" LIMIT {n}"));
        }
        if offset > 0 {
            let n = b.bind(Param::Int(to_i64(offset)));
            sql.push_str(&format!(" OFFSET {n}"));
        }
        Ok(Self {
            sql,
            params: b.params,
            limit: query.limit,
            offset,
        })
    }
}

// === impl Builder ===

impl Builder {
    /// Adds a parameter and returns its placeholder.
    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("${}", self.params.len())
    }

    fn path(&mut self, path: &str) -> String {
        self.bind(Param::Path(path.split('.').map(str::to_owned).collect()))
    }

    fn json(&mut self, value: &Value) -> String {
        let p = self.bind(Param::Text(value.to_string()));
        format!("{p}::jsonb")
    }

    fn filter(&mut self, filter: &QueryFilter) -> String {
        match filter {
            QueryFilter::Eq(path, v) => {
                let (p, v) = (self.path(path), self.json(v));
                format!("COALESCE(value #> {p} = {v}, false)")
            }
            QueryFilter::Neq(path, v) => {
                let (p, v) = (self.path(path), self.json(v));
                format!("(value #> {p} = {v}) IS NOT TRUE")
            }
            QueryFilter::Gt(path, v) => self.compare(path, ">", v),
            QueryFilter::Gte(path, v) => self.compare(path, ">=", v),
            QueryFilter::Lt(path, v) => self.compare(path, "<", v),
            QueryFilter::Lte(path, v) => self.compare(path, "<=", v),
            QueryFilter::In(_, values) if values.is_empty() => "false".to_owned(),
            QueryFilter::In(path, values) => {
                let p = self.path(path);
                let list = self.json(&Value::Array(values.clone()));
                format!("COALESCE(value #> {p} IN (SELECT jsonb_array_elements({list})), false)")
            }
            QueryFilter::And(filters) => self.join(filters, " AND "),
            QueryFilter::Or(filters) => self.join(filters, " OR "),
        }
    }

    fn join(&mut self, filters: &[QueryFilter], op: &str) -> String {
        let parts: Vec<String> = filters.iter().map(|f| self.filter(f)).collect();
        format!("({})", parts.join(op))
    }

    /// An ordering comparison: numbers with numbers, strings with strings, nothing else.
    fn compare(&mut self, path: &str, op: &str, want: &Value) -> String {
        match want {
            Value::Number(_) => {
                let (p, v) = (self.path(path), self.json(want));
                format!(
                    "COALESCE(jsonb_typeof(value #> {p}) = 'number' AND value #> {p} {op} {v}, \
                     false)"
                )
            }
            Value::String(s) => {
                let p = self.path(path);
                let v = self.bind(Param::Text(s.clone()));
                format!(
                    "COALESCE(jsonb_typeof(value #> {p}) = 'string' \
                     AND (value #>> {p}) COLLATE \"C\" {op} {v}, false)"
                )
            }
            _ => "false".to_owned(),
        }
    }

    /// Sort keys for one path: the type's rank, then numbers and booleans as `jsonb`, then
    /// strings in code point order.
    fn sort(&mut self, path: &str, order: SortOrder) -> String {
        let p = self.path(path);
        let dir = match order {
            SortOrder::Asc => "ASC",
            SortOrder::Desc => "DESC",
        };
        let v = format!("value #> {p}");
        format!(
            "CASE WHEN {v} IS NULL THEN 0 WHEN jsonb_typeof({v}) = 'null' THEN 1 \
             WHEN jsonb_typeof({v}) = 'boolean' THEN 2 WHEN jsonb_typeof({v}) = 'number' THEN 3 \
             WHEN jsonb_typeof({v}) = 'string' THEN 4 ELSE 5 END {dir}, \
             CASE WHEN jsonb_typeof({v}) IN ('boolean', 'number') THEN {v} END {dir}, \
             CASE WHEN jsonb_typeof({v}) = 'string' THEN value #>> {p} END COLLATE \"C\" {dir}"
        )
    }
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
