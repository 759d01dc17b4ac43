//! The shipped manifests and Role, the example gateway in `--kubernetes` mode, several
//! gateways sharing activity.

use crate::cluster::*;

pub(crate) async fn the_shipped_manifests_apply_and_their_role_suffices_and_grants_nothing_more() {
    let admin = admin().await;
    let prefix = format!("m{}", std::process::id());
    let (gateway_ns, functions_ns) = (format!("{prefix}-gw"), format!("{prefix}-fn"));
    let objects = manifests(&gateway_ns, &functions_ns);
    let kinds: Vec<String> = objects
        .iter()
        .map(|o| o.types.as_ref().unwrap().kind.clone())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "deploy/ has no {kind}: {kinds:?}"
        );
    }
    // Namespaces first, then everything else in its own namespace.
    let (namespaces, rest): (Vec<_>, Vec<_>) = objects
        .into_iter()
        .partition(|o| o.types.as_ref().unwrap().kind == "Namespace");
    apply(&admin, "", &namespaces).await;
    for object in &rest {
        let ns = object
            .metadata
            .namespace
            .clone()
            .expect("every object names its namespace");
        apply(&admin, &ns, std::slice::from_ref(object)).await;
    }

    // A token for the gateway's ServiceAccount, bound to exactly the shipped Role.
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), &gateway_ns);
    let request: TokenRequest = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request("gateway", &PostParams::default(), &request)
        .await
        .expect("a token for the gateway's ServiceAccount")
        .status
        .and_then(|status| status.token)
        .expect("a token");
    let admin_text = std::fs::read_to_string(env_dir().join("kubeconfig-admin")).unwrap();
    let admin_token = std::fs::read_to_string(env_dir().join("admin.token")).unwrap();
    let sa_kubeconfig = env_dir().join(format!("kubeconfig-{prefix}-gateway"));
    std::fs::write(
        &sa_kubeconfig,
        admin_text.replace(admin_token.trim(), &token),
    )
    .unwrap();
    let gateway = client_from(&sa_kubeconfig).await;

    // The shipped example function, at 0 replicas, cold-started with the gateway's rights.
    let writes = ScaleWrites::watch(&admin, &functions_ns, "hello").await;
    assert_eq!(writes.counts(), vec![0]);
    let gw = under(gateway, &functions_ns, ScalingConfig::default()).await;
    let held = spawn_request(&gw.scaler, &functions_ns, "hello");
    wait_for_replicas(&admin, &functions_ns, "hello", 1).await;
    mark_ready(&admin, &functions_ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    let id = FunctionId::new("hello", &functions_ns).unwrap();
    assert_eq!(
        gw.provider.endpoint(&id).await.unwrap().to_string(),
        format!("http://hello.{functions_ns}.svc.cluster.local:8080/")
    );
    assert_eq!(writes.counts(), vec![0, 1]);
    // Shared activity for scale to zero (a Lease), recorded and read with the gateway's
    // rights; and a scale-down, refused while the activity is recent.
    gw.provider.record(&id).await.unwrap();
    let idle_for = gw.provider.idle_for(&id).await.unwrap().expect("a Lease");
    assert!(idle_for < Duration::from_secs(5), "{idle_for:?}");
    assert!(!gw
        .provider
        .scale_to_zero(&id, Duration::from_secs(60))
        .await
        .unwrap());
    // Least privilege: the account may not change a Deployment's spec (only its scale), nor
    // delete it, nor read a Secret.
    let sa = client_from(&sa_kubeconfig).await;
    let deployments = Api::<Deployment>::namespaced(sa.clone(), &functions_ns);
    let spec = json!({"spec": {"template": {"spec": {"containers": [{"name": "fn", "image": "evil.example/x:1"}]}}}});
    let denied = deployments
        .patch("hello", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap_err();
    assert!(
        denied.to_string().contains("forbidden"),
        "patch spec: {denied}"
    );
    let denied = deployments
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("forbidden"), "delete: {denied}");
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "token"}, "stringData": {"t": "x"}}))
            .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &functions_ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let denied = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa, &functions_ns)
        .get("token")
        .await
        .unwrap_err();
    assert!(
        denied.to_string().contains("forbidden"),
        "get secret: {denied}"
    );
}

