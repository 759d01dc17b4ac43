//! [`ProcessProvider`]: functions are local commands, started on demand.
//!
//! `set_replicas(n > 0)` starts the function's command with `PORT` (or the variable named by
//! [`ProcessSpec::port_env`]) set to a free port on 127.0.0.1; the function is ready once that
//! port accepts a connection (or, with [`ProcessSpec::http_probe`], once a `GET` there
//! answers) **and**, on Linux, the listening socket belongs to the function's own processes: a
//! port taken by another program meanwhile is never mistaken for the function. `set_replicas(0)`
//! stops it. A process runs at most one replica: any `n > 0` means "running".
//!
//! Each function runs in a process group of its own, so wrappers (`sh -c`, `npm start`) and
//! the workers they fork are stopped together: `SIGTERM` to the group, then `SIGKILL` after
//! [`ProcessSpec::stop_grace`] (default 5 s).
//!
//! A process that exits while starting is reported to the scaler at once
//! ([`ReadinessNotifier::notify_changed`]) and the cold start ends with 502 naming the exit. A
//! process that exits after it was ready is forgotten by the scaler's cache at once, so the
//! next request starts it again. Processes are stopped when the provider is dropped (and
//! killed when their runtime shuts down). If the gateway itself is killed (no destructor
//! runs), each child's standard input closes: a command that exits at end of input dies with
//! the gateway.
//!
//! No lock is held while a process is spawned: other functions' requests never wait behind a
//! fork, and a failed or panicking start leaves no state behind.
//!
//! ```no_run
//! use tower_scale_from_zero::providers::{ProcessProvider, ProcessSpec};
//! use tower_scale_from_zero::{FunctionId, FunctionScaler, ScalingConfig};
//!
//! let provider = ProcessProvider::new();
//! let id = FunctionId::new("hello", "local").unwrap();
//! provider.add_function(&id, ProcessSpec::new("python3").arg("-m").arg("http.server").arg_port());
//! let scaler = FunctionScaler::new(provider.clone(), ScalingConfig::default());
//! provider.push_readiness_to(scaler.readiness_notifier());
//! // Once ready, `provider.upstream(&id)` is the address to forward to.
//! ```

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::{
    FunctionId, IdlePolicy, QueryError, ReadinessNotifier, ServiceQuery, ServiceQueryResponse,
};

/// How to run one function.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    program: OsString,
    args: Vec<Arg>,
    env: Vec<(OsString, OsString)>,
    port_env: OsString,
    http_probe: Option<String>,
    scale_to_zero: IdlePolicy,
    stop_grace: Duration,
}

#[derive(Clone, Debug)]
enum Arg {
    Plain(OsString),
    Port,
}

