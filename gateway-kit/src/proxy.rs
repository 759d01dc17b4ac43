//! A streaming HTTP/1.1 and HTTP/2 reverse proxy: a request goes upstream in the version it
//! came in (HTTP/2 to an `http` upstream is h2c with prior knowledge, to an `https` one is
//! negotiated with ALPN), so gRPC passes through; neither body is collected, and trailers
//! pass with the body; hop-by-hop headers are removed (`TE: trailers` is kept for HTTP/2); `X-Forwarded-For`, `-Proto` and `-Host` are set (a client's own are replaced
//! unless it is a trusted proxy); bodies of any method keep their framing (a chunked `GET`
//! keeps its body); upgrades (WebSocket) pass through; a refused first connection after a
//! cold start is retried when the request can be sent again.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::upgrade::OnUpgrade;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_scale_from_zero::middleware::UpgradeActivity;

/// Errors of bodies passing through.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the gateway sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Pauses between tries of a refused first connection: 5 tries within 0.8 s.
const REFUSED_PAUSES: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(400),
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The proxy: pooled keep-alive clients (http and https; HTTP/1.1 and HTTP/2) and who is
/// trusted.
#[derive(Clone, Debug)]
pub struct Proxy {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    h2: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    trusted: Arc<[IpAddr]>,
}

/// What to forward where.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Forward {
    /// The upstream URL (path and query included).
    pub upstream: Uri,
    /// The client's address, for `X-Forwarded-For`.
    pub peer: Option<SocketAddr>,
    /// Whether a refused connection may be tried again (the first forward after a cold start:
    /// "ready" may not be routable yet). Only requests without a body are.
    pub retry_refused: bool,
}

impl Forward {
    /// Forward to `upstream`.
    pub fn to(upstream: Uri) -> Self {
        Self {
            upstream,
            peer: None,
            retry_refused: false,
        }
    }

    /// From the client at `peer`.
    pub fn from(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// Retry a refused connection (for a request that was held for a cold start).
    pub fn retry_refused(mut self, retry: bool) -> Self {
        self.retry_refused = retry;
        self
    }
}

/// The upstream could not be reached.
#[derive(Debug)]
pub struct UpstreamError {
    refused: bool,
    message: String,
}

impl UpstreamError {
    /// Whether the upstream refused the connection (nothing listens there).
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// The 502 a client gets.
    pub fn into_response(self) -> Response<ProxyBody> {
        text(
            StatusCode::BAD_GATEWAY,
            &format!("upstream error: {}\n", self.message),
        )
    }
}

impl Proxy {
    /// A proxy whose https connections are checked with `tls`; `X-Forwarded-*` headers from
    /// the `trusted` addresses are kept and extended.
    pub fn new(tls: rustls::ClientConfig, trusted: Vec<IpAddr>) -> Self {
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let h2_connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http2()
            .build();
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(h2_connector);
        Self {
            client,
            h2,
            trusted: trusted.into(),
        }
    }

    /// Sends `req` as `forward` says. Streams both bodies; hands an upgraded connection over
    /// to a task that copies both ways until either side closes.
    pub async fn forward<B>(
        &self,
        mut req: Request<B>,
        forward: Forward,
    ) -> Result<Response<ProxyBody>, UpstreamError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let upgrade = upgrade_protocol(req.headers())
            .and_then(|protocol| Some((protocol, req.extensions_mut().remove::<OnUpgrade>()?)));
        // With scale to zero on: the function stays active while the upgraded connection lives.
        let activity = req.extensions_mut().remove::<UpgradeActivity>();
        let (parts, body) = req.into_parts();
        let h2 = parts.version == Version::HTTP_2;
        let mut headers = parts.headers;
        let has_body = !body.is_end_stream();
        let framed = headers.contains_key(header::CONTENT_LENGTH);
        // gRPC asks for trailers with `TE: trailers`, the one TE HTTP/2 allows.
        let te_trailers = h2
            && headers
                .get(header::TE)
                .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        remove_hop_by_hop(&mut headers);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        self.set_forwarded(&mut headers, forward.peer);
        headers.remove(header::HOST); // the client sets it from the URI
                                      // Only the client's side of the upgrade is kept past here; the protocol goes on.
        let upgrade = upgrade.map(|(protocol, on_upgrade)| {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocol);
            on_upgrade
        });
        if has_body && !framed && !h2 {
            // Without this, hyper sends a GET's body of unknown length as no body at all.
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        let head = |headers: HeaderMap| {
            let mut head = Request::new(());
            *head.method_mut() = parts.method.clone();
            *head.uri_mut() = forward.upstream.clone();
            *head.version_mut() = if h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            *head.headers_mut() = headers;
            head
        };
        // A body, once sent, cannot be sent again: only bodiless requests are tried again, and
        // only they keep a copy of the headers for it.
        let pauses: &[Duration] = if forward.retry_refused && !has_body {
            &REFUSED_PAUSES
        } else {
            &[]
        };
        let client = if h2 { &self.h2 } else { &self.client };
        for pause in pauses {
            let attempt = head(headers.clone()).map(|()| empty());
            match client.request(attempt).await {
                Err(err) if is_refused(&err) => {
                    tracing::debug!(upstream = %forward.upstream, "refused; trying again");
                    tokio::time::sleep(*pause).await;
                }
                outcome => return finish(outcome, &forward.upstream, upgrade, activity),
            }
        }
        let body = body.map_err(Into::into).boxed_unsync();
        let outcome = client.request(head(headers).map(|()| body)).await;
        finish(outcome, &forward.upstream, upgrade, activity)
    }

