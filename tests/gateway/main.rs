//! End to end, over real TCP on 127.0.0.1: the example gateways as users run them (the
//! binaries `cargo test --all-features` builds, as processes of their own), with local
//! functions (this binary in function mode: see `function_mode`) and with a fake OpenFaaS
//! provider.
//!
//! `harness = false`: the function processes the gateways start are this same binary, so
//! `main` must run before any test harness would.

#[path = "../support/mod.rs"]
mod support;

mod forwarding;
mod grpc;

use support::{faas_provider, runner};

use runner::ExampleGateway as Gateway;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;
type Client_ = Client<HttpConnector, Body>;

fn client() -> Client_ {
    Client::builder(TokioExecutor::new()).build_http()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: std::convert::Infallible| match e {})
        .boxed_unsync()
}

/// `--function` for this binary in function mode: `NAME=<exe> --test-function NAME ARGS`.
fn function(name: &str, args: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    format!("{name}='{}' --test-function {name} {args}", exe.display())
}

/// A temporary file path unique to this run.
fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("e2e-{}-{name}", std::process::id()))
}

/// Runs `example` with `args` to its end: exit code and standard error.
fn run_to_end(example_name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(runner::example(example_name))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code().unwrap_or(-1), text)
}

async fn send(client: &Client_, req: Request<Body>) -> (StatusCode, String) {
    let response = client.request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn get(client: &Client_, url: String) -> (StatusCode, String) {
    send(client, Request::get(url).body(full(Bytes::new())).unwrap()).await
}

/// `n` concurrent GETs; `url(i)` is request `i`'s URL. Answers in request order.
async fn concurrent_gets(
    client: &Client_,
    n: usize,
    url: impl Fn(usize) -> String,
) -> Vec<(StatusCode, String)> {
    let requests: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), url(i));
            tokio::spawn(async move { get(&client, url).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

/// The lines a test function appended to its starts file (one per start: its port).
fn starts(file: &PathBuf) -> Vec<u16> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Whether `addr` stops accepting connections within `patience`.
async fn closes_within(addr: SocketAddr, patience: Duration) -> bool {
    let until = Instant::now() + patience;
    while Instant::now() < until {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

async fn a_large_request_body_streams_through_without_being_buffered() {
    const SIZE: usize = 50 << 20;
    const CHUNK: usize = 64 << 10;
    let gateway = Gateway::start("axum_gateway", &[]).await;
    let client = client();
    let (status, _) = get(&client, gateway.url("/function/hello-world")).await;
    assert_eq!(status, 200);
    let before = peak_rss_kib(gateway.pid());
    let chunks = futures_util::stream::iter(
        (0..SIZE / CHUNK).map(|_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; CHUNK])))),
    );
    let req = Request::post(gateway.url("/function/hello-world/upload"))
        .body(StreamBody::new(chunks).boxed_unsync())
        .unwrap();
    let (status, body) = send(&client, req).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("Hello from hello-world! path=/upload received={SIZE} bytes\n")
    );
    let grew_mib = (peak_rss_kib(gateway.pid()) - before) / 1024;
    println!("    gateway peak RSS grew by {grew_mib} MiB while 50 MiB passed through");
    assert!(
        grew_mib < 16,
        "the gateway buffered the body: +{grew_mib} MiB"
    );
}

async fn two_hundred_concurrent_requests_start_exactly_one_process() {
    let file = temp("two-hundred");
    let f = function(
        "echo",
        &format!("--startup-ms 300 --starts-file {}", file.display()),
    );
    let gateway = Gateway::start("axum_gateway", &["--function", &f]).await;
    let client = client();
    let started = Instant::now();
    let answers = concurrent_gets(&client, 200, |i| {
        gateway.url(&format!("/function/echo/{i}"))
    })
    .await;
    for (i, (status, body)) in answers.into_iter().enumerate() {
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with(&format!("echo GET /{i} body=0")), "{body}");
    }
    println!(
        "    200 requests answered in {} ms after one cold start",
        started.elapsed().as_millis()
    );
    assert_eq!(starts(&file).len(), 1, "exactly one process started");
    let _ = std::fs::remove_file(file);
}

