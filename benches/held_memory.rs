//! Memory held per waiting request: 10 000 requests are held for one cold function (each
//! response future polled as it is made, so it has joined the flight), and the live heap is compared
//! with the heap before the calls. The requests themselves are built before the baseline; the
//! bytes a held request moves into its boxed future are reported separately.
//!
//! `cargo bench --all-features --bench held_memory`

#[path = "support/mod.rs"]
mod support;

use std::future::{poll_fn, Future};
use std::task::Poll;

use http::Request;
use support::HeldFunction;
use tower::Service;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const HELD: usize = 10_000;

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let HeldFunction {
            scaler,
            mut service,
            ..
        } = HeldFunction::new();

        let requests: Vec<_> = (0..HELD)
            .map(|_| Request::get("/function/echo").body(()).unwrap())
            .collect();
        let mut futures = Vec::with_capacity(HELD);
        let before = dhat::HeapStats::get();

        for req in requests {
            // Held in place and polled at once, as a server's connection task does with the
            // future `call` gives it (so a request that joins a cold start finds it under way).
            let mut future = service.call(req);
            poll_fn(|cx| {
                assert!(std::pin::Pin::new(&mut future).poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            futures.push(future);
        }
        // Polled until each has taken its place: the flight's task starts, finds the function
        // cold, and wakes its waiters to take places under the hold limit.
        for _ in 0..100 {
            poll_fn(|cx| {
                for future in &mut futures {
                    assert!(std::pin::Pin::new(future).poll(cx).is_pending());
                }
                Poll::Ready(())
            })
            .await;
            if scaler.stats().held == HELD {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(scaler.stats().held, HELD);

        let after = dhat::HeapStats::get();
        let per_request = (after.curr_bytes - before.curr_bytes) as f64 / HELD as f64;
        let blocks = (after.curr_blocks - before.curr_blocks) as f64 / HELD as f64;
        let request_size = std::mem::size_of::<Request<()>>() as f64;
        println!("held_memory: {HELD} requests held for one cold function");
        println!(
            "held_memory: {per_request:.0} bytes and {blocks:.1} allocations per held request"
        );
        println!(
            "held_memory: {:.0} bytes per held request beyond the request itself \
             (the {request_size:.0}-byte Request<()> moves into the boxed future)",
            per_request - request_size
        );
        // What the byte limits count for it: an estimate that must not be below the truth.
        let counted = tower_scale_from_zero::middleware::held_bytes(
            &Request::get("/function/echo").body(()).unwrap(),
        );
        println!(
            "held_memory: counted against the byte limits as {counted} bytes (middleware::held_bytes)"
        );
        assert!(counted as f64 >= per_request, "the count covers what is kept");
        drop(futures);
    });
}
