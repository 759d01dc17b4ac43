//! Cold starts and scale writes: once, "at least", conflicts, RBAC refusals, not-found.

use crate::cluster::*;

pub(crate) async fn a_cold_start_writes_the_scale_once_and_serves_when_an_endpoint_is_ready() {
    let admin = admin().await;
    let ns = namespace(&admin, "cold").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "held until an endpoint is ready");
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held request", held)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(writes.counts(), vec![0, 1], "one scale write, 0 → 1");
    assert_eq!(spec_writes(&admin, &ns, "hello").await, 1);
    // Warm now: no further write.
    assert_eq!(request(&gw.scaler, &ns, "hello").await.0, StatusCode::OK);
    assert_eq!(writes.writes(), 1);
}

pub(crate) async fn a_thousand_concurrent_cold_requests_make_exactly_one_scale_write() {
    let admin = admin().await;
    let ns = namespace(&admin, "burst").await;
    deploy(&admin, &ns, "burst", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "burst").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    let held: Vec<_> = (0..1000)
        .map(|_| spawn_request(&gw.scaler, &ns, "burst"))
        .collect();
    wait_for_replicas(&admin, &ns, "burst", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    mark_ready(&admin, &ns, "burst", 8080).await;
    for request in held {
        let (status, error) = within(Duration::from_secs(10), "held", request)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{error:?}");
    }
    println!(
        "    1000 cold requests: scale writes seen {:?}",
        writes.counts()
    );
    assert_eq!(writes.writes(), 1);
    assert_eq!(spec_writes(&admin, &ns, "burst").await, 1);
}

pub(crate) async fn unlabelled_and_missing_deployments_are_404_without_a_write() {
    let admin = admin().await;
    let ns = namespace(&admin, "nf").await;
    deploy(&admin, &ns, "plain", 0, false, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "plain").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    for name in ["plain", "missing"] {
        let (status, error) = request(&gw.scaler, &ns, name).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {error:?}");
    }
    // Even asked directly, the provider scales only functions.
    let plain = FunctionId::new("plain", &ns).unwrap();
    let err = gw.provider.set_replicas(&plain, 1).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(err.message().contains("labelled"), "{}", err.message());
    // And so does its fallback read, before any watch has synced.
    deploy(&admin, &ns, "labelled", 2, true, 8080).await;
    let fresh = KubernetesProvider::builder(admin.clone())
        .namespace(&ns)
        .build();
    assert!(!fresh.is_in_sync());
    let err = fresh.get_replicas(&plain).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let labelled = FunctionId::new("labelled", &ns).unwrap();
    let state = fresh.get_replicas(&labelled).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (2, 0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writes.writes(), 0);
    assert_eq!(replicas(&admin, &ns, "plain").await, 0);
}

pub(crate) async fn a_forbidden_scale_is_a_502_naming_the_missing_permission() {
    let admin = admin().await;
    let ns = namespace(&admin, "rbac").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    // The limited user may read everything the provider reads, and read the scale, but not
    // update it.
    let role: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}
        ]
    }))
    .unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]
    }))
    .unwrap();
    apply(&admin, &ns, &[role, binding]).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let limited = client_from(&env_dir().join("kubeconfig-limited")).await;
    let gw = under(limited, &ns, ScalingConfig::default()).await;

    let started = Instant::now();
    let (status, error) = within(
        Duration::from_secs(10),
        "forbidden",
        request(&gw.scaler, &ns, "hello"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = error.expect("a ScaleError");
    let cause = error.query_error().expect("a provider error");
    assert!(cause.is_permanent(), "not retried: {cause:?}");
    assert!(
        cause.message().contains("may not update deployments/scale"),
        "{}",
        cause.message()
    );
    println!("    502 after {:?}: {}", started.elapsed(), cause.message());
    assert_eq!(writes.writes(), 0);
}

pub(crate) async fn a_count_someone_else_raised_is_never_lowered() {
    let admin = admin().await;
    let ns = namespace(&admin, "five").await;
    // Scaled to 5 by someone else; none of them ready yet.
    deploy(&admin, &ns, "five", 5, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "five").await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "five");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = FunctionId::new("five", &ns).unwrap();
    gw.provider.set_replicas(&id, 1).await.unwrap();
    mark_ready(&admin, &ns, "five", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(writes.counts(), vec![5], "never lowered, never written");
    assert_eq!(spec_writes(&admin, &ns, "five").await, 0);
}

pub(crate) async fn a_conflicting_write_is_retried_not_lost() {
    let admin = admin().await;
    let ns = namespace(&admin, "conflict").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    let (client, layer) = interfering_client(&admin, &ns, "hello", None).await;
    let gw = under(client, &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(
        layer.conflicts.load(Ordering::SeqCst),
        1,
        "the first write conflicted"
    );
    assert_eq!(writes.counts(), vec![0, 1], "then the retry landed");
}

pub(crate) async fn a_count_raised_during_our_write_is_kept() {
    let admin = admin().await;
    let ns = namespace(&admin, "raised").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    let writes = ScaleWrites::watch(&admin, &ns, "hello").await;
    // Between our read (0) and our write, someone else asks for 3.
    let (client, layer) = interfering_client(&admin, &ns, "hello", Some(3)).await;
    let gw = under(client, &ns, ScalingConfig::default()).await;

    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 3).await;
    mark_ready(&admin, &ns, "hello", 8080).await;
    let (status, error) = within(Duration::from_secs(5), "held", held).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(layer.conflicts.load(Ordering::SeqCst), 1);
    assert_eq!(
        writes.counts(),
        vec![0, 3],
        "their 3 stands; our 1 was not written over it"
    );
    assert_eq!(replicas(&admin, &ns, "hello").await, 3);
}
