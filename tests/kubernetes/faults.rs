//! Faults of the control plane: API server restarts and outages, refused and stalled watches.

use crate::cluster::*;

/// Alone: it stops the shared API server for a while.
pub(crate) async fn held_requests_survive_an_api_server_restart_the_watches_list_again_and_warm_functions_need_no_read(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "restart").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    deploy(&admin, &ns, "warm", 1, true, 8080).await;
    mark_ready(&admin, &ns, "warm", 8080).await;
    let config = ScalingConfig::default();
    let deadline = config.readiness_deadline();
    let gw = under(admin.clone(), &ns, config).await;
    assert_eq!(request(&gw.scaler, &ns, "warm").await.0, StatusCode::OK);

    let started = Instant::now();
    let held: Vec<_> = (0..20)
        .map(|_| spawn_request(&gw.scaler, &ns, "hello"))
        .collect();
    wait_for_replicas(&admin, &ns, "hello", 1).await;

    let lists = |resource| {
        counted(
            "scale_from_zero_kubernetes_lists_total",
            &[("resource", resource)],
        )
    };
    let reads = || counted("scale_from_zero_kubernetes_reads_total", &[]);
    let (lists_before, reads_before) = (lists("deployments"), reads());
    let mut outage = Outage::begin();
    let stopped = Instant::now();
    eventually(Duration::from_secs(5), "the watches notice", || {
        !gw.provider.is_in_sync()
    })
    .await;
    // The warm function is served during the outage, from what the store last synced: no read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(request(&gw.scaler, &ns, "warm").await.0, StatusCode::OK);
    assert_eq!(reads(), reads_before, "served without a read");
    // History the watches have not seen is compacted away meanwhile. A watch that fails
    // lists afresh once its pause is over (it does not resume), so no 410 is needed here:
    // `a_watch_that_resumes_on_compacted_history_gets_410_gone_and_lists_again` has the 410.
    script_on_env("compact-etcd");
    tokio::time::sleep(Duration::from_secs(1)).await;
    outage.end();
    let restarted = Instant::now();
    let admin = self::admin().await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let ready = Instant::now();
    for request in held {
        let (status, error) = within(deadline, "held over the restart", request)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{error:?}");
    }
    let served = Instant::now();
    eventually(Duration::from_secs(15), "the watches recover", || {
        gw.provider.is_in_sync()
    })
    .await;
    let in_sync = Instant::now();
    println!(
        "    restart: apiserver down {:?}; marked ready {:?} after it was back; held requests served {:?} after that ({:?} after they arrived); watches back in sync {:?} after the restart; deployments listed {} more times",
        restarted - stopped,
        ready - restarted,
        served - ready,
        served - started,
        in_sync - restarted,
        lists("deployments") - lists_before,
    );
    assert!(lists("deployments") > lists_before, "and listed again");
    assert_eq!(
        spec_writes(&admin, &ns, "hello").await,
        1,
        "one scale write, not repeated"
    );
    // The store the watches rebuilt after 410 serves the function without a read.
    let reads_after = reads();
    assert_eq!(request(&gw.scaler, &ns, "hello").await.0, StatusCode::OK);
    assert_eq!(reads(), reads_after);
}

/// Alone: it stops the shared API server for 30 s.
pub(crate) async fn a_warm_function_is_served_through_a_30_s_api_server_outage() {
    let admin = admin().await;
    let ns = namespace(&admin, "outage").await;
    deploy(&admin, &ns, "warm", 1, true, 8080).await;
    mark_ready(&admin, &ns, "warm", 8080).await;
    deploy(&admin, &ns, "cold", 0, true, 8080).await;
    // A short retry budget, so the cold function's 502 comes within the outage.
    let config = ScalingConfig::builder().max_scale_attempts(4).build();
    let gw = under(admin.clone(), &ns, config).await;
    assert_eq!(request(&gw.scaler, &ns, "warm").await.0, StatusCode::OK);

    // A request every 100 ms from now until after the outage.
    let traffic = {
        let (scaler, ns) = (gw.scaler.clone(), ns.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let until = Instant::now() + Duration::from_secs(38);
            while Instant::now() < until {
                let sent = Instant::now();
                let answer =
                    tokio::time::timeout(Duration::from_secs(1), request(&scaler, &ns, "warm"))
                        .await;
                answers.push((answer.map(|(status, _)| status), sent.elapsed()));
                tokio::time::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed())).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut outage = Outage::begin();
    let stopped = Instant::now();
    // A function that was cold: 502 after the retry budget, saying the API server is
    // unreachable.
    let (status, error) = request(&gw.scaler, &ns, "cold").await;
    let cold_answered = stopped.elapsed();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{error:?}");
    let said = logged(&[
        "cold start failed",
        "API server is unreachable",
        &format!("cold.{ns}"),
    ]);
    assert!(
        !said.is_empty(),
        "no log line says the API server is unreachable"
    );
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(stopped.elapsed())).await;
    outage.end();
    let restarted = Instant::now();
    eventually(
        Duration::from_secs(5),
        "in sync again within 5 s of the restart",
        || gw.provider.is_in_sync(),
    )
    .await;
    let resynced = restarted.elapsed();
    let answers = traffic.await.unwrap();
    let served = answers
        .iter()
        .filter(|(a, _)| matches!(a, Ok(StatusCode::OK)))
        .count();
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    println!(
        "    outage of {:?}: {served} of {} requests to the warm function answered 200 (slowest {slowest:?}); the cold one 502 after {cold_answered:?}; in sync {resynced:?} after the restart; {}",
        restarted - stopped,
        answers.len(),
        said[0]
    );
    assert_eq!(
        served,
        answers.len(),
        "every request 200 within 1 s: {answers:?}"
    );
}

