//! The cold path as a user meets it, with nothing in the test playing a controller: the
//! gateway's scale write, the deployment and replicaset controllers, a pod on the simulated
//! node turning Ready, the EndpointSlice controller publishing it, the gateway's watch, the
//! release and the forward to the pod's address.

use crate::cluster::*;
use crate::plane::*;

fn admin_kubeconfig() -> PathBuf {
    env_dir().join("kubeconfig-admin")
}

pub(crate) async fn a_cold_request_is_held_while_the_controllers_start_a_pod_then_forwarded_to_its_ready_address(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "cold").await;
    let process = FunctionProcess::start("hello").await;
    let behaviour = Pods {
        ready_after: Some("700ms"),
        ..Pods::default()
    };
    function(&admin, &ns, "hello", 0, process.port, behaviour).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let gateway = gateway(&admin_kubeconfig(), &ns, &[]).await;

    let held = spawn_get(gateway.url("/function/hello/greet"));
    // The controllers make a pod; it is not ready for 700 ms, and the request waits for it.
    let created = pods_until(
        &admin,
        &ns,
        "hello",
        Duration::from_secs(10),
        "a pod",
        |p| !p.is_empty(),
    )
    .await;
    assert!(!created[0].ready);
    assert!(!held.is_finished(), "held while the pod is not ready");
    let answer = within(Duration::from_secs(10), "forwarded", held)
        .await
        .unwrap();
    let pods = pods(&admin, &ns, "hello").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let [pod] = &pods[..] else {
        panic!("one pod: {pods:?}")
    };
    assert!(pod.ready);
    let ip = pod.ip.expect("a ready pod has an address");
    assert!(
        ip.to_string().starts_with("10.244."),
        "{ip} is a pod address of {POD_CIDR}"
    );
    // Sent to the pod's address (not a Service), and only once the pod was ready.
    assert_eq!(
        answer.body,
        format!("Hello from hello at {ip} path=/greet\n")
    );
    let arrivals = process.arrivals();
    assert_eq!(arrivals.len(), 1);
    assert_eq!(arrivals[0].to.ip(), ip);
    assert!(
        answer.first_byte >= Duration::from_millis(700),
        "not before the pod's 700 ms start-up: {:?}",
        answer.first_byte
    );
    assert_eq!(writes.counts(), vec![0, 1], "one scale write");
    println!("    cold start through the controllers: first byte after {:?} (700 ms of it the pod's start-up)", answer.first_byte);

    // Warm now: straight to the pod.
    let warm = get(&gateway.url("/function/hello")).await;
    assert_eq!(warm.status, StatusCode::OK);
    assert_eq!(writes.counts(), vec![0, 1]);
}