async fn an_unknown_function_is_404_and_an_invalid_one_400() {
    let gateway = Gateway::start("axum_gateway", &[]).await;
    let client = client();
    let (status, body) = get(&client, gateway.url("/function/nobody")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "function nobody.local not found\n");
    let (status, _) = get(&client, gateway.url("/function/NoBody")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

async fn a_function_that_exits_at_once_gives_502_quickly() {
    let f = function("crash", "--exit-at-once");
    let gateway = Gateway::start("axum_gateway", &["--function", &f]).await;
    let started = Instant::now();
    let (status, body) = get(&client(), gateway.url("/function/crash")).await;
    let took = started.elapsed();
    println!("    502 after {} ms", took.as_millis());
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    // A local function's own failure is shown: the gateway runs the user's own commands.
    assert_eq!(
        body,
        "provider error for function crash.local: the process for crash.local exited during \
         start-up (exit status: 3)\n"
    );
    assert!(
        took < Duration::from_secs(5),
        "reported within seconds, not at the 60 s deadline: {took:?}"
    );
}

async fn a_command_that_cannot_be_started_is_a_502_naming_the_function_and_the_error() {
    // Executable, so it passes the start-up check; its interpreter does not exist.
    let script = temp("broken.sh");
    std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let f = format!("broken={}", script.display());
    let gateway = Gateway::start("axum_gateway", &["--function", &f]).await;
    let (status, body) = get(&client(), gateway.url("/function/broken")).await;
    let _ = std::fs::remove_file(&script);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("broken.local"), "{body}");
    assert!(
        body.contains("cannot start") && body.contains("No such file"),
        "{body}"
    );
}

async fn in_front_of_an_openfaas_provider_a_cold_start_makes_one_scale_call() {
    let faas = faas_provider::FaasServer::start().await;
    faas.add(
        "echo",
        "openfaas-fn",
        faas_provider::FakeFn {
            startup: Duration::from_millis(200),
            ..Default::default()
        },
    );
    // The provider URL and credentials from the environment.
    let url = format!("{}/", faas.url());
    let env = [("OPENFAAS_URL", url.as_str()), ("OPENFAAS_TOKEN", "s3cret")];
    let gateway = Gateway::start_with_env("axum_gateway", &[], &env).await;
    let client = client();
    let answers = concurrent_gets(&client, 20, |_| gateway.url("/function/echo/run?x=1")).await;
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            "echo via provider: /function/echo.openfaas-fn/run (0 bytes)"
        );
    }
    assert_eq!(
        faas.with(|s| s.scale_calls.len()),
        1,
        "exactly one scale call"
    );
    assert_eq!(faas.with(|s| s.invocations), 20);
    assert!(faas
        .with(|s| s.authorization.clone())
        .iter()
        .all(|a| a.as_deref() == Some("Bearer s3cret")));
    let (status, _) = get(&client, gateway.url("/function/missing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn the_hyper_gateway_serves_a_cold_start_too() {
    let gateway = Gateway::start("hyper_gateway", &["--hello-startup", "100ms"]).await;
    let client = client();
    let (status, body) = get(&client, gateway.url("/function/hello-world")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::OK,
            "Hello from hello-world! path=/ received=0 bytes\n"
        )
    );
    assert_eq!(
        get(&client, gateway.url("/healthz")).await,
        (StatusCode::OK, "ok\n".to_string())
    );
    assert_eq!(get(&client, gateway.url("/function/nobody")).await.0, 404);
}

