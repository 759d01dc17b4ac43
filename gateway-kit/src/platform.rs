//! Where functions run, from the command line: local processes (the bundled `hello-world` and
//! the user's functions), an OpenFaaS provider, or Kubernetes; the scaler over it; and where
//! a ready function's requests go.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
#[cfg(feature = "kubernetes")]
use tower_scale_from_zero::providers::KubernetesProvider;
use tower_scale_from_zero::providers::{OpenFaasProvider, ProcessProvider, TlsRoots};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig};

#[cfg(feature = "kubernetes")]
use crate::cli::ForwardTo;
use crate::cli::{Options, Roots};
use crate::functions::{self, FunctionDef};
use crate::hello;

/// Where a ready function's requests go.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Upstreams {
    /// Local processes: straight to the function's port.
    Local(ProcessProvider),
    /// An OpenFaaS provider: `{base}/function/{name}.{namespace}{rest}`.
    OpenFaas {
        /// The provider URL, without a trailing slash.
        base: String,
    },
    /// Kubernetes: straight to the function's ready endpoints (round robin), or to its Service
    /// (the provider's endpoint template).
    #[cfg(feature = "kubernetes")]
    Kubernetes {
        /// The provider, which knows the endpoints.
        provider: KubernetesProvider,
        /// Endpoints or Service.
        forward_to: ForwardTo,
        /// The round robin's next turn.
        turn: Arc<std::sync::atomic::AtomicUsize>,
    },
}

/// The platform and the scaler in front of it.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Scales functions up (and down).
    pub scaler: FunctionScaler,
    /// Where ready functions' requests go.
    pub upstreams: Upstreams,
}

/// The address a request goes to, without the function's own path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base<'a> {
    /// A replica's own address (a local process, a pod): the rest of the path follows (`/`
    /// when there is none).
    Address(std::net::SocketAddr),
    /// The function itself at a URL: the rest of the path follows (`/` when there is none).
    Direct(String),
    /// A gateway that routes by `/function/{name}.{namespace}`.
    Routed(&'a str),
}

impl Platform {
    /// The platform `options` describe. Errors are for the user: bad files, commands that do
    /// not exist, unusable URLs or credentials.
    pub async fn from_options(options: &Options) -> Result<Self, String> {
        let namespace = options.namespace();
        FunctionId::new("probe", namespace)
            .map_err(|e| format!("--namespace {namespace:?}: {e}"))?;
        let local_only = options.functions_file.is_some() || !options.functions.is_empty();
        if options.kubernetes {
            if local_only {
                return Err("--function and --functions-file are for local functions, not with --kubernetes".into());
            }
            return Self::kubernetes(options).await;
        }
        if let Some(url) = &options.provider_url {
            if local_only {
                return Err("--function and --functions-file are for local functions, not with --provider-url".into());
            }
            return Self::openfaas(options, url);
        }
        let functions = functions::collect(options.functions_file.as_ref(), &options.functions)?;
        for function in &functions {
            function.check_command()?;
        }
        Ok(Self::local(options, &functions))
    }

    /// Local processes: the bundled `hello-world` and `functions`.
    pub fn local(options: &Options, functions: &[FunctionDef]) -> Self {
        let provider = ProcessProvider::new();
        let namespace = options.namespace();
        let id = |name: &str| FunctionId::new(name, namespace).expect("names were checked");
        let idle = options.scale_to_zero_after;
        if !functions.iter().any(|f| f.name() == hello::NAME) {
            provider.add_function(&id(hello::NAME), hello::spec(options.hello_startup, idle));
        }
        for function in functions {
            provider.add_function(&id(function.name()), function.spec(idle));
        }
        let own_idle = functions.iter().filter_map(FunctionDef::idle).min();
        let scaler = FunctionScaler::new(provider.clone(), config(options, own_idle));
        provider.push_readiness_to(scaler.readiness_notifier());
        Self {
            scaler,
            upstreams: Upstreams::Local(provider),
        }
    }

