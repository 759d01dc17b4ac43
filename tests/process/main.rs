//! `ProcessProvider` with real processes on 127.0.0.1: ports that someone else takes, wrappers
//! that fork workers, processes that die while starting or later, starts that fail or panic.
//!
//! `harness = false`: the functions are this same binary in function mode (see `main`).

#[path = "../support/mod.rs"]
mod support;

use support::runner;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use http::StatusCode;
use tower_scale_from_zero::providers::{ProcessProvider, ProcessSpec};
use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig, ServiceQuery};

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

/// This binary as a function that answers `I am {name}`.
fn serving(name: &str) -> ProcessSpec {
    ProcessSpec::new(exe()).arg("--serve").arg(name)
}

fn id(name: &str) -> FunctionId {
    FunctionId::new(name, "local").unwrap()
}

/// A provider with `functions`, and a scaler it pushes to (polls every 10 s: anything
/// faster than that came from a push).
fn platform(functions: &[(&str, ProcessSpec)]) -> (ProcessProvider, FunctionScaler) {
    let provider = ProcessProvider::new();
    for (name, spec) in functions {
        provider.add_function(&id(name), spec.clone());
    }
    let config = ScalingConfig::builder()
        .poll_interval(Duration::from_secs(10))
        .cache_ttl(Duration::from_secs(60))
        .readiness_deadline(Duration::from_secs(20))
        .build();
    let scaler = FunctionScaler::new(provider.clone(), config);
    provider.push_readiness_to(scaler.readiness_notifier());
    (provider, scaler)
}

/// `GET /` at `addr` with a raw HTTP/1.0 exchange: the body.
fn get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits up to `patience` for `condition`.
async fn eventually(patience: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < patience {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// How many processes have `text` in their command line.
fn running_with(text: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(text))
        })
        .count()
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it holds no port.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, s)| s.trim().starts_with('Z'))
    })
}

async fn a_port_taken_by_another_process_is_never_mistaken_for_the_function() {
    let pid_file = std::env::temp_dir().join(format!("intruder-{}", std::process::id()));
    let spec = ProcessSpec::new(exe()).arg("--intruder").arg(&pid_file);
    let (provider, scaler) = platform(&[("victim", spec)]);
    let outcome = scaler.scale(&id("victim")).await;
    let intruder: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The intruder listened on the victim's port all along; the victim never did.
    let upstream = provider.upstream(&id("victim"));
    let answered = upstream.map(get);
    let _ = std::process::Command::new("kill")
        .arg(intruder.to_string())
        .status();
    let _ = std::fs::remove_file(&pid_file);
    let err = outcome.expect_err("the intruder's port must not make the victim ready");
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
    assert!(err.to_string().contains("exited during start-up"), "{err}");
    assert_eq!(upstream, None, "answered: {answered:?}");
}

