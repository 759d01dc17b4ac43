//! Seeded random schedules on paused time: arrivals for a few functions, clients that leave at
//! any point (while held, or while their response body is still open), pushes, provider faults
//! (errors, hangs, panics, lag) and whole outages, functions removed and re-created, scale to
//! zero with short idle periods, drains, and whole runtimes shut down under running flights.
//! After each schedule:
//!
//! - every request still alive got exactly one response, with a status docs/behaviour.md gives;
//! - a request was forwarded (once) if and only if it got the inner service's 200;
//! - nothing was forwarded after its readiness deadline;
//! - no function was scaled to zero while a response of it was still open;
//! - a drain resolved within its budget (and a moment's grace);
//! - at most one successful scale-up per function per cold period;
//! - once traffic stops, per-function state is back to its baseline: no flight, no held
//!   request, no provider call, nothing counted in flight, no more records than functions.
//!
//! `PROPERTY_SEEDS=N` runs N seeds (default 5 000); `PROPERTY_SEED=S` runs only seed S. A
//! failure prints its seed.

use crate::support::harness as common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, Fault, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, IdlePolicy, QueryError, ScaleFromZeroLayer, ScalingConfig,
    ServiceQuery, ServiceQueryResponse,
};

/// splitmix64: small, seeded, good enough to draw schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

#[derive(Clone, Copy)]
struct Arrival(Instant);

#[derive(Clone, Copy)]
struct RequestId(u64);

/// Responses forwarded and not yet dropped, per function.
type Open = Arc<Mutex<HashMap<String, usize>>>;

/// The inner service: counts forwards per request, any forward past its deadline, and the
/// responses still open per function (the test closes them when it drops them).
#[derive(Clone)]
struct Recorder {
    deadline: Duration,
    forwards: Arc<Mutex<HashMap<u64, usize>>>,
    late: Arc<AtomicUsize>,
    open: Open,
}

impl Service<Request<String>> for Recorder {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<String>) -> Self::Future {
        let Arrival(arrival) = *req.extensions().get().expect("arrival");
        let RequestId(id) = *req.extensions().get().expect("request id");
        if arrival.elapsed() > self.deadline {
            self.late.fetch_add(1, Ordering::SeqCst);
            if std::env::var_os("PROPERTY_TRACE").is_some() {
                eprintln!("request {id} forwarded after {:?}", arrival.elapsed());
            }
        }
        *self.forwards.lock().unwrap().entry(id).or_default() += 1;
        let function = req
            .uri()
            .path()
            .trim_start_matches("/function/")
            .to_string();
        *self.open.lock().unwrap().entry(function).or_default() += 1;
        ready(Ok(Response::new(String::from("forwarded"))))
    }
}

/// The platform, watched: a scale to zero of a function with a response still open is a
/// violation.
struct Watchful {
    provider: Arc<InMemoryProvider>,
    open: Open,
    violations: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl ServiceQuery for Watchful {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        self.provider.get_replicas(function).await
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        self.provider.set_replicas(function, replicas).await
    }

    async fn scale_to_zero(
        &self,
        function: &FunctionId,
        idle: Duration,
    ) -> Result<bool, QueryError> {
        let open = self
            .open
            .lock()
            .unwrap()
            .get(&function.to_string())
            .copied()
            .unwrap_or(0);
        if open > 0 {
            self.violations.lock().unwrap().push(format!(
                "{function} scaled to zero with {open} responses open"
            ));
        }
        self.provider.scale_to_zero(function, idle).await
    }
}

fn random_spec(rng: &mut Rng) -> FakeFunction {
    let mut spec = FakeFunction::new()
        .startup_delay(rng.ms(0, 600))
        .read_after_write_lag(rng.ms(0, 300))
        .min_replicas(rng.below(3));
    if rng.chance(10) {
        spec = spec.never_ready();
    }
    if rng.chance(10) {
        spec = spec.draining(1);
    }
    if rng.chance(20) {
        spec = spec.running(1);
    }
    if rng.chance(60) {
        spec = spec.scale_to_zero(IdlePolicy::After(rng.ms(200, 1_500)));
    }
    spec
}

fn random_fault(rng: &mut Rng) -> Fault {
    match rng.below(4) {
        0 => Fault::Error(QueryError::provider("boom")),
        1 => Fault::Error(QueryError::provider("denied").permanent()),
        2 => Fault::Hang,
        _ => Fault::Panic,
    }
}

use common::paused_runtime as runtime;

/// A forwarded response the client still holds: open until dropped.
struct Opened {
    open: Open,
    function: String,
    response: Option<Response<tower_scale_from_zero::body::ResponseBody<String>>>,
}

impl Drop for Opened {
    fn drop(&mut self) {
        if let Some(response) = self.response.take() {
            // The response (and its activity) ends first; then it no longer counts as open.
            drop(response);
            *self.open.lock().unwrap().get_mut(&self.function).unwrap() -= 1;
        }
    }
}

struct Sent {
    id: u64,
    may_leave: bool,
    reply: tokio::task::JoinHandle<Option<u16>>,
}

