//! Workers as local processes.
//!
//! `invoke` spawns the command and returns at once: the pass never waits for a worker. The [`Supervisor`] owns
//! every child: it writes the event to stdin, keeps the head of stdout (the result) and the tail of stderr, kills
//! a worker that outlives its `timeout`, reaps it (no zombies), and in `exit_code` mode reports the outcome through
//! the [`TaskReporter`]. If sosw itself dies, a worker simply finishes unobserved: its task expires and is retried,
//! nothing is written half-way.
//!
//! A [`Supervisor::detached`] one (`sosw orchestrate --no-wait`) watches nothing: each worker reads its event from a
//! file of its own and writes its output nowhere, so that sosw may exit at once without cutting a worker's input
//! short or killing it with a broken pipe.

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use sosw_core::classify::{self, SpawnFailure};
use sosw_core::config::{ProcessSpec, ReportMode};
use sosw_core::ports::{
    InvokeError, InvokeOutcome, Invoker, ReportSigner, TaskReporter, REPORT_TOKEN_VAR, SECRET_ENV_VARS,
};
use sosw_core::task::ReportKind;
use sosw_core::{Task, WorkerReport};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// How much of stderr is kept for a failure report.
const STDERR_TAIL: usize = 4096;

/// Owns the running worker processes.
#[derive(Debug)]
pub struct Supervisor {
    reporter: Arc<dyn TaskReporter>,
    running: Mutex<JoinSet<()>>,
    detached: bool,
}

impl Supervisor {
    pub fn new(reporter: Arc<dyn TaskReporter>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            reporter,
            running: Mutex::new(JoinSet::new()),
            detached: false,
        })
    }

    /// A supervisor for a process that will not outlive its workers' start: each worker gets its event on a
    /// stdin of its own (an unlinked temporary file, complete before it starts) and its stdout and stderr go to
    /// `/dev/null`. Nothing is watched: no timeout is enforced and no exit is reported (in `exit_code` mode the
    /// task expires and is retried; a self-reporting worker reports as always).
    pub fn detached(reporter: Arc<dyn TaskReporter>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            reporter,
            running: Mutex::new(JoinSet::new()),
            detached: true,
        })
    }

    fn set(&self) -> std::sync::MutexGuard<'_, JoinSet<()>> {
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many workers are still being watched.
    pub fn active(&self) -> usize {
        let mut set = self.set();
        while set.try_join_next().is_some() {}
        set.len()
    }

    /// Waits up to `grace` for every watched worker to finish and be reported. Returns how many were still running
    /// (they are left to finish on their own; their tasks expire and are retried if nobody reports them).
    // Measures the shutdown grace: a span of real time, not a decision about a task.
    #[allow(clippy::disallowed_methods)]
    pub async fn drain(&self, grace: Duration) -> usize {
        let mut set = std::mem::take(&mut *self.set());
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, set.join_next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => return 0,
                Err(_) => {
                    let left = set.len();
                    set.detach_all();
                    return left;
                }
            }
        }
    }

    fn watch(&self, job: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self.set();
        while set.try_join_next().is_some() {}
        set.spawn(job);
    }
}

#[derive(Debug)]
pub struct ProcessInvoker {
    labourer: String,
    spec: ProcessSpec,
    env: Vec<(String, String)>,
    supervisor: Arc<Supervisor>,
    /// Gives each worker its report token (`SOSW_REPORT_TOKEN`), when reports go to `sosw run`'s server.
    signer: Option<Arc<dyn ReportSigner>>,
}

impl ProcessInvoker {
    /// Checks that the program can be found, so that a typo is a config error and not a slow death of every task.
    pub fn new(
        labourer: &str,
        spec: ProcessSpec,
        env: Vec<(String, String)>,
        supervisor: Arc<Supervisor>,
    ) -> Result<ProcessInvoker, String> {
        let program = &spec.command[0];
        let base = spec.cwd.as_deref().map(Path::new);
        if !program_exists(program, base) {
            return Err(format!(
                "command `{program}` was not found (not a file, and not on PATH)"
            ));
        }
        Ok(ProcessInvoker {
            labourer: labourer.to_string(),
            spec,
            env,
            supervisor,
            signer: None,
        })
    }

    /// Each worker gets the report token of its invocation in `SOSW_REPORT_TOKEN`.
    pub fn with_signer(mut self, signer: Option<Arc<dyn ReportSigner>>) -> ProcessInvoker {
        self.signer = signer;
        self
    }
}

