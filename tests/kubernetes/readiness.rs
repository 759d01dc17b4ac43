//! Readiness: pushed from EndpointSlices; deleted Deployments.

use crate::cluster::*;

pub(crate) async fn pushed_readiness_releases_held_requests_without_waiting_for_a_poll() {
    let admin = admin().await;
    let ns = namespace(&admin, "push").await;
    const ROUNDS: usize = 10;
    for i in 0..ROUNDS {
        deploy(&admin, &ns, &format!("fn-{i}"), 0, true, 8080).await;
    }
    // A poll interval far beyond what the test waits: only a push can release in time.
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(10))
        .build();
    let gw = under(admin.clone(), &ns, config).await;

    let (mut from_write, mut from_event) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let name = format!("fn-{i}");
        let held = spawn_request(&gw.scaler, &ns, &name);
        wait_for_replicas(&admin, &ns, &name, 1).await;
        mark_status(&admin, &ns, &name, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!held.is_finished());
        let written = Instant::now();
        mark_endpoints(&admin, &ns, &name, 1, 8080).await;
        let (status, error) = within(Duration::from_secs(5), "pushed", held)
            .await
            .unwrap();
        let answered = Instant::now();
        assert_eq!(status, StatusCode::OK, "{error:?}");
        from_write.push(answered - written);
        let pushed = PUSHES.get().unwrap().lock().unwrap()[&name];
        from_event.push(answered - pushed);
    }
    let max = *from_write.iter().max().unwrap();
    println!(
        "    push: slice write → response median {:?} (max {max:?}); event handled by the provider's watch → response median {:?} (max {:?}); {ROUNDS} rounds, poll interval 10 s",
        median(from_write.clone()),
        median(from_event.clone()),
        from_event.iter().max().unwrap()
    );
    assert!(
        max < Duration::from_secs(2),
        "released by the push, not a poll: {max:?}"
    );
}

pub(crate) async fn a_deleted_deployment_is_404_once_the_cache_ttl_has_passed() {
    let admin = admin().await;
    let ns = namespace(&admin, "gone").await;
    deploy(&admin, &ns, "gone", 1, true, 8080).await;
    mark_ready(&admin, &ns, "gone", 8080).await;
    let config = ScalingConfig::default();
    let ttl = config.cache_ttl();
    let gw = under(admin.clone(), &ns, config).await;
    assert_eq!(request(&gw.scaler, &ns, "gone").await.0, StatusCode::OK);

    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(ttl + Duration::from_millis(250)).await;
    let (status, error) = request(&gw.scaler, &ns, "gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error:?}");
}

pub(crate) async fn an_endpoint_of_a_pod_from_before_a_scale_down_is_not_readiness_of_the_next_scale_up(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "race").await;
    deploy(&admin, &ns, "hello", 1, true, 8080).await;
    mark_status(&admin, &ns, "hello", 1).await;
    mark_pods(&admin, &ns, "hello", &[("10.1.0.1", "old-pod", true)], 8080).await;
    let gw = under(admin.clone(), &ns, ScalingConfig::default()).await;
    assert_eq!(request(&gw.scaler, &ns, "hello").await.0, StatusCode::OK);
    // Scaled to zero by someone else; the EndpointSlice controller has not dropped the old
    // pod yet when a request brings it back up.
    Api::<Deployment>::namespaced(admin.clone(), &ns)
        .patch(
            "hello",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await
        .unwrap();
    let id = FunctionId::new("hello", &ns).unwrap();
    eventually(
        Duration::from_secs(5),
        "the provider saw the scale-down",
        || gw.provider.ready_addresses(&id, None).is_empty(),
    )
    .await;
    gw.scaler.cache().invalidate(id.as_function_ref());
    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !held.is_finished(),
        "not released to the old, terminating pod"
    );
    // The new pod is ready (the old one still listed): released, to the new one only.
    mark_pods(
        &admin,
        &ns,
        "hello",
        &[("10.1.0.1", "old-pod", true), ("10.1.0.2", "new-pod", true)],
        8080,
    )
    .await;
    let (status, error) = within(Duration::from_secs(5), "released", held)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{error:?}");
    assert_eq!(
        gw.provider.ready_addresses(&id, None),
        ["10.1.0.2:8080".parse().unwrap()]
    );
}

pub(crate) async fn a_deployment_past_its_progress_deadline_fails_held_requests_with_a_502_naming_it(
) {
    let admin = admin().await;
    let ns = namespace(&admin, "stuck").await;
    deploy(&admin, &ns, "hello", 0, true, 8080).await;
    // A poll interval of 10 s: the 502 comes from the watch, not from a poll.
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(10))
        .build();
    let gw = under(admin.clone(), &ns, config).await;
    let held = spawn_request(&gw.scaler, &ns, "hello");
    wait_for_replicas(&admin, &ns, "hello", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished());
    let stuck = Instant::now();
    mark_stuck(&admin, &ns, "hello").await;
    let (status, error) = within(Duration::from_secs(5), "failed fast", held)
        .await
        .unwrap();
    let took = stuck.elapsed();
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = error.expect("a ScaleError").to_string();
    println!("    502 {took:?} after the condition: {error}");
    assert!(error.contains("ProgressDeadlineExceeded"), "{error}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}