    /// `X-Forwarded-For/-Proto/-Host`: a trusted peer's are kept (its address appended to
    /// `X-Forwarded-For`); anyone else's, and `Forwarded`, are replaced by what this gateway
    /// saw.
    fn set_forwarded(&self, headers: &mut HeaderMap, peer: Option<SocketAddr>) {
        let trusted = peer.is_some_and(|peer| self.trusted.contains(&peer.ip()));
        let host = headers.get(header::HOST).cloned();
        let prior_for = trusted
            .then(|| {
                let values: Vec<&str> = headers
                    .get_all(&X_FORWARDED_FOR)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                (!values.is_empty()).then(|| values.join(", "))
            })
            .flatten();
        if !trusted {
            for name in [&X_FORWARDED_PROTO, &X_FORWARDED_HOST, &header::FORWARDED] {
                headers.remove(name);
            }
        }
        headers.remove(&X_FORWARDED_FOR);
        if let Some(peer) = peer {
            let chain = match prior_for {
                Some(prior) => format!("{prior}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            if let Ok(value) = HeaderValue::try_from(chain) {
                headers.insert(&X_FORWARDED_FOR, value);
            }
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            // The gateway listens on plain HTTP.
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if let (false, Some(host)) = (headers.contains_key(&X_FORWARDED_HOST), host) {
            headers.insert(&X_FORWARDED_HOST, host);
        }
    }
}

/// The upstream's answer, or the error a client gets.
fn finish(
    outcome: Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    upstream: &Uri,
    upgrade: Option<OnUpgrade>,
    activity: Option<UpgradeActivity>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    match outcome {
        Ok(response) => Ok(respond(response, upgrade, activity)),
        Err(err) => {
            // hyper's own message ("client error (Connect)") does not say what went wrong.
            let message = error_chain(&err);
            tracing::warn!(%upstream, error = %message, "upstream request failed");
            Err(UpstreamError {
                refused: is_refused(&err),
                message,
            })
        }
    }
}

/// The upstream's response, streamed; a `101 Switching Protocols` to an upgrade request joins
/// the two upgraded connections.
fn respond(
    mut response: Response<hyper::body::Incoming>,
    client: Option<OnUpgrade>,
    activity: Option<UpgradeActivity>,
) -> Response<ProxyBody> {
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client)) = (response.status(), client) {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let _active = activity;
            match tokio::join!(client, upstream) {
                (Ok(client), Ok(upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                (client, upstream) => tracing::warn!(
                    client_ok = client.is_ok(),
                    upstream_ok = upstream.is_ok(),
                    "upgrade failed"
                ),
            }
        });
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        remove_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        return Response::from_parts(parts, empty());
    }
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
}

/// The options of the `Connection` headers (`keep-alive`, `upgrade`, header names), trimmed.
fn connection_options(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` and `Upgrade: P`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_options(headers).any(|option| option.eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The headers that concern one connection, not the message (RFC 9110, 7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and those `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_options(headers)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(&HOP_BY_HOP) {
        headers.remove(name);
    }
}

/// Whether the connection was refused (nothing listens at the upstream address yet).
fn is_refused(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = cause.source();
    }
    false
}

/// A small text response.
pub fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A whole body.
pub fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

fn empty() -> ProxyBody {
    Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// `err` and each of its causes, `a: b: c`, skipping a cause whose text is already there.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
        next = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(trusted: &[&str]) -> Proxy {
        let tls = crate::platform::tls_config(crate::cli::Roots::Webpki, None).unwrap();
        Proxy::new(tls, trusted.iter().map(|ip| ip.parse().unwrap()).collect())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
            .collect()
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn a_clients_forwarded_headers_are_replaced() {
        let mut h = headers(&[
            ("host", "gw.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "bank.example"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        proxy(&[]).set_forwarded(&mut h, peer("10.0.0.7"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "gw.example");
        assert!(!h.contains_key("forwarded"));
    }

    #[test]
    fn a_trusted_proxys_forwarded_headers_are_kept_and_extended() {
        let mut h = headers(&[
            ("host", "gw.internal"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example"),
        ]);
        proxy(&["10.0.0.1"]).set_forwarded(&mut h, peer("10.0.0.1"));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "api.example");
    }

    #[test]
    fn only_connection_upgrade_with_an_upgrade_header_is_an_upgrade() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(upgrade_protocol(&ws).unwrap(), "websocket");
        assert!(upgrade_protocol(&headers(&[("upgrade", "websocket")])).is_none());
        assert!(upgrade_protocol(&headers(&[("connection", "upgrade")])).is_none());
    }
}
