//! A flight whose task can no longer finish (its runtime shut down) is never joined: waiters
//! move to a fresh flight, later requests start one, and nothing is left behind.

use crate::support::harness as common;

use std::sync::mpsc;
use std::time::Duration;

use common::{id, Harness};
use tower_scale_from_zero::testing::{FakeFunction, Fault};
use tower_scale_from_zero::ScalingConfig;

use common::paused_runtime as runtime;

/// For a runtime that waits on another thread: paused time would jump to the next timer (the
/// deadline) as soon as it is idle. Real time, bounded by the test's own timeout.
fn real_time_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn harness() -> Harness {
    let h = Harness::new(ScalingConfig::default()).with_function("echo", FakeFunction::new());
    // The first query hangs, so the first flight is still under way when its runtime goes.
    h.provider.fail_get(Fault::Hang, 1);
    h
}

/// Starts a flight for `echo` on a runtime of its own, then shuts that runtime down.
fn start_a_flight_and_drop_its_runtime(h: &Harness) {
    let setup = runtime();
    setup.block_on(async {
        let request = tokio::spawn(h.get("/function/echo"));
        while h.scaler.stats().flights == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!request.is_finished());
    });
    drop(setup);
}

#[test]
fn a_flight_cancelled_with_its_runtime_is_never_joined_again() {
    let h = harness();
    start_a_flight_and_drop_its_runtime(&h);
    assert_eq!(
        h.scaler.stats().flights,
        0,
        "the cancelled flight removed itself"
    );
    assert_eq!(h.scaler.stats().held, 0);

    let reply = runtime().block_on(h.get("/function/echo"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(h.provider.successful_sets(), 1);
    assert_eq!(h.scaler.stats().flights, 0);
    assert_eq!(h.scaler.stats().held, 0);
}

#[test]
fn waiters_of_a_flight_whose_runtime_shut_down_move_to_a_fresh_one() {
    let h = harness();
    let h = &h;
    let (joined_tx, joined_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();

    std::thread::scope(|scope| {
        // A waiter on another runtime joins the flight before the flight's runtime goes.
        let waiter = scope.spawn(move || {
            real_time_runtime().block_on(async {
                go_rx.recv().unwrap();
                let request = tokio::spawn(h.get("/function/echo"));
                while h.scaler.stats().function(&id("echo")).held < 2 {
                    tokio::task::yield_now().await;
                }
                joined_tx.send(()).unwrap();
                let healed = tokio::time::timeout(Duration::from_secs(10), request);
                healed.await.expect("healed in well under 10 s").unwrap()
            })
        });
        let setup = runtime();
        setup.block_on(async {
            let _request = tokio::spawn(h.get("/function/echo"));
            while h.scaler.stats().flights == 0 {
                tokio::task::yield_now().await;
            }
            go_tx.send(()).unwrap();
            // Blocks this runtime: the flight cannot move on before it is dropped.
            joined_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        });
        drop(setup);

        let reply = waiter.join().unwrap();
        assert_eq!(reply.status, 200, "not a 504: {}", reply.body);
    });
    assert_eq!(
        h.provider.get_calls(),
        1 + 2,
        "the hung query; then a query and a look"
    );
    assert_eq!(h.provider.successful_sets(), 1);
    assert_eq!(h.scaler.stats().flights, 0);
    assert_eq!(h.scaler.stats().held, 0);
}
