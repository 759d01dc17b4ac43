//! What the example gateways share (and their end-to-end tests build on): command-line
//! options, the platform (the embedded local-process provider with its bundled `hello-world`
//! function, or an OpenFaaS provider), the bundled function itself, and a streaming reverse
//! proxy.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower_scale_from_zero::extract::{ExtractFunction, OpenFaasPath};
#[cfg(feature = "kubernetes")]
use tower_scale_from_zero::providers::KubernetesProvider;
use tower_scale_from_zero::providers::{OpenFaasProvider, ProcessProvider, ProcessSpec};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, QueryError, ScaleFromZeroLayer, ScalingConfig, ServiceQuery,
    ServiceQueryResponse,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub const USAGE: &str = "\
usage: [--listen ADDR] [--provider-url URL | --kubernetes [--all-namespaces]
       [--label-selector SELECTOR] [--endpoint-template URL]] [--namespace NS]
       [--deadline DURATION] [--function-startup DURATION] [--scale-to-zero-after DURATION]
       [--drain-budget DURATION] [--upstream ADDR] [--without-scale-from-zero]

  --listen ADDR              address to serve on (default 127.0.0.1:8080)
  --provider-url URL         an OpenFaaS provider (faas-netes, faasd) instead of the embedded
                             local-process provider; credentials from OPENFAAS_USERNAME and
                             OPENFAAS_PASSWORD
  --kubernetes               functions are labelled Deployments in a Kubernetes cluster
                             (in-cluster config, or KUBECONFIG outside one); needs the
                             `kubernetes` feature: cargo run --features kubernetes ...
  --all-namespaces           with --kubernetes: watch every namespace (default: only NS)
  --label-selector SELECTOR  with --kubernetes: what makes a Deployment a function
                             (default tower-scale-from-zero/function=true)
  --endpoint-template URL    with --kubernetes: where requests go (default
                             http://{name}.{namespace}.svc.cluster.local:{port})
  --namespace NS             default namespace (default: openfaas-fn with a provider URL,
                             default with --kubernetes, local otherwise)
  --deadline DURATION        readiness deadline, e.g. 30s or 500ms (default 60s)
  --function-startup DURATION
                             start-up delay of the bundled hello-world function (default 0)
  --scale-to-zero-after DURATION
                             scale idle functions to zero: the bundled function after this
                             long without a request in flight (platform functions that opt in
                             without a period of their own too); default off
  --drain-budget DURATION    on SIGTERM or Ctrl-C, how long requests waiting for a cold start
                             may still wait before they are answered 503 (default 30s)
  --upstream ADDR            for benchmarks: every function is already running at ADDR
  --without-scale-from-zero  for benchmarks: the same gateway without the layer";

/// The gateway's options.
#[derive(Clone, Debug)]
pub struct Options {
    pub listen: SocketAddr,
    pub provider_url: Option<String>,
    pub namespace: String,
    pub deadline: Duration,
    pub function_startup: Duration,
    pub scale_to_zero_after: Option<Duration>,
    pub drain_budget: Duration,
    pub upstream: Option<SocketAddr>,
    pub without_layer: bool,
    pub kubernetes: Option<KubernetesOptions>,
}

/// `--kubernetes` and its options.
#[derive(Clone, Debug, Default)]
pub struct KubernetesOptions {
    pub all_namespaces: bool,
    pub label_selector: Option<String>,
    pub endpoint_template: Option<String>,
}

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut listen = "127.0.0.1:8080".to_string();
        let mut provider_url = None;
        let mut namespace = None;
        let mut deadline = Duration::from_secs(60);
        let mut scale_to_zero_after = None;
        let mut drain_budget = Duration::from_secs(30);
        let mut function_startup = Duration::ZERO;
        let mut upstream = None;
        let mut without_layer = false;
        let mut kubernetes = false;
        let mut all_namespaces = false;
        let mut label_selector = None;
        let mut endpoint_template = None;
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let (flag, inline) = match flag.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (flag, None),
            };
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.to_string());
            }
            match flag.as_str() {
                "--without-scale-from-zero" => {
                    without_layer = true;
                    continue;
                }
                "--kubernetes" => {
                    kubernetes = true;
                    continue;
                }
                "--all-namespaces" => {
                    all_namespaces = true;
                    continue;
                }
                _ => {}
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
            };
            match flag.as_str() {
                "--listen" => listen = value()?,
                "--provider-url" => provider_url = Some(value()?),
                "--namespace" => namespace = Some(value()?),
                "--label-selector" => label_selector = Some(value()?),
                "--endpoint-template" => endpoint_template = Some(value()?),
                "--deadline" => deadline = parse_duration(&flag, &value()?)?,
                "--scale-to-zero-after" => {
                    let after = parse_duration(&flag, &value()?)?;
                    if after.is_zero() {
                        return Err("--scale-to-zero-after must be greater than zero".into());
                    }
                    scale_to_zero_after = Some(after);
                }
                "--drain-budget" => drain_budget = parse_duration(&flag, &value()?)?,
                "--function-startup" => function_startup = parse_duration(&flag, &value()?)?,
                "--upstream" => {
                    let addr = value()?;
                    let parsed = addr.parse().map_err(|e| {
                        format!("--upstream {addr:?}: {e} (expected e.g. 127.0.0.1:9000)")
                    })?;
                    upstream = Some(parsed);
                }
                other => return Err(format!("unknown option {other:?}\n\n{USAGE}")),
            }
        }
        let listen = listen
            .parse()
            .map_err(|e| format!("--listen {listen:?}: {e} (expected e.g. 127.0.0.1:8080)"))?;
        if deadline.is_zero() {
            return Err("--deadline must be greater than zero".into());
        }
        let namespace = namespace.unwrap_or_else(|| {
            if provider_url.is_some() {
                "openfaas-fn"
            } else if kubernetes {
                "default"
            } else {
                "local"
            }
            .to_string()
        });
        FunctionId::new("probe", &namespace)
            .map_err(|e| format!("--namespace {namespace:?}: {e}"))?;
        if upstream.is_some() && provider_url.is_some() {
            return Err("--upstream and --provider-url exclude each other".into());
        }
        if kubernetes && (upstream.is_some() || provider_url.is_some()) {
            return Err("--kubernetes excludes --upstream and --provider-url".into());
        }
        if !kubernetes
            && (all_namespaces || label_selector.is_some() || endpoint_template.is_some())
        {
            return Err(
                "--all-namespaces, --label-selector and --endpoint-template need --kubernetes"
                    .into(),
            );
        }
        let kubernetes = kubernetes.then_some(KubernetesOptions {
            all_namespaces,
            label_selector,
            endpoint_template,
        });
        Ok(Self {
            listen,
            provider_url,
            namespace,
            deadline,
            function_startup,
            scale_to_zero_after,
            drain_budget,
            upstream,
            without_layer,
            kubernetes,
        })
    }
}

