//! `middleware.http.bearer`: verifies `Authorization: Bearer <JWT>` against a JWK Set.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ring::signature::{self, RsaParameters, VerificationAlgorithm};
use serde_json::Value;

use super::{Flow, optional, required};

/// How far `exp` and `nbf` may be off.
const LEEWAY_SECS: f64 = 60.0;
/// The least time between two fetches of the key set once it has been fetched.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two fetches while no key set has been fetched yet.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// A fetched key set older than this is fetched again before use.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key set or OpenID configuration document read.
const MAX_DOCUMENT: usize = 1 << 20;

/// The claims of the verified bearer token, handed on as a request extension.
#[derive(Clone, Debug, PartialEq)]
pub struct BearerClaims(pub Value);

pub(super) struct Bearer {
    issuer: String,
    audience: String,
    keys: Keys,
}

enum Keys {
    Inline(Arc<KeySet>),
    Remote(Arc<Remote>),
}

impl Bearer {
    pub(super) fn from_metadata(md: &HashMap<String, String>) -> Result<Bearer, String> {
        Bearer::new(md, REFETCH_INTERVAL)
    }

    /// Like [`Bearer::from_metadata`], with the least time between two fetches of the key set.
    pub(super) fn new(
        md: &HashMap<String, String>,
        refetch_interval: Duration,
    ) -> Result<Bearer, String> {
        let issuer = required(md, "issuer")?.to_owned();
        let audience = required(md, "audience")?.to_owned();
        let keys = match (optional(md, "jwks"), optional(md, "jwksURL")) {
            (Some(_), Some(_)) => return Err("set either jwks or jwksURL, not both".to_owned()),
            (Some(inline), None) => {
                let doc: Value = serde_json::from_str(inline)
                    .map_err(|e| format!("jwks is not valid JSON: {e}"))?;
                let set = KeySet::parse(&doc)?;
                if set.keys.is_empty() {
                    return Err("jwks holds no usable signing key".to_owned());
                }
                Keys::Inline(Arc::new(set))
            }
            (None, url) => {
                let location = match url {
                    Some(u) => Location::Jwks(check_url(u, "jwksURL")?),
                    None => Location::Discovery(check_url(
                        &format!(
                            "{}/.well-known/openid-configuration",
                            issuer.trim_end_matches('/')
                        ),
                        "issuer",
                    )?),
                };
                let remote = Arc::new(Remote::new(location, refetch_interval)?);
                // Fetch ahead of the first request when there is a runtime to do it on.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let r = remote.clone();
                    rt.spawn(async move {
                        r.refresh().await;
                    });
                }
                Keys::Remote(remote)
            }
        };
        Ok(Bearer {
            issuer,
            audience,
            keys,
        })
    }

    pub(super) async fn check(&self, mut req: Request) -> Flow {
        let Some(token) = bearer_token(&req) else {
            tracing::debug!("Request refused: no bearer token");
            return Flow::Respond(unauthorized(None));
        };
        match self.verify(token).await {
            Ok(claims) => {
                req.extensions_mut().insert(BearerClaims(claims));
                Flow::Continue(req)
            }
            Err(reason) => {
                tracing::debug!(%reason, "Request refused: invalid bearer token");
                Flow::Respond(unauthorized(Some(reason)))
            }
        }
    }

    /// Verifies the token's signature and claims; the error says why it is refused.
    async fn verify(&self, token: &str) -> Result<Value, &'static str> {
        let jwt = Jwt::parse(token)?;
        let verified = match &self.keys {
            Keys::Inline(set) => set.verify(&jwt),
            Keys::Remote(remote) => {
                let mut set = remote.current().await;
                if !set.has_candidate(&jwt) {
                    set = remote.refresh().await;
                }
                set.verify(&jwt)
            }
        };
        verified?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        check_claims(&jwt.claims, &self.issuer, &self.audience, now)?;
        Ok(jwt.claims)
    }
}

fn check_url(url: &str, field: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{field} is not a valid URL ({url}): {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(format!("{field} must be an http(s) URL, not {url}")),
    }
}

fn bearer_token(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(reason: Option<&'static str>) -> Response {
    let challenge = match reason {
        None => HeaderValue::from_static("Bearer"),
        Some(_) => HeaderValue::from_static("Bearer error=\"invalid_token\""),
    };
    let body = match reason {
        None => "missing bearer token",
        Some(r) => r,
    };
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, challenge),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `iss` must equal the issuer, `aud` must hold the audience, `exp` and `nbf` (when present)
/// must hold at `now` (seconds since the epoch) within the leeway.
pub(super) fn check_claims(
    claims: &Value,
    issuer: &str,
    audience: &str,
    now: f64,
) -> Result<(), &'static str> {
    if !claims.is_object() {
        return Err("token claims are not a JSON object");
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err("token issuer mismatch");
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == audience,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err("token audience mismatch");
    }
    let time = |name: &str| -> Result<Option<f64>, &'static str> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or("token time claim is not a number"),
        }
    };
    if let Some(exp) = time("exp")?
        && now > exp + LEEWAY_SECS
    {
        return Err("token expired");
    }
    if let Some(nbf) = time("nbf")?
        && now + LEEWAY_SECS < nbf
    {
        return Err("token not valid yet");
    }
    Ok(())
}