impl ProcessSpec {
    /// Runs `program` (looked up in `PATH` if it has no slash).
    pub fn new(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            port_env: "PORT".into(),
            http_probe: None,
            scale_to_zero: IdlePolicy::Never,
            stop_grace: Duration::from_secs(5),
        }
    }

    /// Stops the process after `idle` without a request in flight (when the scaler has scale
    /// to zero on); the next request starts it again.
    pub fn scale_to_zero_after(mut self, idle: Duration) -> Self {
        self.scale_to_zero = IdlePolicy::After(idle);
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(Arg::Plain(arg.into()));
        self
    }

    /// Adds the chosen port as an argument (it is also in the port variable).
    pub fn arg_port(mut self) -> Self {
        self.args.push(Arg::Port);
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The environment variable that carries the port the process must listen on (default
    /// `PORT`).
    pub fn port_env(mut self, name: impl Into<OsString>) -> Self {
        self.port_env = name.into();
        self
    }

    /// Ready means `GET {path}` answers with any status, not just an open port.
    pub fn http_probe(mut self, path: impl Into<String>) -> Self {
        self.http_probe = Some(path.into());
        self
    }

    /// How long a stopped function's processes get between `SIGTERM` and `SIGKILL` (default
    /// 5 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }
}

/// Starts and stops local processes as functions. Cloning shares the processes.
#[derive(Clone, Default)]
pub struct ProcessProvider {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    functions: Mutex<HashMap<FunctionId, Slot>>,
    notifier: Mutex<Option<ReadinessNotifier>>,
    starts: AtomicUsize,
}

struct Slot {
    spec: ProcessSpec,
    run: Option<Run>,
}

/// One process, from the moment its start was decided. Dropping it (scale to zero, provider
/// dropped) stops the process group.
struct Run {
    addr: SocketAddr,
    phase: Arc<Mutex<Phase>>,
    /// Dropping it tells the supervisor to stop the group.
    _stop: oneshot::Sender<()>,
}

#[derive(Clone, Debug)]
enum Phase {
    /// From the decision to start on (the fork happens outside the lock).
    Starting,
    Ready,
    Exited {
        status: String,
        was_ready: bool,
    },
}

/// Readiness probes start 1 ms after the spawn and back off, doubling, to this interval: a
/// fast process is seen within a millisecond or two, a slow one costs few probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// A lock that stays usable after a panic elsewhere: every critical section here leaves the
/// map consistent, so a poisoned lock is still a good one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ProcessProvider {
    /// A provider with no functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the function `id`. Its process is started on demand.
    pub fn add_function(&self, id: &FunctionId, spec: ProcessSpec) {
        let slot = Slot { spec, run: None };
        lock(&self.inner.functions).insert(id.clone(), slot);
    }

    /// Pushes readiness to `notifier` as soon as a process accepts connections, and reports
    /// exits at once.
    pub fn push_readiness_to(&self, notifier: ReadinessNotifier) {
        *lock(&self.inner.notifier) = Some(notifier);
    }

    /// Where the function's process listens, while it is running and ready.
    pub fn upstream(&self, id: &FunctionId) -> Option<SocketAddr> {
        let functions = lock(&self.inner.functions);
        let run = functions.get(id)?.run.as_ref()?;
        let ready = matches!(*lock(&run.phase), Phase::Ready);
        ready.then_some(run.addr)
    }

    /// How many processes have been started so far.
    pub fn starts(&self) -> usize {
        self.inner.starts.load(Ordering::SeqCst)
    }

    /// Spawns the process of a `Run` already recorded in its slot (the lock is not held).
    fn spawn(
        &self,
        id: &FunctionId,
        spec: &ProcessSpec,
        addr: SocketAddr,
        phase: Arc<Mutex<Phase>>,
        stopped: oneshot::Receiver<()>,
    ) -> Result<(), QueryError> {
        // Tokio forks first and then panics without a runtime, leaving an orphan: refuse early.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(QueryError::provider(format!(
                "cannot start {id}: ProcessProvider must be called from within a Tokio runtime"
            ))
            .permanent());
        }
        let port = addr.port().to_string();
        let mut command = Command::new(&spec.program);
        for arg in &spec.args {
            match arg {
                Arg::Plain(arg) => command.arg(arg),
                Arg::Port => command.arg(&port),
            };
        }
        command
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env(&spec.port_env, &port)
            // A lifeline: the pipe closes when this process dies, however it dies, so a command
            // that exits on end-of-input never outlives the gateway.
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        command.process_group(0);
        let child = command.spawn().map_err(|e| {
            QueryError::provider(format!("cannot start {:?} for {id}: {e}", spec.program))
                .permanent()
        })?;
        self.inner.starts.fetch_add(1, Ordering::SeqCst);
        tracing::info!(function = %id, %addr, pid = child.id(), "process started");
        let notifier = lock(&self.inner.notifier).clone();
        let supervisor = Supervisor {
            id: id.clone(),
            addr,
            http_probe: spec.http_probe.clone(),
            grace: spec.stop_grace,
            phase,
            notifier,
            policy: spec.scale_to_zero,
        };
        // Owned by the supervisor from here: when its task is dropped (the runtime shut down),
        // dropping the group kills it.
        let group = Group(child.id());
        tokio::spawn(supervisor.run(child, group, stopped));
        Ok(())
    }
}

/// Removes a `Run` that never got its process (spawn failed or panicked) from its slot,
/// unless the slot has moved on to another run meanwhile.
struct Unclaimed<'a> {
    provider: &'a ProcessProvider,
    id: &'a FunctionId,
    phase: Option<Arc<Mutex<Phase>>>,
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        let Some(phase) = self.phase.take() else {
            return;
        };
        let mut functions = lock(&self.provider.inner.functions);
        if let Some(slot) = functions.get_mut(self.id) {
            if slot
                .run
                .as_ref()
                .is_some_and(|run| Arc::ptr_eq(&run.phase, &phase))
            {
                slot.run = None;
            }
        }
    }
}

