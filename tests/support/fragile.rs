//! A function with a fixed capacity, for paced release: `workers` requests at a time, each
//! taking `service`; beyond `refuse_beyond` requests in flight it answers 503 at once (as an
//! overloaded server or its accept queue does).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::Service;

#[derive(Clone, Debug)]
pub struct Fragile {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    workers: tokio::sync::Semaphore,
    service: Duration,
    refuse_beyond: usize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    refused: AtomicUsize,
    served: AtomicUsize,
}

impl Fragile {
    pub fn new(workers: usize, service: Duration, refuse_beyond: usize) -> Self {
        Self {
            state: Arc::new(State {
                workers: tokio::sync::Semaphore::new(workers),
                service,
                refuse_beyond,
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                refused: AtomicUsize::new(0),
                served: AtomicUsize::new(0),
            }),
        }
    }

    /// The most requests it ever had in flight.
    pub fn peak(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    /// Requests it answered 503.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Requests it served.
    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }
}

impl<B> Service<Request<B>> for Fragile {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let state = Arc::clone(&self.state);
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak.fetch_max(now, Ordering::SeqCst);
        if now > state.refuse_beyond {
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            state.refused.fetch_add(1, Ordering::SeqCst);
            return Box::pin(async {
                let mut response = Response::new("overloaded\n".to_string());
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok(response)
            });
        }
        Box::pin(async move {
            {
                let _worker = state.workers.acquire().await.unwrap();
                tokio::time::sleep(state.service).await;
            }
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
            state.served.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new("ok\n".to_string()))
        })
    }
}
