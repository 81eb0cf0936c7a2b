//! The certificate authority: a root, an issuer signed by it, and workload certificates signed
//! by the issuer.
//!
//! `mecha ca init` writes, in one folder (by default `~/.mecha/pki`), the files Dapr's Sentry
//! uses: `ca.crt` (the root: the trust anchors every sidecar verifies against), `issuer.crt`
//! and `issuer.key` (the intermediate that signs workload certificates), and `token` (the
//! bootstrap token sidecars present to `mecha sentry`). An existing root, issuer certificate
//! and issuer key can be given instead of generated ones. Keys are ECDSA P-256; the generated
//! root and issuer are valid for one year. Workload certificates carry one URI name, the
//! workload's SPIFFE id, and may serve both as TLS server and client certificates.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use super::SpiffeId;

/// The root certificate (trust anchors).
pub const ROOT_CERT: &str = "ca.crt";
/// The issuer certificate.
pub const ISSUER_CERT: &str = "issuer.crt";
/// The issuer's private key.
pub const ISSUER_KEY: &str = "issuer.key";
/// The bootstrap token sidecars present to the signing service.
pub const TOKEN: &str = "token";

/// How long a generated root and issuer are valid.
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A CA that cannot be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A certificate, key or request is unusable.
    #[error("{0}")]
    Invalid(String),
}

/// What `mecha ca init` starts from.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Where the files go.
    pub dir: PathBuf,
    /// Files of an existing issuer certificate, its key and the root that signed it.
    pub existing: Option<ExistingIssuer>,
    /// Replace files that already exist.
    pub force: bool,
}

/// An issuer the operator brings.
#[derive(Clone, Debug)]
pub struct ExistingIssuer {
    /// The issuer certificate (PEM; may be followed by intermediates).
    pub cert: PathBuf,
    /// The issuer's private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The root certificate(s) (PEM).
    pub root: PathBuf,
}

/// A signed workload certificate.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificates between it and the root, PEM, issuer first.
    pub chain_pem: Vec<String>,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

/// A loaded issuer that signs workload certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// The issuer certificate and any intermediates above it, PEM blocks.
    issuer_chain: Vec<String>,
    root_pem: String,
    issuer_not_after: OffsetDateTime,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |error| CaError::Io {
        path: path.to_owned(),
        error,
    }
}

fn invalid(what: &str) -> impl FnOnce(rcgen::Error) -> CaError + '_ {
    move |e| CaError::Invalid(format!("{what}: {e}"))
}

/// Writes a new CA (or copies an existing issuer) into `opts.dir`; returns the files written.
pub fn init(opts: &InitOptions) -> Result<Vec<PathBuf>, CaError> {
    let names = [ROOT_CERT, ISSUER_CERT, ISSUER_KEY, TOKEN];
    if !opts.force {
        for n in names {
            let p = opts.dir.join(n);
            if p.exists() {
                return Err(CaError::Invalid(format!(
                    "{} already exists; pass --force to replace the CA",
                    p.display()
                )));
            }
        }
    }
    let (root_pem, issuer_pem, key_pem) = match &opts.existing {
        Some(e) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(io(p));
            let (cert, key, root) = (read(&e.cert)?, read(&e.key)?, read(&e.root)?);
            // Loading checks that the three fit together.
            CertificateAuthority::from_pem(&cert, &key, &root)?;
            (root, cert, key)
        }
        None => generate()?,
    };
    std::fs::create_dir_all(&opts.dir).map_err(io(&opts.dir))?;
    let token = random_hex(32);
    let mut written = Vec::new();
    for (name, content, secret) in [
        (ROOT_CERT, root_pem.as_str(), false),
        (ISSUER_CERT, issuer_pem.as_str(), false),
        (ISSUER_KEY, key_pem.as_str(), true),
        (TOKEN, token.as_str(), true),
    ] {
        let path = opts.dir.join(name);
        write_file(&path, content, secret)?;
        written.push(path);
    }
    Ok(written)
}

