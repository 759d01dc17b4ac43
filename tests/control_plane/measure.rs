//! Measurements on the control plane (`-- --measure`, run by `benches/control_plane.sh` in a
//! release build): what BENCHMARKS.md quotes for Kubernetes.
//!
//! 1. Cold starts through the controllers, request to first byte, with pushed readiness and
//!    with polling only (two gateways in this process, rounds alternating), and the share
//!    that is ours: from the watch event that says the pod is ready (the provider's push) to
//!    the request's arrival at the pod's address.
//! 2. 2 000 labelled functions: the example gateway's (a process) time to its first sync and
//!    its CPU time for it, its RSS, the API requests it makes per second idle and under warm
//!    load (from the API server's audit log), the warm path beside a gateway that knows one
//!    function, and the cost of one re-list (a provider listing them all again).

use std::process::ExitCode;

use crate::cluster::*;
use crate::plane::*;

/// Rounds of each cold-start kind.
const COLD_ROUNDS: usize = 11;
/// Functions of the large namespace.
const MANY: usize = 2_000;

pub(crate) fn run(plane: &ControlPlane) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        cold_starts(plane).await;
        many_functions(plane).await;
    });
    ExitCode::SUCCESS
}

/// A gateway of gateway-kit in this process (the example's layer and forwarding), so the
/// provider's push is seen where it happens.
struct InProcess {
    gateway: Arc<gateway_kit::Gateway>,
}