async fn bad_options_and_functions_are_refused_with_a_clear_message_and_status_2() {
    let file = temp("bad.toml");
    std::fs::write(
        &file,
        "[functions.a]\ncommand = \"sh\"\ncomand = \"typo\"\n",
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--frobnicate"], "unexpected argument '--frobnicate'"),
        (vec!["--deadline", "soon"], "30s, 500ms, 1m"),
        (vec!["--deadline", "0s"], "greater than zero"),
        (vec!["--listen", "nowhere"], "invalid socket address"),
        (vec!["--namespace", "Bad_NS"], "--namespace"),
        (vec!["--function", "files"], "NAME=COMMAND"),
        (vec!["--function", "Bad_Name=sh"], "function name"),
        (
            vec!["--function", "a=no-such-command-e2e"],
            "not found in PATH",
        ),
        (
            vec!["--functions-file", "/no/such/file.toml"],
            "cannot read the functions file",
        ),
        (
            vec!["--functions-file", &file_arg],
            "line 3: unknown field `comand`",
        ),
        (vec!["--label-selector", "a=b"], "--kubernetes"),
        (
            vec!["--provider-url", "http://admin:hunter2@127.0.0.1:1"],
            "carries credentials",
        ),
        (vec!["--provider-url", "ftp://x"], "http or https"),
        (
            vec!["--provider-url", "http://127.0.0.1:1", "--function", "a=sh"],
            "for local functions",
        ),
        (vec!["--provider-user", "admin"], "--provider-password"),
    ];
    for (args, why) in cases {
        let (code, text) = run_to_end("axum_gateway", &args, &[]);
        assert_eq!(code, 2, "{args:?}: {text}");
        assert!(text.contains(why), "{args:?}: expected {why:?} in:\n{text}");
        assert!(!text.contains("hunter2"), "a password echoed: {text}");
    }
    let _ = std::fs::remove_file(file);
    let (code, help) = run_to_end("axum_gateway", &["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--function <NAME=COMMAND>",
        "--functions-file",
        "--provider-url",
        "[env: OPENFAAS_URL=]",
        "--log-format",
        "--trusted-proxy",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

async fn your_own_functions_run_from_a_flag_and_from_a_file() {
    // A newcomer's own HTTP server: Python's, port as an argument.
    let dir = temp("site");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "hello from a python function\n").unwrap();
    let flag = format!(
        "site=python3 -m http.server {{port}} --bind 127.0.0.1 --directory '{}'",
        dir.display()
    );
    // And one from a functions file: env, its own port variable, a readiness path.
    let file = temp("functions.toml");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &file,
        format!(
            r#"[functions.greeter]
command = "'{}' --test-function greeter"
args = ["--port-env", "HTTP_PORT", "--greeting-from-env"]
env = {{ GREETING = "howdy" }}
port_env = "HTTP_PORT"
readiness_path = "/ready"
"#,
            exe.display()
        ),
    )
    .unwrap();
    let file_arg = file.display().to_string();
    let gateway = Gateway::start(
        "axum_gateway",
        &["--function", &flag, "--functions-file", &file_arg],
    )
    .await;
    let client = client();
    let cold = Instant::now();
    let (status, body) = get(&client, gateway.url("/function/site/")).await;
    let cold = cold.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "hello from a python function\n");
    let warm = Instant::now();
    let (status, _) = get(&client, gateway.url("/function/site/index.html")).await;
    println!(
        "    python3 -m http.server: cold {} ms, warm {:.1} ms",
        cold.as_millis(),
        warm.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(status, 200);
    let (status, body) = get(&client, gateway.url("/function/greeter/hi")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("howdy GET /hi"), "{body}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(file);
}

async fn forwarded_headers_are_set_and_a_clients_own_replaced_unless_trusted() {
    let f = function("echo", "");
    let spoofed = |url: String| {
        Request::get(url)
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "bank.example")
            .header("forwarded", "for=6.6.6.6")
            .body(full(Bytes::new()))
            .unwrap()
    };
    let client = client();
    let gateway = Gateway::start("axum_gateway", &["--function", &f]).await;
    let (status, body) = send(&client, spoofed(gateway.url("/function/echo/h"))).await;
    assert_eq!(status, 200, "{body}");
    let host = gateway.addr.to_string();
    assert!(
        body.contains(&format!("xff=127.0.0.1 proto=http host={host} forwarded=-")),
        "{body}"
    );
    drop(gateway);
    // Behind a trusted proxy (this test, on 127.0.0.1): its headers are kept and extended.
    for example_name in ["axum_gateway", "hyper_gateway"] {
        let gateway = Gateway::start(
            example_name,
            &["--function", &f, "--trusted-proxy", "127.0.0.1"],
        )
        .await;
        let (status, body) = send(&client, spoofed(gateway.url("/function/echo/h"))).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains("xff=6.6.6.6, 127.0.0.1 proto=https host=bank.example"),
            "{example_name}: {body}"
        );
    }
}