fn generate() -> Result<(String, String, String), CaError> {
    let now = OffsetDateTime::now_utc();
    let ca_params = |cn: &str, constraint| {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, "Mecha");
        p.is_ca = IsCa::Ca(constraint);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + CA_VALIDITY;
        p.serial_number = Some(serial());
        p.use_authority_key_identifier_extension = true;
        p
    };
    let root_key = KeyPair::generate().map_err(invalid("generating the root key"))?;
    let root_params = ca_params("Mecha root CA", BasicConstraints::Unconstrained);
    let root = root_params
        .self_signed(&root_key)
        .map_err(invalid("signing the root"))?;
    let issuer_key = KeyPair::generate().map_err(invalid("generating the issuer key"))?;
    let root_issuer = Issuer::new(root_params, root_key);
    let issuer = ca_params("Mecha issuer", BasicConstraints::Constrained(0))
        .signed_by(&issuer_key, &root_issuer)
        .map_err(invalid("signing the issuer"))?;
    Ok((root.pem(), issuer.pem(), issuer_key.serialize_pem()))
}

impl CertificateAuthority {
    /// Loads the issuer from `dir` (the files `mecha ca init` wrote).
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |n: &str| {
            let p = dir.join(n);
            std::fs::read_to_string(&p).map_err(io(&p))
        };
        Self::from_pem(&read(ISSUER_CERT)?, &read(ISSUER_KEY)?, &read(ROOT_CERT)?)
    }

    /// An issuer from PEM text: its certificate (then any intermediates), its key, the root.
    pub fn from_pem(issuer_cert: &str, issuer_key: &str, root: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(issuer_key).map_err(invalid("the issuer key"))?;
        let blocks = pem_blocks(issuer_cert);
        let first = blocks
            .first()
            .ok_or_else(|| CaError::Invalid("the issuer certificate holds no PEM block".into()))?;
        let der = der_of(first)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Invalid(format!("the issuer certificate: {e}")))?;
        if !parsed.is_ca() {
            return Err(CaError::Invalid(
                "the issuer certificate is not a CA certificate".into(),
            ));
        }
        if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        {
            return Err(CaError::Invalid(
                "the issuer key does not belong to the issuer certificate".into(),
            ));
        }
        let issuer_not_after = parsed.validity().not_after.to_datetime();
        let roots = pem_blocks(root);
        if roots.is_empty() {
            return Err(CaError::Invalid("the root holds no PEM block".into()));
        }
        verify_chain_to_roots(&blocks, &roots)?;
        let issuer = Issuer::from_ca_cert_der(&der.into(), key)
            .map_err(invalid("the issuer certificate"))?;
        Ok(Self {
            issuer,
            issuer_chain: blocks,
            root_pem: root.to_owned(),
            issuer_not_after,
        })
    }

    /// The trust anchors (the root), PEM.
    pub fn trust_anchors_pem(&self) -> &str {
        &self.root_pem
    }

    /// Signs the public key of a PEM certificate signing request for `id`, valid from
    /// `skew` ago for `ttl` (not past the issuer's own end). Names in the request are ignored:
    /// the certificate carries `id` only.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
        skew: Duration,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(invalid("the certificate signing request"))?;
        self.sign_key(&csr.public_key, id, &[], ttl, skew)
    }

    /// Makes a key and a certificate for `id` (and DNS/IP names), for a service that signs
    /// its own certificate (the signing service, tests).
    pub fn issue(
        &self,
        id: &SpiffeId,
        extra_names: &[SanType],
        ttl: Duration,
        skew: Duration,
    ) -> Result<(String, Issued), CaError> {
        let key = KeyPair::generate().map_err(invalid("generating a key"))?;
        let issued = self.sign_key(&key, id, extra_names, ttl, skew)?;
        Ok((key.serialize_pem(), issued))
    }

    fn sign_key(
        &self,
        key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        extra_names: &[SanType],
        ttl: Duration,
        skew: Duration,
    ) -> Result<Issued, CaError> {
        id.validate().map_err(CaError::Invalid)?;
        let now = OffsetDateTime::now_utc();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, id.app_id.as_str());
        let uri =
            rcgen::string::Ia5String::try_from(id.to_string()).map_err(invalid("the SPIFFE id"))?;
        p.subject_alt_names = vec![SanType::URI(uri)];
        p.subject_alt_names.extend_from_slice(extra_names);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = now - skew;
        p.not_after = (now + ttl).min(self.issuer_not_after);
        p.serial_number = Some(serial());
        p.use_authority_key_identifier_extension = true;
        let cert = p
            .signed_by(key, &self.issuer)
            .map_err(invalid("signing the workload certificate"))?;
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(p.not_after.unix_timestamp()).unwrap_or(0));
        Ok(Issued {
            cert_pem: cert.pem(),
            chain_pem: self.issuer_chain.clone(),
            not_after,
        })
    }
}

