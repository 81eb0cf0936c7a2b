//! `dns` (also registered as `kubernetes`): finds sidecars through DNS, the way Dapr's
//! Kubernetes resolver addresses them.
//!
//! An app id resolves through the name made from `template` (default
//! `{appid}-dapr.{namespace}.svc.{clusterDomain}`, the Service the Dapr injector creates for
//! each app; the placeholders `{appid}`, `{namespace}` and `{clusterDomain}` are replaced,
//! anything else is kept as written, so `localhost` or `{appid}.internal` work too):
//!
//! 1. An SRV query for `<srvPrefix>.<name>`, by default `_dapr-internal._tcp.<name>`: the
//!    record Kubernetes publishes for the Service port named `dapr-internal`. It is a
//!    hand-written query over UDP (with EDNS0, 4096 bytes) to the nameservers of
//!    `/etc/resolv.conf` in order, or to `nameserver` when configured; names are taken as
//!    absolute (no search list). Only the records of the lowest priority are used; a target
//!    whose A/AAAA records came in the additional section becomes one instance per address,
//!    any other target is returned by name. After a nameserver fails to answer, SRV is skipped
//!    for 30 s so that resolving does not wait for the timeout again and again.
//! 2. When SRV gives nothing (no such name, no records, a truncated answer, no nameserver
//!    answering) or is disabled: the A/AAAA addresses of `<name>` from the system resolver
//!    (`/etc/hosts`, search domains), each with the port `port`.
//!
//! A name the system resolver reports as unknown gives an empty list (the app has no
//! instance); other resolver failures are [`ResolveError::Lookup`]. Answers, empty ones too,
//! are cached per (app id, namespace) for `cacheTtl`; instances are sorted by host and port.
//! [`NameResolver::register`] does nothing: the cluster publishes the records.
//!
//! Configuration: `clusterDomain` (`cluster.local`), `template` (above), `port` (`50002`, the
//! internal invocation port), `cacheTtl` (Go duration, `5s`; `0` disables the cache),
//! `srvPrefix` (`_dapr-internal._tcp`; empty disables SRV), `nameserver` (`ip` or `ip:port`,
//! overriding `/etc/resolv.conf`), `timeout` (per SRV query and nameserver, `1s`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mecha_core::nameresolution::{Instance, Instances, NameResolver, ResolveError, ResolverInit};
use tokio::time::Instant;

use super::{Config, ResolveCache};

const CLUSTER_DOMAIN: &str = "clusterDomain";
const TEMPLATE: &str = "template";
const PORT: &str = "port";
const CACHE_TTL: &str = "cacheTtl";
const SRV_PREFIX: &str = "srvPrefix";
const NAMESERVER: &str = "nameserver";
const TIMEOUT: &str = "timeout";

const KNOWN_KEYS: &[&str] = &[
    CLUSTER_DOMAIN,
    TEMPLATE,
    PORT,
    CACHE_TTL,
    SRV_PREFIX,
    NAMESERVER,
    TIMEOUT,
];

/// The Service name Dapr's injector creates for an app.
const DEFAULT_TEMPLATE: &str = "{appid}-dapr.{namespace}.svc.{clusterDomain}";
/// How long SRV is skipped after no nameserver answered.
const SRV_BACKOFF: Duration = Duration::from_secs(30);

/// The `dns` resolver.
pub struct DnsResolver {
    template: String,
    cluster_domain: String,
    port: u16,
    srv_prefix: Option<String>,
    nameservers: Vec<SocketAddr>,
    timeout: Duration,
    cache: ResolveCache,
    /// SRV is skipped until then.
    srv_backoff: Mutex<Option<Instant>>,
}

// === impl DnsResolver ===

impl DnsResolver {
    /// Reads the configuration and the nameservers of `/etc/resolv.conf`.
    pub async fn create(init: ResolverInit) -> Result<Arc<dyn NameResolver>, ResolveError> {
        Ok(Arc::new(Self::open(&init).await?))
    }