async fn a_websocket_upgrade_is_held_while_cold_then_echoes() {
    for example_name in ["axum_gateway", "hyper_gateway"] {
        let f = function("ws", "--startup-ms 300");
        let gateway = Gateway::start(example_name, &["--function", &f]).await;
        let url = format!("ws://{}/function/ws/socket", gateway.addr);
        let connecting = Instant::now();
        let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
        let held = connecting.elapsed();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(held >= Duration::from_millis(300), "not held: {held:?}");
        for text in ["hello", "again"] {
            socket.send(text.into()).await.unwrap();
            let echoed = socket.next().await.unwrap().unwrap();
            assert_eq!(
                echoed.into_text().unwrap().as_str(),
                format!("echo: {text}")
            );
        }
        socket.close(None).await.unwrap();
        println!(
            "    {example_name}: upgrade held {} ms, then echoed",
            held.as_millis()
        );
    }
    // With scale to zero on, an open WebSocket keeps its function up past the idle period.
    let f = function("ws", "");
    let args = ["--function", &f, "--scale-to-zero-after", "1s"];
    let gateway = Gateway::start("axum_gateway", &args).await;
    let url = format!("ws://{}/function/ws/socket", gateway.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    socket.send("still there?".into()).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(2), socket.next())
        .await
        .expect("the function was stopped under an open WebSocket")
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "echo: still there?");
}

async fn a_chunked_get_and_delete_keep_their_bodies() {
    let f = function("echo", "");
    let gateway = Gateway::start("axum_gateway", &["--function", &f]).await;
    let client = client();
    for method in [http::Method::GET, http::Method::DELETE] {
        // A body of unknown length, sent chunked (hyper's client, like the gateway's, sends a
        // GET's body only when told how).
        let chunks = futures_util::stream::iter(
            ["abc", "defg"].map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from(c)))),
        );
        let req = Request::builder()
            .method(method.clone())
            .uri(gateway.url("/function/echo/x"))
            .header("transfer-encoding", "chunked")
            .body(StreamBody::new(chunks).boxed_unsync())
            .unwrap();
        let (status, body) = send(&client, req).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with(&format!("echo {method} /x body=7")),
            "{body}"
        );
    }
}

async fn logs_follow_rust_log_without_colours_off_a_terminal_and_as_json_on_request() {
    for (format, env_log) in [("text", "info"), ("json", "info"), ("text", "warn")] {
        let env = [("RUST_LOG", env_log)];
        let args = ["--log-format", format];
        let gateway = Gateway::start_capturing_logs("axum_gateway", &args, &env).await;
        let _ = get(&client(), gateway.url("/function/hello-world")).await;
        let output = gateway.stop();
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(
            !logs.contains('\u{1b}'),
            "ANSI escapes off a terminal:\n{logs}"
        );
        match (format, env_log) {
            ("json", _) => {
                assert!(logs.contains("function scaled 0 → 1"), "{logs}");
                for line in logs.lines() {
                    let value: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    assert!(
                        value["level"].is_string() && value["fields"].is_object(),
                        "{line}"
                    );
                }
            }
            (_, "warn") => assert!(!logs.contains("INFO"), "RUST_LOG=warn ignored:\n{logs}"),
            _ => assert!(
                logs.contains("INFO") && logs.contains("function scaled 0 → 1"),
                "{logs}"
            ),
        }
    }
}