fn parse_duration(flag: &str, text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{flag} {text:?}: expected a duration such as 30s or 500ms"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!(
            "{flag} {text:?}: unknown unit {unit:?} (use ms, s or m)"
        )),
    }
}

/// Where invocations go once a function is ready.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Local processes: straight to the function's port.
    Local(ProcessProvider),
    /// An OpenFaaS provider: `{base}/function/{name}[.{namespace}][/rest]`.
    OpenFaas { base: String },
    /// Benchmarks: every function is already running at this address.
    Static(SocketAddr),
    /// Kubernetes: straight to the function's Service (the provider's endpoint template).
    #[cfg(feature = "kubernetes")]
    Kubernetes(KubernetesProvider),
}

/// Everything a gateway needs besides its HTTP stack.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub scaler: FunctionScaler,
    pub backend: Backend,
    pub extractor: OpenFaasPath,
    pub proxy: Proxy,
    pub deadline: Duration,
    pub drain_budget: Duration,
    pub with_layer: bool,
    /// What `/metrics` renders, once a Prometheus recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// The bundled function's command: this very binary, in function mode.
pub fn bundled_function(startup: Duration, scale_to_zero_after: Option<Duration>) -> ProcessSpec {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let spec = ProcessSpec::new(exe)
        .arg("--serve-function")
        .arg("hello-world")
        .arg("--startup-ms")
        .arg(startup.as_millis().to_string());
    match scale_to_zero_after {
        Some(after) => spec.scale_to_zero_after(after),
        None => spec,
    }
}

