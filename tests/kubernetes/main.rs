//! The Kubernetes provider against a real kube-apiserver (with etcd, on 127.0.0.1), started by
//! `scripts/kube-test-env.sh`: `.ci/run` starts one and sets `KUBE_TEST_DIR`; without it this
//! binary starts its own (building the apiserver the first time) and stops it at the end. A
//! server that cannot be started or reached fails the run: nothing is skipped.
//!
//! No controllers run: the tests play the deployment controller (they patch `/status`) and the
//! EndpointSlice controller (they write slices). One namespace per test.
//!
//! `harness = false`: the function process of the end-to-end test is this same binary, and
//! the API server restart test must run alone, last.

#[path = "../support/mod.rs"]
mod support;

mod cluster;
mod faults;
mod gateways;
mod readiness;
mod scaling;

use cluster::*;
use support::runner;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-function") {
        assert!(gateway_kit::hello::run_if_asked());
        return;
    }
    let tests: [runner::Test; 18] = runner::tests![
        scaling::a_cold_start_writes_the_scale_once_and_serves_when_an_endpoint_is_ready,
        scaling::a_thousand_concurrent_cold_requests_make_exactly_one_scale_write,
        scaling::unlabelled_and_missing_deployments_are_404_without_a_write,
        scaling::a_forbidden_scale_is_a_502_naming_the_missing_permission,
        scaling::a_count_someone_else_raised_is_never_lowered,
        scaling::a_conflicting_write_is_retried_not_lost,
        scaling::a_count_raised_during_our_write_is_kept,
        readiness::pushed_readiness_releases_held_requests_without_waiting_for_a_poll,
        readiness::a_deleted_deployment_is_404_once_the_cache_ttl_has_passed,
        readiness::an_endpoint_of_a_pod_from_before_a_scale_down_is_not_readiness_of_the_next_scale_up,
        readiness::a_deployment_past_its_progress_deadline_fails_held_requests_with_a_502_naming_it,
        gateways::the_shipped_manifests_apply_and_their_role_suffices_and_grants_nothing_more,
        gateways::the_axum_gateway_in_kubernetes_mode_holds_then_forwards_to_the_function,
        gateways::a_scale_down_is_refused_while_another_gateway_was_active_or_a_scale_up_is_under_way,
        gateways::a_scale_up_on_one_gateway_is_not_undone_by_another_gateways_reaper,
        gateways::a_stream_on_one_gateway_keeps_the_function_up_against_another_and_then_one_scales_it_down,
        faults::a_role_without_watch_on_endpointslices_lists_them_at_most_3_times_in_10_s_and_says_why,
        faults::a_connection_that_stops_answering_is_noticed_and_relisted_within_60_s,
    ];
    // They stop the shared API server: each runs alone (the others share this lock).
    let alone: [runner::Test; 3] = runner::tests![
        faults::held_requests_survive_an_api_server_restart_the_watches_list_again_and_warm_functions_need_no_read,
        faults::a_warm_function_is_served_through_a_30_s_api_server_outage,
        faults::a_watch_that_resumes_on_compacted_history_gets_410_gone_and_lists_again,
    ];
    let args = runner::arguments();
    let shared = Arc::new(std::sync::RwLock::new(()));
    let limit = Duration::from_secs(120);
    let exclusive = |tests: &[runner::Test], alone: bool| -> Vec<libtest_mimic::Trial> {
        tests
            .iter()
            .map(|&(name, test)| {
                let shared = Arc::clone(&shared);
                libtest_mimic::Trial::test(name, move || {
                    let _guard = if alone {
                        (
                            None,
                            Some(shared.write().unwrap_or_else(|e| e.into_inner())),
                        )
                    } else {
                        (Some(shared.read().unwrap_or_else(|e| e.into_inner())), None)
                    };
                    runner::run_one(test, limit)
                })
            })
            .collect()
    };
    let mut trials = exclusive(&tests, false);
    trials.extend(exclusive(&alone, true));
    if args.list {
        libtest_mimic::run(&args, trials).exit();
    }
    let pushes = PUSHES.get_or_init(Mutex::default);
    let log = std::env::var("KUBE_TEST_LOG").ok().map(|level| {
        let level: tracing::Level = level.parse().expect("KUBE_TEST_LOG: a tracing level");
        tracing_subscriber::fmt::layer()
            .with_filter(tracing_subscriber::filter::LevelFilter::from_level(level))
    });
    tracing_subscriber::registry()
        .with(PushTimes(pushes))
        .with(Warnings)
        .with(log)
        .init();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    SNAPSHOTTER.set(recorder.snapshotter()).ok();
    recorder
        .install()
        .expect("the only metrics recorder of this binary");
    let env = TestEnv::start();
    ENV.set(env.dir.clone()).unwrap();
    // The gateway under test finds the server the way a user's would.
    std::env::set_var("KUBECONFIG", env.kubeconfig("admin"));

    println!("\nthe kube-apiserver of these tests: {}", env.dir.display());
    let conclusion = libtest_mimic::run(&args, trials);
    drop(env);
    conclusion.exit();
}