    /// Like [`DnsResolver::create`], returning the concrete type.
    pub async fn open(init: &ResolverInit) -> Result<Self, ResolveError> {
        let config = Config::new(&init.configuration)?;
        config.warn_unknown("dns", KNOWN_KEYS);
        let cluster_domain = config
            .string(CLUSTER_DOMAIN)?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "cluster.local".into());
        let cluster_domain = cluster_domain.trim_matches('.').to_owned();
        let template = config
            .string(TEMPLATE)?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_TEMPLATE.into());
        let port = config.port(PORT, 50002)?;
        let cache_ttl = config.duration(CACHE_TTL, Duration::from_secs(5))?;
        let timeout = config.duration(TIMEOUT, Duration::from_secs(1))?;
        if timeout.is_zero() {
            return Err(ResolveError::Config(format!(
                "'{TIMEOUT}' must be positive"
            )));
        }
        let srv_prefix = match config.string(SRV_PREFIX)? {
            None => Some("_dapr-internal._tcp".to_owned()),
            Some(p) => Some(p.trim_matches('.').to_owned()).filter(|p| !p.is_empty()),
        };
        let nameservers = match config.string(NAMESERVER)?.filter(|s| !s.is_empty()) {
            Some(ns) => vec![parse_nameserver(&ns).ok_or_else(|| {
                ResolveError::Config(format!("'{NAMESERVER}': '{ns}' is not an ip or ip:port"))
            })?],
            None if srv_prefix.is_some() => {
                match tokio::fs::read_to_string("/etc/resolv.conf").await {
                    Ok(text) => resolv_conf_nameservers(&text),
                    Err(e) => {
                        tracing::debug!(error = %e, "No /etc/resolv.conf; SRV lookups are off");
                        Vec::new()
                    }
                }
            }
            None => Vec::new(),
        };
        let resolver = Self {
            template,
            cluster_domain,
            port,
            srv_prefix,
            nameservers,
            timeout,
            cache: ResolveCache::new(cache_ttl),
            srv_backoff: Mutex::new(None),
        };
        // Refuse a template that cannot make a valid name now rather than on every call.
        let probe = resolver.name_for("app", "default");
        encode_name(&probe).map_err(|e| {
            ResolveError::Config(format!(
                "'{TEMPLATE}' gives '{probe}' for app id 'app': {e}"
            ))
        })?;
        Ok(resolver)
    }

    /// The DNS name of `app_id` in `namespace`.
    pub fn name_for(&self, app_id: &str, namespace: &str) -> String {
        self.template
            .replace("{appid}", app_id)
            .replace("{namespace}", namespace)
            .replace("{clusterDomain}", &self.cluster_domain)
    }

    fn srv_allowed(&self) -> bool {
        let backoff = self.srv_backoff.lock().unwrap_or_else(|e| e.into_inner());
        backoff.is_none_or(|until| Instant::now() >= until)
    }

    fn set_srv_backoff(&self) {
        *self.srv_backoff.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + SRV_BACKOFF);
    }

    /// The SRV answer, or `None` to fall back to A/AAAA.
    async fn srv(&self, name: &str, app_id: &str, namespace: &str) -> Option<Vec<Instance>> {
        let prefix = self.srv_prefix.as_deref()?;
        if self.nameservers.is_empty() || !self.srv_allowed() {
            return None;
        }
        let qname = format!("{prefix}.{name}");
        if let Err(e) = encode_name(&qname) {
            // Not a name DNS can carry (an odd app id): no SRV, and no nameserver to blame.
            tracing::debug!(name = %qname, error = %e, "Skipping the SRV query");
            return None;
        }
        for server in &self.nameservers {
            match query_srv(*server, &qname, self.timeout).await {
                Ok(answer) => {
                    if answer.truncated {
                        tracing::debug!(name = %qname, "Truncated SRV answer; using A/AAAA");
                        return None;
                    }
                    let found = answer.instances(app_id, namespace);
                    return (!found.is_empty()).then_some(found);
                }
                Err(e) => {
                    tracing::debug!(server = %server, name = %qname, error = %e, "SRV query failed");
                }
            }
        }
        // No nameserver answered.
        self.set_srv_backoff();
        None
    }

    /// The A/AAAA answer through the system resolver.
    async fn addresses(
        &self,
        name: &str,
        app_id: &str,
        namespace: &str,
    ) -> Result<Vec<Instance>, ResolveError> {
        let lookup = tokio::net::lookup_host((name, self.port));
        let addrs =
            match tokio::time::timeout(self.timeout.max(Duration::from_secs(5)), lookup).await {
                Ok(Ok(addrs)) => addrs,
                Ok(Err(e)) if is_unknown_name(&e) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(ResolveError::Lookup(format!("resolving {name}: {e}"))),
                Err(_) => return Err(ResolveError::Lookup(format!("resolving {name} timed out"))),
            };
        Ok(addrs
            .map(|a| Instance {
                app_id: app_id.to_owned(),
                namespace: namespace.to_owned(),
                host: a.ip().to_string(),
                port: a.port(),
            })
            .collect())
    }
}

