//! What a gateway's routes need besides its HTTP server: the platform, the layer, and a
//! `forward` for requests to `/function/...`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Body;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_scale_from_zero::extract::{ExtractFunction, OpenFaasPath};
use tower_scale_from_zero::middleware::{ColdStart, PacedRelease, WaitingPage};
use tower_scale_from_zero::{DefaultResponder, FunctionScaler, ScaleFromZeroLayer};

use crate::cli::Options;
use crate::platform::{self, Base, Platform, Upstreams};
use crate::proxy::{text, BoxError, Forward, Proxy, ProxyBody};

/// A gateway's state, shared by its routes.
#[derive(Clone, Debug)]
pub struct Gateway {
    platform: Platform,
    extractor: OpenFaasPath,
    layer: ScaleFromZeroLayer<OpenFaasPath>,
    proxy: Proxy,
    deadline: Duration,
    drain_budget: Duration,
    metrics: Option<PrometheusHandle>,
}

impl Gateway {
    /// The gateway `options` describe, with the process-wide Prometheus recorder.
    pub async fn from_options(options: &Options) -> Result<Self, String> {
        // A template that cannot be read stops the gateway before anything starts.
        let template = match &options.waiting_page_template {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--waiting-page-template {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let platform = Platform::from_options(options).await?;
        let tls = platform::tls_config(options.tls_roots, options.provider_ca_file.as_deref())?;
        let proxy = Proxy::new(tls, options.trusted_proxies.clone());
        let mut gateway = Self::new(platform, proxy, options);
        if let Some(template) = template {
            gateway.layer = gateway
                .layer
                .waiting_page(WaitingPage::new().template(template));
        }
        Ok(gateway.with_metrics(crate::metrics::install()))
    }

    /// A gateway over `platform` (benchmarks build their own).
    pub fn new(platform: Platform, proxy: Proxy, options: &Options) -> Self {
        let extractor = OpenFaasPath::new().default_namespace(options.namespace().to_owned());
        // Built once: the services of every connection share its release windows.
        let local = matches!(platform.upstreams, Upstreams::Local(_));
        let mut layer = ScaleFromZeroLayer::new(platform.scaler.clone())
            .extractor(extractor.clone())
            .mark_cold_starts(true)
            .responder(DefaultResponder::new().expose_provider_errors(local))
            .grpc_statuses(true);
        if options.waiting_page || options.waiting_page_template.is_some() {
            layer = layer.waiting_page(WaitingPage::new());
        }
        if options.paced_release {
            layer = layer.paced_release(PacedRelease::new());
        }
        Self {
            platform,
            extractor,
            layer,
            proxy,
            deadline: options.deadline,
            drain_budget: options.drain_budget,
            metrics: None,
        }
    }

    /// Serves `/metrics` from `handle`.
    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    /// The scale-from-zero layer: held requests are marked, so their first forward may retry
    /// a refused connection. With local processes, a 502 shows the provider's own text (the
    /// spawn error, the exit status): the functions are the user's own commands. In front of a
    /// platform that text stays in the logs. Refused gRPC calls get gRPC statuses; the waiting
    /// page and paced release as the options say.
    pub fn layer(&self) -> ScaleFromZeroLayer<OpenFaasPath> {
        self.layer.clone()
    }

    /// Whether the gateway can serve (see [`Platform::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.platform.is_ready()
    }

    /// `/readyz`: 200 once the gateway can serve (on Kubernetes, once its provider's watches
    /// have listed their objects), 503 before.
    pub fn readiness_response(&self) -> Response<ProxyBody> {
        if self.is_ready() {
            crate::proxy::text(StatusCode::OK, "ready\n")
        } else {
            crate::proxy::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the provider has not synced yet\n",
            )
        }
    }

    /// The scaler (for draining).
    pub fn scaler(&self) -> &FunctionScaler {
        &self.platform.scaler
    }

    /// The readiness deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// How long held requests may wait once shutdown starts.
    pub fn drain_budget(&self) -> Duration {
        self.drain_budget
    }

