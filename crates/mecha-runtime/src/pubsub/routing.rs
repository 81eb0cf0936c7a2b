//! Routing rules: CEL expressions over `event` (the CloudEvent), evaluated in order; the first
//! that is true names the app path, the default route (an empty expression) matches always.

use serde_json::{Map, Value};

/// Compiled rules of one subscription.
pub struct Router {
    rules: Vec<(Option<cel::Program>, String)>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.rules.iter().map(|(_, p)| p))
            .finish()
    }
}

// === impl Router ===

impl Router {
    /// Compiles `(expression, path)` pairs; an empty expression always matches. Paths are kept
    /// as written: gRPC apps match them verbatim (the Python SDK uses handler names, or an
    /// empty path); HTTP delivery adds the leading `/`.
    pub fn new(rules: &[(String, String)]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(rules.len());
        for (expr, path) in rules {
            let path = path.clone();
            if expr.trim().is_empty() {
                out.push((None, path));
            } else {
                check_size(expr)?;
                let program = compile(expr)?;
                out.push((Some(program), path));
            }
        }
        Ok(Self { rules: out })
    }

    /// The paths, in rule order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(_, p)| p.as_str())
    }

    /// Whether every event goes to one path (no expression to evaluate).
    pub fn single_path(&self) -> Option<&str> {
        match self.rules.first() {
            Some((None, p)) => Some(p),
            _ => None,
        }
    }

    /// The path for `event`, or `None` when no rule matches. An expression that fails to
    /// evaluate (a missing field, a type mismatch) does not match.
    pub fn route(&self, event: &Map<String, Value>) -> Option<&str> {
        if let Some(p) = self.single_path() {
            return Some(p);
        }
        let mut ctx = cel::Context::default();
        if ctx.add_variable("event", event).is_err() {
            return self
                .rules
                .iter()
                .find(|(p, _)| p.is_none())
                .map(|(_, path)| path.as_str());
        }
        for (program, path) in &self.rules {
            match program {
                None => return Some(path),
                Some(p) => match p.execute(&ctx) {
                    Ok(cel::Value::Bool(true)) => return Some(path),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(path = %path, error = %e, "Routing rule did not evaluate")
                    }
                },
            }
        }
        None
    }
}

/// The most a routing expression may nest brackets, chain operators or members: the CEL
/// parser and evaluator recurse on them, and a subscription must not be able to overflow a
/// worker thread's stack.
const MAX_NESTING: usize = 8;
const MAX_OPERATORS: usize = 24;
const MAX_MEMBERS: usize = 128;
const MAX_LENGTH: usize = 2048;

/// Refuses expressions beyond the limits above (string literals are not counted).
fn check_size(expr: &str) -> Result<(), String> {
    let too_big = |what: &str, limit: usize| {
        Err(format!(
            "match expression '{}' is too complex: more than {limit} {what}",
            expr.chars().take(80).collect::<String>()
        ))
    };
    if expr.len() > MAX_LENGTH {
        return too_big("characters", MAX_LENGTH);
    }
    let (mut depth, mut max_depth, mut operators, mut members) = (0usize, 0usize, 0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            if c == '\\' {
                chars.next();
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '+' | '-' | '*' | '/' | '%' | '<' | '>' | '?' => operators += 1,
            '=' | '!' if chars.peek() == Some(&'=') => {
                chars.next();
                operators += 1;
            }
            '&' | '|' if chars.peek() == Some(&c) => {
                chars.next();
                operators += 1;
            }
            '.' => members += 1,
            _ => {}
        }
    }
    if max_depth > MAX_NESTING {
        return too_big("levels of brackets", MAX_NESTING);
    }
    if operators > MAX_OPERATORS {
        return too_big("operators", MAX_OPERATORS);
    }
    if members > MAX_MEMBERS {
        return too_big("member accesses", MAX_MEMBERS);
    }
    Ok(())
}

/// Compiles on a thread with a generous stack: the parser recurses on the expression.
fn compile(expr: &str) -> Result<cel::Program, String> {
    let owned = expr.to_owned();
    let compiled = std::thread::Builder::new()
        .name("cel-compile".into())
        .stack_size(16 << 20)
        .spawn(move || cel::Program::compile(&owned).map_err(|e| e.to_string()))
        .map_err(|e| format!("cannot compile match expression '{expr}': {e}"))?
        .join()
        .map_err(|_| format!("cannot compile match expression '{expr}'"))?;
    compiled.map_err(|e| format!("invalid match expression '{expr}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn first_match_wins_then_default() {
        let r = Router::new(&[
            (r#"event.type == "widget""#.into(), "/widgets".into()),
            ("event.data.price > 100".into(), "expensive".into()),
            (String::new(), "/other".into()),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let e = event(serde_json::json!({"type": "widget", "data": {"price": 500}}));
        assert_eq!(r.route(&e), Some("/widgets"));
        let e = event(serde_json::json!({"type": "gadget", "data": {"price": 500}}));
        assert_eq!(r.route(&e), Some("expensive"));
        let e = event(serde_json::json!({"type": "gadget", "data": "text"}));
        assert_eq!(r.route(&e), Some("/other"));
    }

    #[test]
    fn no_default_means_no_route() {
        let r = Router::new(&[(r#"event.type == "a""#.into(), "/a".into())])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.route(&event(serde_json::json!({"type": "b"}))), None);
        assert!(Router::new(&[("event.type ==".into(), "/a".into())]).is_err());
        let deep = "(".repeat(20) + "true" + &")".repeat(20);
        assert!(Router::new(&[(deep, "/a".into())]).is_err_and(|e| e.contains("too complex")));
        let chain = "1 + ".repeat(40) + "1 > 0";
        assert!(Router::new(&[(chain, "/a".into())]).is_err());
        let ok = r#"event.type == "a" && (event.data.n > 1 || event.data.s == "x+y-z")"#;
        assert!(Router::new(&[(ok.into(), "/a".into())]).is_ok());
    }
}