/// A decoded, not yet verified, compact JWS.
struct Jwt {
    alg: Alg,
    kid: Option<String>,
    claims: Value,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl Jwt {
    fn parse(token: &str) -> Result<Jwt, &'static str> {
        const MALFORMED: &str = "malformed token";
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MALFORMED);
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| MALFORMED);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| MALFORMED)?;
        if header.get("crit").is_some() {
            return Err("token uses unsupported critical header parameters");
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::from_name)
            .ok_or("token signing algorithm not supported")?;
        let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
        let claims: Value = serde_json::from_slice(&decode(p)?).map_err(|_| MALFORMED)?;
        let signature = decode(s)?;
        let signing_input = token
            .get(..h.len() + 1 + p.len())
            .ok_or(MALFORMED)?
            .as_bytes()
            .to_vec();
        Ok(Jwt {
            alg,
            kid,
            claims,
            signing_input,
            signature,
        })
    }
}

/// A JWS signing algorithm this build verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            "HS256" => Alg::Hs256,
            "HS384" => Alg::Hs384,
            "HS512" => Alg::Hs512,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
            Alg::Hs256 => "HS256",
            Alg::Hs384 => "HS384",
            Alg::Hs512 => "HS512",
        }
    }

    fn rsa(self) -> Option<&'static RsaParameters> {
        Some(match self {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    fn hmac(self) -> Option<ring::hmac::Algorithm> {
        Some(match self {
            Alg::Hs256 => ring::hmac::HMAC_SHA256,
            Alg::Hs384 => ring::hmac::HMAC_SHA384,
            Alg::Hs512 => ring::hmac::HMAC_SHA512,
            _ => return None,
        })
    }
}

/// The public (or, for `oct`, shared) key material of one JWK.
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed SEC1 point (`04 || x || y`).
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
    Oct(Vec<u8>),
}

struct Jwk {
    kid: Option<String>,
    alg: Option<String>,
    material: Material,
}

impl Jwk {
    /// Whether this key can check a signature made with `alg`.
    fn fits(&self, alg: Alg) -> bool {
        if self.alg.as_deref().is_some_and(|a| a != alg.name()) {
            return false;
        }
        match &self.material {
            Material::Rsa { .. } => alg.rsa().is_some(),
            Material::P256(_) => alg == Alg::Es256,
            Material::P384(_) => alg == Alg::Es384,
            Material::Ed25519(_) => alg == Alg::EdDsa,
            Material::Oct(_) => alg.hmac().is_some(),
        }
    }

    fn verify(&self, alg: Alg, msg: &[u8], sig: &[u8]) -> bool {
        let unparsed = |a: &'static dyn VerificationAlgorithm, key: &[u8]| {
            signature::UnparsedPublicKey::new(a, key)
                .verify(msg, sig)
                .is_ok()
        };
        match &self.material {
            Material::Rsa { n, e } => alg.rsa().is_some_and(|params| {
                signature::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, sig)
                    .is_ok()
            }),
            Material::P256(point) => unparsed(&signature::ECDSA_P256_SHA256_FIXED, point),
            Material::P384(point) => unparsed(&signature::ECDSA_P384_SHA384_FIXED, point),
            Material::Ed25519(key) => unparsed(&signature::ED25519, key),
            Material::Oct(secret) => alg.hmac().is_some_and(|a| {
                ring::hmac::verify(&ring::hmac::Key::new(a, secret), msg, sig).is_ok()
            }),
        }
    }

    /// Parses one JWK; `Ok(None)` for keys of kinds or uses this build leaves aside.
    fn parse(v: &Value) -> Result<Option<Jwk>, String> {
        let s = |f: &str| v.get(f).and_then(Value::as_str);
        if s("use").is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let b64 = |f: &str| -> Result<Vec<u8>, String> {
            let raw = s(f).ok_or_else(|| format!("JWK without {f}"))?;
            URL_SAFE_NO_PAD
                .decode(raw.trim_end_matches('='))
                .map_err(|_| format!("JWK {f} is not base64url"))
        };
        let fixed = |f: &str, len: usize| -> Result<Vec<u8>, String> {
            let b = b64(f)?;
            if b.len() != len {
                return Err(format!("JWK {f} has {} bytes, not {len}", b.len()));
            }
            Ok(b)
        };
        let point = |len: usize| -> Result<Vec<u8>, String> {
            let mut p = vec![4];
            p.extend(fixed("x", len)?);
            p.extend(fixed("y", len)?);
            Ok(p)
        };
        let material = match (s("kty"), s("crv")) {
            (Some("RSA"), _) => {
                let strip = |b: Vec<u8>| {
                    let zeros = b.iter().take_while(|&&x| x == 0).count();
                    b[zeros..].to_vec()
                };
                Material::Rsa {
                    n: strip(b64("n")?),
                    e: strip(b64("e")?),
                }
            }
            (Some("EC"), Some("P-256")) => Material::P256(point(32)?),
            (Some("EC"), Some("P-384")) => Material::P384(point(48)?),
            (Some("OKP"), Some("Ed25519")) => Material::Ed25519(fixed("x", 32)?),
            (Some("oct"), _) => Material::Oct(b64("k")?),
            _ => return Ok(None),
        };
        Ok(Some(Jwk {
            kid: s("kid").map(str::to_owned),
            alg: s("alg").map(str::to_owned),
            material,
        }))
    }
}

