//! The supervisor of one function's process: it probes readiness, reports the exit, and stops
//! the process group when told to or when the provider is gone.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::oneshot;

use super::socket::listens_in_group;
use super::{Phase, PROBE_INTERVAL};
use crate::util::lock;
use crate::{FunctionId, IdlePolicy, ReadinessNotifier, ServiceQueryResponse};

/// Watches one process: probes readiness, reports its exit, stops its group when told to or
/// when the provider is gone.
pub(super) struct Supervisor {
    pub(super) id: FunctionId,
    pub(super) addr: SocketAddr,
    pub(super) http_probe: Option<String>,
    pub(super) grace: Duration,
    pub(super) phase: Arc<Mutex<Phase>>,
    pub(super) notifier: Option<ReadinessNotifier>,
    pub(super) policy: IdlePolicy,
}

impl Supervisor {
    /// Until the process exits or is stopped. The group is killed if this task is dropped
    /// (its runtime shut down).
    pub(super) async fn run(
        self,
        mut child: Child,
        mut group: Group,
        mut stop: oneshot::Receiver<()>,
    ) {
        let _lifeline = child.stdin.take();
        let mut ready = false;
        let mut intruder_seen = false;
        let mut probe_every = Duration::from_millis(1);
        loop {
            tokio::select! {
                status = child.wait() => {
                    let status = describe(status);
                    // Workers that outlive their wrapper would keep the port.
                    group.kill_and_forget();
                    tracing::warn!(function = %self.id, %status, "process exited");
                    *lock(&self.phase) = Phase::Exited { status, was_ready: ready };
                    if let Some(notifier) = &self.notifier {
                        notifier.notify_changed(&self.id);
                    }
                    return;
                }
                // The provider's `Run` was dropped (scale to zero, the provider gone).
                _ = &mut stop => {
                    group.terminate();
                    if tokio::time::timeout(self.grace, child.wait()).await.is_err() {
                        tracing::warn!(function = %self.id, "process ignored SIGTERM; killing");
                    }
                    group.kill_and_forget();
                    let _ = child.wait().await;
                    return;
                }
                _ = tokio::time::sleep(probe_every), if !ready => {
                    probe_every = (probe_every * 2).min(PROBE_INTERVAL);
                    if !probe(self.addr, self.http_probe.as_deref()).await {
                        continue;
                    }
                    if !listens_in_group(self.addr.port(), group.0) {
                        if !intruder_seen {
                            intruder_seen = true;
                            tracing::warn!(
                                function = %self.id,
                                port = self.addr.port(),
                                "the function's port answers, but not from the function's \
                                 processes; not ready"
                            );
                        }
                        continue;
                    }
                    ready = true;
                    *lock(&self.phase) = Phase::Ready;
                    if let Some(notifier) = &self.notifier {
                        let state = ServiceQueryResponse::new(1, 1).scale_to_zero(self.policy);
                        notifier.notify(&self.id, state);
                    }
                }
            }
        }
    }
}

/// A function's process group (its id is the first process's pid).
pub(super) struct Group(pub(super) Option<u32>);

impl Group {
    fn signal(&self, signal: Signal) {
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            // ESRCH: the group is gone already.
            let _ = killpg(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    fn terminate(&self) {
        self.signal(Signal::SIGTERM);
    }

    fn kill(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// The last signal: once the group is empty its id may be reused.
    fn kill_and_forget(&mut self) {
        self.kill();
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn probe(addr: SocketAddr, http_path: Option<&str>) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let Some(path) = http_path else {
            return Some(());
        };
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        head.starts_with(b"HTTP/1.").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(()))
    )
}

pub(super) fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