pub(crate) async fn a_role_without_watch_on_endpointslices_lists_them_at_most_3_times_in_10_s_and_says_why(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "nowatch").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    // Everything the provider uses, but `watch` on endpointslices.
    let role: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "no-watch"},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}
        ]
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "no-watch"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-watch"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]
    }))
    .unwrap();
    apply(&admin, &ns, &[role, binding]).await;
    let lists_before = served_by_apiserver("LIST", "endpointslices").await;
    let limited = client_from(&env_dir().join("kubeconfig-limited")).await;
    let provider = KubernetesProvider::builder(limited).namespace(&ns).build();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let lists = served_by_apiserver("LIST", "endpointslices").await - lists_before;
    drop(provider);
    let said = logged(&[
        "watch of endpointslices failed",
        "may not watch endpointslices",
    ]);
    println!(
        "    {lists} LISTs of endpointslices in 10 s; {}",
        said.first().map_or("", String::as_str)
    );
    assert!((1..=3).contains(&lists), "{lists} LISTs in 10 s");
    assert!(!said.is_empty(), "no log line names the missing permission");
}

pub(crate) async fn a_connection_that_stops_answering_is_noticed_and_relisted_within_60_s() {
    let admin = admin().await;
    let ns = namespace(&admin, "stall").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let proxy = Blackhole::start(apiserver_addr()).await;
    let provider = KubernetesProvider::builder(admin_through(proxy.addr).await)
        .namespace(&ns)
        .build();
    eventually(Duration::from_secs(10), "synced through the proxy", || {
        provider.is_in_sync()
    })
    .await;
    let lists_before = counted(
        "scale_from_zero_kubernetes_lists_total",
        &[("resource", "deployments")],
    );
    // The network goes silent: no reset, no close, nothing.
    proxy.cut(true);
    let cut = Instant::now();
    eventually(
        Duration::from_secs(45),
        "the stalled watches noticed",
        || !provider.is_in_sync(),
    )
    .await;
    let noticed = cut.elapsed();
    proxy.cut(false);
    eventually(
        Duration::from_secs(60).saturating_sub(cut.elapsed()),
        "listed again and in sync within 60 s",
        || provider.is_in_sync(),
    )
    .await;
    let relisted = cut.elapsed();
    let lists = counted(
        "scale_from_zero_kubernetes_lists_total",
        &[("resource", "deployments")],
    ) - lists_before;
    println!("    a silent connection noticed after {noticed:?}; listed again ({lists} lists) and in sync {relisted:?} after the cut");
    assert!(lists >= 1);
    assert!(relisted <= Duration::from_secs(60));
}

/// Alone: compacted history makes every resuming watch of the server fail.
pub(crate) async fn a_watch_that_resumes_on_compacted_history_gets_410_gone_and_lists_again() {
    let admin = admin().await;
    let ns = namespace(&admin, "gone").await;
    deploy(&admin, &ns, "warm", 1, true, 8080).await;
    mark_ready(&admin, &ns, "warm", 8080).await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;
    assert_eq!(request(&gw.scaler, &ns, "warm").await.0, StatusCode::OK);
    let gone = || {
        ["deployments", "services", "endpointslices"]
            .iter()
            .map(|resource| {
                counted(
                    "scale_from_zero_kubernetes_watch_failures_total",
                    &[("resource", resource), ("reason", "gone")],
                )
            })
            .sum::<u64>()
    };
    let lists = || counted("scale_from_zero_kubernetes_lists_total", &[]);
    let reads = || counted("scale_from_zero_kubernetes_reads_total", &[]);
    let (gone_before, lists_before, reads_before) = (gone(), lists(), reads());
    // Each watch call ends after 20 s and resumes from the last resourceVersion it saw; with
    // that history compacted away, the server answers 410 Gone.
    script_on_env("compact-etcd");
    let compacted = Instant::now();
    let until = Instant::now() + Duration::from_secs(30);
    while gone() == gone_before {
        assert!(
            Instant::now() < until,
            "no 410 Gone within 30 s of the compaction"
        );
        assert_eq!(request(&gw.scaler, &ns, "warm").await.0, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answered = compacted.elapsed();
    eventually(Duration::from_secs(10), "listed again and in sync", || {
        gw.provider.is_in_sync()
    })
    .await;
    assert!(lists() > lists_before, "listed again after 410");
    assert_eq!(request(&gw.scaler, &ns, "warm").await.0, StatusCode::OK);
    assert_eq!(
        reads(),
        reads_before,
        "served from the store throughout, no read"
    );
    println!(
        "    410 Gone {answered:?} after the compaction ({} times); {} lists since; no read",
        gone() - gone_before,
        lists() - lists_before
    );
}