#[async_trait]
impl NameResolver for DnsResolver {
    async fn register(&self, _me: &Instance) -> Result<(), ResolveError> {
        Ok(())
    }

    async fn resolve(&self, app_id: &str, namespace: &str) -> Result<Instances, ResolveError> {
        if let Some(found) = self.cache.get(app_id, namespace) {
            return Ok(found);
        }
        let name = self.name_for(app_id, namespace);
        let mut found = match self.srv(&name, app_id, namespace).await {
            Some(found) => found,
            None => self.addresses(&name, app_id, namespace).await?,
        };
        sort_instances(&mut found);
        let found: Instances = found.into();
        self.cache.put(app_id, namespace, &found);
        Ok(found)
    }
}

fn sort_instances(found: &mut Vec<Instance>) {
    found.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    found.dedup();
}

/// Whether the system resolver said the name does not exist (glibc and musl wordings), as
/// opposed to failing to ask.
fn is_unknown_name(e: &std::io::Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    [
        "not known",
        "no address associated",
        "does not resolve",
        "no such host",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// `ip` or `ip:port` (`[v6]:port`), port 53 by default.
fn parse_nameserver(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    // A zone index (`fe80::1%eth0`) is not supported by the std parser; skip those.
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

/// The `nameserver` lines of a resolv.conf.
pub(crate) fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(parse_nameserver)
        })
        .collect()
}

/// One SRV query and its answer.
async fn query_srv(
    server: SocketAddr,
    qname: &str,
    timeout: Duration,
) -> Result<SrvAnswer, String> {
    let id = u16::from_be_bytes(
        uuid::Uuid::new_v4().as_bytes()[..2]
            .try_into()
            .map_err(|_| "id".to_owned())?,
    );
    let query = encode_query(id, qname, TYPE_SRV)?;
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let exchange = async {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        socket.connect(server).await?;
        socket.send(&query).await?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = socket.recv(&mut buf).await?;
            // Ignore stray datagrams: only our id and question count.
            if let Ok(answer) = decode_srv_response(&buf[..n], id) {
                return Ok::<_, std::io::Error>(answer);
            }
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(answer)) => answer.checked(),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// DNS record type A.
pub(crate) const TYPE_A: u16 = 1;
/// DNS record type AAAA.
pub(crate) const TYPE_AAAA: u16 = 28;
/// DNS record type SRV.
pub(crate) const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const RCODE_NXDOMAIN: u8 = 3;

/// Encodes a name as DNS labels; the name is taken as absolute.
pub(crate) fn encode_name(name: &str) -> Result<Vec<u8>, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            let len = label.len();
            if len == 0 || len > 63 {
                return Err(format!(
                    "'{name}' has a label of {len} bytes (1 to 63 allowed)"
                ));
            }
            if !label.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("'{name}' has a label that is not printable ASCII"));
            }
            out.push(len as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() > 255 {
        return Err(format!("'{name}' is longer than 255 bytes"));
    }
    Ok(out)
}

