//! [`OpenFaasProvider`]: a [`ServiceQuery`] that speaks the OpenFaaS provider HTTP API, so the
//! middleware works in front of faas-netes or faasd.
//!
//! - `GET {base}/system/function/{name}?namespace={ns}` reads the replica state;
//!   `replicas` / `availableReplicas` are omitted when 0. Scale to zero comes from the labels
//!   `com.openfaas.scale.zero=true` and `com.openfaas.scale.zero-duration` (e.g. `15m`). Min
//!   and max come from the labels
//!   `com.openfaas.scale.min` / `com.openfaas.scale.max`.
//! - `POST {base}/system/scale-function/{name}?namespace={ns}` with
//!   `{"serviceName", "namespace", "replicas"}` scales; 200 and 202 are success.
//! - 404 means "function does not exist". 400, 401 and 403 are permanent provider errors,
//!   5xx and transport errors retryable ones; all carry the status and a short body excerpt.
//! - `http://` and `https://` base URLs. TLS is rustls (ring) with the system's trust store by
//!   default ([`TlsRoots`]); more CAs can be added ([`OpenFaasProvider::add_root_certificates`]).
//! - Credentials: [`basic_auth`](OpenFaasProvider::basic_auth) or
//!   [`bearer_token`](OpenFaasProvider::bearer_token). A base URL with `user:password@` in it is
//!   refused: credentials never travel silently dropped or in a logged URL.
//! - Calls are bounded by the scaler's [`call_timeout`](crate::ScalingConfig::call_timeout):
//!   one setting, not a second one here.
//!
//! ```no_run
//! use tower_scale_from_zero::providers::OpenFaasProvider;
//! use tower_scale_from_zero::{FunctionScaler, ScalingConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = OpenFaasProvider::new("https://gateway.example.com/")?
//!     .basic_auth("admin", "secret");
//! let scaler = FunctionScaler::new(provider, ScalingConfig::default());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use serde::Deserialize;

use crate::{FunctionId, QueryError, ServiceQuery, ServiceQueryResponse};

const MIN_LABEL: &str = "com.openfaas.scale.min";
const MAX_LABEL: &str = "com.openfaas.scale.max";
const ZERO_LABEL: &str = "com.openfaas.scale.zero";
const ZERO_DURATION_LABEL: &str = "com.openfaas.scale.zero-duration";
/// Bodies larger than this are not read: a function status is a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
const EXCERPT: usize = 200;

/// Idle connections kept to the provider: as many as the scaler's default cap on calls.
const MAX_IDLE_CONNECTIONS: usize = 64;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The OpenFaaS provider API client. Cloning shares the connection pool.
#[derive(Clone)]
pub struct OpenFaasProvider {
    base: String,
    client: HttpClient,
    roots: Arc<RootCertStore>,
    authorization: Option<HeaderValue>,
}

/// Which certificate authorities an `https://` provider URL is checked against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// The operating system's trust store (as curl and most clients use).
    #[default]
    System,
    /// Mozilla's root list compiled into the binary (`webpki-roots`): the same on every
    /// machine, including minimal containers without a trust store.
    WebPki,
}

/// The base URL given to [`OpenFaasProvider::new`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid OpenFaaS provider URL: {reason}")]
pub struct InvalidBaseUrl {
    reason: String,
}

/// A TLS setting of [`OpenFaasProvider`] cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("OpenFaaS provider TLS: {reason}")]
pub struct InvalidTls {
    reason: String,
}