#[async_trait]
impl ServiceQuery for ProcessProvider {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        let mut functions = lock(&self.inner.functions);
        let slot = functions
            .get_mut(function)
            .ok_or_else(|| QueryError::not_found("no such function configured"))?;
        let phase = slot.run.as_ref().map(|run| lock(&run.phase).clone());
        let policy = slot.spec.scale_to_zero;
        let state = |desired, available| {
            Ok(ServiceQueryResponse::new(desired, available).scale_to_zero(policy))
        };
        match phase {
            None => state(0, 0),
            Some(Phase::Starting) => state(1, 0),
            Some(Phase::Ready) => state(1, 1),
            Some(Phase::Exited { status, was_ready }) => {
                slot.run = None;
                if was_ready {
                    state(0, 0)
                } else {
                    Err(QueryError::provider(format!(
                        "the process for {function} exited during start-up ({status})"
                    ))
                    .permanent())
                }
            }
        }
    }

    async fn set_replicas(&self, function: &FunctionId, replicas: u64) -> Result<(), QueryError> {
        let (spec, addr, phase, stopped) = {
            let mut functions = lock(&self.inner.functions);
            let slot = functions
                .get_mut(function)
                .ok_or_else(|| QueryError::not_found("no such function configured"))?;
            if replicas == 0 {
                if slot.run.take().is_some() {
                    tracing::info!(function = %function, "process stopped");
                }
                return Ok(());
            }
            let running = slot
                .run
                .as_ref()
                .is_some_and(|run| !matches!(*lock(&run.phase), Phase::Exited { .. }));
            if running {
                return Ok(());
            }
            let port = free_port()
                .map_err(|e| QueryError::provider(format!("no free port for {function}: {e}")))?;
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let phase = Arc::new(Mutex::new(Phase::Starting));
            let (stop, stopped) = oneshot::channel();
            slot.run = Some(Run {
                addr,
                phase: Arc::clone(&phase),
                _stop: stop,
            });
            (slot.spec.clone(), addr, phase, stopped)
        };
        // The fork happens without the lock; until it is done, the slot says "starting", so a
        // concurrent call neither starts a second process nor waits.
        let mut unclaimed = Unclaimed {
            provider: self,
            id: function,
            phase: Some(Arc::clone(&phase)),
        };
        self.spawn(function, &spec, addr, phase, stopped)?;
        unclaimed.phase = None;
        Ok(())
    }
}

impl fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("functions", &lock(&self.inner.functions).len())
            .field("starts", &self.starts())
            .finish()
    }
}

/// Watches one process: probes readiness, reports its exit, stops its group when told to or
/// when the provider is gone.
struct Supervisor {
    id: FunctionId,
    addr: SocketAddr,
    http_probe: Option<String>,
    grace: Duration,
    phase: Arc<Mutex<Phase>>,
    notifier: Option<ReadinessNotifier>,
    policy: IdlePolicy,
}

impl Supervisor {
    /// Until the process exits or is stopped. The group is killed if this task is dropped
    /// (its runtime shut down).
    async fn run(self, mut child: Child, mut group: Group, mut stop: oneshot::Receiver<()>) {
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
struct Group(Option<u32>);

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

/// Whether the socket listening on `port` belongs to a process of the group `group`. On
/// Linux: the listening socket's inode (netlink, `/proc/net/tcp` as fallback), then the
/// group's open files in `/proc`. Elsewhere, an open port is taken on trust.
fn listens_in_group(port: u16, group: Option<u32>) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Some(group) = group else { return false };
        // Netlink asks the kernel for listening sockets only (microseconds); /proc/net/tcp
        // lists every socket of the host, TIME_WAIT included (tens of milliseconds on a busy
        // one), and is the fallback.
        let inodes = sock_diag::listening_inodes(port).unwrap_or_else(|_| listening_inodes(port));
        if inodes.is_empty() {
            return false;
        }
        group_holds_socket(group, &inodes)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (port, group);
        true
    }
}

