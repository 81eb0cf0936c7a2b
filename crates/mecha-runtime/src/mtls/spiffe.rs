//! SPIFFE ids of workloads: `spiffe://<trustDomain>/ns/<namespace>/<appId>`, read from the URI
//! subject alternative name of a certificate.

use std::fmt;

/// A workload identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The trust domain (`public` unless the Configuration says otherwise).
    pub trust_domain: String,
    /// The namespace.
    pub namespace: String,
    /// The app id.
    pub app_id: String,
}

impl SpiffeId {
    /// An identity from its parts.
    pub fn new(trust_domain: &str, namespace: &str, app_id: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            app_id: app_id.to_owned(),
        }
    }

    /// Parses `spiffe://<td>/ns/<ns>/<app>`; anything else is `None`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_word, ns, app) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ns_word != "ns" {
            return None;
        }
        [td, ns, app]
            .iter()
            .all(|p| valid_part(p))
            .then(|| Self::new(td, ns, app))
    }

    /// Checks that every part can be written into an id.
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [
            ("trust domain", &self.trust_domain),
            ("namespace", &self.namespace),
            ("app id", &self.app_id),
        ] {
            if !valid_part(v) {
                return Err(format!(
                    "{what} '{v}' cannot be part of a SPIFFE id (letters, digits, '.', '-', '_' only)"
                ));
            }
        }
        Ok(())
    }

    /// The first SPIFFE id among the URI names of a DER certificate.
    pub fn from_cert_der(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => Self::parse(u),
            _ => None,
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

fn valid_part(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 253
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let id = SpiffeId::parse("spiffe://public/ns/default/orders").unwrap();
        assert_eq!(id, SpiffeId::new("public", "default", "orders"));
        assert_eq!(id.to_string(), "spiffe://public/ns/default/orders");
        for bad in [
            "spiffe://public/ns/default",
            "spiffe://public/xx/default/a",
            "spiffe://public/ns/default/a/b",
            "https://public/ns/default/a",
            "spiffe://public/ns//a",
            "spiffe://pub lic/ns/default/a",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
        assert!(
            SpiffeId::new("public", "default", "a/b")
                .validate()
                .is_err()
        );
    }
}
