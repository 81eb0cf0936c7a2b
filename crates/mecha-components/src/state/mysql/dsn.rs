//! The `connectionString` of a `state.mysql` component: the Go MySQL driver's DSN that Dapr
//! users write, or a `mysql://` URL.
//!
//! A DSN is `[user[:password]@][protocol[(address)]]/[dbname][?param=value&...]`, split as the
//! Go driver splits it: the database follows the last `/`, the credentials precede the last `@`
//! before it, and the password follows the first `:` of the credentials (neither is
//! unescaped). Protocols are `tcp` (`host`, `host:port`, `[::1]:port`; `127.0.0.1:3306` when
//! empty) and `unix` (a socket path).

use std::str::FromStr;
use std::time::Duration;

use mecha_core::duration::parse_go_duration;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

/// MySQL's port when the address names none.
const DEFAULT_PORT: u16 = 3306;
/// Go DSN parameters that need nothing here: they shape Go types, or the store already does
/// what they ask (`clientFoundRows`, UTC sessions).
const IGNORED_PARAMS: &[&str] = &[
    "parseTime",
    "allowNativePasswords",
    "allowOldPasswords",
    "allowAllFiles",
    "allowFallbackToPlaintext",
    "checkConnLiveness",
    "clientFoundRows",
    "columnsWithAlias",
    "interpolateParams",
    "loc",
    "maxAllowedPacket",
    "multiStatements",
    "readTimeout",
    "rejectReadOnly",
    "serverPubKey",
    "timeTruncate",
    "writeTimeout",
    "connectionAttributes",
];

/// Where and how to connect, from the connection string.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Options for every connection, without a default database: statements name the schema.
    pub(crate) options: MySqlConnectOptions,
    /// The database named by the connection string, if any.
    pub(crate) database: Option<String>,
    /// The Go DSN's `timeout` parameter: how long connecting may take.
    pub(crate) connect_timeout: Option<Duration>,
    /// `host:port` or the socket path, for error messages.
    pub(crate) address: String,
}

/// Parses a Go DSN or a `mysql://` (`mariadb://`) URL.
pub(crate) fn parse(connection_string: &str) -> Result<Target, String> {
    let s = connection_string.trim();
    // A URL scheme is a letter then letters, digits, `+`, `-` or `.`; a DSN's credentials
    // before a `://` in a password hold a `:` and so are never one.
    let scheme = s
        .split_once("://")
        .map(|(scheme, _)| scheme)
        .filter(|scheme| {
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
    match scheme {
        Some(scheme)
            if scheme.eq_ignore_ascii_case("mysql") || scheme.eq_ignore_ascii_case("mariadb") =>
        {
            parse_url(s)
        }
        Some(scheme) => Err(format!(
            "unsupported URL scheme '{scheme}': use a Go MySQL DSN or a mysql:// URL"
        )),
        None => parse_go_dsn(s),
    }
}

/// The Go driver's DSN.
fn parse_go_dsn(dsn: &str) -> Result<Target, String> {
    let slash = dsn
        .rfind('/')
        .ok_or("invalid DSN: missing the slash separating the database name")?;
    let (head, tail) = (&dsn[..slash], &dsn[slash + 1..]);
    let (db, params) = tail.split_once('?').unwrap_or((tail, ""));
    let (credentials, net) = match head.rfind('@') {
        Some(at) => (Some(&head[..at]), &head[at + 1..]),
        None => (None, head),
    };
    let mut options = MySqlConnectOptions::new()
        // Go connects in plain text unless `tls` says otherwise.
        .ssl_mode(MySqlSslMode::Disabled)
        .timezone(Some("+00:00".to_owned()));
    if let Some(credentials) = credentials {
        let (user, password) = match credentials.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (credentials, None),
        };
        if !user.is_empty() {
            options = options.username(user);
        }
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            options = options.password(password);
        }
    }
    let address;
    (options, address) = network(options, net)?;
    let mut connect_timeout = None;
    for param in params.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| format!("invalid DSN parameter '{param}': expected key=value"))?;
        let value = percent_decode(value, true)?;
        match key {
            "tls" => options = options.ssl_mode(tls_mode(&value)),
            "timeout" => {
                let d = parse_go_duration(&value).map_err(|e| format!("timeout: {e}"))?;
                connect_timeout = Some(d).filter(|d| !d.is_zero());
            }
            "charset" => {
                let first = value.split(',').next().unwrap_or_default().trim();
                if !first.is_empty() {
                    options = options.charset(first);
                }
            }
            "collation" => options = options.collation(&value),
            "allowCleartextPasswords" => {
                let on = mecha_core::metadata::parse_bool(&value).ok_or_else(|| {
                    format!("allowCleartextPasswords: '{value}' is not a boolean")
                })?;
                options = options.enable_cleartext_plugin(on);
            }
            key if IGNORED_PARAMS.contains(&key) => {}
            other => tracing::warn!(
                parameter = other,
                "Ignoring unsupported MySQL connection string parameter"
            ),
        }
    }
    let database = Some(percent_decode(db, false)?).filter(|d| !d.is_empty());
    Ok(Target {
        options,
        database,
        connect_timeout,
        address,
    })
}