/// The inodes of the sockets listening on `port`, asked of the kernel through netlink
/// (`NETLINK_SOCK_DIAG`, as `ss` does): a dump of TCP sockets in state LISTEN only, IPv4 and
/// IPv6, filtered by port here.
#[cfg(target_os = "linux")]
mod sock_diag {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
        SockType,
    };

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    const HEADER: usize = 16;

    pub(super) fn listening_inodes(port: u16) -> nix::Result<Vec<u64>> {
        let mut inodes = Vec::new();
        for family in [libc_af(AddressFamily::Inet), libc_af(AddressFamily::Inet6)] {
            dump(family, port, &mut inodes)?;
        }
        Ok(inodes)
    }

    fn libc_af(family: AddressFamily) -> u8 {
        family as i32 as u8
    }

    fn dump(family: u8, port: u16, inodes: &mut Vec<u64>) -> nix::Result<()> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        // nlmsghdr (16 bytes) + inet_diag_req_v2 (56 bytes), native-endian.
        let mut request = Vec::with_capacity(72);
        request.extend_from_slice(&72u32.to_ne_bytes());
        request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        request.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        request.extend_from_slice(&[0; 8]); // sequence number, port id
        request.extend_from_slice(&[family, 6 /* TCP */, 0, 0]);
        request.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        request.extend_from_slice(&[0; 48]); // inet_diag_sockid: unused by a dump
        sendto(
            fd.as_raw_fd(),
            &request,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let len = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
            let mut at = 0;
            while at + HEADER <= len {
                let word = |i: usize| u32::from_ne_bytes(buffer[i..i + 4].try_into().unwrap());
                let message_len = word(at) as usize;
                let kind = u16::from_ne_bytes([buffer[at + 4], buffer[at + 5]]);
                if message_len < HEADER || at + message_len > len {
                    return Err(nix::Error::EINVAL);
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => return Err(nix::Error::EIO),
                    _ if message_len >= HEADER + 72 => {
                        // inet_diag_msg: the source port (big-endian) at 4, the inode at 68.
                        let msg = at + HEADER;
                        let sport = u16::from_be_bytes([buffer[msg + 4], buffer[msg + 5]]);
                        if sport == port {
                            inodes.push(u64::from(word(msg + 68)));
                        }
                    }
                    _ => {}
                }
                at += (message_len + 3) & !3;
            }
            if len == 0 {
                return Ok(());
            }
        }
    }
}

/// The inodes of the sockets listening on `port` (any address), from `/proc/net/tcp{,6}`.
#[cfg(target_os = "linux")]
fn listening_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == LISTEN {
                if let Ok(inode) = inode.parse() {
                    inodes.push(inode);
                }
            }
        }
    }
    inodes
}

/// Whether a process whose process group is `group` has one of `inodes` open. The group's
/// first process (its id is the group's) is looked at first: it is the listener unless a
/// wrapper forked a worker, so the scan of every process is the rare case.
#[cfg(target_os = "linux")]
fn group_holds_socket(group: u32, inodes: &[u64]) -> bool {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let holds = |pid: &str| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|link| wanted.iter().any(|w| link.as_os_str() == w.as_str()))
            })
        })
    };
    let leader = group.to_string();
    if process_group_of(&leader) == Some(group) && holds(&leader) {
        return true;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|entry| {
        let pid = entry.file_name();
        let Some(pid) = pid
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        pid != leader && process_group_of(pid) == Some(group) && holds(pid)
    })
}

/// The process group of `pid`: the fifth field of `/proc/{pid}/stat`, counted after the
/// command name (which may hold spaces and parentheses).
#[cfg(target_os = "linux")]
fn process_group_of(pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

fn free_port() -> std::io::Result<u16> {
    // The port is free now; another process could take it before the function binds it. The
    // readiness probe then finds the listener outside the function's group and never calls
    // the function ready; the function itself fails to bind and exits (502).
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn netlink_and_proc_find_the_same_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let by_netlink = sock_diag::listening_inodes(port).unwrap();
        assert_eq!(by_netlink.len(), 1);
        assert_eq!(by_netlink, listening_inodes(port));
        drop(listener);
        assert!(sock_diag::listening_inodes(port).unwrap().is_empty());
    }

    #[test]
    fn a_listener_of_this_process_is_found_in_its_group_only() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let own = process_group_of(&std::process::id().to_string()).unwrap();
        assert!(listens_in_group(port, Some(own)));
        assert!(!listens_in_group(port, Some(u32::MAX - 1)));
        drop(listener);
        assert!(!listens_in_group(port, Some(own)));
    }
}