impl Gateway {
    /// The gateway the options describe: the local-process provider with `hello-world`, an
    /// OpenFaaS provider, or Kubernetes.
    pub async fn from_options(options: &Options) -> Result<Self, String> {
        if let Some(kubernetes) = &options.kubernetes {
            return Self::kubernetes(options, kubernetes).await;
        }
        let functions = [(
            "hello-world",
            bundled_function(options.function_startup, options.scale_to_zero_after),
        )];
        match (&options.provider_url, options.upstream) {
            (Some(url), _) => Self::openfaas(options, url),
            (None, Some(addr)) => {
                let scaler = FunctionScaler::new(AlwaysRunning, config(options));
                Ok(Self::new(options, scaler, Backend::Static(addr)))
            }
            (None, None) => Ok(Self::local(options, functions)),
        }
    }

    /// A gateway over local processes.
    pub fn local<'a>(
        options: &Options,
        functions: impl IntoIterator<Item = (&'a str, ProcessSpec)>,
    ) -> Self {
        let provider = ProcessProvider::new();
        for (name, spec) in functions {
            let id = FunctionId::new(name, &options.namespace).expect("valid bundled name");
            provider.add_function(&id, spec);
        }
        let scaler = FunctionScaler::new(provider.clone(), config(options));
        provider.push_readiness_to(scaler.readiness_notifier());
        Self::new(options, scaler, Backend::Local(provider))
    }

    /// A gateway in front of an OpenFaaS provider.
    pub fn openfaas(options: &Options, url: &str) -> Result<Self, String> {
        let config = config(options);
        let mut provider = OpenFaasProvider::new(url).map_err(|e| e.to_string())?;
        match (
            std::env::var("OPENFAAS_USERNAME"),
            std::env::var("OPENFAAS_PASSWORD"),
        ) {
            (Ok(user), Ok(password)) => provider = provider.basic_auth(&user, &password),
            (Err(_), Err(_)) => {}
            _ => return Err("set both OPENFAAS_USERNAME and OPENFAAS_PASSWORD, or neither".into()),
        }
        let scaler = FunctionScaler::new(provider, config);
        let base = url.trim_end_matches('/').to_string();
        Ok(Self::new(options, scaler, Backend::OpenFaas { base }))
    }