/// Checks that the first certificate of `chain` is signed by a root of `roots`, possibly
/// through the later certificates of `chain`.
fn verify_chain_to_roots(chain: &[String], roots: &[String]) -> Result<(), CaError> {
    let ders: Vec<Vec<u8>> = chain.iter().map(|b| der_of(b)).collect::<Result<_, _>>()?;
    let root_ders: Vec<Vec<u8>> = roots.iter().map(|b| der_of(b)).collect::<Result<_, _>>()?;
    fn parse(d: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, CaError> {
        x509_parser::parse_x509_certificate(d)
            .map(|(_, c)| c)
            .map_err(|e| CaError::Invalid(format!("a certificate does not parse: {e}")))
    }
    let mut current = parse(&ders[0])?;
    let mut rest = ders[1..].iter();
    loop {
        for r in &root_ders {
            let root = parse(r)?;
            if current.verify_signature(Some(root.public_key())).is_ok() {
                return Ok(());
            }
        }
        let Some(next) = rest.next() else {
            return Err(CaError::Invalid(
                "the issuer certificate is not signed by the given root".into(),
            ));
        };
        let next = parse(next)?;
        current
            .verify_signature(Some(next.public_key()))
            .map_err(|_| CaError::Invalid("the issuer chain is broken".into()))?;
        current = next;
    }
}

/// The PEM `CERTIFICATE` blocks of a text, each with its armour.
pub fn pem_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

fn der_of(block: &str) -> Result<Vec<u8>, CaError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(block.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| CaError::Invalid(format!("a PEM certificate does not decode: {e:?}")))
}

fn serial() -> rcgen::SerialNumber {
    let mut b = random_bytes(16);
    b[0] &= 0x7f;
    b[0] |= 0x01;
    rcgen::SerialNumber::from(b)
}

fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    // The system random source does not fail on supported platforms.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    use std::fmt::Write;
    random_bytes(n).iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn write_file(path: &Path, content: &str, secret: bool) -> Result<(), CaError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(content.as_bytes()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_sign_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            dir: dir.path().to_owned(),
            existing: None,
            force: false,
        };
        let files = init(&opts).unwrap();
        assert_eq!(files.len(), 4);
        let again = init(&opts).unwrap_err().to_string();
        assert!(again.contains("--force"), "{again}");
        let ca = CertificateAuthority::load(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let id = SpiffeId::new("public", "default", "orders");
        let issued = ca
            .sign_csr(&csr, &id, Duration::from_secs(60), Duration::from_secs(5))
            .unwrap();
        let der = der_of(&issued.cert_pem).unwrap();
        assert_eq!(SpiffeId::from_cert_der(&der), Some(id));
        verify_chain_to_roots(
            &[issued.cert_pem.clone(), issued.chain_pem[0].clone()],
            &pem_blocks(ca.trust_anchors_pem()),
        )
        .unwrap();
        let left = issued
            .not_after
            .duration_since(SystemTime::now())
            .unwrap()
            .as_secs();
        assert!((55..=60).contains(&left), "{left}");

        // Bringing the same issuer again works; a key of another issuer is refused.
        let other = tempfile::tempdir().unwrap();
        let existing = ExistingIssuer {
            cert: dir.path().join(ISSUER_CERT),
            key: dir.path().join(ISSUER_KEY),
            root: dir.path().join(ROOT_CERT),
        };
        init(&InitOptions {
            dir: other.path().to_owned(),
            existing: Some(existing.clone()),
            force: false,
        })
        .unwrap();
        let third = tempfile::tempdir().unwrap();
        init(&InitOptions {
            dir: third.path().to_owned(),
            existing: None,
            force: false,
        })
        .unwrap();
        let mixed = CertificateAuthority::from_pem(
            &std::fs::read_to_string(dir.path().join(ISSUER_CERT)).unwrap(),
            &std::fs::read_to_string(third.path().join(ISSUER_KEY)).unwrap(),
            &std::fs::read_to_string(dir.path().join(ROOT_CERT)).unwrap(),
        );
        assert!(mixed.is_err());
        let wrong_root = CertificateAuthority::from_pem(
            &std::fs::read_to_string(dir.path().join(ISSUER_CERT)).unwrap(),
            &std::fs::read_to_string(dir.path().join(ISSUER_KEY)).unwrap(),
            &std::fs::read_to_string(third.path().join(ROOT_CERT)).unwrap(),
        );
        assert!(wrong_root.is_err());
    }
}
