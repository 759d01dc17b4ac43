//! The waiting page in a real browser (docs/behaviour.md §12): headless Chromium (Debian's `chromium`,
//! which `.ci/run` installs) loads a cold function's URL through the axum example gateway
//! (`--waiting-page`, the bundled hello-world with a 4 s start-up), sees the page, follows its
//! reloads and ends on the function's own answer. A screenshot of the page is kept in
//! `target/tmp/waiting-page.png`.
//!
//! A browser reaches for the network on its own (updates, DNS): this binary runs itself again
//! in a network namespace with only `lo` (see `support::netns`), gateway and browser inside.
//! `harness = false` for that; Chromium missing is a failure, not a skip.

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use support::{netns, runner};

/// Headless Chromium with `args`, on `url`, in this private network; what it printed.
fn chromium(args: &[&str], url: &str) -> String {
    netns::assert_private_network();
    let binary = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("headless Chromium (installed by scripts/test-tools.sh before the tests start)");
    // A profile of its own, removed after: nothing of the machine's is read or left.
    let profile = std::env::temp_dir().join(format!("tsfz-chromium-{}", std::process::id()));
    let output = Command::new(binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

async fn gateway() -> runner::ExampleGateway {
    runner::ExampleGateway::start("axum_gateway", &["--waiting-page", "--hello-startup", "4s"])
        .await
}

async fn a_browser_sees_the_waiting_page_while_the_function_starts() {
    let gateway = gateway().await;
    let shot = artifact("waiting-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=800,500",
        ],
        &gateway.url("/function/hello-world"),
    );
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 4_000,
        "more than a blank page: {} bytes",
        png.len()
    );
    println!(
        "    the waiting page: {} ({} bytes)",
        shot.display(),
        png.len()
    );
}

async fn a_browser_follows_the_reloads_and_ends_on_the_functions_answer() {
    let gateway = gateway().await;
    let started = Instant::now();
    // Virtual time lets the page's meta refresh fire; network waits (the 1 s hold, the
    // function's start) pause it, so the budget only bounds the page's own timers.
    let dom = chromium(
        &["--dump-dom", "--virtual-time-budget=30000"],
        &gateway.url("/function/hello-world"),
    );
    assert!(
        dom.contains("Hello from hello-world!"),
        "the function's own answer in the end: {dom}"
    );
    assert!(!dom.contains("is starting"), "{dom}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "not before the function's 4 s start-up: the reloads were followed ({took:?})"
    );
    println!("    loaded, reloaded and answered by the function after {took:?}");
}

fn main() -> ExitCode {
    if let Some(status) = netns::in_private_network(&[], &["chromium"]) {
        return status;
    }
    let tests: [runner::Test; 2] = runner::tests![
        a_browser_sees_the_waiting_page_while_the_function_starts,
        a_browser_follows_the_reloads_and_ends_on_the_functions_answer,
    ];
    runner::main(&tests, Duration::from_secs(60))
}
