//! The control plane of these tests, the private network it runs in, and what the tests build
//! on it: functions (a Deployment, its Service and the process that answers for its pods),
//! example gateways, requests.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, ExitCode};

use crate::cluster::*;
use crate::support::netns;

/// The pod addresses kwok hands out (`start-control-plane`), all on `lo` in here.
pub(crate) const POD_CIDR: &str = "10.244.0.0/16";
/// Runs this binary again inside a network namespace of its own with the pod CIDR on `lo`
/// (see [`netns::in_private_network`]); `None` in that copy.
pub(crate) fn in_private_network() -> Option<ExitCode> {
    // curl and openssl for scripts/kube-test-env.sh, which runs inside.
    netns::in_private_network(&["10.244.0.1/16"], &["curl", "openssl"])
}

pub(crate) use crate::support::netns::assert_private_network;

/// The control plane (`scripts/kube-test-env.sh start-control-plane`): etcd, kube-apiserver,
/// kube-controller-manager and kwok, inside the private network; stopped when dropped.
pub(crate) struct ControlPlane {
    pub(crate) dir: PathBuf,
}

impl ControlPlane {
    pub(crate) fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("tsfz-control-plane-{}", std::process::id()));
        eprintln!("starting a control plane in {}", dir.display());
        let plane = Self { dir };
        plane.run("start-control-plane");
        plane
    }

    fn run(&self, command: &str) {
        let status = Command::new("bash")
            .arg(script())
            .arg(command)
            .arg(&self.dir)
            .status()
            .expect("bash runs the test server script");
        assert!(
            status.success(),
            "`kube-test-env.sh {command}` failed: {status}"
        );
    }

    pub(crate) fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{who}"))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.run("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Functions

/// How a function's pods behave on the simulated node.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pods {
    /// Ready this long after they are created (a container's start-up).
    pub(crate) ready_after: Option<&'static str>,
    /// Gone this long after they are deleted (a container's shutdown).
    pub(crate) delete_after: Option<&'static str>,
    /// Running but never ready.
    pub(crate) never_ready: bool,
    /// The Deployment's `progressDeadlineSeconds`.
    pub(crate) progress_deadline: Option<i32>,
    /// Opted in to scale to zero after this idle period.
    pub(crate) idle: Option<&'static str>,
}

/// A labelled Deployment at `replicas` whose pods run on the simulated node, and its Service
/// (port `port`, the pods' port too).
pub(crate) async fn function(
    client: &Client,
    ns: &str,
    name: &str,
    replicas: i32,
    port: u16,
    pods: Pods,
) {
    let mut annotations = BTreeMap::new();
    if let Some(after) = pods.ready_after {
        annotations.insert("tower-scale-from-zero.test/ready-after", after);
    }
    if let Some(after) = pods.delete_after {
        annotations.insert("tower-scale-from-zero.test/delete-after", after);
    }
    let mut pod_labels = BTreeMap::from([("app", name)]);
    if pods.never_ready {
        pod_labels.insert("tower-scale-from-zero.test/never-ready", "true");
    }
    let mut deployment_annotations = BTreeMap::new();
    if let Some(idle) = pods.idle {
        deployment_annotations.insert("tower-scale-from-zero/scale-to-zero", "true");
        deployment_annotations.insert("tower-scale-from-zero/idle-period", idle);
    }
    let mut spec = json!({
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": pod_labels, "annotations": annotations},
            "spec": {
                // No scheduler: the pods go straight to the simulated node.
                "nodeName": "kwok-node-0",
                "containers": [{
                    "name": "fn",
                    "image": "example.invalid/fn:1",
                    "ports": [{"containerPort": port}]
                }]
            }
        }
    });
    if let Some(seconds) = pods.progress_deadline {
        spec["progressDeadlineSeconds"] = json!(seconds);
    }
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": {"app": name, LABEL: "true"},
            "annotations": deployment_annotations
        },
        "spec": spec
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name, LABEL: "true"}},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": port, "targetPort": port}]
        }
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create service");
}

/// A function's pod as the API server has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodView {
    pub(crate) name: String,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) ready: bool,
    pub(crate) deleting: bool,
}