    /// A gateway in front of a Kubernetes cluster: functions are labelled Deployments,
    /// forwarded to directly through their Services.
    #[cfg(feature = "kubernetes")]
    pub async fn kubernetes(options: &Options, k8s: &KubernetesOptions) -> Result<Self, String> {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| format!("no Kubernetes client (in-cluster config or KUBECONFIG): {e}"))?;
        let mut builder = KubernetesProvider::builder(client);
        if !k8s.all_namespaces {
            builder = builder.namespace(options.namespace.clone());
        }
        if let Some(selector) = &k8s.label_selector {
            builder = builder
                .label_selector(selector.clone())
                .map_err(|e| e.to_string())?;
        }
        if let Some(template) = &k8s.endpoint_template {
            builder = builder
                .endpoint_template(template.clone())
                .map_err(|e| e.to_string())?;
        }
        let provider = builder.build();
        let scaler = FunctionScaler::new(provider.clone(), config(options));
        provider.push_readiness_to(scaler.readiness_notifier());
        Ok(Self::new(options, scaler, Backend::Kubernetes(provider)))
    }

    #[cfg(not(feature = "kubernetes"))]
    pub async fn kubernetes(_: &Options, _: &KubernetesOptions) -> Result<Self, String> {
        Err(
            "this gateway was built without the `kubernetes` feature; run it with \
             `cargo run --features kubernetes --example ... -- --kubernetes`"
                .into(),
        )
    }

    fn new(options: &Options, scaler: FunctionScaler, backend: Backend) -> Self {
        Self {
            scaler,
            backend,
            extractor: OpenFaasPath::new().default_namespace(options.namespace.clone()),
            proxy: Proxy::new(),
            deadline: options.deadline,
            drain_budget: options.drain_budget,
            metrics: None,
            with_layer: !options.without_layer,
        }
    }

    /// The scale-from-zero layer for this gateway.
    pub fn layer(&self) -> ScaleFromZeroLayer<OpenFaasPath> {
        ScaleFromZeroLayer::new(self.scaler.clone()).extractor(self.extractor.clone())
    }

    /// Forwards a request for a (ready) function to it, streaming both bodies.
    pub async fn forward<B>(&self, req: Request<B>) -> Response<ProxyBody>
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
        let path = req.uri().path();
        let segment_end = path["/function/".len()..]
            .find('/')
            .map_or(path.len(), |i| i + "/function/".len());
        let rest = &path[segment_end..];
        // `.` and `..` (also percent-encoded) would let a client step out of the function's
        // path on the upstream, with its credentials: refused before anything is forwarded.
        if rest.split('/').any(is_dot_segment) {
            return text(
                StatusCode::BAD_REQUEST,
                "path segments . and .. are not allowed after the function name\n",
            );
        }
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        // A function reached directly sees the rest of the path ("/" when there is none).
        let direct = |addr: SocketAddr| {
            let path = if rest.is_empty() { "/" } else { rest };
            format!("http://{addr}{path}{query}")
        };
        let upstream = match &self.backend {
            Backend::Local(provider) => match provider.upstream(&id) {
                Some(addr) => direct(addr),
                None => {
                    return text(
                        StatusCode::BAD_GATEWAY,
                        &format!("function {id} is not running\n"),
                    )
                }
            },
            Backend::Static(addr) => direct(*addr),
            Backend::OpenFaas { base } => format!(
                "{base}/function/{}.{}{rest}{query}",
                id.name(),
                id.namespace()
            ),
            #[cfg(feature = "kubernetes")]
            Backend::Kubernetes(provider) => match provider.endpoint(&id).await {
                Ok(base) => {
                    let base = base.to_string();
                    let path = if rest.is_empty() { "/" } else { rest };
                    format!("{}{path}{query}", base.trim_end_matches('/'))
                }
                Err(err) => {
                    tracing::warn!(function = %id, error = %err, "no endpoint");
                    let status = if err.is_not_found() {
                        StatusCode::NOT_FOUND
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    return text(status, &format!("no endpoint for function {id}\n"));
                }
            },
        };
        match upstream.parse() {
            Ok(uri) => self.proxy.forward(uri, req).await,
            Err(_) => text(StatusCode::BAD_REQUEST, "cannot build the upstream URL\n"),
        }
    }
}

/// `.` or `..`, written plainly or percent-encoded (`%2e`, `%2E`).
fn is_dot_segment(segment: &str) -> bool {
    let decoded = segment.replace("%2e", ".").replace("%2E", ".");
    decoded == "." || decoded == ".."
}

/// Both examples' `main`: function mode when asked for it, else `serve` on a Tokio runtime.
pub fn main<F: std::future::Future>(serve: impl FnOnce(Vec<String>) -> F) {
    let args: Vec<String> = std::env::args().collect();
    if run_function_if_asked(&args) {
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("tokio runtime")
        .block_on(serve(args));
}

/// The start of both example gateways: logs, options, gateway, listener. Exits with a clear
/// message (status 2 for bad options, 1 when the address cannot be bound) on any error.
pub async fn start(
    name: &str,
    args: Vec<String>,
) -> (Options, Arc<Gateway>, tokio::net::TcpListener) {
    tracing_subscriber::fmt().with_target(false).init();
    let options = Options::parse(args.into_iter().skip(1)).unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2)
    });
    let mut gateway = Gateway::from_options(&options)
        .await
        .unwrap_or_else(|message| {
            eprintln!("error: {message}");
            std::process::exit(2)
        });
    gateway.metrics = Some(metrics());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .unwrap_or_else(|e| {
            eprintln!("error: cannot listen on {}: {e}", options.listen);
            std::process::exit(1)
        });
    let listen = options.listen;
    tracing::info!(
        "{name} on http://{listen}  (try: curl -i http://{listen}/function/hello-world)"
    );
    (options, Arc::new(gateway), listener)
}