/// Runs an example gateway, sends it 100 requests held by a slow cold start, then SIGTERM:
/// every client gets a response.
async fn sigterm_with_held_requests(example_name: &str, startup: &str, budget: &str) -> Vec<u16> {
    let mut gateway = Gateway::start(
        example_name,
        &["--hello-startup", startup, "--drain-budget", budget],
    )
    .await;
    let client = client();
    let (status, text) = get(&client, gateway.url("/metrics")).await;
    assert_eq!(status, 200, "{text}");
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let req = Request::get(gateway.url("/function/hello-world"))
                .body(full(Bytes::new()))
                .unwrap();
            tokio::spawn(async move {
                match client.request(req).await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0, // no response at all
                }
            })
        })
        .collect();
    // SIGTERM once all 100 are held (or the cold start is over): however loaded the machine,
    // none is still on its way in.
    let held = r#"scale_from_zero_requests_held{function="hello-world.local"}"#;
    let patience = Instant::now() + Duration::from_secs(10);
    while Instant::now() < patience && !requests.iter().any(|r| r.is_finished()) {
        let (_, text) = get(&client, gateway.url("/metrics")).await;
        let now_held = text
            .lines()
            .find_map(|line| line.strip_prefix(held))
            .and_then(|value| value.trim().parse::<f64>().ok());
        if now_held == Some(100.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.terminate();
    let mut statuses = Vec::new();
    for request in requests {
        let status = tokio::time::timeout(Duration::from_secs(15), request)
            .await
            .expect("every client gets a response in time")
            .unwrap();
        statuses.push(status);
    }
    let exited = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = gateway.try_wait() {
            assert!(status.success(), "the gateway exited with {status}");
            break;
        }
        assert!(
            Instant::now() < exited,
            "the gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    statuses
}

async fn sigterm_answers_every_held_request_of_the_axum_gateway() {
    // The cold start outlasts the drain budget: all 100 are answered 503, none dropped.
    let statuses = sigterm_with_held_requests("axum_gateway", "10s", "1s").await;
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    // A cold start that ends within the budget: all 100 are served.
    let statuses = sigterm_with_held_requests("axum_gateway", "500ms", "10s").await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

async fn sigterm_answers_every_held_request_of_the_hyper_gateway() {
    let statuses = sigterm_with_held_requests("hyper_gateway", "10s", "1s").await;
    assert!(statuses.iter().all(|&s| s == 503), "{statuses:?}");
    let statuses = sigterm_with_held_requests("hyper_gateway", "500ms", "10s").await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

async fn metrics_after_a_cold_start_are_served_at_slash_metrics() {
    let f = function("hello", "--startup-ms 50");
    let gateway = Gateway::start(
        "axum_gateway",
        &["--namespace", "metered", "--function", &f],
    )
    .await;
    let client = client();
    assert_eq!(get(&client, gateway.url("/function/hello")).await.0, 200);
    assert_eq!(get(&client, gateway.url("/function/nope")).await.0, 404);
    let (status, text) = get(&client, gateway.url("/metrics")).await;
    assert_eq!(status, 200);
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let f = r#"function="hello.metered""#;
    assert_eq!(
        value(&format!(
            r#"scale_from_zero_cold_starts_total{{{f},outcome="ready"}}"#
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "scale_from_zero_cold_start_duration_seconds_count{{{f}}}"
        )),
        1.0
    );
    let took = value(&format!(
        "scale_from_zero_cold_start_duration_seconds_sum{{{f}}}"
    ));
    assert!(took > 0.05 && took < 5.0, "{took}");
    assert_eq!(value(&format!("scale_from_zero_requests_held{{{f}}}")), 0.0);
    assert!(value(r#"scale_from_zero_refusals_total{status="404"}"#) >= 1.0);
    assert!(
        !text.contains("nope"),
        "an unknown function became a label value"
    );
}

async fn an_idle_function_is_stopped_and_started_again() {
    let file = temp("idle");
    let f = function("idler", &format!("--starts-file {}", file.display()));
    let gateway = Gateway::start(
        "axum_gateway",
        &["--function", &f, "--scale-to-zero-after", "1s"],
    )
    .await;
    let client = client();
    assert_eq!(get(&client, gateway.url("/function/idler")).await.0, 200);
    let first = starts(&file);
    assert_eq!(first.len(), 1);
    let port_addr: SocketAddr = format!("127.0.0.1:{}", first[0]).parse().unwrap();
    // Idle for 1 s (plus a check interval of 100 ms): the process is stopped.
    assert!(
        closes_within(port_addr, Duration::from_secs(5)).await,
        "the idle function's process was not stopped"
    );
    // The next request starts it again.
    assert_eq!(get(&client, gateway.url("/function/idler")).await.0, 200);
    assert_eq!(starts(&file).len(), 2);
    let _ = std::fs::remove_file(file);
}

async fn dot_segments_after_the_function_name_are_refused_before_forwarding() {
    let gateway = Gateway::start("axum_gateway", &[]).await;
    let client = client();
    for path in [
        "/function/hello-world/../../system/functions",
        "/function/hello-world/./x",
        "/function/hello-world/%2e%2e/secret",
        "/function/hello-world/a/%2E%2e",
        "/function/hello-world/..",
    ] {
        let (status, body) = get(&client, gateway.url(path)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("segment"), "{path}: {body}");
    }
    // Dots inside a segment are fine.
    let (status, body) = get(
        &client,
        gateway.url("/function/hello-world/a..b/.well-known"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("path=/a..b/.well-known"), "{body}");
}

/// The README's table of the examples' options, generated from `--help`: one row per option
/// (flag, environment variable, default, meaning).
fn flags_table(help: &str) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim();
        if line.starts_with("  ") && trimmed.starts_with('-') && !line.starts_with("          ") {
            let flag = trimmed.rsplit(", ").next().unwrap().to_owned();
            rows.push([
                format!("`{flag}`"),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        let Some(row) = rows.last_mut() else { continue };
        if trimmed.is_empty() || trimmed == "Possible values:" {
            continue;
        }
        if let Some(env) = trimmed
            .strip_prefix("[env: ")
            .and_then(|e| e.strip_suffix(']'))
        {
            row[1] = format!("`{}`", env.trim_end_matches('='));
        } else if let Some(default) = trimmed
            .strip_prefix("[default: ")
            .and_then(|d| d.strip_suffix(']'))
        {
            row[2] = format!("`{default}`");
        } else if let Some(value) = trimmed.strip_prefix("- ") {
            let (name, meaning) = value.split_once(": ").unwrap_or((value, ""));
            row[3].push_str(&format!("; `{name}`: {meaning}"));
        } else {
            if !row[3].is_empty() {
                row[3].push(' ');
            }
            row[3].push_str(trimmed);
        }
    }
    let mut table =
        String::from("| option | environment | default | meaning |\n|---|---|---|---|\n");
    for [flag, env, default, meaning] in rows {
        let meaning = meaning.replace('|', "\\|");
        table.push_str(&format!("| {flag} | {env} | {default} | {meaning} |\n"));
    }
    table
}

async fn the_readme_lists_every_option_as_help_does() {
    let (code, help) = run_to_end("axum_gateway", &["--help"], &[]);
    assert_eq!(code, 0);
    let table = flags_table(&help);
    let readme_path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(readme_path).unwrap();
    let (begin, end) = (
        "<!-- flags:begin (generated from --help) -->\n",
        "<!-- flags:end -->",
    );
    let start = readme.find(begin).expect("the README has a flags table") + begin.len();
    let stop = readme[start..].find(end).unwrap() + start;
    if readme[start..stop] != table {
        if std::env::var_os("UPDATE_README").is_some() {
            let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
            std::fs::write(readme_path, updated).unwrap();
        } else {
            panic!(
                "the README's flags table differs from --help; regenerate it with \
                    UPDATE_README=1 cargo test --all-features --test gateway_e2e readme\n{table}"
            );
        }
    }
}

/// Function mode: `--test-function NAME [--startup-ms N] [--starts-file F] [--port-env VAR]
/// [--greeting-from-env] [--exit-at-once]`. Answers
/// `NAME METHOD PATH body=N xff=.. proto=.. host=.. forwarded=..`; echoes WebSocket messages
/// as `echo: TEXT`; `/ready` answers 200.
fn function_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("--test-function") {
        return false;
    }
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let has = |name: &str| args.iter().any(|a| a == name);
    let mut name = args[2].clone();
    if has("--exit-at-once") {
        eprintln!("{name}: exiting at once");
        std::process::exit(3);
    }
    if has("--greeting-from-env") {
        name = std::env::var("GREETING").unwrap();
    }
    let var = flag("--port-env").unwrap_or_else(|| "PORT".into());
    let port: u16 = std::env::var(&var).unwrap().parse().unwrap();
    if let Some(file) = flag("--starts-file") {
        record_start(&file, port);
    }
    let startup = flag("--startup-ms").map_or(Duration::ZERO, |v| {
        Duration::from_millis(v.parse().unwrap())
    });
    function_runtime().block_on(async move {
        tokio::time::sleep(startup).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let name: Arc<str> = name.into();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let name = Arc::clone(&name);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(Arc::clone(&name), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    true
}

/// A function process's start, appended to `file` (its port, one line per start).
fn record_start(file: &str, port: u16) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    writeln!(file, "{port}").unwrap();
}

/// The runtime of a function process, which dies with its gateway: the gateway holds the
/// process's stdin open for as long as it lives.
fn function_runtime() -> tokio::runtime::Runtime {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn answer(
    name: Arc<str>,
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = TokioIo::new(upgrade.await.unwrap());
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() {
                    let reply = format!("echo: {}", message.into_text().unwrap());
                    let _ = ws.send(reply.into()).await;
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let header = |h: &str| {
        req.headers()
            .get(h)
            .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
    };
    let line = format!(
        "{} {} {} body={{}} xff={} proto={} host={} forwarded={}",
        name,
        req.method(),
        req.uri().path(),
        header("x-forwarded-for"),
        header("x-forwarded-proto"),
        header("x-forwarded-host"),
        header("forwarded"),
    );
    let body = req.into_body().collect().await?.to_bytes();
    Ok(Response::new(Full::new(Bytes::from(
        line.replace("{}", &body.len().to_string()) + "\n",
    ))))
}

fn main() {
    if gateway_kit::hello::run_if_asked() || function_mode() || grpc::grpc_function_mode() {
        return;
    }
    // Streaming first: it reads the gateway's peak memory.
    let tests: [runner::Test; 25] = runner::tests![
        forwarding::the_first_forward_after_a_cold_start_is_retried_until_the_port_opens,
        forwarding::a_request_with_a_body_is_never_retried_and_a_refusal_evicts_the_function,
        a_large_request_body_streams_through_without_being_buffered,
        two_hundred_concurrent_requests_start_exactly_one_process,
        an_unknown_function_is_404_and_an_invalid_one_400,
        a_function_that_exits_at_once_gives_502_quickly,
        a_command_that_cannot_be_started_is_a_502_naming_the_function_and_the_error,
        in_front_of_an_openfaas_provider_a_cold_start_makes_one_scale_call,
        the_hyper_gateway_serves_a_cold_start_too,
        bad_options_and_functions_are_refused_with_a_clear_message_and_status_2,
        your_own_functions_run_from_a_flag_and_from_a_file,
        forwarded_headers_are_set_and_a_clients_own_replaced_unless_trusted,
        a_websocket_upgrade_is_held_while_cold_then_echoes,
        a_chunked_get_and_delete_keep_their_bodies,
        logs_follow_rust_log_without_colours_off_a_terminal_and_as_json_on_request,
        sigterm_answers_every_held_request_of_the_axum_gateway,
        sigterm_answers_every_held_request_of_the_hyper_gateway,
        metrics_after_a_cold_start_are_served_at_slash_metrics,
        an_idle_function_is_stopped_and_started_again,
        dot_segments_after_the_function_name_are_refused_before_forwarding,
        the_readme_lists_every_option_as_help_does,
        grpc::a_grpc_call_is_held_through_a_cold_start_and_its_trailers_come_back,
        grpc::the_hyper_gateway_passes_grpc_through_a_cold_start_too,
        grpc::a_server_stream_open_across_the_idle_period_keeps_the_function_up,
        grpc::refused_grpc_calls_get_grpc_status_codes_through_the_gateway,
    ];
    runner::main(&tests, Duration::from_secs(60));
}
