//! What the `harness = false` test binaries share (their runner, the example binaries as
//! processes) and what any test may use (a free port).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// A named test: an async function run on the binary's runtime.
pub type Test = (
    &'static str,
    fn() -> Pin<Box<dyn Future<Output = ()> + Send>>,
);

/// `tests![a, b]`: the named async functions as [`Test`]s.
macro_rules! tests {
    ($($name:path),* $(,)?) => {
        [$((stringify!($name), (|| Box::pin($name()) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) as fn() -> _)),*]
    };
}
pub(crate) use tests;

/// The trials of `tests`, each run on a multi-threaded runtime of its own and failed after
/// `limit`.
pub fn trials(tests: &[Test], limit: Duration) -> Vec<libtest_mimic::Trial> {
    tests
        .iter()
        .map(|&(name, test)| libtest_mimic::Trial::test(name, move || run_one(test, limit)))
        .collect()
}

/// Runs one test on a runtime of its own; a panic or a timeout fails it.
pub fn run_one(
    test: fn() -> Pin<Box<dyn Future<Output = ()> + Send>>,
    limit: Duration,
) -> Result<(), libtest_mimic::Failed> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome =
        runtime.block_on(async { tokio::time::timeout(limit, tokio::spawn(test())).await });
    // The runtime stops here, with whatever the test left running.
    drop(runtime);
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(panicked)) => Err(panic_message(panicked).into()),
        Err(_) => Err(format!("timed out after {limit:?}").into()),
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(err) => err.to_string(),
    }
}

/// libtest's command line (filters, `--skip`, `--exact`, `--list`, `--test-threads`, ...).
/// These binaries start processes and servers whose timing they measure: one test at a time
/// unless `--test-threads` says otherwise.
pub fn arguments() -> libtest_mimic::Arguments {
    let mut args = libtest_mimic::Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = Some(1);
    }
    args
}

/// A `harness = false` binary's `main` after its own set-up: runs `tests` (see [`trials`]) as
/// libtest would and exits with its status.
pub fn main(tests: &[Test], limit: Duration) -> ! {
    libtest_mimic::run(&arguments(), trials(tests, limit)).exit()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The example binary `name`, as `cargo test --all-features` built it beside this test binary
/// (`target/<profile>/examples/`). Missing, or older than the sources it is built from (a run
/// of one test target, `--test X`, does not rebuild examples): a clear failure, never a skip
/// and never a stale binary.
pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    let build = "cargo build --examples --all-features (cargo test --all-features does it)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", path.display()));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let newer = ["src", "examples", "gateway-kit/src"]
        .iter()
        .flat_map(|dir| sources(&root.join(dir)))
        .find(|source| {
            std::fs::metadata(source)
                .and_then(|m| m.modified())
                .is_ok_and(|changed| changed > built)
        });
    if let Some(source) = newer {
        panic!(
            "{} is older than {}: {build}",
            path.display(),
            source.display()
        );
    }
    path
}

/// The `.rs` files under `dir`.
fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

/// An example gateway as a process of its own, on a free port of 127.0.0.1 (`RUST_LOG=warn`
/// unless `env` says otherwise); stopped with SIGTERM (then SIGKILL) when dropped.
pub struct ExampleGateway {
    child: Option<std::process::Child>,
    pub addr: std::net::SocketAddr,
}

impl ExampleGateway {
    /// Starts the example `name` with `args`; waits until it accepts connections.
    pub async fn start(name: &str, args: &[&str]) -> Self {
        Self::start_with_env(name, args, &[]).await
    }

    pub async fn start_with_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(name, args, env, std::process::Stdio::inherit()).await
    }

    /// As `start_with_env`, keeping what it writes to standard error for [`Self::stop`].
    pub async fn start_capturing_logs(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(name, args, env, std::process::Stdio::piped()).await
    }

    async fn spawn(
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: std::process::Stdio,
    ) -> Self {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = std::process::Command::new(example(name))
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut gateway = Self {
            child: Some(child),
            addr,
        };
        let up = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = gateway.try_wait() {
                panic!("{name} {args:?} exited with {status}");
            }
            assert!(Instant::now() < up, "the gateway never listened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// How it exited, if it has.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().unwrap().try_wait().unwrap()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then how it exited and what it wrote.
    pub fn stop(mut self) -> std::process::Output {
        self.terminate();
        self.child.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for ExampleGateway {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