impl InProcess {
    async fn start(ns: &str, args: &[&str]) -> Self {
        use clap::Parser as _;
        let mut all = vec!["gateway", "--kubernetes", "--namespace", ns];
        all.extend_from_slice(args);
        let options = gateway_kit::cli::Options::parse_from(all);
        let gateway = Arc::new(gateway_kit::Gateway::from_options(&options).await.unwrap());
        let until = Instant::now() + Duration::from_secs(60);
        while !gateway.is_ready() {
            assert!(Instant::now() < until, "never in sync");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self { gateway }
    }

    /// One request through the layer and the forward; the time to its response's head.
    async fn get(&self, path: &str) -> (StatusCode, Duration) {
        let gateway = Arc::clone(&self.gateway);
        let service = tower::ServiceBuilder::new()
            .layer(self.gateway.layer())
            .service(tower::service_fn(move |req: Request<Full<Bytes>>| {
                let gateway = Arc::clone(&gateway);
                async move { Ok::<_, Infallible>(gateway.forward(req, None).await) }
            }));
        let req = Request::get(path).body(Full::new(Bytes::new())).unwrap();
        let sent = Instant::now();
        let response = service.oneshot(req).await.unwrap();
        let head = sent.elapsed();
        let status = response.status();
        let _ = response.into_body().collect().await;
        (status, head)
    }
}

async fn cold_starts(plane: &ControlPlane) {
    // The in-process gateways find the control plane as a user's would.
    std::env::set_var("KUBECONFIG", plane.kubeconfig("admin"));
    let admin = admin().await;
    let ns = namespace(&admin, "measure-cold").await;
    let process = FunctionProcess::start("f").await;
    for round in 0..COLD_ROUNDS {
        for kind in ["push", "poll"] {
            let name = format!("{kind}-{round}");
            function(&admin, &ns, &name, 0, process.port, Pods::default()).await;
        }
    }
    let push = InProcess::start(&ns, &[]).await;
    let poll = InProcess::start(&ns, &["--poll-only"]).await;
    let (mut pushed, mut polled, mut ours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..COLD_ROUNDS {
        let name = format!("push-{round}");
        let (status, head) = push.get(&format!("/function/{name}")).await;
        assert_eq!(status, StatusCode::OK);
        pushed.push(head);
        let arrived = process.arrivals().last().unwrap().at;
        let event = *PUSHES
            .get()
            .unwrap()
            .lock()
            .unwrap()
            .get(&name)
            .expect("a push for the function");
        ours.push(arrived.saturating_duration_since(event));

        let (status, head) = poll.get(&format!("/function/poll-{round}")).await;
        assert_eq!(status, StatusCode::OK);
        polled.push(head);
    }
    let (pushed_median, polled_median, ours_median) = (
        median(pushed.clone()),
        median(polled.clone()),
        median(ours.clone()),
    );
    println!("\ncold start through the controllers (pods Ready as soon as kwok runs them), request to first byte, {COLD_ROUNDS} rounds alternating:");
    println!(
        "  pushed readiness: median {pushed_median:?} (min {:?}, max {:?})",
        pushed.iter().min().unwrap(),
        pushed.iter().max().unwrap()
    );
    println!(
        "  polling only:     median {polled_median:?} (min {:?}, max {:?})",
        polled.iter().min().unwrap(),
        polled.iter().max().unwrap()
    );
    println!(
        "  polling / pushed: {:.2}",
        polled_median.as_secs_f64() / pushed_median.as_secs_f64()
    );
    println!(
        "  ours, watch event -> request at the pod: median {ours_median:?} (max {:?}); {:.1} % of the pushed cold start",
        ours.iter().max().unwrap(),
        100.0 * ours_median.as_secs_f64() / pushed_median.as_secs_f64()
    );
}

async fn many_functions(plane: &ControlPlane) {
    let admin = admin().await;
    let ns = namespace(&admin, "measure-many").await;
    let few = namespace(&admin, "measure-few").await;
    let process = FunctionProcess::start("f").await;
    let created = Instant::now();
    futures::stream::iter(0..MANY)
        .for_each_concurrent(16, |i| {
            let (admin, ns) = (admin.clone(), ns.clone());
            async move {
                function(
                    &admin,
                    &ns,
                    &format!("fn-{i}"),
                    0,
                    process.port,
                    Pods::default(),
                )
                .await;
            }
        })
        .await;
    function(&admin, &ns, "warm", 1, process.port, Pods::default()).await;
    function(&admin, &few, "warm", 1, process.port, Pods::default()).await;
    // Settled: every Deployment has its ReplicaSet, every Service its slice, and both warm
    // functions a ready pod.
    let slices = Api::<EndpointSlice>::namespaced(admin.clone(), &ns);
    let sets = Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(admin.clone(), &ns);
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        let listed = kube::api::ListParams::default();
        let n = slices.list_metadata(&listed).await.unwrap().items.len();
        let m = sets.list_metadata(&listed).await.unwrap().items.len();
        let mut warm = 0;
        for namespace in [&ns, &few] {
            let d = Api::<Deployment>::namespaced(admin.clone(), namespace)
                .get("warm")
                .await
                .unwrap();
            warm += d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        }
        if n > MANY && m > MANY && warm == 2 {
            break;
        }
        assert!(
            Instant::now() < until,
            "after 10 min: {n} slices, {m} ReplicaSets, {warm} warm"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "\n{} labelled functions (Deployment at 0, Service, EndpointSlice), and one warm: created in {:?}",
        MANY,
        created.elapsed()
    );

    // The example gateway, a process, as the `gateway` user (its requests in the audit log).
    let started = Instant::now();
    let gateway = gateway(&plane.kubeconfig("gateway"), &ns, &[]).await;
    let first_sync = started.elapsed();
    let cpu_at_sync = cpu_time(gateway.pid());
    let rss_at_sync = rss_kib(gateway.pid());
    println!("  the example gateway: /readyz 200 (first sync) {first_sync:?} after it started, {cpu_at_sync:?} of CPU; RSS {} MiB", rss_at_sync / 1024);

    let audit = plane.dir.join("audit.log");
    let idle = Duration::from_secs(30);
    let before = gateway_requests(&audit);
    tokio::time::sleep(idle).await;
    let idle_requests = gateway_requests(&audit) - before;
    println!(
        "  API requests by the gateway while idle: {idle_requests} in {idle:?} ({:.2}/s)",
        idle_requests as f64 / idle.as_secs_f64()
    );

    let other = self::gateway(&plane.kubeconfig("admin"), &few, &[]).await;
    let path = "/function/warm";
    assert_eq!(get(&gateway.url(path)).await.status, StatusCode::OK);
    assert_eq!(get(&other.url(path)).await.status, StatusCode::OK);
    let round = Duration::from_secs(5);
    let (mut many_rates, mut few_rates, mut many_latency, mut few_latency) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let before = gateway_requests(&audit);
    let mut served = 0;
    let load_started = Instant::now();
    for _ in 0..3 {
        let (n, latency) = load(&gateway.url(path), round).await;
        served += n;
        many_rates.push(n as f64 / round.as_secs_f64());
        many_latency.push(latency);
        let (n, latency) = load(&other.url(path), round).await;
        few_rates.push(n as f64 / round.as_secs_f64());
        few_latency.push(latency);
    }
    let loaded = gateway_requests(&audit) - before;
    let rss_loaded = rss_kib(gateway.pid());
    let rate = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (many_rate, few_rate) = (rate(many_rates), rate(few_rates));
    println!(
        "  warm path, 16 connections, 3 rounds of {round:?} alternating: {MANY} functions known {many_rate:.0} req/s (median latency {:?}), one known {few_rate:.0} req/s ({:?}); ratio {:.3}",
        median(many_latency),
        median(few_latency),
        many_rate / few_rate
    );
    println!(
        "  API requests by the gateway under that load: {loaded} in {:?} for {served} requests served ({:.4} per request); RSS after it {} MiB",
        load_started.elapsed(),
        loaded as f64 / served.max(1) as f64,
        rss_loaded / 1024
    );
    drop(other);
    drop(gateway);

    // One re-list: a provider listing all of them again (what a watch does after a failure).
    let mut relists = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..5 {
        let cpu_before = cpu_time(std::process::id());
        let started = Instant::now();
        let provider = KubernetesProvider::builder(admin.clone())
            .namespace(ns.clone())
            .build();
        let until = Instant::now() + Duration::from_secs(60);
        while !provider.is_synced() {
            assert!(Instant::now() < until, "never synced");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relists.push(started.elapsed());
        cpu.push(cpu_time(std::process::id()) - cpu_before);
        drop(provider);
    }
    println!(
        "  one re-list of {MANY} functions (Deployments, Services, EndpointSlices) into a fresh store: median {:?} wall, {:?} CPU (5 runs)",
        median(relists),
        median(cpu)
    );
}

/// Requests of the `gateway` user the API server has answered so far (its audit log).
fn gateway_requests(audit: &Path) -> usize {
    let text = std::fs::read_to_string(audit).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("\"username\":\"gateway\""))
        .filter(|line| line.contains("\"stage\":\"ResponseComplete\""))
        .count()
}

/// Closed-loop load on `url` with 16 connections for `duration`: requests answered 200 and
/// their median latency.
async fn load(url: &str, duration: Duration) -> (usize, Duration) {
    let until = Instant::now() + duration;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let answer = get(&url).await;
                    assert_eq!(answer.status, StatusCode::OK);
                    latencies.push(answer.first_byte);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    (all.len(), median(all.clone()))
}

/// User and system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command (in parentheses): utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Resident set size of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