fn program_exists(program: &str, cwd: Option<&Path>) -> bool {
    if program.contains('/') {
        let p = Path::new(program);
        return match (p.is_relative(), cwd) {
            (true, Some(dir)) => dir.join(p).is_file(),
            _ => p.is_file(),
        };
    }
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[async_trait]
impl Invoker for ProcessInvoker {
    async fn invoke(&self, task: &Task, event: &str) -> Result<InvokeOutcome, InvokeError> {
        let mut cmd = Command::new(&self.spec.command[0]);
        let detached = self.supervisor.detached;
        if detached {
            let stdin = event_file(event.as_bytes().to_vec())
                .await
                .map_err(|e| event_file_failure(&task.task_id, &e))?;
            cmd.stdin(stdin).stdout(Stdio::null()).stderr(Stdio::null());
        } else {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        cmd.args(&self.spec.command[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .env("SOSW_TASK_ID", &task.task_id)
            .env("SOSW_LABOURER_ID", &self.labourer)
            .envs(
                self.signer
                    .iter()
                    .map(|s| (REPORT_TOKEN_VAR, s.sign(&task.task_id, task.invocation()))),
            )
            // Its own process group: a terminal's Ctrl-C reaches sosw (which lets workers finish), and a timeout
            // kills the worker with everything it started.
            .process_group(0)
            .kill_on_drop(false);
        // The server's secrets are not the worker's (its report token is all it needs).
        for var in SECRET_ENV_VARS {
            cmd.env_remove(var);
        }
        if let Some(dir) = &self.spec.cwd {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().map_err(|e| {
            InvokeError::new(
                classify::spawn(spawn_failure(&e)),
                format!("cannot start `{}`: {e}", self.spec.command.join(" ")),
            )
        })?;
        if detached {
            // Left to run on its own (tokio reaps it if it exits while sosw still runs).
            drop(child);
            return Ok(InvokeOutcome::Accepted);
        }
        let watch = Watch {
            task_id: task.task_id.clone(),
            invocation: task.invocation(),
            labourer: self.labourer.clone(),
            event: event.as_bytes().to_vec(),
            spec: self.spec.clone(),
            reporter: self.supervisor.reporter.clone(),
        };
        self.supervisor.watch(watch.run(child));
        Ok(InvokeOutcome::Accepted)
    }
}

/// An unlinked temporary file holding `event`, read from its start: a detached worker's stdin.
async fn event_file(event: Vec<u8>) -> std::io::Result<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, Write};
        let mut file = tempfile::tempfile()?;
        file.write_all(&event)?;
        file.rewind()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// A detached worker's event could not be written: sosw's own trouble (its temporary directory, its disk), never
/// the labourer's, so the task goes back unspent.
fn event_file_failure(task_id: &str, e: &std::io::Error) -> InvokeError {
    InvokeError::new(
        classify::spawn(SpawnFailure::Resources),
        format!(
            "cannot write the event of `{task_id}` to a temporary file in `{}`: {e}",
            std::env::temp_dir().display()
        ),
    )
}

/// Why `spawn` failed, for [`classify::spawn`]: our own lack of resources never spends the task's attempt.
fn spawn_failure(e: &std::io::Error) -> SpawnFailure {
    use nix::errno::Errno;
    const RESOURCES: [Errno; 4] = [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM, Errno::EAGAIN];
    match (e.raw_os_error(), e.kind()) {
        (Some(code), _) if RESOURCES.iter().any(|r| *r as i32 == code) => SpawnFailure::Resources,
        (_, std::io::ErrorKind::OutOfMemory) => SpawnFailure::Resources,
        (_, std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => SpawnFailure::Program,
        _ => SpawnFailure::Other,
    }
}

struct Watch {
    task_id: String,
    /// The invocation this process is: its exit is reported for it, and refused once the task was invoked again
    /// (a slow process whose task expired must not complete the next invocation).
    invocation: sosw_core::Invocation,
    labourer: String,
    event: Vec<u8>,
    spec: ProcessSpec,
    reporter: Arc<dyn TaskReporter>,
}

/// Output kept from one pipe: the first `limit` bytes (or the last, with `tail`).
#[derive(Debug, Default)]
struct Capped {
    kept: Vec<u8>,
    truncated: bool,
}

/// Reads everything into `into`, so the child never blocks on a full pipe.
async fn read_capped(mut r: impl AsyncRead + Unpin, limit: usize, tail: bool, into: Arc<Mutex<Capped>>) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut c = into.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                c.kept.extend_from_slice(&buf[..n]);
                if c.kept.len() > limit {
                    c.truncated = true;
                    if tail {
                        let excess = c.kept.len() - limit;
                        c.kept.drain(..excess);
                    } else {
                        c.kept.truncate(limit);
                    }
                }
            }
        }
    }
}

fn take(c: &Mutex<Capped>) -> (Vec<u8>, bool) {
    let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    (std::mem::take(&mut c.kept), c.truncated)
}

/// Kills the worker and everything it started (it runs in its own process group).
fn kill_group(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.start_kill();
}

/// How long output is still read after the worker exits: a grandchild that keeps the pipes open must not hold the
/// report back.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

impl Watch {
    async fn run(self, mut child: Child) {
        let mut pipes = JoinSet::new();
        if let Some(mut stdin) = child.stdin.take() {
            let event = self.event.clone();
            pipes.spawn(async move {
                // A worker that does not read its stdin closes the pipe: that is its business, not an error.
                let _ = stdin.write_all(&event).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stdout = Arc::new(Mutex::new(Capped::default()));
        let stderr = Arc::new(Mutex::new(Capped::default()));
        if let Some(s) = child.stdout.take() {
            pipes.spawn(read_capped(s, self.spec.result_limit, false, stdout.clone()));
        }
        if let Some(s) = child.stderr.take() {
            pipes.spawn(read_capped(s, STDERR_TAIL, true, stderr.clone()));
        }
        let timeout = sosw_core::time::duration_secs(self.spec.timeout_secs);
        let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => (status, false),
            Err(_) => {
                kill_group(&mut child);
                (child.wait().await, true)
            }
        };
        let drained =
            tokio::time::timeout(DRAIN_AFTER_EXIT, async { while pipes.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            pipes.abort_all();
        }
        let (out, out_truncated) = take(&stdout);
        let (err, _) = take(&stderr);
        let (kind, mut report) = outcome(&self, status, timed_out, out, out_truncated, err);
        report.of = Some(self.invocation);
        match self.spec.report {
            ReportMode::SelfReport => {
                if kind == ReportKind::Failed {
                    let result = Value::Object(report.result);
                    tracing::warn!(labourer = %self.labourer, task_id = %self.task_id, %result, "self-reporting worker exited unsuccessfully");
                }
            }
            ReportMode::ExitCode => {
                if let Err(e) = self.reporter.report(&self.task_id, kind, report).await {
                    tracing::warn!(labourer = %self.labourer, task_id = %self.task_id, error = %e, "could not record the worker's exit");
                }
            }
        }
    }
}

fn outcome(
    w: &Watch,
    status: std::io::Result<std::process::ExitStatus>,
    timed_out: bool,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr: Vec<u8>,
) -> (ReportKind, WorkerReport) {
    let mut result = Map::new();
    let text = String::from_utf8_lossy(&stdout).trim().to_string();
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) if !stdout_truncated => result = m,
        _ if !text.is_empty() => {
            result.insert("stdout".into(), text.into());
            if stdout_truncated {
                result.insert("stdout_truncated".into(), true.into());
            }
        }
        _ => {}
    }
    let ok = match &status {
        Ok(s) if s.success() && !timed_out => true,
        Ok(s) => {
            if timed_out {
                result.insert("timeout".into(), json!(w.spec.timeout_secs));
            } else if let Some(code) = s.code() {
                result.insert("exit_code".into(), code.into());
            } else {
                #[cfg(unix)]
                if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(s) {
                    result.insert("signal".into(), sig.into());
                }
            }
            false
        }
        Err(e) => {
            result.insert("error".into(), format!("waiting for the worker: {e}").into());
            false
        }
    };
    if !ok && !stderr.is_empty() {
        result.insert(
            "stderr".into(),
            String::from_utf8_lossy(&stderr).trim().to_string().into(),
        );
    }
    let kind = if ok { ReportKind::Completed } else { ReportKind::Failed };
    (kind, WorkerReport::with_result(result))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn our_own_lack_of_resources_is_told_apart() {
        let os = |e: Errno| std::io::Error::from_raw_os_error(e as i32);
        for (err, want) in [
            (os(Errno::EMFILE), SpawnFailure::Resources),
            (os(Errno::ENFILE), SpawnFailure::Resources),
            (os(Errno::ENOMEM), SpawnFailure::Resources),
            (os(Errno::EAGAIN), SpawnFailure::Resources),
            (os(Errno::ENOENT), SpawnFailure::Program),
            (os(Errno::EACCES), SpawnFailure::Program),
            (os(Errno::E2BIG), SpawnFailure::Other),
        ] {
            assert_eq!(spawn_failure(&err), want, "{err}");
        }
    }
}
