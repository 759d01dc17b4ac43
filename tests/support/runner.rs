//! What the `harness = false` test binaries share: their runner and a free port.
#![allow(dead_code)]

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
    ($($name:ident),* $(,)?) => {
        [$((stringify!($name), (|| Box::pin($name()) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) as fn() -> _)),*]
    };
}
pub(crate) use tests;

/// Runs the tests whose name contains the first non-flag argument (all without one), in order,
/// each spawned on `runtime` and failed after `limit`; prints one line per test as libtest
/// does. Whether all passed.
pub fn run(runtime: &tokio::runtime::Runtime, tests: &[Test], limit: Duration) -> bool {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let (mut passed, mut failed) = (0, 0);
    println!("\nrunning {} tests", tests.len());
    for (name, test) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let started = Instant::now();
        let outcome =
            runtime.block_on(async { tokio::time::timeout(limit, tokio::spawn(test())).await });
        let took = started.elapsed();
        match outcome {
            Ok(Ok(())) => {
                println!("test {name} ... ok ({took:.1?})");
                passed += 1;
            }
            Ok(Err(_)) => {
                println!("test {name} ... FAILED ({took:.1?})");
                failed += 1;
            }
            Err(_) => {
                println!("test {name} ... FAILED (timed out after {limit:?})");
                failed += 1;
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    failed == 0
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
