//! Cold starts are detached from any one request; waiters that leave free their places.

use crate::support::harness as common;

use common::{id, ms, Harness};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

#[tokio::test(start_paused = true)]
async fn the_request_that_started_the_flight_leaves_and_the_others_still_succeed() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(ms(1_000)));
    let starter = tokio::spawn(h.get("/function/echo"));
    tokio::time::sleep(ms(10)).await;
    let others: Vec<_> = (0..10)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    tokio::time::sleep(ms(100)).await;
    assert_eq!(h.scaler.stats().function(&id("echo")).held, 11);

    starter.abort(); // hyper drops the response future when the client disconnects
    assert!(starter.await.unwrap_err().is_cancelled());
    assert_eq!(
        h.scaler.stats().function(&id("echo")).held,
        10,
        "its place is freed at once"
    );

    for other in others {
        assert_eq!(other.await.unwrap().status, 200);
    }
    assert_eq!(h.provider.successful_sets(), 1, "the scale-up completed");
    assert_eq!(h.provider.desired_replicas(&id("echo")), Some(1));
    assert_eq!(
        h.inner_calls(),
        10,
        "the departed request was never forwarded"
    );
    assert_eq!(h.scaler.stats().flights, 0);
}

#[tokio::test(start_paused = true)]
async fn when_every_waiter_leaves_their_places_are_freed_and_the_cold_start_goes_on() {
    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(ms(1_000)));
    let waiters: Vec<_> = (0..50)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    tokio::time::sleep(ms(200)).await;
    assert_eq!(h.scaler.stats().held, 50);
    assert_eq!(h.scaler.stats().flights, 1);

    for waiter in &waiters {
        waiter.abort();
    }
    for waiter in waiters {
        assert!(waiter.await.unwrap_err().is_cancelled());
    }
    assert_eq!(h.scaler.stats().held, 0, "every hold slot is free");
    assert_eq!(
        h.scaler.stats().flights,
        1,
        "the cold start belongs to the scaler: it goes on"
    );
    assert_eq!(h.inner_calls(), 0);

    // The platform was asked already; a new request waits for the same start, no second set.
    assert_eq!(h.get("/function/echo").await.status, 200);
    assert_eq!(h.provider.successful_sets(), 1);
    assert_eq!(h.scaler.stats().flights, 0, "and then it ended");
}
