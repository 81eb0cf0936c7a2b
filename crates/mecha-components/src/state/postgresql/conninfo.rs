//! Connection strings: a `postgres://` URL, parsed by sqlx, or libpq's keyword/value form,
//! parsed here; both may carry pgx's pool parameters.

use std::str::FromStr;
use std::time::Duration;

use mecha_core::duration::parse_go_duration;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// Pool settings found in a connection string (pgx's `pool_*` parameters).
#[derive(Default)]
pub(super) struct PoolParams {
    /// `pool_max_conns`.
    pub(super) max_conns: Option<u32>,
    /// `pool_max_conn_idle_time`.
    pub(super) idle_timeout: Option<Duration>,
}

/// Whether `s` is a URL rather than keyword/value pairs.
pub(super) fn is_url(s: &str) -> bool {
    let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// Parses a URL with sqlx, after taking out the pgx-only parameters sqlx would warn about.
pub(super) fn parse_url(raw: &str) -> Result<(PgConnectOptions, PoolParams), String> {
    let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
    let mut pool = PoolParams::default();
    let mut kept = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key == "connect_timeout" || key.starts_with("pool_") {
            apply_pool_param(&mut pool, key, value)?;
        } else {
            kept.push(param);
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let options = PgConnectOptions::from_str(&url).map_err(|e| e.to_string())?;
    Ok((options, pool))
}

/// Splits a libpq keyword/value string: `key=value` pairs separated by white space, values
/// optionally single-quoted, `\` escaping the next character.
pub(crate) fn parse_keyword_value(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing '=' after '{key}'"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quoted value for '{key}'")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        pairs.push((key, value));
    }
}

/// Applies keyword/value pairs to `options`.
pub(super) fn apply_keywords(
    mut options: PgConnectOptions,
    pairs: &[(String, String)],
) -> Result<(PgConnectOptions, PoolParams), String> {
    let mut pool = PoolParams::default();
    for (key, value) in pairs {
        options = apply_keyword(options, key, value, &mut pool)?;
    }
    Ok((options, pool))
}

/// Applies one libpq keyword.
pub(super) fn apply_keyword(
    options: PgConnectOptions,
    key: &str,
    value: &str,
    pool: &mut PoolParams,
) -> Result<PgConnectOptions, String> {
    // libpq accepts lists of hosts and ports; Mecha connects to the first.
    let first = value.split(',').next().unwrap_or_default().trim();
    Ok(match key {
        "host" if first.starts_with('/') => options.socket(first),
        "host" | "hostaddr" => options.host(first),
        "port" => options.port(
            first
                .parse()
                .map_err(|_| format!("'{value}' is not a port"))?,
        ),
        "user" => options.username(value),
        "password" => options.password(value),
        "dbname" | "database" => options.database(value),
        "sslmode" => options.ssl_mode(
            value
                .parse::<PgSslMode>()
                .map_err(|e| format!("bad sslmode: {e}"))?,
        ),
        "sslrootcert" => options.ssl_root_cert(value),
        "sslcert" => options.ssl_client_cert(value),
        "sslkey" => options.ssl_client_key(value),
        "application_name" => options.application_name(value),
        "options" => options.options(startup_options(value)?),
        "connect_timeout" => {
            apply_pool_param(pool, key, value)?;
            options
        }
        k if k.starts_with("pool_") => {
            apply_pool_param(pool, k, value)?;
            options
        }
        "target_session_attrs"
        | "sslpassword"
        | "sslsni"
        | "gssencmode"
        | "krbsrvname"
        | "passfile"
        | "fallback_application_name"
        | "service" => {
            tracing::debug!(
                parameter = key,
                "Ignoring unsupported PostgreSQL connection parameter"
            );
            options
        }
        "" => return Err("empty keyword".into()),
        // As pgx: any other keyword is a server run-time parameter (`search_path=app`).
        other => options.options([(other, value)]),
    })
}

fn apply_pool_param(pool: &mut PoolParams, key: &str, value: &str) -> Result<(), String> {
    match key {
        "pool_max_conns" => {
            let n: u32 = value
                .parse()
                .map_err(|_| format!("pool_max_conns '{value}' is not a positive integer"))?;
            pool.max_conns = Some(n).filter(|n| *n > 0);
        }
        "pool_max_conn_idle_time" => {
            pool.idle_timeout = Some(parse_go_duration(value).map_err(|e| e.to_string())?);
        }
        _ => tracing::debug!(
            parameter = key,
            "Ignoring PostgreSQL pool parameter; the operation timeout bounds connecting"
        ),
    }
    Ok(())
}

/// `-c name=value` pairs of libpq's `options` keyword.
fn startup_options(value: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut words = value.split_whitespace();
    while let Some(word) = words.next() {
        let setting = match word.strip_prefix("-c") {
            Some("") => words.next().unwrap_or_default(),
            Some(rest) => rest,
            None => word.strip_prefix("--").unwrap_or(word),
        };
        let (name, v) = setting
            .split_once('=')
            .ok_or_else(|| format!("unsupported options '{value}': expected -c name=value"))?;
        out.push((name.to_owned(), v.to_owned()));
    }
    Ok(out)
}