impl OpenFaasProvider {
    /// A client for the provider at `base_url` (`http://host:port` or `https://host:port`,
    /// with or without a path and a trailing slash); no credentials; `https` checked against
    /// the system's trust store.
    pub fn new(base_url: &str) -> Result<Self, InvalidBaseUrl> {
        let invalid = |reason: String| InvalidBaseUrl { reason };
        let uri: Uri = base_url
            .parse()
            .map_err(|_| invalid(format!("{:?} is not a URL", redact(base_url))))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "scheme {other:?} is not supported (use http or https)"
                )))
            }
            None => {
                return Err(invalid(format!(
                    "{:?} has no http:// or https:// scheme",
                    redact(base_url)
                )))
            }
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(format!(
                "{:?} carries credentials (user:password@); they would not be sent. Pass them \
                 with basic_auth or bearer_token (the example gateways read OPENFAAS_USERNAME and \
                 OPENFAAS_PASSWORD, or OPENFAAS_TOKEN)",
                redact(base_url)
            )));
        }
        if uri.host().is_none() {
            return Err(invalid(format!("{base_url:?} has no host")));
        }
        if uri.query().is_some() {
            return Err(invalid(format!("{base_url:?} has a query string")));
        }
        let base = base_url.trim_end_matches('/').to_owned();
        let roots = Arc::new(roots(TlsRoots::System));
        Ok(Self {
            base,
            client: client(&roots),
            roots,
            authorization: None,
        })
    }

    /// Sends HTTP basic-auth credentials with every call.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        let token = base64(format!("{user}:{password}").as_bytes());
        let value = sensitive(format!("Basic {token}")).expect("base64 is a valid header value");
        self.authorization = Some(value);
        self
    }

    /// Sends `Authorization: Bearer {token}` with every call (instead of basic auth).
    ///
    /// Fails if the token holds characters a header cannot carry.
    pub fn bearer_token(mut self, token: &str) -> Result<Self, InvalidBaseUrl> {
        let value = sensitive(format!("Bearer {}", token.trim())).map_err(|_| InvalidBaseUrl {
            reason: "the bearer token holds characters a header cannot carry".into(),
        })?;
        self.authorization = Some(value);
        Ok(self)
    }

    /// Checks `https` provider URLs against `roots` (default [`TlsRoots::System`]), replacing
    /// any certificates added before.
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.roots = Arc::new(self::roots(roots));
        self.client = client(&self.roots);
        self
    }

    /// Also trusts the CA certificates in `pem` (one or more `BEGIN CERTIFICATE` blocks), for
    /// a provider behind a private or self-signed CA.
    pub fn add_root_certificates(mut self, pem: &[u8]) -> Result<Self, InvalidTls> {
        let invalid = |reason: String| InvalidTls { reason };
        let mut roots = RootCertStore::clone(&self.roots);
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("reading the PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(invalid("no certificate in the PEM".into()));
        }
        self.roots = Arc::new(roots);
        self.client = client(&self.roots);
        Ok(self)
    }

    fn uri(&self, action: &str, function: &FunctionId) -> Result<Uri, QueryError> {
        let uri = format!(
            "{}/system/{action}/{}?namespace={}",
            self.base,
            percent_encode(function.name()),
            percent_encode(function.namespace()),
        );
        uri.parse()
            .map_err(|e| QueryError::provider(format!("cannot build URL {uri:?}: {e}")).permanent())
    }

    /// One call: the status and at most [`MAX_BODY`] bytes of body. Unbounded in time here:
    /// the scaler bounds every call by its call timeout.
    async fn send(
        &self,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), QueryError> {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(auth) = &self.authorization {
            request = request.header(header::AUTHORIZATION, auth.clone());
        }
        if !body.is_empty() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| QueryError::from_source(e).permanent())?;
        let response = self
            .client
            .request(request)
            .await
            // hyper's own message ("client error (Connect)") does not say what went wrong.
            .map_err(|e| QueryError::provider(crate::util::ErrorChain(&e).to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| QueryError::provider(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    }
}

/// A credential header value: never printed by `Debug`, kept out of HPACK tables.
fn sensitive(value: String) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let mut value = HeaderValue::try_from(value)?;
    value.set_sensitive(true);
    Ok(value)
}

/// `url` with any `user:password@` replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***@{}", &url[..scheme_end], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn roots(roots: TlsRoots) -> RootCertStore {
    match roots {
        TlsRoots::WebPki => RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        TlsRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's trust store");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            if ignored > 0 || added == 0 {
                tracing::debug!(added, ignored, "system trust store");
            }
            store
        }
    }
}

/// A pooled HTTP/1 client for `http` and `https` (rustls with ring, checked against `roots`).
fn client(roots: &RootCertStore) -> HttpClient {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_root_certificates(roots.clone())
    .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    // Connections in use are bounded by the scaler's cap on provider calls under way
    // (`ScalingConfig::max_provider_calls`, 64 by default); idle ones by this.
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(MAX_IDLE_CONNECTIONS)
        .build(connector)
}