/// Resolves on Ctrl-C or SIGTERM, having started the drain: no new cold starts, requests
/// waiting for one get up to the drain budget, then 503. The server's graceful shutdown
/// (stop accepting, finish what is in flight) runs alongside; dropping the provider at the end
/// stops the function processes.
pub async fn shutdown_signal_and_drain(gateway: Arc<Gateway>) {
    shutdown_signal().await;
    let budget = gateway.drain_budget;
    tokio::spawn(async move {
        let drained = gateway.scaler.drain(budget).await;
        tracing::info!(
            took_ms = drained.took.as_millis() as u64,
            cut_short = drained.cut_short,
            "drained"
        );
    });
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// For benchmarks with `--upstream`: every function exists and is running.
#[derive(Clone, Copy, Debug)]
pub struct AlwaysRunning;

#[async_trait::async_trait]
impl ServiceQuery for AlwaysRunning {
    async fn get_replicas(&self, _: &FunctionId) -> Result<ServiceQueryResponse, QueryError> {
        Ok(ServiceQueryResponse::new(1, 1))
    }

    async fn set_replicas(&self, _: &FunctionId, _: u64) -> Result<(), QueryError> {
        Ok(())
    }
}

fn config(options: &Options) -> ScalingConfig {
    let config = ScalingConfig::default().readiness_deadline(options.deadline);
    match options.scale_to_zero_after {
        None => config,
        Some(after) => config
            .scale_to_zero(true)
            .idle_period(after)
            // Down within a tenth of the idle period after it (at most 10 s).
            .idle_check_interval(
                (after / 10).clamp(Duration::from_millis(100), Duration::from_secs(10)),
            ),
    }
}

/// Installs the Prometheus recorder (once per process) and returns what renders it.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(&seconds)
                .expect("bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed")
        })
        .clone()
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics_response(gateway: &Gateway) -> Response<ProxyBody> {
    match &gateway.metrics {
        Some(handle) => {
            let mut response = Response::new(full(handle.render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        None => text(StatusCode::NOT_FOUND, "metrics are not enabled\n"),
    }
}

/// A small text response.
pub fn text(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A streaming HTTP/1 reverse proxy over a pooled keep-alive client.
#[derive(Clone, Debug)]
pub struct Proxy {
    client: Client<HttpConnector, ProxyBody>,
}

impl Proxy {
    pub fn new() -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build_http();
        Self { client }
    }

    /// Sends `req` to `upstream`; neither body is collected.
    pub async fn forward<B>(&self, upstream: Uri, req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        parts.uri = upstream;
        parts.version = Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST); // the client sets it from the URI
        let req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
        match self.client.request(req).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(Into::into).boxed_unsync())
            }
            Err(err) => {
                tracing::warn!(error = %err, "upstream request failed");
                text(StatusCode::BAD_GATEWAY, &format!("upstream error: {err}\n"))
            }
        }
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

/// Removes the headers that concern one connection, not the message (RFC 9110, 7.6.1).
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Function mode: when started as `--serve-function NAME --startup-ms N` (with `PORT` set),
/// the binary is the bundled function instead of a gateway. Returns `false` otherwise.
pub fn run_function_if_asked(args: &[String]) -> bool {
    if args.get(1).map(String::as_str) != Some("--serve-function") {
        return false;
    }
    let name = args.get(2).cloned().unwrap_or_else(|| "hello-world".into());
    let startup = args
        .iter()
        .position(|a| a == "--startup-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    if args.iter().any(|a| a == "--exit-at-once") {
        // For tests: a function that crashes while starting.
        eprintln!("{name}: exiting at once");
        std::process::exit(3);
    }
    // Die with the gateway: it holds our stdin open for as long as it lives.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("{name}: PORT is not set");
            std::process::exit(2)
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve_function(name, port, startup));
    true
}

/// The bundled function: answers every request with a greeting and the number of body bytes
/// it read (streamed, never held whole).
async fn serve_function(name: String, port: u16, startup: Duration) {
    tokio::time::sleep(startup).await; // a slow runtime boot, when asked for
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| {
            eprintln!("{name}: cannot listen on {port}: {e}");
            std::process::exit(1)
        });
    let name: Arc<str> = name.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let name = Arc::clone(&name);
                async move {
                    let path = req.uri().path().to_string();
                    let mut body = req.into_body();
                    let mut received = 0usize;
                    while let Some(frame) = body.frame().await {
                        if let Ok(data) = frame?.into_data() {
                            received += data.len();
                        }
                    }
                    let greeting =
                        format!("Hello from {name}! path={path} received={received} bytes\n");
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(greeting))))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
