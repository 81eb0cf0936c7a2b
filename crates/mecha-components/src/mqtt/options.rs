//! The connection metadata: the broker address (`url`) with its TLS settings, `qos`, `retain`
//! and `cleanSession`, turned into rumqttc options per connection.

use std::sync::Arc;
use std::time::Duration;

use mecha_core::component::ComponentError;
use mecha_core::metadata::Metadata;
use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::REQUEST_CAPACITY;

/// How long a connection may stay silent before the client pings the broker.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The metadata keys [`ConnectionSettings::parse`] reads.
pub(crate) const CONNECTION_KEYS: &[&str] = &[
    "url",
    "qos",
    "retain",
    "cleanSession",
    "caCert",
    "clientCert",
    "clientKey",
];

/// The connection metadata both MQTT components honour.
#[derive(Clone)]
pub(crate) struct ConnectionSettings {
    /// `url`, with `caCert`, `clientCert` and `clientKey`.
    pub(crate) broker: BrokerOptions,
    /// `qos`: 0, 1 (default) or 2.
    pub(crate) qos: QoS,
    /// `retain`: whether published messages are retained (default false).
    pub(crate) retain: bool,
    /// `cleanSession`: whether the broker drops a session on disconnect (default false).
    pub(crate) clean_session: bool,
}

// === impl ConnectionSettings ===

impl ConnectionSettings {
    /// Reads the [`CONNECTION_KEYS`]; `url` is required.
    pub(crate) fn parse(md: &Metadata) -> Result<Self, ComponentError> {
        let broker = BrokerOptions::parse(
            md.required("url")?,
            md.get("caCert"),
            md.get("clientCert"),
            md.get("clientKey"),
        )?;
        let qos = match md.u64("qos", 1)? {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => {
                return Err(ComponentError::InvalidField {
                    field: "qos",
                    reason: format!("'{other}' is not 0, 1 or 2"),
                });
            }
        };
        Ok(Self {
            broker,
            qos,
            retain: md.bool("retain", false)?,
            clean_session: md.bool("cleanSession", false)?,
        })
    }
}

/// Where and how to connect, parsed from the `url` metadata.
#[derive(Clone)]
pub(crate) struct BrokerOptions {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Arc<ClientConfig>>,
    display: String,
}

// === impl BrokerOptions ===

impl BrokerOptions {
    /// Parses `scheme://[user[:password]@]host[:port]`; `tcp`/`mqtt` are plain,
    /// `ssl`/`mqtts`/`tcps`/`tls` use TLS with `caCert` (and `clientCert`/`clientKey`).
    pub(crate) fn parse(
        url: &str,
        ca_cert: Option<&str>,
        client_cert: Option<&str>,
        client_key: Option<&str>,
    ) -> Result<Self, ComponentError> {
        let invalid = |reason: String| ComponentError::InvalidField {
            field: "url",
            reason,
        };
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("'{url}' has no scheme (tcp://host:1883)")))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "tcp" | "mqtt" => false,
            "ssl" | "mqtts" | "tcps" | "tls" => true,
            other => return Err(invalid(format!("unsupported scheme '{other}'"))),
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((user, hp)) => {
                let (u, p) = user.split_once(':').unwrap_or((user, ""));
                (Some((u.to_owned(), p.to_owned())), hp)
            }
            None => (None, authority),
        };
        let default_port = if secure { 8883 } else { 1883 };
        let (host, port) = split_host_port(host_port, default_port).map_err(invalid)?;
        if host.is_empty() {
            return Err(invalid(format!("'{scheme}://…' has no host")));
        }
        let tls = if secure {
            Some(Arc::new(tls_config(ca_cert, client_cert, client_key)?))
        } else {
            if nonempty(ca_cert).is_some() {
                tracing::warn!("Ignoring caCert: the MQTT url does not use ssl:// or mqtts://");
            }
            None
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            credentials,
            tls,
            display: format!("{host}:{port}"),
        })
    }

    /// `host:port`, for messages.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// Options for one connection with `client_id` (manual acknowledgements).
    pub(crate) fn mqtt_options(&self, client_id: &str, clean_session: bool) -> MqttOptions {
        let mut o = MqttOptions::new(client_id, self.host.clone(), self.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(clean_session)
            .set_manual_acks(true)
            .set_request_channel_capacity(REQUEST_CAPACITY);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u.clone(), p.clone());
        }
        if let Some(tls) = &self.tls {
            o.set_transport(Transport::Tls(TlsConfiguration::Rustls(tls.clone())));
        }
        o
    }
}

/// A rustls client config (ring provider) trusting `caCert`, with the client certificate when
/// both `clientCert` and `clientKey` are set.
fn tls_config(
    ca_cert: Option<&str>,
    client_cert: Option<&str>,
    client_key: Option<&str>,
) -> Result<ClientConfig, ComponentError> {
    let ca = nonempty(ca_cert).ok_or_else(|| ComponentError::InvalidField {
        field: "caCert",
        reason: "a TLS url (ssl://, mqtts://) needs the broker's CA certificate in caCert".into(),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        let cert = cert.map_err(|e| invalid_pem("caCert", e))?;
        roots.add(cert).map_err(|e| invalid_pem("caCert", e))?;
    }
    if roots.is_empty() {
        return Err(invalid_pem("caCert", "no certificate found"));
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ComponentError::Init(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots);
    match (nonempty(client_cert), nonempty(client_key)) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid_pem("clientCert", e))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| invalid_pem("clientKey", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid_pem("clientCert", e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(ComponentError::InvalidField {
            field: "clientCert",
            reason: "clientCert and clientKey must be set together".into(),
        }),
    }
}

/// Splits `host[:port]` or `[v6]:port`.
fn split_host_port(s: &str, default_port: u16) -> Result<(&str, u16), String> {
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (h, rest) = v6
                .split_once(']')
                .ok_or_else(|| format!("'{s}' is not a valid address"))?;
            (h, rest.strip_prefix(':'))
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("'{p}' is not a port"))?,
        None => default_port,
    };
    Ok((host, port))
}

/// A set, non-blank value.
fn nonempty(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

fn invalid_pem(field: &'static str, e: impl std::fmt::Display) -> ComponentError {
    ComponentError::InvalidField {
        field,
        reason: format!("invalid PEM: {e}"),
    }
}