/// Maps a non-success answer to the error it means.
fn answer_error(status: StatusCode, body: &[u8]) -> QueryError {
    if status == StatusCode::NOT_FOUND {
        return QueryError::not_found("the provider has no such function").with_status(status);
    }
    let err = QueryError::provider(excerpt(body)).with_status(status);
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            err.permanent()
        }
        _ => err,
    }
}

#[async_trait]
impl ServiceQuery for OpenFaasProvider {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        let uri = self.uri("function", function)?;
        let (status, body) = self.send(Method::GET, uri, Bytes::new()).await?;
        if status != StatusCode::OK {
            return Err(answer_error(status, &body));
        }
        let status: FunctionStatus = serde_json::from_slice(&body).map_err(|e| {
            QueryError::provider(format!("invalid function status ({e}): {}", excerpt(&body)))
        })?;
        Ok(status.into_response(function))
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        let uri = self.uri("scale-function", function)?;
        let body = serde_json::json!({
            "serviceName": function.name(),
            "namespace": function.namespace(),
            "replicas": replicas,
        });
        let (status, answer) = self
            .send(Method::POST, uri, Bytes::from(body.to_string()))
            .await?;
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => Ok(()),
            status => Err(answer_error(status, &answer)),
        }
    }
}

impl fmt::Debug for OpenFaasProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenFaasProvider")
            .field("base", &self.base)
            .field("basic_auth", &self.authorization.is_some())
            .field("tls_roots", &self.roots.len())
            .finish()
    }
}

/// The provider's function status; absent counts mean 0, as the provider omits zeros.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FunctionStatus {
    #[serde(default)]
    replicas: Option<u64>,
    #[serde(default)]
    available_replicas: Option<u64>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

impl FunctionStatus {
    fn into_response(self, function: &FunctionId) -> ServiceQueryResponse {
        let defaults = ServiceQueryResponse::new(0, 0);
        let labels = self.labels.unwrap_or_default();
        let label = |key: &str, default: u64| match labels.get(key) {
            None => default,
            Some(value) => value.trim().parse::<u64>().unwrap_or_else(|_| {
                tracing::warn!(
                    function = %function, label = key, value = %value,
                    "ignoring a scale label that is not a non-negative integer"
                );
                default
            }),
        };
        ServiceQueryResponse::new(
            self.replicas.unwrap_or(0),
            self.available_replicas.unwrap_or(0),
        )
        .min_replicas(label(MIN_LABEL, defaults.min_replicas))
        .max_replicas(label(MAX_LABEL, defaults.max_replicas))
        .scale_to_zero(crate::providers::idle_policy(
            function.name(),
            labels.get(ZERO_LABEL).map(String::as_str),
            labels.get(ZERO_DURATION_LABEL).map(String::as_str),
        ))
    }
}

/// The start of a body, as one printable line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.is_empty() {
        "(empty body)".to_owned()
    } else if body.len() > EXCERPT {
        format!("{line}...")
    } else {
        line.to_owned()
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_bytes() {
        assert_eq!(percent_encode("echo-1.a_b~"), "echo-1.a_b~");
        assert_eq!(percent_encode("a/b?c d%é"), "a%2Fb%3Fc%20d%25%C3%A9");
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt(b"  oops\nwrong\r\n"), "oops wrong");
        assert_eq!(excerpt(b""), "(empty body)");
        let long = excerpt(&[b'x'; 5_000]);
        assert_eq!(long.len(), EXCERPT + 3);
    }

    #[test]
    fn bad_base_urls_are_refused_with_a_reason() {
        for (url, why) in [
            ("ftp://gateway:8080", "http or https"),
            ("gateway:8080", "scheme"),
            ("http://user:pw@gateway:8080", "credentials"),
            ("not a url", "invalid"),
            ("http://gw:8080/?x=1", "query string"),
        ] {
            let err = OpenFaasProvider::new(url).unwrap_err().to_string();
            assert!(err.contains(why), "{url}: {err}");
        }
    }
}
