//! A private network namespace for tests that run programs which must not reach any network
//! (a browser, a control plane whose pods have ordinary addresses): the binary runs itself
//! again inside `unshare --net`, with only `lo` in it, up. Nothing sent in there can leave it.

use std::process::{Command, ExitCode};

/// Set in the copy of the binary that runs inside the namespace.
const INSIDE: &str = "TSFZ_PRIVATE_NETNS";

/// Runs this binary again inside a network namespace of its own, with only `lo`, up, and
/// `addresses` (CIDR notation) added to it; returns `None` in that copy, and the copy's exit
/// status in this one. Needs root (or `CAP_SYS_ADMIN`), `unshare` and `ip`; those and the
/// programs in `tools` are installed first when missing (nothing can be downloaded from
/// inside), and without them it fails, never skips.
pub fn in_private_network(addresses: &[&str], tools: &[&str]) -> Option<ExitCode> {
    if std::env::var_os(INSIDE).is_some() {
        let mut commands = vec![vec!["link", "set", "lo", "up"]];
        for address in addresses {
            commands.push(vec!["addr", "add", address, "dev", "lo"]);
        }
        for args in commands {
            let status = Command::new("ip")
                .args(&args)
                .status()
                .expect("`ip` (iproute2) sets up the private network's lo");
            assert!(status.success(), "ip {args:?}: {status}");
        }
        assert_private_network();
        return None;
    }
    // Listing the tests needs none of them.
    if !std::env::args().any(|arg| arg == "--list") {
        install_missing(&[&["ip", "unshare"], tools].concat());
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .status()
        .expect("`unshare` (util-linux) runs this binary in a network namespace of its own");
    if !status.success() && status.code().is_none() {
        eprintln!("the tests in the private network ended with {status}");
    }
    Some(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// Installs the programs in `tools` that are missing, from Debian's packages
/// (`scripts/test-tools.sh`); fails with the script's reason if it cannot.
pub fn install_missing(tools: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/test-tools.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(tools)
        .status()
        .expect("bash runs scripts/test-tools.sh");
    assert!(
        status.success(),
        "the tests need {tools:?}; scripts/test-tools.sh could not install them ({status})"
    );
}

/// Fails unless this process is in a network namespace whose only interface is `lo`: the
/// check before anything is sent outside 127.0.0.0/8, or a program that might is started.
pub fn assert_private_network() {
    // This process's namespace's interfaces (`/sys/class/net` shows those of the namespace
    // sysfs was mounted in).
    let interfaces: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .expect("/proc/self/net/dev lists the interfaces")
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(|name| name.trim().to_string())
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "only inside a network namespace with nothing but lo"
    );
}
