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
                let program = cel::Program::compile(expr)
                    .map_err(|e| format!("invalid match expression '{expr}': {e}"))?;
                out.push((Some(program), path));
            }
        }
        Ok(Self { rules: out })
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

    /// The paths, in order (for the metadata API).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|(_, p)| p.as_str())
    }
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
    }
}