/// A JWK Set's usable signing keys.
#[derive(Default)]
struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    fn parse(doc: &Value) -> Result<KeySet, String> {
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("a JWK Set needs a \"keys\" list")?;
        let mut keys = Vec::new();
        for (i, k) in list.iter().enumerate() {
            match Jwk::parse(k) {
                Ok(Some(jwk)) => keys.push(jwk),
                Ok(None) => {}
                Err(e) => return Err(format!("key {i}: {e}")),
            }
        }
        Ok(KeySet { keys })
    }

    fn candidates<'a>(&'a self, jwt: &'a Jwt) -> impl Iterator<Item = &'a Jwk> {
        self.keys.iter().filter(move |k| {
            k.fits(jwt.alg)
                && match (&jwt.kid, &k.kid) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    fn has_candidate(&self, jwt: &Jwt) -> bool {
        self.candidates(jwt).next().is_some()
    }

    fn verify(&self, jwt: &Jwt) -> Result<(), &'static str> {
        let mut tried = false;
        for key in self.candidates(jwt) {
            tried = true;
            if key.verify(jwt.alg, &jwt.signing_input, &jwt.signature) {
                return Ok(());
            }
        }
        if tried {
            Err("token signature invalid")
        } else {
            Err("no key for the token's signature")
        }
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

enum Location {
    /// `jwksURL`.
    Jwks(http::Uri),
    /// The issuer's OpenID configuration, whose `jwks_uri` is the key set.
    Discovery(http::Uri),
}

/// A key set fetched over HTTP and cached.
struct Remote {
    location: Location,
    client: HttpClient,
    refetch_interval: Duration,
    cache: RwLock<Cached>,
    /// Serialises fetches; holds when the last one started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Clone, Default)]
struct Cached {
    keys: Arc<KeySet>,
    fetched: Option<Instant>,
}

impl Remote {
    fn new(location: Location, refetch_interval: Duration) -> Result<Remote, String> {
        let https = crate::outbound::https_connector()?;
        Ok(Remote {
            location,
            client: Client::builder(TokioExecutor::new()).build(https),
            refetch_interval,
            cache: RwLock::new(Cached::default()),
            fetching: tokio::sync::Mutex::new(None),
        })
    }

    fn snapshot(&self) -> Cached {
        match self.cache.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The cached keys, fetched first when there are none yet or they are old.
    async fn current(&self) -> Arc<KeySet> {
        let c = self.snapshot();
        match c.fetched {
            Some(at) if at.elapsed() < MAX_AGE => c.keys,
            _ => self.refresh().await,
        }
    }

    /// Fetches the key set again unless a fetch started too recently; returns the keys to
    /// use. A failed fetch keeps the previous keys.
    async fn refresh(&self) -> Arc<KeySet> {
        let mut last = self.fetching.lock().await;
        let cached = self.snapshot();
        let wait = if cached.fetched.is_some() {
            self.refetch_interval
        } else {
            RETRY_INTERVAL.min(self.refetch_interval)
        };
        if last.is_some_and(|at| at.elapsed() < wait) {
            return cached.keys;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                tracing::info!(
                    keys = set.keys.len(),
                    "Bearer middleware fetched its JWK Set"
                );
                let keys = Arc::new(set);
                let fresh = Cached {
                    keys: keys.clone(),
                    fetched: Some(Instant::now()),
                };
                match self.cache.write() {
                    Ok(mut c) => *c = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                keys
            }
            Err(error) => {
                tracing::warn!(%error, "Bearer middleware could not fetch its JWK Set");
                cached.keys
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let url = match &self.location {
            Location::Jwks(u) => u.clone(),
            Location::Discovery(u) => {
                let doc = self.get_json(u.clone()).await?;
                let jwks = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{u} has no jwks_uri"))?;
                check_url(jwks, "jwks_uri")?
            }
        };
        let doc = self.get_json(url.clone()).await?;
        KeySet::parse(&doc).map_err(|e| format!("{url}: {e}"))
    }

    async fn get_json(&self, url: http::Uri) -> Result<Value, String> {
        let req = http::Request::get(url.clone())
            .header(header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let read = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !res.status().is_success() {
                return Err(format!("{url} answered {}", res.status()));
            }
            let body = Limited::new(res.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the body: {e}"))?
                .to_bytes();
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, read)
            .await
            .map_err(|_| format!("{url}: no answer within {FETCH_TIMEOUT:?}"))?
    }
}
