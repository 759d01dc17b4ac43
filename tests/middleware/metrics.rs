//! What the metrics say after cold starts, refusals and provider calls; and that unknown or
//! invalid names never become label values.

use crate::support::harness as common;

use common::{id, Harness};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::{CompositeKey, MetricKind};
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;

type Entry = (
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    key.key()
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect()
}

/// Whether `key` is metric `name` with every one of the `wanted` labels.
fn matches(key: &CompositeKey, name: &str, wanted: &[(&str, &str)]) -> bool {
    let labels = labels(key);
    key.key().name() == name
        && wanted
            .iter()
            .all(|(k, v)| labels.contains(&(k.to_string(), v.to_string())))
}

fn find<'a>(entries: &'a [Entry], name: &str, wanted: &[(&str, &str)]) -> Option<&'a DebugValue> {
    entries
        .iter()
        .find(|(key, ..)| matches(key, name, wanted))
        .map(|(_, _, _, value)| value)
}

/// The sum of every matching counter entry.
fn counter(entries: &[Entry], name: &str, wanted: &[(&str, &str)]) -> u64 {
    entries
        .iter()
        .filter(|(key, ..)| matches(key, name, wanted))
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn snapshot(snapshotter: &Snapshotter) -> Vec<Entry> {
    snapshotter.snapshot().into_vec()
}

#[tokio::test(start_paused = true)]
async fn a_cold_start_and_refusals_are_counted_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(common::ms(300)));
    // Ten concurrent requests for one cold function: one cold start, nine joins.
    let requests: Vec<_> = (0..10)
        .map(|_| tokio::spawn(h.get("/function/echo")))
        .collect();
    tokio::task::yield_now().await;
    let held = snapshot(&snapshotter);
    let function = id("echo").to_string();
    assert_eq!(
        find(
            &held,
            "scale_from_zero_requests_held",
            &[("function", &function)]
        ),
        Some(&DebugValue::Gauge(10.0.into())),
        "all ten held"
    );
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
    // Refused: an unknown function (404) and an invalid name (400).
    assert_eq!(h.get("/function/nosuch").await.status, 404);
    assert_eq!(h.get("/function/Bad_Name").await.status, 400);

    // Each snapshot takes what changed since the previous one: counters add up.
    let mut entries = snapshot(&snapshotter);
    entries.extend(
        held.into_iter()
            .filter(|(key, ..)| key.kind() == MetricKind::Counter),
    );
    let f = [("function", function.as_str())];
    assert_eq!(
        counter(
            &entries,
            "scale_from_zero_cold_starts_total",
            &[f[0], ("outcome", "ready")]
        ),
        1
    );
    match find(&entries, "scale_from_zero_cold_start_duration_seconds", &f) {
        Some(DebugValue::Histogram(values)) => {
            assert_eq!(values.len(), 1);
            assert!((values[0].into_inner() - 0.3).abs() < 0.05, "{values:?}");
        }
        other => panic!("no cold start histogram: {other:?}"),
    }
    // A snapshot takes what changed since the last one: the ten released.
    assert_eq!(
        find(&entries, "scale_from_zero_requests_held", &f),
        Some(&DebugValue::Gauge((-10.0).into())),
        "none held any more"
    );
    assert_eq!(
        counter(&entries, "scale_from_zero_coalesced_joins_total", &[]),
        9
    );
    let calls = |operation, outcome| {
        counter(
            &entries,
            "scale_from_zero_provider_calls_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("set_replicas", "ok"), 1);
    assert_eq!(
        calls("get_replicas", "ok") as usize + calls("get_replicas", "not_found") as usize,
        h.provider.get_calls()
    );
    assert_eq!(calls("get_replicas", "not_found"), 1);
    assert_eq!(
        counter(
            &entries,
            "scale_from_zero_refusals_total",
            &[("status", "404")]
        ),
        1
    );
    assert_eq!(
        counter(
            &entries,
            "scale_from_zero_refusals_total",
            &[("status", "400")]
        ),
        1
    );
    // Never a label value: the unknown name, the invalid one.
    for (key, ..) in &entries {
        for (_, value) in labels(key) {
            assert!(
                !value.contains("nosuch") && !value.contains("Bad_Name"),
                "{key:?}"
            );
        }
    }
}
