//! The Kubernetes provider and the example gateway on a real control plane: etcd,
//! kube-apiserver, kube-controller-manager (deployment, replicaset and endpointslice
//! controllers) and kwok's simulated node, started by `scripts/kube-test-env.sh
//! start-control-plane`. Nothing here plays a controller: the tests create Deployments and
//! Services as a user would and send requests through the example gateway, a process.
//!
//! Pods get ordinary addresses (10.244.0.0/16) and the gateway forwards to them, so this
//! binary runs itself again inside a network namespace of its own (`unshare --net`) with only
//! `lo`, and the pod CIDR on it: the control plane, the gateways and the function processes
//! (listening on `0.0.0.0`) all live in there, and no packet can leave it. It always starts
//! its own control plane in there (a `KUBE_TEST_DIR` server is outside, unreachable).
//!
//! `cargo test --all-features --test control_plane` runs the tests;
//! `benches/control_plane.sh` runs this binary's measurements (`-- --measure`, release).

#[path = "../support/mod.rs"]
mod support;

#[allow(dead_code, unused_imports)]
#[path = "../kubernetes/cluster.rs"]
mod cluster;

mod cold_path;
mod measure;
mod plane;

use std::process::ExitCode;

use cluster::*;
use support::runner;

fn main() -> ExitCode {
    if let Some(status) = plane::in_private_network() {
        return status;
    }
    let measuring = std::env::args().any(|a| a == "--measure");
    let tests: [runner::Test; 7] = runner::tests![
        cold_path::a_cold_request_is_held_while_the_controllers_start_a_pod_then_forwarded_to_its_ready_address,
        cold_path::an_idle_function_scales_to_zero_through_the_controllers_and_the_next_request_starts_it_again,
        cold_path::a_request_during_a_scale_down_goes_to_the_new_pod_never_the_terminating_one,
        cold_path::a_function_whose_pods_never_become_ready_is_a_504_at_the_deadline,
        cold_path::a_function_whose_rollout_passes_its_progress_deadline_is_a_502_naming_it_long_before_the_deadline,
        cold_path::a_scale_up_a_resource_quota_refuses_is_a_502_naming_it_at_once,
        cold_path::two_gateways_hold_their_requests_through_one_cold_start_and_both_forward_to_the_pod,
    ];
    let args = if measuring {
        libtest_mimic::Arguments::from_iter(["control_plane", "--list"])
    } else {
        runner::arguments()
    };
    let trials = runner::trials(&tests, Duration::from_secs(120));
    if args.list && !measuring {
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let pushes = PUSHES.get_or_init(Mutex::default);
    tracing_subscriber::registry()
        .with(PushTimes(pushes))
        .init();
    let plane = plane::ControlPlane::start();
    ENV.set(plane.dir.clone()).unwrap();
    println!(
        "\nthe control plane of these tests: {}",
        plane.dir.display()
    );
    let status = if measuring {
        measure::run(&plane)
    } else {
        libtest_mimic::run(&args, trials).exit_code()
    };
    drop(plane);
    status
}
