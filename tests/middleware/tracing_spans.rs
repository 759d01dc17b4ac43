//! The spans a cold start leaves: one `cold_start` per flight, with the provider calls inside
//! it, and every waiting request's span following from it.

use crate::support::harness as common;

use std::sync::{Arc, Mutex};

use common::Harness;
use tower_scale_from_zero::testing::FakeFunction;
use tower_scale_from_zero::ScalingConfig;
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[derive(Default)]
struct Seen {
    /// (span name, its parent's name)
    spans: Vec<(String, Option<String>)>,
    /// (follower's name, followed span's name)
    follows: Vec<(String, String)>,
}

#[derive(Clone, Default)]
struct Record(Arc<Mutex<Seen>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Record {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let parent = span.parent().map(|p| p.name().to_string());
        let _ = attrs;
        self.0
            .lock()
            .unwrap()
            .spans
            .push((span.name().to_string(), parent));
    }

    fn on_follows_from(&self, span: &Id, follows: &Id, ctx: Context<'_, S>) {
        let (a, b) = (ctx.span(span).unwrap(), ctx.span(follows).unwrap());
        self.0
            .lock()
            .unwrap()
            .follows
            .push((a.name().to_string(), b.name().to_string()));
    }
}

#[tokio::test(start_paused = true)]
async fn one_cold_start_span_with_provider_calls_inside_and_requests_linked_to_it() {
    let record = Record::default();
    let subscriber = tracing_subscriber::registry().with(record.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    let h = Harness::new(ScalingConfig::default())
        .with_function("echo", FakeFunction::new().startup_delay(common::ms(300)));
    let requests: Vec<_> = (0..3)
        .map(|i| {
            let request = h.get("/function/echo");
            let span = tracing::info_span!("request", i);
            tokio::spawn(tracing::Instrument::instrument(request, span))
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }

    let seen = record.0.lock().unwrap();
    let flights: Vec<_> = seen
        .spans
        .iter()
        .filter(|(n, _)| n == "cold_start")
        .collect();
    assert_eq!(flights.len(), 1, "{:?}", seen.spans);
    assert_eq!(flights[0].1, None, "a flight is nobody's child");
    let calls: Vec<_> = seen
        .spans
        .iter()
        .filter(|(n, _)| n == "provider_call")
        .collect();
    assert_eq!(calls.len(), h.provider.get_calls() + h.provider.set_calls());
    assert!(calls
        .iter()
        .all(|(_, parent)| parent.as_deref() == Some("cold_start")));
    let links = seen
        .follows
        .iter()
        .filter(|(a, b)| a == "request" && b == "cold_start")
        .count();
    assert_eq!(links, 3, "{:?}", seen.follows);
}