/// Applies `protocol(address)` to `options`, returning them with the address for messages.
fn network(
    options: MySqlConnectOptions,
    net: &str,
) -> Result<(MySqlConnectOptions, String), String> {
    let (protocol, address) = match net.split_once('(') {
        Some((protocol, rest)) => {
            let address = rest.strip_suffix(')').ok_or(
                "invalid DSN: network address not terminated (missing closing parenthesis)",
            )?;
            (protocol, address)
        }
        None => (net, ""),
    };
    match protocol {
        "" | "tcp" | "tcp4" | "tcp6" => {
            let (host, port) = host_port(address)?;
            let shown = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            Ok((options.host(&host).port(port), shown))
        }
        "unix" => {
            let path = if address.is_empty() {
                "/tmp/mysql.sock"
            } else {
                address
            };
            Ok((options.socket(path), path.to_owned()))
        }
        other => Err(format!(
            "unsupported network protocol '{other}': use tcp(host:port) or unix(/path)"
        )),
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; `127.0.0.1:3306` when empty.
fn host_port(address: &str) -> Result<(String, u16), String> {
    if address.is_empty() {
        return Ok(("127.0.0.1".to_owned(), DEFAULT_PORT));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid address '{address}': missing ']'"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("invalid address '{address}'")),
            },
        }
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            // A bare IPv6 address without brackets.
            Some(_) => (address, None),
            None => (address, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse()
            .map_err(|_| format!("invalid port '{p}' in address '{address}'"))?,
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok((host.to_owned(), port))
}

/// The Go driver's `tls` values: `true`, `false`, `skip-verify`, `preferred` or the name of
/// a registered configuration (Dapr's `custom`, from `pemPath`), which verifies the CA.
fn tls_mode(value: &str) -> MySqlSslMode {
    match value.to_ascii_lowercase().as_str() {
        "false" | "0" => MySqlSslMode::Disabled,
        "preferred" => MySqlSslMode::Preferred,
        "skip-verify" => MySqlSslMode::Required,
        "true" | "1" => MySqlSslMode::VerifyIdentity,
        _ => MySqlSslMode::VerifyCa,
    }
}

/// A `mysql://user:pass@host:port/db?params` URL, as sqlx reads it, without its database.
fn parse_url(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("mysql", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let (path, query) = match after.strip_prefix('/') {
        Some(p) => p.split_once('?').unwrap_or((p, "")),
        None => ("", after.strip_prefix('?').unwrap_or(after)),
    };
    let query = query.split('#').next().unwrap_or_default();
    let without_db = if query.is_empty() {
        format!("mysql://{authority}")
    } else {
        format!("mysql://{authority}?{query}")
    };
    let options = MySqlConnectOptions::from_str(&without_db)
        .map_err(|e| format!("invalid {scheme}:// URL: {e}"))?;
    let database =
        Some(percent_decode(path.trim_end_matches('/'), false)?).filter(|d| !d.is_empty());
    let address = match options.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    Ok(Target {
        options,
        database,
        connect_timeout: None,
        address,
    })
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (a query value).
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid escape in '{s}'"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("'{s}' does not decode to UTF-8"))
}