/// A recursive query for `qname`/`qtype` with an EDNS0 record offering 4096-byte answers.
pub(crate) fn encode_query(id: u16, qname: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(32 + qname.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    out.extend_from_slice(&1u16.to_be_bytes()); // ARCOUNT
    out.extend_from_slice(&encode_name(qname)?);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type, UDP payload size as class, extended rcode/flags, no data.
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&4096u16.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    Ok(out)
}

/// One SRV record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SrvRecord {
    pub(crate) priority: u16,
    pub(crate) port: u16,
    /// Without the trailing dot, lower-cased.
    pub(crate) target: String,
}

/// A decoded SRV response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SrvAnswer {
    pub(crate) rcode: u8,
    pub(crate) truncated: bool,
    pub(crate) records: Vec<SrvRecord>,
    /// A/AAAA records of the additional section: (name, address).
    pub(crate) addresses: Vec<(String, IpAddr)>,
}

// === impl SrvAnswer ===

impl SrvAnswer {
    /// Accepts success and "no such name"; any other response code is a server failure.
    fn checked(self) -> Result<Self, String> {
        match self.rcode {
            0 => Ok(self),
            RCODE_NXDOMAIN => Ok(Self {
                records: Vec::new(),
                ..self
            }),
            code => Err(format!("the nameserver answered with code {code}")),
        }
    }

    /// The instances of the lowest-priority records.
    pub(crate) fn instances(&self, app_id: &str, namespace: &str) -> Vec<Instance> {
        let Some(best) = self.records.iter().map(|r| r.priority).min() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for record in self.records.iter().filter(|r| r.priority == best) {
            if record.target.is_empty() {
                continue; // "." means the service is not available.
            }
            let instance = |host: String| Instance {
                app_id: app_id.to_owned(),
                namespace: namespace.to_owned(),
                host,
                port: record.port,
            };
            let before = out.len();
            out.extend(
                self.addresses
                    .iter()
                    .filter(|(name, _)| *name == record.target)
                    .map(|(_, ip)| instance(ip.to_string())),
            );
            if out.len() == before {
                out.push(instance(record.target.clone()));
            }
        }
        out
    }
}

/// Decodes a response to the query with id `id`.
pub(crate) fn decode_srv_response(msg: &[u8], id: u16) -> Result<SrvAnswer, String> {
    let mut r = Reader { msg, pos: 0 };
    if r.u16()? != id {
        return Err("another query's id".into());
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("not a response".into());
    }
    let mut answer = SrvAnswer {
        rcode: (flags & 0x000f) as u8,
        truncated: flags & 0x0200 != 0,
        ..SrvAnswer::default()
    };
    let qdcount = r.u16()?;
    let ancount = r.u16()?;
    let nscount = r.u16()?;
    let arcount = r.u16()?;
    for _ in 0..qdcount {
        r.name()?;
        r.skip(4)?;
    }
    let total = usize::from(ancount) + usize::from(nscount) + usize::from(arcount);
    for index in 0..total {
        let name = match r.name() {
            Ok(name) => name,
            // A truncated answer may stop in the middle of a record.
            Err(_) if answer.truncated => break,
            Err(e) => return Err(e),
        };
        let rtype = r.u16()?;
        let class = r.u16()?;
        r.skip(4)?; // TTL
        let len = usize::from(r.u16()?);
        let start = r.pos;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= msg.len())
            .ok_or("a record runs past the end of the message")?;
        let in_answers = index < usize::from(ancount);
        let in_additional = index >= usize::from(ancount) + usize::from(nscount);
        match (rtype, class) {
            (TYPE_SRV, CLASS_IN) if in_answers => {
                let priority = r.u16()?;
                r.skip(2)?; // weight: the caller load-balances
                let port = r.u16()?;
                let target = r.name()?;
                answer.records.push(SrvRecord {
                    priority,
                    port,
                    target,
                });
            }
            (TYPE_A, CLASS_IN) if in_additional && len == 4 => {
                let b: [u8; 4] = msg[start..end].try_into().map_err(|_| "bad A record")?;
                answer.addresses.push((name, IpAddr::from(b)));
            }
            (TYPE_AAAA, CLASS_IN) if in_additional && len == 16 => {
                let b: [u8; 16] = msg[start..end].try_into().map_err(|_| "bad AAAA record")?;
                answer.addresses.push((name, IpAddr::from(b)));
            }
            _ => {}
        }
        r.pos = end;
    }
    Ok(answer)
}

