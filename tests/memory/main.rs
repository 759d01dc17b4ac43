//! Memory stays flat over 100 000 waits abandoned on a function that never becomes ready: a
//! request that leaves frees its deadline slot, its waker and its hold place at once
//! (docs/behaviour.md §11). Measured with dhat's counting allocator, so this binary holds this one test only.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use tower::{Layer, Service};
use tower_scale_from_zero::testing::{FakeFunction, InMemoryProvider};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScaleFromZeroLayer, ScalingConfig};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const ABANDONED: usize = 100_000;

#[test]
fn memory_stays_flat_over_100_000_abandoned_waits() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let provider = Arc::new(InMemoryProvider::new());
        let id = FunctionId::new("never", "fn").unwrap();
        provider.add_function(&id, FakeFunction::new().never_ready());
        let config = ScalingConfig::builder()
            .readiness_deadline(Duration::from_secs(3_600))
            .build();
        let scaler = FunctionScaler::new(provider.clone(), config);
        let mut service = ScaleFromZeroLayer::new(scaler.clone()).layer(tower::service_fn(
            |_: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(())) },
        ));
        // One request stays for the whole test, so the cold start goes on.
        let mut stays =
            Box::pin(service.call(Request::get("/function/never.fn").body(()).unwrap()));
        poll_once(stays.as_mut()).await;
        // The cold start finds the function cold and wakes its waiters to take their places.
        tokio::time::sleep(Duration::from_millis(500)).await;
        poll_once(stays.as_mut()).await;
        assert_eq!(scaler.stats().held, 1, "the cold start is under way");

        abandon(&mut service, 1_000).await;
        let before = dhat::HeapStats::get();
        abandon(&mut service, ABANDONED).await;
        let after = dhat::HeapStats::get();
        let grown = after.curr_bytes as i64 - before.curr_bytes as i64;
        println!(
            "{ABANDONED} abandoned waits: live heap {} -> {} bytes ({grown:+})",
            before.curr_bytes, after.curr_bytes
        );
        assert!(
            grown < 64 * 1024,
            "the live heap grew by {grown} bytes over {ABANDONED} abandoned waits"
        );
        assert_eq!(scaler.stats().held, 1);
        drop(stays);
    });
}

/// `n` requests, each polled until it waits (it has joined the cold start, queued its deadline
/// and given its waker), then dropped as a client that leaves.
async fn abandon<S>(service: &mut S, n: usize)
where
    S: Service<Request<()>>,
    S::Response: std::fmt::Debug,
    S::Error: std::fmt::Debug,
{
    for _ in 0..n {
        let mut waiting =
            Box::pin(service.call(Request::get("/function/never.fn").body(()).unwrap()));
        poll_once(waiting.as_mut()).await;
        drop(waiting);
    }
}

/// Polls `future` once; it must still be waiting.
async fn poll_once<F: Future<Output: std::fmt::Debug>>(mut future: Pin<&mut F>) {
    poll_fn(|cx| {
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            panic!("answered: {out:?}");
        }
        Poll::Ready(())
    })
    .await;
}