pub(crate) async fn an_idle_function_scales_to_zero_through_the_controllers_and_the_next_request_starts_it_again(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "zero").await;
    let process = FunctionProcess::start("hello").await;
    let behaviour = Pods {
        ready_after: Some("200ms"),
        idle: Some("2s"),
        ..Pods::default()
    };
    function(&admin, &ns, "hello", 0, process.port, behaviour).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let gateway = gateway(&admin_kubeconfig(), &ns, &["--scale-to-zero-after", "2s"]).await;

    let first = get(&gateway.url("/function/hello")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let served_at = Instant::now();
    // Idle for 2 s: the gateway writes 0, the replicaset controller deletes the pod, kwok
    // removes it, the EndpointSlice controller empties the slice.
    pods_until(
        &admin,
        &ns,
        "hello",
        Duration::from_secs(15),
        "the pod gone",
        |p| p.is_empty(),
    )
    .await;
    let down_after = served_at.elapsed();
    assert_eq!(writes.counts(), vec![0, 1, 0]);
    assert!(
        down_after >= Duration::from_secs(2),
        "not before the idle period: {down_after:?}"
    );
    let again = get(&gateway.url("/function/hello")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    let pods = pods(&admin, &ns, "hello").await;
    let ip = pods[0].ip.unwrap();
    assert_eq!(again.body, format!("Hello from hello at {ip} path=/\n"));
    assert_eq!(writes.counts(), vec![0, 1, 0, 1]);
    println!(
        "    scaled to zero {down_after:?} after the last request (idle period 2 s); cold again: {:?}",
        again.first_byte
    );
}

pub(crate) async fn a_request_during_a_scale_down_goes_to_the_new_pod_never_the_terminating_one() {
    let admin = admin().await;
    let ns = namespace(&admin, "race").await;
    let process = FunctionProcess::start("hello").await;
    // Old pods take 3 s to go once deleted: their endpoints linger, terminating.
    let behaviour = Pods {
        ready_after: Some("500ms"),
        delete_after: Some("3s"),
        idle: Some("1s"),
        ..Pods::default()
    };
    function(&admin, &ns, "hello", 0, process.port, behaviour).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let gateway = gateway(&admin_kubeconfig(), &ns, &["--scale-to-zero-after", "1s"]).await;

    let first = get(&gateway.url("/function/hello")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let old = pods(&admin, &ns, "hello").await[0].clone();
    let old_ip = old.ip.unwrap();
    // The moment the gateway writes 0, a request: 1 -> 0 -> 1.
    let until = Instant::now() + Duration::from_secs(15);
    while replicas(&admin, &ns, "hello").await != 0 {
        assert!(Instant::now() < until, "never scaled down");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let answer = get(&gateway.url("/function/hello")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let now = pods(&admin, &ns, "hello").await;
    let new = now
        .iter()
        .find(|p| p.name != old.name)
        .unwrap_or_else(|| panic!("a new pod: {now:?}"));
    let new_ip = new.ip.unwrap();
    assert_ne!(new_ip, old_ip);
    assert_eq!(
        answer.body,
        format!("Hello from hello at {new_ip} path=/\n"),
        "the old pod ({old_ip}) was terminating"
    );
    assert!(
        answer.first_byte >= Duration::from_millis(500),
        "not before the new pod's start-up: {:?}",
        answer.first_byte
    );
    assert_eq!(writes.counts(), vec![0, 1, 0, 1]);
    let last = process.arrivals().last().copied().unwrap();
    assert_eq!(last.to.ip(), new_ip);
}

/// Its pods run but never turn Ready: no controller reports a failure (a scale is not a
/// rollout, so no progress deadline), and the request waits out the gateway's deadline.
pub(crate) async fn a_function_whose_pods_never_become_ready_is_a_504_at_the_deadline() {
    let admin = admin().await;
    let ns = namespace(&admin, "never").await;
    let process = FunctionProcess::start("stuck").await;
    let behaviour = Pods {
        never_ready: true,
        ..Pods::default()
    };
    function(&admin, &ns, "stuck", 0, process.port, behaviour).await;
    let gateway = gateway(&admin_kubeconfig(), &ns, &["--deadline", "3s"]).await;

    let answer = get(&gateway.url("/function/stuck")).await;
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("stuck"),
        "names the function: {}",
        answer.body
    );
    assert!(
        answer.first_byte >= Duration::from_secs(3) && answer.first_byte < Duration::from_secs(5),
        "at the 3 s deadline: {:?}",
        answer.first_byte
    );
    // The pod ran, unready, and got nothing.
    let pods = pods(&admin, &ns, "stuck").await;
    assert!(pods.iter().all(|p| p.ip.is_some() && !p.ready), "{pods:?}");
    assert!(process.arrivals().is_empty());
}

/// The deployment controller tracks progress of rollouts only: a scale-up of a Deployment
/// whose rollout is complete never exceeds its progress deadline, however long its pods stay
/// unready (the test before this one). A function deployed just now, whose first rollout
/// cannot finish, does.
pub(crate) async fn a_function_whose_rollout_passes_its_progress_deadline_is_a_502_naming_it_long_before_the_deadline(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "deadline").await;
    let process = FunctionProcess::start("stuck").await;
    let behaviour = Pods {
        never_ready: true,
        progress_deadline: Some(2),
        ..Pods::default()
    };
    function(&admin, &ns, "stuck", 1, process.port, behaviour).await;
    let gateway = gateway_logging(&admin_kubeconfig(), &ns, &["--deadline", "60s"]).await;

    let answer = get(&gateway.url("/function/stuck")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    // The client learns the function cannot start; the gateway's log says why (a platform's
    // errors are not shown to clients).
    assert!(
        answer.body.contains("stuck"),
        "names the function: {}",
        answer.body
    );
    let logs = String::from_utf8_lossy(&gateway.stop().stderr).into_owned();
    assert!(
        logs.contains("cold start failed") && logs.contains("ProgressDeadlineExceeded"),
        "the log names the condition: {logs}"
    );
    // The deployment controller says so 2 s into the rollout, which began before the request.
    assert!(
        answer.first_byte < Duration::from_secs(10),
        "soon after the progress deadline of 2 s, not at the gateway's 60 s: {:?}",
        answer.first_byte
    );
    assert!(process.arrivals().is_empty());
    println!(
        "    502 after {:?} (progressDeadlineSeconds 2)",
        answer.first_byte
    );
}

pub(crate) async fn a_scale_up_a_resource_quota_refuses_is_a_502_naming_it_at_once() {
    let admin = admin().await;
    let ns = namespace(&admin, "quota").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-pods"},
        "spec": {"hard": {"pods": "0"}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::ResourceQuota>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    let process = FunctionProcess::start("hello").await;
    function(&admin, &ns, "hello", 0, process.port, Pods::default()).await;
    let gateway = gateway_logging(&admin_kubeconfig(), &ns, &["--deadline", "60s"]).await;

    // The replicaset controller cannot create the pod; the deployment controller reports
    // ReplicaFailure (FailedCreate, exceeded quota).
    let answer = get(&gateway.url("/function/hello")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    assert!(
        answer.body.contains("hello"),
        "names the function: {}",
        answer.body
    );
    assert!(
        answer.first_byte < Duration::from_secs(5),
        "at once, not at the gateway's 60 s: {:?}",
        answer.first_byte
    );
    assert!(pods(&admin, &ns, "hello").await.is_empty());
    let logs = String::from_utf8_lossy(&gateway.stop().stderr).into_owned();
    let failed = logs
        .lines()
        .find(|line| line.contains("cold start failed"))
        .unwrap_or_else(|| panic!("a cold start failure in the log: {logs}"));
    assert!(
        failed.contains("ReplicaFailure") && failed.contains("exceeded quota"),
        "the log names the condition and its cause: {failed}"
    );
    println!("    502 after {:?}; logged: {failed}", answer.first_byte);
}

pub(crate) async fn two_gateways_hold_their_requests_through_one_cold_start_and_both_forward_to_the_pod(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "two").await;
    let process = FunctionProcess::start("hello").await;
    let behaviour = Pods {
        ready_after: Some("300ms"),
        ..Pods::default()
    };
    function(&admin, &ns, "hello", 0, process.port, behaviour).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let a = gateway(&admin_kubeconfig(), &ns, &[]).await;
    let b = gateway(&admin_kubeconfig(), &ns, &[]).await;

    let held: Vec<_> = (0..40)
        .map(|i| {
            let gateway = if i % 2 == 0 { &a } else { &b };
            spawn_get(gateway.url("/function/hello"))
        })
        .collect();
    let mut answers = Vec::new();
    for request in held {
        answers.push(
            within(Duration::from_secs(15), "served", request)
                .await
                .unwrap(),
        );
    }
    let pods = pods(&admin, &ns, "hello").await;
    let [pod] = &pods[..] else {
        panic!("one pod for both gateways: {pods:?}")
    };
    let ip = pod.ip.unwrap();
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body, format!("Hello from hello at {ip} path=/\n"));
    }
    assert_eq!(process.arrivals().len(), 40);
    // Each gateway raises the count to at least 1: one change, whoever wrote first.
    assert_eq!(writes.counts(), vec![0, 1]);
}