async fn stopping_a_function_stops_every_process_of_its_group() {
    // A shell wrapper whose worker holds the port, as `sh -c`, `npm start` do.
    let worker_pid = std::env::temp_dir().join(format!("worker-{}", std::process::id()));
    let script = format!(
        "'{}' --serve worker --pid-file '{}' & wait",
        exe().display(),
        worker_pid.display()
    );
    let spec = ProcessSpec::new("sh")
        .arg("-c")
        .arg(script)
        .stop_grace(Duration::from_secs(2));
    let (provider, scaler) = platform(&[("wrapped", spec)]);
    scaler.scale(&id("wrapped")).await.unwrap();
    let addr = provider.upstream(&id("wrapped")).unwrap();
    assert_eq!(get(addr).unwrap(), "I am worker");
    let worker: u32 = std::fs::read_to_string(&worker_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = std::fs::remove_file(&worker_pid);
    assert!(alive(worker));

    provider.set_replicas(&id("wrapped"), 0).await.unwrap();
    let stopped = eventually(Duration::from_secs(5), || !accepts(addr) && !alive(worker)).await;
    if !stopped {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(worker.to_string())
            .status();
    }
    assert!(stopped, "the worker outlived its wrapper and kept the port");
}

async fn a_process_that_exits_while_starting_fails_the_cold_start_at_once() {
    let spec = ProcessSpec::new(exe()).arg("--exit-after-ms").arg("300");
    let (_provider, scaler) = platform(&[("crashing", spec)]);
    let started = Instant::now();
    let err = scaler.scale(&id("crashing")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
    assert!(err.to_string().contains("exited during start-up"), "{err}");
    assert!(err.to_string().contains("crashing.local"), "{err}");
    // The poll interval is 10 s: only a push ends it sooner (5 s leaves a loaded machine
    // room to start the process).
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

async fn a_process_that_exits_after_it_was_ready_is_started_again_by_the_next_request() {
    let spec = serving("brief").arg("--exit-after-ms").arg("500");
    let (provider, scaler) = platform(&[("brief", spec)]);
    scaler.scale(&id("brief")).await.unwrap();
    let function = id("brief");
    assert!(scaler.stats().function(&function).warm);
    // The cache would call it warm for 60 s; its exit takes it out at once.
    assert!(
        eventually(Duration::from_secs(3), || !scaler
            .stats()
            .function(&function)
            .warm)
        .await,
        "still warm after its process exited"
    );
    let state = scaler.scale(&function).await.unwrap();
    assert!(state.is_ready());
    assert_eq!(provider.starts(), 2);
    assert!(get(provider.upstream(&function).unwrap())
        .unwrap()
        .contains("I am brief"));
}

async fn a_failed_start_leaves_no_process_and_no_state_and_others_keep_working() {
    let marker = format!("lonely-{}", std::process::id());
    let (provider, scaler) = platform(&[("a", serving(&marker)), ("b", serving("b"))]);
    // Outside a Tokio runtime a start cannot supervise its process: a clear error, at once.
    let outside = provider.clone();
    let outcome = std::thread::spawn(move || {
        let function = id("a");
        // One poll: the start has no await before the spawn.
        let start = std::pin::pin!(outside.set_replicas(&function, 1));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(start, &mut cx) {
            std::task::Poll::Ready(outcome) => outcome.map_err(|e| e.to_string()),
            std::task::Poll::Pending => Err("pending".into()),
        }
    })
    .join()
    .expect("no panic");
    let message = outcome.unwrap_err();
    assert!(message.contains("Tokio runtime"), "{message}");
    assert_eq!(provider.starts(), 0);
    assert_eq!(running_with(&marker), 0, "no process left running");

    let state = provider.get_replicas(&id("a")).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (0, 0));
    scaler.scale(&id("b")).await.unwrap();
    scaler.scale(&id("a")).await.unwrap();
    assert!(get(provider.upstream(&id("a")).unwrap())
        .unwrap()
        .contains(&marker));
}

async fn a_command_that_does_not_exist_is_a_502_naming_the_function_and_the_error() {
    let spec = ProcessSpec::new("/nonexistent/bin/fn");
    let (provider, scaler) = platform(&[("ghost", spec)]);
    let err = scaler.scale(&id("ghost")).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
    let message = err.to_string();
    assert!(message.contains("ghost.local"), "{message}");
    assert!(message.contains("/nonexistent/bin/fn"), "{message}");
    assert!(message.contains("No such file"), "{message}");
    let state = provider.get_replicas(&id("ghost")).await.unwrap();
    assert_eq!(state.desired_replicas, 0, "no state left behind");
}

async fn the_port_variable_is_configurable() {
    let spec = serving("custom")
        .arg("--port-env")
        .arg("HTTP_PORT")
        .port_env("HTTP_PORT");
    let (provider, scaler) = platform(&[("custom", spec)]);
    scaler.scale(&id("custom")).await.unwrap();
    assert_eq!(
        get(provider.upstream(&id("custom")).unwrap()).unwrap(),
        "I am custom"
    );
}

async fn scale_to_zero_and_drop_stop_the_process() {
    let (provider, scaler) = platform(&[("hello", serving("hello").http_probe("/"))]);
    let function = id("hello");
    scaler.scale(&function).await.unwrap();
    let first = provider.upstream(&function).unwrap();
    assert!(accepts(first));
    provider.set_replicas(&function, 0).await.unwrap();
    assert!(eventually(Duration::from_secs(5), || !accepts(first)).await);
    let state = provider.get_replicas(&function).await.unwrap();
    assert_eq!((state.desired_replicas, state.available_replicas), (0, 0));
    assert_eq!(provider.upstream(&function), None);

    provider.set_replicas(&function, 1).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || provider
            .upstream(&function)
            .is_some())
        .await
    );
    let second = provider.upstream(&function).unwrap();
    assert_eq!(provider.starts(), 2);
    drop((provider, scaler));
    assert!(
        eventually(Duration::from_secs(5), || !accepts(second)).await,
        "no child outlives the provider"
    );
}

/// Function modes. `--serve NAME [--port-env VAR] [--exit-after-ms N] [--pid-file F]`: answer
/// every request with `I am NAME`. `--exit-after-ms N` alone: exit with status 3 after N ms,
/// never listening. `--intruder PID_FILE`: start another process (in a group of its own) that
/// listens on this function's port, then fail to bind it and exit after 1 s.
fn function_mode(args: &[String]) -> bool {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let exit_after = flag("--exit-after-ms").map(|ms| Duration::from_millis(ms.parse().unwrap()));
    if let Some(path) = flag("--intruder") {
        let port = std::env::var("PORT").unwrap();
        let mut intruder = std::process::Command::new(exe());
        intruder.args(["--serve", "intruder"]);
        std::os::unix::process::CommandExt::process_group(&mut intruder, 0);
        // Detached on purpose: it must outlive this process; the test kills it.
        #[allow(clippy::zombie_processes)]
        let intruder = intruder
            .env("PORT", &port)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(&path, intruder.id().to_string()).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        while !accepts(addr) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_secs(1));
        match TcpListener::bind(addr) {
            Ok(_) => std::process::exit(0),
            Err(e) => {
                eprintln!("victim: cannot listen on {addr}: {e}");
                std::process::exit(1)
            }
        }
    }
    let Some(name) = flag("--serve") else {
        if let Some(after) = exit_after {
            std::thread::sleep(after);
            std::process::exit(3);
        }
        return false;
    };
    let var = flag("--port-env").unwrap_or_else(|| "PORT".into());
    let port: u16 = std::env::var(&var).unwrap().parse().unwrap();
    if let Some(path) = flag("--pid-file") {
        std::fs::write(path, std::process::id().to_string()).unwrap();
    }
    if let Some(after) = exit_after {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            std::process::exit(3);
        });
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut head = [0u8; 1024];
        let _ = stream.read(&mut head);
        let body = format!("I am {name}");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    true
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if function_mode(&args) {
        return;
    }
    let tests: [runner::Test; 8] = runner::tests![
        a_port_taken_by_another_process_is_never_mistaken_for_the_function,
        stopping_a_function_stops_every_process_of_its_group,
        a_process_that_exits_while_starting_fails_the_cold_start_at_once,
        a_process_that_exits_after_it_was_ready_is_started_again_by_the_next_request,
        a_failed_start_leaves_no_process_and_no_state_and_others_keep_working,
        a_command_that_does_not_exist_is_a_502_naming_the_function_and_the_error,
        the_port_variable_is_configurable,
        scale_to_zero_and_drop_stop_the_process,
    ];
    runner::main(&tests, Duration::from_secs(30));
}
