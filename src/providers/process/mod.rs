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
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::process::Command;
use tokio::sync::oneshot;

mod socket;
mod supervisor;

use self::socket::free_port;
use self::supervisor::{Group, Supervisor};
use crate::util::lock;
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
pub(super) enum Phase {
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
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(10);

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
