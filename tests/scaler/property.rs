//! Seeded random schedules on paused time: arrivals for a few functions, clients that leave at
//! any point, pushes, provider faults (errors, hangs, panics, lag), functions removed and
//! re-created, and whole runtimes shut down under running flights. After each schedule:
//!
//! - every request still alive got exactly one response, with a status of the contract;
//! - a request was forwarded (once) if and only if it got the inner service's 200;
//! - nothing was forwarded after its readiness deadline;
//! - no flight, hold slot or provider call is left behind;
//! - at most one successful `set_replicas` per function per cold period.
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

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_scale_from_zero::testing::{FakeFunction, Fault, InMemoryProvider};
use tower_scale_from_zero::{
    FunctionId, FunctionScaler, QueryError, ScaleFromZeroLayer, ScalingConfig,
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

/// The inner service: counts forwards per request and any forward past its deadline.
#[derive(Clone)]
struct Recorder {
    deadline: Duration,
    forwards: Arc<Mutex<HashMap<u64, usize>>>,
    late: Arc<AtomicUsize>,
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
        ready(Ok(Response::new(String::from("forwarded"))))
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

struct Sent {
    id: u64,
    may_leave: bool,
    reply: tokio::task::JoinHandle<Option<u16>>,
}

fn run(seed: u64) -> Result<(), String> {
    let trace = std::env::var_os("PROPERTY_TRACE").is_some();
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
        .build();
    let provider = Arc::new(InMemoryProvider::new());
    for id in &functions {
        provider.add_function(id, random_spec(&mut rng));
    }
    let scaler = FunctionScaler::new(provider.clone(), config);
    let notifier = scaler.readiness_notifier();
    let recorder = Recorder {
        deadline,
        forwards: Arc::default(),
        late: Arc::default(),
    };
    let gateway = ScaleFromZeroLayer::new(scaler.clone()).layer(recorder.clone());
    let mut next_id = 0;
    let mut replies = Vec::new();

    let check_sets = |provider: &InMemoryProvider, id: &FunctionId| {
        let sets = provider.successful_sets_for(id);
        if sets > 1 {
            return Err(format!(
                "{sets} successful set_replicas for {id} in one cold period"
            ));
        }
        Ok(())
    };

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
                        let id = next_id;
                        next_id += 1;
                        let mut req = Request::get(format!("/function/{}.ns", function.name()))
                            .body(String::new())
                            .unwrap();
                        req.extensions_mut().insert(Arrival(Instant::now()));
                        req.extensions_mut().insert(RequestId(id));
                        log(format!(
                            "request {id} for {function} (leaves after {leave_after:?})"
                        ));
                        let call = gateway.clone().oneshot(req);
                        let reply = tokio::spawn(async move {
                            let response = match leave_after {
                                Some(after) => tokio::time::timeout(after, call).await.ok()?,
                                None => call.await,
                            };
                            Some(response.unwrap().status().as_u16())
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
                    _ => tokio::time::sleep(rng.ms(0, 400)).await,
                }
            }
            if !last {
                // Shut the runtime down under whatever is running.
                tokio::time::sleep(rng.ms(0, 300)).await;
                clock = Instant::now().into_std();
                return Ok(());
            }
            // Settle: every deadline, retry and abandoned write is long over.
            tokio::time::sleep(Duration::from_secs(20)).await;
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
        if scaler.stats().flights != 0
            || scaler.stats().held != 0
            || scaler.stats().provider_calls != 0
        {
            return Err(format!(
                "left behind after epoch {epoch}: {} flights, {} held, {} provider calls",
                scaler.stats().flights,
                scaler.stats().held,
                scaler.stats().provider_calls
            ));
        }
    }
    for id in &functions {
        check_sets(&provider, id)?;
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