fn run(seed: u64) -> Result<(), String> {
    let trace = std::env::var_os("PROPERTY_TRACE").is_some();
    // With PROPERTY_TRACE, the scaler's own debug log too.
    let _log = trace.then(|| {
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_test_writer()
                .finish(),
        )
    });
    let mut rng = Rng(seed);
    let functions: Vec<FunctionId> = (0..3)
        .map(|i| FunctionId::new(&format!("f{i}"), "ns").unwrap())
        .collect();
    let deadline = rng.ms(400, 2_000);
    let config = ScalingConfig::builder()
        .poll_interval(rng.ms(20, 150))
        .readiness_deadline(deadline)
        .cache_ttl(if rng.chance(30) {
            Duration::ZERO
        } else {
            rng.ms(20, 400)
        })
        .call_timeout(rng.ms(50, 300))
        .max_scale_attempts(2 + rng.below(5) as u32)
        .max_held_per_function(3 + rng.below(12) as usize)
        .max_held_total(5 + rng.below(20) as usize)
        .max_backoff(rng.ms(100, 500))
        .scale_to_zero(rng.chance(50))
        .idle_check_interval(rng.ms(50, 300))
        .stale_if_error(if rng.chance(50) {
            rng.ms(0, 5_000)
        } else {
            Duration::from_secs(300)
        })
        .build();
    let provider = Arc::new(InMemoryProvider::new());
    for id in &functions {
        provider.add_function(id, random_spec(&mut rng));
    }
    let open: Open = Arc::default();
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let scaler = FunctionScaler::new(
        Watchful {
            provider: provider.clone(),
            open: open.clone(),
            violations: violations.clone(),
        },
        config,
    );
    let notifier = scaler.readiness_notifier();
    let recorder = Recorder {
        deadline,
        forwards: Arc::default(),
        late: Arc::default(),
        open: open.clone(),
    };
    let gateway = ScaleFromZeroLayer::new(scaler.clone()).layer(recorder.clone());
    let mut next_id = 0;
    let mut replies = Vec::new();

    let check_sets = |provider: &InMemoryProvider, id: &FunctionId| {
        let sets = provider.scale_ups_this_cold_period(id);
        if sets > 1 {
            return Err(format!(
                "{sets} successful scale-ups of {id} in one cold period"
            ));
        }
        Ok(())
    };
    let mut drain = None;

    let epochs = 1 + rng.below(3);
    // Each runtime has its own paused clock, started at the real "now": carry the time over,
    // as runtimes sharing the real clock would see it.
    let mut clock = std::time::Instant::now();
    for epoch in 0..epochs {
        let last = epoch + 1 == epochs;
        let rt = runtime();
        let outcome: Result<(), String> = rt.block_on(async {
            let behind = clock.saturating_duration_since(Instant::now().into_std());
            tokio::time::advance(behind).await;
            let mut sent = Vec::new();
            let start = Instant::now();
            let log = |what: String| {
                if trace {
                    eprintln!("[{:>6} ms] {what}", start.elapsed().as_millis());
                }
            };
            log(format!(
                "epoch {epoch}: {config:?}",
                config = scaler.config()
            ));
            for _ in 0..10 + rng.below(30) {
                match rng.below(12) {
                    0..=4 => {
                        let function = &functions[rng.below(3) as usize];
                        let leave_after = rng.chance(30).then(|| rng.ms(0, 1_500));
                        // Streams and long polls: the response stays open a while.
                        let hold = rng.chance(30).then(|| rng.ms(0, 1_500));
                        let id = next_id;
                        next_id += 1;
                        let mut req = Request::get(format!("/function/{}.ns", function.name()))
                            .body(String::new())
                            .unwrap();
                        req.extensions_mut().insert(Arrival(Instant::now()));
                        req.extensions_mut().insert(RequestId(id));
                        log(format!(
                            "request {id} for {function} (leaves after {leave_after:?}, \
                             holds its response {hold:?})"
                        ));
                        let call = gateway.clone().oneshot(req);
                        let open = Opened {
                            open: open.clone(),
                            function: function.to_string(),
                            response: None,
                        };
                        let reply = tokio::spawn(async move {
                            let response = match leave_after {
                                Some(after) => tokio::time::timeout(after, call).await.ok()?,
                                None => call.await,
                            };
                            let response = response.unwrap();
                            let status = response.status().as_u16();
                            if status == 200 {
                                let mut open = open;
                                open.response = Some(response);
                                if let Some(hold) = hold {
                                    tokio::time::sleep(hold).await;
                                }
                            }
                            Some(status)
                        });
                        sent.push(Sent {
                            id,
                            may_leave: leave_after.is_some(),
                            reply,
                        });
                    }
                    5 => {
                        // Pushes say what a read would say, or less.
                        let function = &functions[rng.below(3) as usize];
                        if let Some(mut state) = provider.current_state(function) {
                            if rng.chance(30) {
                                state.available_replicas = 0;
                            }
                            log(format!("push {function} {state:?}"));
                            notifier.notify(function, state);
                        }
                    }
                    6 => {
                        let fault = random_fault(&mut rng);
                        let times = 1 + rng.below(3) as usize;
                        log(format!("fault {fault:?} x{times}"));
                        if rng.chance(50) {
                            provider.fail_get(fault, times);
                        } else {
                            provider.fail_set(fault, times);
                        }
                    }
                    7 => {
                        // A new cold period: scaled to zero by someone else, or re-deployed.
                        let function = &functions[rng.below(3) as usize];
                        check_sets(&provider, function)?;
                        log(format!("new cold period for {function}"));
                        if rng.chance(20) {
                            provider.remove_function(function);
                        } else {
                            provider.add_function(function, random_spec(&mut rng));
                        }
                    }
                    8 => {
                        // The provider unreachable for a while: every read fails.
                        let lasts = rng.ms(200, 3_000);
                        log(format!("outage for {lasts:?}"));
                        provider.fail_get(Fault::Error(QueryError::provider("outage")), usize::MAX);
                        let provider = provider.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(lasts).await;
                            provider.fail_get(Fault::Error(QueryError::provider("outage")), 0);
                        });
                    }
                    9 if last && drain.is_none() && rng.chance(30) => {
                        let budget = rng.ms(0, 1_000);
                        log(format!("drain with a budget of {budget:?}"));
                        let scaler = scaler.clone();
                        drain = Some((
                            budget,
                            tokio::spawn(async move { scaler.drain(budget).await }),
                        ));
                    }
                    _ => tokio::time::sleep(rng.ms(0, 400)).await,
                }
            }
            if !last {
                // Shut the runtime down under whatever is running.
                tokio::time::sleep(rng.ms(0, 300)).await;
                clock = Instant::now().into_std();
                return Ok(());
            }
            // Settle: every deadline, retry, abandoned write, outage, open response and
            // scale-down is long over.
            provider.fail_get(Fault::Error(QueryError::provider("outage")), 0);
            tokio::time::sleep(Duration::from_secs(20)).await;
            if let Some((budget, drain)) = drain.take() {
                if !drain.is_finished() {
                    return Err("the drain never resolved".into());
                }
                let drained = drain.await.map_err(|e| format!("drain: {e}"))?;
                if drained.took > budget + Duration::from_millis(1_050) {
                    return Err(format!(
                        "a drain with a budget of {budget:?} took {drained:?}"
                    ));
                }
            }
            let stats = scaler.stats();
            for function in &functions {
                let at = stats.function(function);
                if at.held != 0 || at.in_flight != 0 {
                    return Err(format!("{function} not back to its baseline: {at:?}"));
                }
            }
            if stats.functions() > functions.len() {
                return Err(format!("{} functions kept", stats.functions()));
            }
            for Sent {
                id,
                may_leave,
                reply,
            } in sent
            {
                if !reply.is_finished() {
                    return Err(format!("request {id} still pending after 20 s"));
                }
                let status = reply.await.map_err(|e| format!("request {id}: {e}"))?;
                let forwarded = recorder
                    .forwards
                    .lock()
                    .unwrap()
                    .get(&id)
                    .copied()
                    .unwrap_or(0);
                match status {
                    None if !may_leave => return Err(format!("request {id} got no response")),
                    None => {
                        if forwarded > 1 {
                            return Err(format!("request {id} forwarded {forwarded} times"));
                        }
                    }
                    Some(200) if forwarded == 1 => {}
                    Some(404 | 500 | 502 | 503 | 504) if forwarded == 0 => {}
                    Some(status) => {
                        return Err(format!(
                            "request {id}: status {status}, forwarded {forwarded} times"
                        ))
                    }
                }
                replies.push(status);
            }
            Ok(())
        });
        drop(rt);
        outcome?;
        let stats = scaler.stats();
        if stats.flights != 0 || stats.held != 0 || stats.provider_calls != 0 {
            return Err(format!("left behind after epoch {epoch}: {stats:?}"));
        }
    }
    for id in &functions {
        check_sets(&provider, id)?;
    }
    if let Some(violation) = violations.lock().unwrap().first() {
        return Err(violation.clone());
    }
    let late = recorder.late.load(Ordering::SeqCst);
    if late > 0 {
        return Err(format!("{late} requests forwarded after their deadline"));
    }
    Ok(())
}

#[test]
fn random_schedules_keep_every_invariant() {
    // Injected panics are expected by the thousand: keep their messages out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("injected panic"));
        if !injected {
            default_hook(info);
        }
    }));

    let seeds: Vec<u64> = match std::env::var("PROPERTY_SEED") {
        Ok(seed) => vec![seed.parse().expect("PROPERTY_SEED is a number")],
        Err(_) => {
            let n = std::env::var("PROPERTY_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(5_000);
            (0..n).collect()
        }
    };
    let started = std::time::Instant::now();
    for &seed in &seeds {
        if let Err(failure) = run(seed) {
            panic!("seed {seed} failed (rerun with PROPERTY_SEED={seed}): {failure}");
        }
    }
    println!(
        "{} schedules in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
}