/// A cursor over a DNS message.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

// === impl Reader ===

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, String> {
        let b = *self.msg.get(self.pos).ok_or("the message ends early")?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        if self.pos + n > self.msg.len() {
            return Err("the message ends early".into());
        }
        self.pos += n;
        Ok(())
    }

    /// Reads a possibly compressed name: lower-cased, dot-separated, no trailing dot.
    fn name(&mut self) -> Result<String, String> {
        let mut labels: Vec<String> = Vec::new();
        let mut pos = self.pos;
        let mut resume = None;
        let mut jumps = 0;
        loop {
            let len = *self.msg.get(pos).ok_or("a name runs past the end")?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    pos += 1;
                    break;
                }
                0x00 => {
                    let start = pos + 1;
                    let end = start + usize::from(len);
                    let label = self
                        .msg
                        .get(start..end)
                        .ok_or("a label runs past the end")?;
                    labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                    pos = end;
                }
                0xc0 => {
                    let low = *self.msg.get(pos + 1).ok_or("a pointer runs past the end")?;
                    jumps += 1;
                    if jumps > 32 {
                        return Err("a name has too many compression pointers".into());
                    }
                    resume.get_or_insert(pos + 2);
                    pos = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                }
                _ => return Err("a name uses an unknown label type".into()),
            }
        }
        self.pos = resume.unwrap_or(pos);
        Ok(labels.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response to `query` with the given answer and additional records, each
    /// (name, type, rdata); names are compressed against the question when equal to it.
    fn response(query: &[u8], rcode: u8, answers: &[(Vec<u8>, u16, Vec<u8>)]) -> Vec<u8> {
        let question_end = query.len() - 11; // minus the OPT record
        let mut out = query[..2].to_vec();
        out.extend_from_slice(&(0x8180u16 | u16::from(rcode)).to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&query[12..question_end]);
        for (name, rtype, rdata) in answers {
            out.extend_from_slice(name);
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&30u32.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
        }
        out
    }

    fn srv_rdata(priority: u16, port: u16, target: &[u8]) -> Vec<u8> {
        let mut out = priority.to_be_bytes().to_vec();
        out.extend_from_slice(&5u16.to_be_bytes());
        out.extend_from_slice(&port.to_be_bytes());
        out.extend_from_slice(target);
        out
    }

    #[test]
    fn encodes_names_and_queries() {
        assert_eq!(encode_name("a.bc").unwrap(), b"\x01a\x02bc\x00");
        assert_eq!(encode_name("a.bc.").unwrap(), b"\x01a\x02bc\x00");
        assert_eq!(encode_name("").unwrap(), b"\x00");
        assert!(encode_name("a..b").is_err());
        assert!(encode_name(&"x".repeat(64)).is_err());
        assert!(encode_name(&["abc"; 70].join(".")).is_err());
        assert!(encode_name("a b.c").is_err());

        let q = encode_query(0xbeef, "_x._tcp.svc", TYPE_SRV).unwrap();
        assert_eq!(
            &q[..12],
            b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
        );
        assert_eq!(&q[12..25], b"\x02_x\x04_tcp\x03svc\x00");
        assert_eq!(&q[25..29], b"\x00\x21\x00\x01");
        assert_eq!(&q[29..], b"\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00");
    }

    #[test]
    fn decodes_srv_with_compression_and_additional_addresses() {
        let q = encode_query(
            7,
            "_dapr-internal._tcp.appb-dapr.default.svc.cluster.local",
            33,
        )
        .unwrap();
        // Pointer to the question name at offset 12; targets written in full.
        let qname_ptr = vec![0xc0, 12];
        let pod1 = encode_name("pod-1.appb-dapr.default.svc.cluster.local").unwrap();
        let pod2 = encode_name("Pod-2.appb-dapr.default.svc.cluster.local").unwrap();
        let backup = encode_name("backup.example").unwrap();
        let mut msg = response(
            &q,
            0,
            &[
                (qname_ptr.clone(), TYPE_SRV, srv_rdata(10, 50002, &pod1)),
                (qname_ptr.clone(), TYPE_SRV, srv_rdata(10, 50012, &pod2)),
                (qname_ptr, TYPE_SRV, srv_rdata(20, 50002, &backup)),
            ],
        );
        // One additional A record for pod-1, its name compressed to the first SRV target
        // (which starts 6 bytes into the first answer's rdata).
        let first_rdata = q.len() - 11 + 2 + 10 + 6;
        msg[10..12].copy_from_slice(&1u16.to_be_bytes());
        msg.extend_from_slice(&[0xc0, first_rdata as u8]);
        msg.extend_from_slice(&TYPE_A.to_be_bytes());
        msg.extend_from_slice(&CLASS_IN.to_be_bytes());
        msg.extend_from_slice(&30u32.to_be_bytes());
        msg.extend_from_slice(&4u16.to_be_bytes());
        msg.extend_from_slice(&[10, 1, 2, 3]);

        let answer = decode_srv_response(&msg, 7).unwrap();
        assert_eq!(answer.rcode, 0);
        assert!(!answer.truncated);
        assert_eq!(answer.records.len(), 3);
        assert_eq!(answer.records[0].port, 50002);
        assert_eq!(answer.records[0].priority, 10);
        assert_eq!(
            answer.records[1].target,
            "pod-2.appb-dapr.default.svc.cluster.local"
        );
        assert_eq!(
            answer.addresses,
            vec![(
                "pod-1.appb-dapr.default.svc.cluster.local".to_owned(),
                IpAddr::from([10, 1, 2, 3])
            )]
        );
        let mut found = answer.instances("appb", "default");
        sort_instances(&mut found);
        let hosts: Vec<_> = found.iter().map(|i| (i.host.as_str(), i.port)).collect();
        assert_eq!(
            hosts,
            vec![
                ("10.1.2.3", 50002),
                ("pod-2.appb-dapr.default.svc.cluster.local", 50012)
            ]
        );
        assert!(decode_srv_response(&msg, 8).is_err(), "another id");
    }

    #[test]
    fn decodes_nxdomain_truncation_and_rejects_garbage() {
        let q = encode_query(9, "_a._tcp.none.local", TYPE_SRV).unwrap();
        let nx = decode_srv_response(&response(&q, 3, &[]), 9).unwrap();
        assert_eq!(nx.rcode, 3);
        assert!(nx.clone().checked().unwrap().records.is_empty());
        let fail = decode_srv_response(&response(&q, 2, &[]), 9).unwrap();
        assert!(fail.checked().is_err());

        let mut tc = response(&q, 0, &[]);
        tc[2] |= 0x02;
        tc[7] = 1; // one answer announced but missing
        assert!(decode_srv_response(&tc, 9).unwrap().truncated);

        assert!(
            decode_srv_response(&q, 9).is_err(),
            "a query is not a response"
        );
        assert!(decode_srv_response(&[0, 9, 0x81], 9).is_err());
        // A pointer loop.
        let mut looped = response(&q, 0, &[]);
        looped[7] = 1;
        looped.extend_from_slice(&[0xc0, (looped.len()) as u8]);
        assert!(decode_srv_response(&looped, 9).is_err());
    }

    #[test]
    fn reads_resolv_conf() {
        let text = "# comment\nsearch default.svc.cluster.local\nnameserver 10.96.0.10\n\
                    nameserver ::1 # local\noptions ndots:5\nnameserver fe80::1%eth0\n";
        assert_eq!(
            resolv_conf_nameservers(text),
            vec![
                "10.96.0.10:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
    }
}