    /// An OpenFaaS provider, with credentials and TLS roots from the options.
    pub fn openfaas(options: &Options, url: &str) -> Result<Self, String> {
        let mut provider = OpenFaasProvider::new(url)
            .map_err(|e| e.to_string())?
            .tls_roots(match options.tls_roots {
                Roots::System => TlsRoots::System,
                Roots::Webpki => TlsRoots::WebPki,
            });
        if let Some(path) = &options.provider_ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--provider-ca-file {}: {e}", path.display()))?;
            provider = provider
                .add_root_certificates(&pem)
                .map_err(|e| format!("--provider-ca-file {}: {e}", path.display()))?;
        }
        if let (Some(user), Some(password)) = (&options.provider_user, &options.provider_password) {
            provider = provider.basic_auth(user, password);
        }
        if let Some(token) = &options.provider_token {
            provider = provider.bearer_token(token).map_err(|e| e.to_string())?;
        }
        let scaler = FunctionScaler::new(provider, config(options, None));
        let base = url.trim_end_matches('/').to_owned();
        Ok(Self {
            scaler,
            upstreams: Upstreams::OpenFaas { base },
        })
    }

    /// Kubernetes: labelled Deployments, forwarded to directly through their Services.
    #[cfg(feature = "kubernetes")]
    pub async fn kubernetes(options: &Options) -> Result<Self, String> {
        let no_client = |e: &dyn std::fmt::Display| {
            format!("no Kubernetes client (in-cluster config or KUBECONFIG): {e}")
        };
        let kube_config = kube::Config::infer().await.map_err(|e| no_client(&e))?;
        // With the timeouts a watch needs to notice a connection that stopped answering.
        let client = KubernetesProvider::client(kube_config).map_err(|e| no_client(&e))?;
        let mut builder = KubernetesProvider::builder(client);
        if !options.all_namespaces {
            builder = builder.namespace(options.namespace().to_owned());
        }
        if let Some(selector) = &options.label_selector {
            builder = builder
                .label_selector(selector.clone())
                .map_err(|e| e.to_string())?;
        }
        if let Some(template) = &options.endpoint_template {
            builder = builder
                .endpoint_template(template.clone())
                .map_err(|e| e.to_string())?;
        }
        let provider = builder.build();
        // Several gateways share activity through the provider's Leases: none scales down a
        // function another is serving.
        let scaler = FunctionScaler::builder(provider.clone())
            .config(config(options, None))
            .activity_store(provider.clone())
            .build();
        if !options.poll_only {
            provider.push_readiness_to(scaler.readiness_notifier());
        }
        Ok(Self {
            scaler,
            upstreams: Upstreams::Kubernetes {
                provider,
                forward_to: options.forward_to,
                turn: Arc::default(),
            },
        })
    }

    /// Without the `kubernetes` feature: a clear error.
    #[cfg(not(feature = "kubernetes"))]
    pub async fn kubernetes(_: &Options) -> Result<Self, String> {
        Err(
            "--kubernetes needs the `kubernetes` feature: cargo run --features \
             process,openfaas,kubernetes --example axum_gateway -- --kubernetes"
                .into(),
        )
    }

    /// Where `id`'s requests go now, or the status and message to answer with.
    pub async fn base(&self, id: &FunctionId) -> Result<Base<'_>, (StatusCode, String)> {
        match &self.upstreams {
            Upstreams::Local(provider) => match provider.upstream(id) {
                Some(addr) => Ok(Base::Address(addr)),
                None => Err((
                    StatusCode::BAD_GATEWAY,
                    format!("function {id} is not running\n"),
                )),
            },
            Upstreams::OpenFaas { base } => Ok(Base::Routed(base)),
            #[cfg(feature = "kubernetes")]
            Upstreams::Kubernetes {
                provider,
                forward_to,
                turn,
            } => {
                if *forward_to == ForwardTo::Endpoints {
                    let ready = provider.ready_addresses(id, None);
                    if !ready.is_empty() {
                        let turn = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(Base::Address(ready[turn % ready.len()]));
                    }
                }
                Self::service(provider, id).await
            }
        }
    }

    /// Whether the gateway is ready to serve: on Kubernetes, once the provider's watches have
    /// listed their objects (so that warm functions are served from memory); at once
    /// elsewhere.
    pub fn is_ready(&self) -> bool {
        match &self.upstreams {
            #[cfg(feature = "kubernetes")]
            Upstreams::Kubernetes { provider, .. } => provider.is_synced(),
            _ => true,
        }
    }

    /// Kubernetes: the function's Service.
    #[cfg(feature = "kubernetes")]
    async fn service(
        provider: &KubernetesProvider,
        id: &FunctionId,
    ) -> Result<Base<'static>, (StatusCode, String)> {
        match provider.endpoint(id).await {
            Ok(base) => Ok(Base::Direct(
                base.to_string().trim_end_matches('/').to_owned(),
            )),
            Err(err) => {
                tracing::warn!(function = %id, error = %err, "no endpoint");
                let status = if err.is_not_found() {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_GATEWAY
                };
                Err((status, format!("no endpoint for function {id}\n")))
            }
        }
    }
}

/// The scaler's configuration: the readiness deadline, and scale to zero when asked for
/// (`--scale-to-zero-after`, or a local function with an idle period of its own).
fn config(options: &Options, own_idle: Option<Duration>) -> ScalingConfig {
    let config = ScalingConfig::builder().readiness_deadline(options.deadline);
    let shortest = options
        .scale_to_zero_after
        .into_iter()
        .chain(own_idle)
        .min();
    match shortest {
        None => config,
        Some(idle) => config
            .scale_to_zero(true)
            .idle_period(options.scale_to_zero_after.unwrap_or(idle))
            // Down within a tenth of the shortest idle period after it (at most 10 s).
            .idle_check_interval(
                (idle / 10).clamp(Duration::from_millis(100), Duration::from_secs(10)),
            ),
    }
    .build()
}

/// A rustls client configuration (ring) with the chosen roots and, optionally, the CAs of a
/// PEM file.
pub fn tls_config(
    roots: Roots,
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        Roots::Webpki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    if let Some(path) = ca_file {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
            store
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(store)
    .with_no_client_auth())
}
