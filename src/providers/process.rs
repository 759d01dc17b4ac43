//! [`ProcessProvider`]: functions are local commands, started on demand.
//!
//! `set_replicas(n > 0)` starts the function's command with `PORT` set to a free port on
//! 127.0.0.1; the function is ready once that port accepts a connection (or, with
//! [`ProcessSpec::http_probe`], once a `GET` there answers). `set_replicas(0)` stops it. A
//! process runs at most one replica: any `n > 0` means "running".
//!
//! A process that exits while starting makes the next `get_replicas` fail with a permanent
//! error, so the cold start ends with 502 at once instead of waiting for the deadline. A
//! process that exits after it was ready reads as scaled to zero and is started again by the
//! next request. Child processes are killed when the provider is dropped (and when their
//! runtime shuts down). If the gateway itself is killed (no destructor runs), each child's
//! standard input closes: a command that exits at end of input dies with the gateway.
//!
//! Readiness is pushed to a [`ReadinessNotifier`] when one is set, so held requests are
//! released the moment the port opens.
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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
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
    http_probe: Option<String>,
    scale_to_zero: IdlePolicy,
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
            http_probe: None,
            scale_to_zero: IdlePolicy::Never,
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

    /// Adds the chosen port as an argument (it is also in the `PORT` variable).
    pub fn arg_port(mut self) -> Self {
        self.args.push(Arg::Port);
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Ready means `GET {path}` answers with any status, not just an open port.
    pub fn http_probe(mut self, path: impl Into<String>) -> Self {
        self.http_probe = Some(path.into());
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

/// One started process. Dropping it (scale to zero, provider dropped) kills the process.
struct Run {
    addr: SocketAddr,
    phase: Arc<Mutex<Phase>>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone, Debug)]
enum Phase {
    Starting,
    Ready,
    Exited { status: String, was_ready: bool },
}

/// Readiness probes start 1 ms after the spawn and back off, doubling, to this interval: a
/// fast process is seen within a millisecond or two, a slow one costs few probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);

impl ProcessProvider {
    /// A provider with no functions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the function `id`. Its process is started on demand.
    pub fn add_function(&self, id: &FunctionId, spec: ProcessSpec) {
        let slot = Slot { spec, run: None };
        self.inner
            .functions
            .lock()
            .unwrap()
            .insert(id.clone(), slot);
    }

    /// Pushes readiness to `notifier` as soon as a process accepts connections.
    pub fn push_readiness_to(&self, notifier: ReadinessNotifier) {
        *self.inner.notifier.lock().unwrap() = Some(notifier);
    }

    /// Where the function's process listens, while it is running.
    pub fn upstream(&self, id: &FunctionId) -> Option<SocketAddr> {
        let functions = self.inner.functions.lock().unwrap();
        let run = functions.get(id)?.run.as_ref()?;
        let ready = matches!(*run.phase.lock().unwrap(), Phase::Ready);
        ready.then_some(run.addr)
    }

    /// How many processes have been started so far.
    pub fn starts(&self) -> usize {
        self.inner.starts.load(Ordering::SeqCst)
    }

    fn start(&self, id: &FunctionId, spec: &ProcessSpec) -> Result<Run, QueryError> {
        let port =
            free_port().map_err(|e| QueryError::provider(format!("no free port for {id}: {e}")))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut command = Command::new(&spec.program);
        for arg in &spec.args {
            match arg {
                Arg::Plain(arg) => command.arg(arg),
                Arg::Port => command.arg(port.to_string()),
            };
        }
        command
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .env("PORT", port.to_string())
            // A lifeline: the pipe closes when this process dies, however it dies, so a command
            // that exits on end-of-input never outlives the gateway.
            .stdin(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| {
            QueryError::provider(format!("cannot start {:?} for {id}: {e}", spec.program))
                .permanent()
        })?;
        self.inner.starts.fetch_add(1, Ordering::SeqCst);
        tracing::info!(function = %id, %addr, pid = child.id(), "process started");

        let phase = Arc::new(Mutex::new(Phase::Starting));
        let (stop, stopped) = oneshot::channel();
        let notifier = self.inner.notifier.lock().unwrap().clone();
        tokio::spawn(supervise(
            id.clone(),
            child,
            addr,
            spec.http_probe.clone(),
            Arc::clone(&phase),
            stopped,
            notifier.map(|n| (n, spec.scale_to_zero)),
        ));
        Ok(Run {
            addr,
            phase,
            _stop: stop,
        })
    }
}

#[async_trait]
impl ServiceQuery for ProcessProvider {
    async fn get_replicas(
        &self,
        function: &FunctionId,
    ) -> Result<ServiceQueryResponse, QueryError> {
        let mut functions = self.inner.functions.lock().unwrap();
        let slot = functions
            .get_mut(function)
            .ok_or_else(|| QueryError::not_found("no such function configured"))?;
        let phase = slot
            .run
            .as_ref()
            .map(|run| run.phase.lock().unwrap().clone());
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
        let mut functions = self.inner.functions.lock().unwrap();
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
            .is_some_and(|run| !matches!(*run.phase.lock().unwrap(), Phase::Exited { .. }));
        if !running {
            slot.run = Some(self.start(function, &slot.spec)?);
        }
        Ok(())
    }
}

impl fmt::Debug for ProcessProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessProvider")
            .field("functions", &self.inner.functions.lock().unwrap().len())
            .field("starts", &self.starts())
            .finish()
    }
}

/// Watches one process: probes readiness, records its exit, kills it when told to stop or
/// when the provider is gone.
async fn supervise(
    id: FunctionId,
    mut child: Child,
    addr: SocketAddr,
    http_probe: Option<String>,
    phase: Arc<Mutex<Phase>>,
    mut stop: oneshot::Receiver<()>,
    notifier: Option<(ReadinessNotifier, IdlePolicy)>,
) {
    let _lifeline = child.stdin.take();
    let mut ready = false;
    let mut probe_every = Duration::from_millis(1);
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = describe(status);
                tracing::warn!(function = %id, %status, "process exited");
                *phase.lock().unwrap() = Phase::Exited { status, was_ready: ready };
                return;
            }
            // Either an explicit stop or the provider's `Run` was dropped.
            _ = &mut stop => {
                let _ = child.kill().await;
                return;
            }
            _ = tokio::time::sleep(probe_every), if !ready => {
                probe_every = (probe_every * 2).min(PROBE_INTERVAL);
                if probe(addr, http_probe.as_deref()).await {
                    ready = true;
                    *phase.lock().unwrap() = Phase::Ready;
                    if let Some((notifier, policy)) = &notifier {
                        let state = ServiceQueryResponse::new(1, 1).scale_to_zero(*policy);
                        notifier.notify(&id, state);
                    }
                }
            }
        }
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

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

fn free_port() -> std::io::Result<u16> {
    // The port is free now; another process could take it before the function binds it,
    // in which case the function fails to start and the cold start fails with 502.
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