pub(crate) async fn pods(client: &Client, ns: &str, name: &str) -> Vec<PodView> {
    let api = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns);
    let list = api
        .list(&kube::api::ListParams::default().labels(&format!("app={name}")))
        .await
        .unwrap();
    list.items
        .into_iter()
        .map(|pod| {
            let status = pod.status.unwrap_or_default();
            PodView {
                name: pod.metadata.name.unwrap_or_default(),
                ip: status.pod_ip.and_then(|ip| ip.parse().ok()),
                ready: status
                    .conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True"),
                deleting: pod.metadata.deletion_timestamp.is_some(),
            }
        })
        .collect()
}

/// Waits (up to `patience`) until `condition` holds for the function's pods; returns them.
pub(crate) async fn pods_until(
    client: &Client,
    ns: &str,
    name: &str,
    patience: Duration,
    what: &str,
    condition: impl Fn(&[PodView]) -> bool,
) -> Vec<PodView> {
    let until = Instant::now() + patience;
    loop {
        let pods = pods(client, ns, name).await;
        if condition(&pods) {
            return pods;
        }
        assert!(
            Instant::now() < until,
            "{what}: not within {patience:?}: {pods:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a function process saw of one request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Arrival {
    pub(crate) at: Instant,
    /// The address it was sent to: a pod's.
    pub(crate) to: SocketAddr,
}

/// The process that answers for every pod of a function: it listens on `0.0.0.0`, so each of
/// the pods' addresses (on `lo`) reaches it, and says which one a request was sent to.
pub(crate) struct FunctionProcess {
    pub(crate) port: u16,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FunctionProcess {
    pub(crate) async fn start(name: &str) -> Self {
        assert_private_network();
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let name = name.to_string();
        let seen = Arc::clone(&arrivals);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let to = stream.local_addr().unwrap();
                let (name, seen) = (name.clone(), Arc::clone(&seen));
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(Arrival {
                            at: Instant::now(),
                            to,
                        });
                        let body = format!(
                            "Hello from {name} at {} path={}\n",
                            to.ip(),
                            req.uri().path()
                        );
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            arrivals,
            task,
        }
    }

    pub(crate) fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Gateways and requests

/// The axum example gateway as a process (`--kubernetes --namespace NS` and `args`), reading
/// the control plane through `kubeconfig`; returned once `/readyz` says it is in sync.
pub(crate) async fn gateway(kubeconfig: &Path, ns: &str, args: &[&str]) -> runner::ExampleGateway {
    start_gateway(kubeconfig, ns, args, false).await
}

/// As [`gateway`], keeping what it logs (at `info`) for [`runner::ExampleGateway::stop`].
pub(crate) async fn gateway_logging(
    kubeconfig: &Path,
    ns: &str,
    args: &[&str],
) -> runner::ExampleGateway {
    start_gateway(kubeconfig, ns, args, true).await
}

async fn start_gateway(
    kubeconfig: &Path,
    ns: &str,
    args: &[&str],
    logging: bool,
) -> runner::ExampleGateway {
    assert_private_network();
    let mut all = vec!["--kubernetes", "--namespace", ns];
    all.extend_from_slice(args);
    let env = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("RUST_LOG", "info"),
    ];
    let gateway = if logging {
        runner::ExampleGateway::start_capturing_logs("axum_gateway", &all, &env).await
    } else {
        runner::ExampleGateway::start_with_env("axum_gateway", &all, &env[..1]).await
    };
    let until = Instant::now() + Duration::from_secs(30);
    while get(&gateway.url("/readyz")).await.status != StatusCode::OK {
        assert!(Instant::now() < until, "/readyz never said ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway
}

/// A response as a client saw it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
    /// From sending the request to its first byte (the head).
    pub(crate) first_byte: Duration,
}

pub(crate) async fn get(url: &str) -> Answer {
    static CLIENT: OnceLock<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
    > = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
    });
    let sent = Instant::now();
    let response = client
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let first_byte = sent.elapsed();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        first_byte,
    }
}

pub(crate) fn spawn_get(url: String) -> tokio::task::JoinHandle<Answer> {
    tokio::spawn(async move { get(&url).await })
}