    /// Forwards a request for a (ready) function, from the client at `peer`. Paths with `.`
    /// or `..` segments after the function name are refused (400); an upstream that refuses
    /// the connection takes the function out of the scaler's cache, so the next request
    /// checks the platform again.
    pub async fn forward<B>(&self, req: Request<B>, peer: Option<SocketAddr>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(target) = self.extractor.extract(&req) else {
            return text(StatusCode::NOT_FOUND, "not a function path\n");
        };
        let Ok(id) = target.as_function_ref().to_function_id() else {
            return text(StatusCode::BAD_REQUEST, "invalid function name\n");
        };
        let rest = path_after_function(req.uri().path());
        // `.` and `..` (also percent-encoded) would let a client step out of the function's
        // path on the upstream, with its credentials: refused before anything is forwarded.
        if rest.split('/').any(is_dot_segment) {
            return text(
                StatusCode::BAD_REQUEST,
                "path segments . and .. are not allowed after the function name\n",
            );
        }
        let (mark, query) = req.uri().query().map_or(("", ""), |q| ("?", q));
        let direct_rest = if rest.is_empty() { "/" } else { rest };
        let upstream = match self.platform.base(&id).await {
            Ok(Base::Address(addr)) => format!("http://{addr}{direct_rest}{mark}{query}"),
            Ok(Base::Direct(base)) => format!("{base}{direct_rest}{mark}{query}"),
            Ok(Base::Routed(base)) => format!(
                "{base}/function/{}.{}{rest}{mark}{query}",
                id.name(),
                id.namespace()
            ),
            Err((status, message)) => return text(status, &message),
        };
        let Ok(upstream) = upstream.parse::<http::Uri>() else {
            return text(StatusCode::BAD_REQUEST, "cannot build the upstream URL\n");
        };
        if loopback_only() && !is_loopback(&upstream) {
            tracing::warn!(%upstream, "not forwarded: GATEWAY_KIT_LOOPBACK_ONLY is set");
            return text(
                StatusCode::BAD_GATEWAY,
                "not forwarded: the upstream is not on loopback (GATEWAY_KIT_LOOPBACK_ONLY)\n",
            );
        }
        let held = req.extensions().get::<ColdStart>().is_some();
        let forward = Forward::to(upstream).from(peer).retry_refused(held);
        match self.proxy.forward(req, forward).await {
            Ok(response) => response,
            Err(err) => {
                if err.is_refused() {
                    // Ready was not routable (or no longer is): look again next time.
                    self.platform.scaler.evict(id.as_function_ref());
                }
                err.into_response()
            }
        }
    }

    /// `GET /metrics`: the Prometheus text format.
    pub fn metrics_response(&self) -> Response<ProxyBody> {
        match &self.metrics {
            Some(handle) => {
                let mut response = Response::new(crate::proxy::full(handle.render()));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                response
            }
            None => text(StatusCode::NOT_FOUND, "metrics are not enabled\n"),
        }
    }
}

/// Whether `GATEWAY_KIT_LOOPBACK_ONLY` is set: the gateway then forwards only to loopback
/// addresses (tests that must send nothing beyond 127.0.0.0/8 set it).
fn loopback_only() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| std::env::var_os("GATEWAY_KIT_LOOPBACK_ONLY").is_some())
}

fn is_loopback(uri: &http::Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The path after `/function/NAME` (`/x/y`, or empty when there is none).
pub fn path_after_function(path: &str) -> &str {
    path.strip_prefix("/function/")
        .and_then(|after| after.find('/').map(|i| &after[i..]))
        .unwrap_or("")
}

/// `.` or `..`, written plainly or percent-encoded (`%2e`, `%2E`). Every segment of every
/// forwarded path passes here: read in place, nothing decoded into a new string.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
    }
    dots == 1 || dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_written_plainly_or_percent_encoded() {
        for dot in [".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2E."] {
            assert!(is_dot_segment(dot), "{dot}");
        }
        for plain in [
            "",
            "...",
            "a",
            ".a",
            "a.",
            "%2",
            "%2f",
            "%2e%2e%2e",
            "%252e",
            ".hidden",
        ] {
            assert!(!is_dot_segment(plain), "{plain}");
        }
    }

    #[test]
    fn the_path_after_the_function_name() {
        assert_eq!(path_after_function("/function/f"), "");
        assert_eq!(path_after_function("/function/f/"), "/");
        assert_eq!(path_after_function("/function/f.ns/a/b"), "/a/b");
        assert_eq!(path_after_function("/healthz"), "");
    }
}