pub(crate) async fn the_axum_gateway_in_kubernetes_mode_holds_then_forwards_to_the_function() {
    let admin = admin().await;
    let ns = namespace(&admin, "e2e").await;
    let port = runner::free_port();
    deploy(&admin, &ns, "hello", 0, true, port).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    // The example as a user runs it (the binary `cargo test --all-features` builds), finding
    // the server through KUBECONFIG (the admin's, set in `main`).
    // Through the Service (the template points at the function process on 127.0.0.1): the
    // slices this test writes hold addresses outside 127.0.0.0/8, which nothing here may send
    // to, and the gateway refuses to (GATEWAY_KIT_LOOPBACK_ONLY).
    let args = [
        "--kubernetes",
        "--namespace",
        &ns,
        "--forward-to",
        "service",
        "--endpoint-template",
        "http://127.0.0.1:{port}",
    ];
    let gateway = runner::ExampleGateway::start_with_env(
        "axum_gateway",
        &args,
        &[("GATEWAY_KIT_LOOPBACK_ONLY", "1")],
    )
    .await;

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    // Ready (for a readiness probe) once its provider has listed the functions.
    let readyz = || {
        let client = client.clone();
        let url = gateway.url("/readyz");
        async move {
            let response = client
                .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            response.status()
        }
    };
    let until = Instant::now() + Duration::from_secs(10);
    while readyz().await != StatusCode::OK {
        assert!(Instant::now() < until, "/readyz never said ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = gateway.url("/function/hello/greet?x=1");
    let held = tokio::spawn({
        let client = client.clone();
        async move {
            let response = client
                .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    });
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    // "The kubelet" starts the function: a local process on the Service's port.
    let mut function = Command::new(std::env::current_exe().unwrap())
        .args(["--serve-function", "hello", "--startup-ms", "0"])
        .env("PORT", port.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let up = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < up, "the function process never listened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!held.is_finished(), "held until the slice says ready");
    mark_ready(&admin, &ns, "hello", port).await;
    let (status, body) = within(Duration::from_secs(5), "forwarded", held)
        .await
        .unwrap();
    let _ = function.kill();
    let _ = function.wait();
    drop(gateway);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello from hello! path=/greet"), "{body}");
    assert_eq!(writes.counts(), vec![0, 1]);
}

/// Two gateways (providers and scalers) on one namespace, sharing activity through Leases,
/// scaling functions down after `idle`, looking every 200 ms.
async fn two_gateways(admin: &Client, ns: &str) -> (Under, Under) {
    let config = ScalingConfig::builder()
        .scale_to_zero(true)
        .idle_check_interval(Duration::from_millis(200))
        .build();
    (
        under_sharing(admin.clone(), ns, config.clone()).await,
        under_sharing(admin.clone(), ns, config).await,
    )
}

pub(crate) async fn a_scale_up_on_one_gateway_is_not_undone_by_another_gateways_reaper() {
    let admin = admin().await;
    let ns = namespace(&admin, "undo").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    opt_in(&admin, &ns, "hello", "2s").await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let (a, b) = two_gateways(&admin, &ns).await;
    // Both see it warm; nobody uses it: down after 2 s, by one of them.
    let id = FunctionId::new("hello", &ns).unwrap();
    b.scaler.scale(&id).await.unwrap();
    wait_for_scale(&writes, &[1, 0]).await;
    mark_status(&admin, &ns, "hello", 0).await;
    mark_endpoints(&admin, &ns, "hello", 0, 8080).await;
    // A brings it up; the start takes 3 s, across B's looks (every 200 ms, idle period 2 s).
    let held = spawn_request(&a.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "A's request", held)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    // Served, and then some: B did not scale it down under A.
    assert_eq!(request(&a.scaler, &ns, "hello").await.0, StatusCode::OK);
    assert_eq!(writes.counts(), vec![1, 0, 1], "A's scale-up stands");
}

pub(crate) async fn a_stream_on_one_gateway_keeps_the_function_up_against_another_and_then_one_scales_it_down(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "stream").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    opt_in(&admin, &ns, "hello", "2s").await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    // Changes of the Deployment's spec or annotations so far (its generation).
    let changes_before = spec_writes(&admin, &ns, "hello").await;
    let (a, b) = two_gateways(&admin, &ns).await;
    let id = FunctionId::new("hello", &ns).unwrap();
    b.scaler.scale(&id).await.unwrap();
    // A stream on A, open for three idle periods.
    let (end, ended) = tokio::sync::watch::channel(false);
    let inner = tower::service_fn(move |_: Request<Full<Bytes>>| {
        let mut ended = ended.clone();
        async move {
            let body = http_body_util::StreamBody::new(futures::stream::once(async move {
                let _ = ended.wait_for(|ended| *ended).await;
                Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"done")))
            }));
            Ok::<_, Infallible>(Response::new(body))
        }
    });
    let service = tower::Layer::layer(&ScaleFromZeroLayer::new(a.scaler.clone()), inner);
    let req = Request::get(format!("/function/hello.{ns}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = service.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        writes.counts(),
        vec![1],
        "never scaled down under the stream"
    );
    // The stream ends; both idle: exactly one scale-down.
    let _ = end.send(true);
    response.into_body().collect().await.unwrap();
    wait_for_scale(&writes, &[1, 0]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        writes.counts(),
        vec![1, 0],
        "one scale-down, by one of them"
    );
    // One write between them: the other found it at zero already (which it reports as
    // scaled: the function is at zero) or had its write refused by the precondition.
    assert_eq!(
        spec_writes(&admin, &ns, "hello").await - changes_before,
        1,
        "A and B together wrote the scale-down once"
    );
}

/// Waits until the scale writes seen are `counts`.
async fn wait_for_scale(writes: &ScaleWrites, counts: &[i32]) {
    let until = Instant::now() + Duration::from_secs(15);
    while writes.counts() != counts {
        assert!(
            Instant::now() < until,
            "scale writes {:?}, not {counts:?}",
            writes.counts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) async fn a_scale_down_is_refused_while_another_gateway_was_active_or_a_scale_up_is_under_way(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "idle").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    opt_in(&admin, &ns, "hello", "1m").await;
    mark_status(&admin, &ns, "hello", 1).await;
    let id = FunctionId::new("hello", &ns).unwrap();
    let idle = Duration::from_secs(60);
    let (a, b) = (
        under(admin.clone(), &ns, ScalingConfig::default()).await,
        under(admin.clone(), &ns, ScalingConfig::default()).await,
    );
    let state = b.provider.get_replicas(&id).await.unwrap();
    assert_eq!(
        state.scale_to_zero,
        tower_scale_from_zero::IdlePolicy::After(idle)
    );

    // Gateway A served it just now (its Lease): B does not scale it down.
    a.provider.record(&id).await.unwrap();
    assert!(b.provider.idle_for(&id).await.unwrap().unwrap() < Duration::from_secs(5));
    assert!(!b.provider.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(replicas(&admin, &ns, "hello").await, 1);

    // Long quiet; but a scale-up is under way (2 wanted, 1 ready): refused too.
    let long_ago =
        humantime::format_rfc3339_micros(std::time::SystemTime::now() - Duration::from_secs(120))
            .to_string();
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": format!("{}hello", tower_scale_from_zero::providers::kubernetes::LEASE_PREFIX)},
        "spec": {"holderIdentity": "a", "renewTime": long_ago}
    });
    apply(&admin, &ns, &[serde_json::from_value(lease).unwrap()]).await;
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert!(!b.provider.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(replicas(&admin, &ns, "hello").await, 2);
    mark_status(&admin, &ns, "hello", 2).await;

    // Quiet and settled; but someone scales it up between B's read and B's write: the
    // scale-up wins (409 on B's precondition).
    let (client, layer) = interfering_client(&admin, &ns, "hello", Some(3)).await;
    let racing = KubernetesProvider::builder(client).namespace(&ns).build();
    assert!(!racing.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(layer.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!(
        replicas(&admin, &ns, "hello").await,
        3,
        "the scale-up stands"
    );
    mark_status(&admin, &ns, "hello", 3).await;

    // Quiet, settled and uncontested: down to zero.
    assert!(b.provider.scale_to_zero(&id, idle).await.unwrap());
    assert_eq!(replicas(&admin, &ns, "hello").await, 0);
}
