//! `promptgrid worker --gpus all|0,1,3`: one worker process per GPU. Each child is this same
//! command with `--gpus` replaced by `--device cuda:N` (and `--name X` by `--name X-gpuN`); a
//! child that crashes is started again after a backoff (1 s, doubling to 60 s, back to 1 s once
//! a child has run for a minute). A child that exits cleanly, or SIGTERM/SIGINT to this process,
//! stops them all: each gets SIGTERM (it checkpoints and hands its job back) and, after a grace
//! period, SIGKILL.
//!
//! Processes rather than threads: a CUDA error or an out-of-memory abort takes down one GPU's
//! worker, not the node's, and each process holds one device's context only.

use std::ffi::OsString;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use promptgrid_runtime::Shutdown;
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// Testing only: pretend this machine has this many CUDA devices (the supervisor itself never
/// touches a device, so tests without CUDA can exercise it).
pub const FAKE_GPUS_ENV: &str = "PROMPTGRID_FAKE_GPUS";
/// Testing only: the program each child runs instead of this executable, with the same
/// arguments (so a test can stand in for `--device cuda:N` on a machine without CUDA).
pub const CHILD_PROGRAM_ENV: &str = "PROMPTGRID_WORKER_CHILD";

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error(
        "--gpus: this machine has no CUDA device that libtorch can use; \
         run `promptgrid worker --device cpu` instead"
    )]
    NoGpus,
    #[error("--gpus: there is no GPU {gpu}: this machine has {available}, numbered from 0")]
    Missing { gpu: usize, available: usize },
    #[error("--gpus `{0}`: expected `all` or GPU numbers such as 0,1,3")]
    BadList(String),
    #[error("cannot find this executable to start the GPU workers: {0}")]
    Exe(#[source] std::io::Error),
}

impl GpuError {
    /// A bad flag or a machine without GPUs (exit status 2), rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, GpuError::Exe(_))
    }
}

/// What `--gpus` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    All,
    /// In the order given, without repeats.
    List(Vec<usize>),
}

impl FromStr for GpuSelection {
    type Err = GpuError;

    fn from_str(s: &str) -> Result<GpuSelection, GpuError> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(GpuSelection::All);
        }
        let mut list = Vec::new();
        for part in s.split(',') {
            let gpu = part
                .trim()
                .parse::<usize>()
                .map_err(|_| GpuError::BadList(s.to_string()))?;
            if !list.contains(&gpu) {
                list.push(gpu);
            }
        }
        Ok(GpuSelection::List(list))
    }
}

/// The CUDA devices libtorch sees, or [`FAKE_GPUS_ENV`]'s count when it is set.
pub fn device_count() -> usize {
    if let Some(n) = std::env::var(FAKE_GPUS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return n;
    }
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

/// The GPUs to run workers on, checked against the `available` count.
pub fn select(selection: &GpuSelection, available: usize) -> Result<Vec<usize>, GpuError> {
    if available == 0 {
        return Err(GpuError::NoGpus);
    }
    match selection {
        GpuSelection::All => Ok((0..available).collect()),
        GpuSelection::List(list) => match list.iter().find(|&&g| g >= available) {
            Some(&gpu) => Err(GpuError::Missing { gpu, available }),
            None => Ok(list.clone()),
        },
    }
}

/// The arguments of the children: this command's (without the program), less `--gpus` and its
/// value. Everything else passes through unchanged, the global flags included.
pub fn child_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        match arg.to_str() {
            Some("--gpus") => skip_value = true,
            Some(s) if s.starts_with("--gpus=") => {}
            _ => out.push(arg),
        }
    }
    out
}

/// The arguments of the child for `gpu`: `--device cuda:N` added, and a `--name` made unique
/// per GPU (job states and logs name the worker).
pub fn args_for(base: &[OsString], gpu: usize) -> Vec<OsString> {
    let suffix = format!("-gpu{gpu}");
    let mut out = Vec::with_capacity(base.len() + 2);
    let mut name_next = false;
    for arg in base {
        if std::mem::take(&mut name_next) {
            let mut name = arg.clone();
            name.push(&suffix);
            out.push(name);
            continue;
        }
        match arg.to_str() {
            Some("--name") => {
                name_next = true;
                out.push(arg.clone());
            }
            Some(s) if s.starts_with("--name=") => out.push(format!("{s}{suffix}").into()),
            _ => out.push(arg.clone()),
        }
    }
    out.push("--device".into());
    out.push(format!("cuda:{gpu}").into());
    out
}

/// Keeps one worker process per GPU running.
#[derive(Debug, Clone)]
pub struct Supervisor {
    pub program: OsString,
    /// The children's arguments before [`args_for`] (see [`child_args`]).
    pub args: Vec<OsString>,
    pub gpus: Vec<usize>,
    /// Delay before the first restart of a crashed child; doubles per crash in a row.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A child that ran this long before it crashed restarts after `backoff` again.
    pub healthy_after: Duration,
    /// How long children get after SIGTERM to hand their jobs back before SIGKILL.
    pub grace: Duration,
}

impl Supervisor {
    /// Children run this executable (or [`CHILD_PROGRAM_ENV`]'s program) with `args`.
    pub fn new(args: Vec<OsString>, gpus: Vec<usize>) -> Result<Supervisor, GpuError> {
        let program = match std::env::var_os(CHILD_PROGRAM_ENV).filter(|p| !p.is_empty()) {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(GpuError::Exe)?
                .into_os_string(),
        };
        Ok(Supervisor {
            program,
            args,
            gpus,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
            // Within a typical SLURM KillWait or Kubernetes grace period of a few minutes.
            grace: Duration::from_secs(120),
        })
    }

    /// Runs the children until one exits cleanly or `shutdown` fires, and returns once every
    /// child has exited, with the number of restarts.
    pub async fn run(self, mut shutdown: Shutdown) -> usize {
        let this = Arc::new(self);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        for &gpu in &this.gpus {
            tasks.spawn(keep_running(
                this.clone(),
                gpu,
                stop_tx.clone(),
                stop_rx.clone(),
            ));
        }
        tokio::select! {
            () = until_true(&mut shutdown) => {
                tracing::info!("stopping the GPU workers");
                let _ = stop_tx.send(true);
            }
            // A child exited cleanly and stopped the others.
            () = until_true(&mut stop_rx) => {}
        }
        let mut restarts = 0;
        while let Some(r) = tasks.join_next().await {
            restarts += r.unwrap_or(0);
        }
        restarts
    }
}

/// Resolves once the flag is true (never, if its sender is gone while it is false).
async fn until_true(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: it is not `Send`.
    if rx.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One GPU's child, restarted after crashes until a stop; returns its restarts.
async fn keep_running(
    sup: Arc<Supervisor>,
    gpu: usize,
    stop_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let device = format!("cuda:{gpu}");
    let mut delay = sup.backoff;
    let mut restarts = 0;
    loop {
        if *stop.borrow() {
            return restarts;
        }
        let started = Instant::now();
        let spawned = Command::new(&sup.program)
            .args(args_for(&sup.args, gpu))
            .stdin(std::process::Stdio::null())
            // Should this process die without stopping them, its children die with it.
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                let pid = child.id();
                tracing::info!(gpu, pid, "worker for {device} started");
                let status = tokio::select! {
                    status = child.wait() => Some(status),
                    () = until_true(&mut stop) => None,
                };
                let Some(status) = status else {
                    stop_child(&mut child, pid, sup.grace).await;
                    return restarts;
                };
                match status {
                    Ok(s) if s.success() => {
                        tracing::info!(
                            gpu,
                            pid,
                            "worker for {device} exited cleanly; stopping all"
                        );
                        let _ = stop_tx.send(true);
                        return restarts;
                    }
                    Ok(s) => tracing::warn!(gpu, pid, status = %s, "worker for {device} crashed"),
                    Err(e) => tracing::warn!(gpu, pid, error = %e, "lost the worker for {device}"),
                }
            }
            Err(e) => tracing::error!(gpu, error = %e, "cannot start the worker for {device}"),
        }
        if started.elapsed() >= sup.healthy_after {
            delay = sup.backoff;
        }
        tracing::warn!(
            gpu,
            delay_ms = delay.as_millis() as u64,
            "restarting the worker for {device} in {delay:?}"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = until_true(&mut stop) => return restarts,
        }
        delay = (delay * 2).min(sup.max_backoff);
        restarts += 1;
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn stop_child(child: &mut Child, pid: Option<u32>, grace: Duration) {
    if let Some(pid) = pid {
        // `kill(1)` rather than libc: this workspace has no unsafe code.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(pid, "a worker did not stop within {grace:?}; killing it");
        let _ = child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn gpu_lists_parse_and_are_checked_against_the_devices() {
        assert_eq!("all".parse::<GpuSelection>().unwrap(), GpuSelection::All);
        assert_eq!(
            " 0, 3,1,3".parse::<GpuSelection>().unwrap(),
            GpuSelection::List(vec![0, 3, 1])
        );
        assert!(matches!(
            "0,x".parse::<GpuSelection>(),
            Err(GpuError::BadList(s)) if s == "0,x"
        ));
        assert!(matches!(
            "".parse::<GpuSelection>(),
            Err(GpuError::BadList(_))
        ));
        assert_eq!(select(&GpuSelection::All, 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(
            select(&GpuSelection::List(vec![2, 0]), 3).unwrap(),
            vec![2, 0]
        );
        assert!(matches!(
            select(&GpuSelection::List(vec![0, 3]), 2),
            Err(GpuError::Missing {
                gpu: 3,
                available: 2
            })
        ));
        assert!(matches!(
            select(&GpuSelection::All, 0),
            Err(GpuError::NoGpus)
        ));
    }

    #[test]
    fn children_get_the_flags_less_gpus_plus_their_device_and_name() {
        let base = child_args(os(&[
            "--log-format",
            "json",
            "worker",
            "--gpus",
            "0,1",
            "--nats",
            "nats://head:4222",
            "--name=node7",
            "--gpus=all",
        ]));
        assert_eq!(
            base,
            os(&[
                "--log-format",
                "json",
                "worker",
                "--nats",
                "nats://head:4222",
                "--name=node7"
            ])
        );
        assert_eq!(
            args_for(&base, 1),
            os(&[
                "--log-format",
                "json",
                "worker",
                "--nats",
                "nats://head:4222",
                "--name=node7-gpu1",
                "--device",
                "cuda:1"
            ])
        );
        assert_eq!(
            args_for(&os(&["worker", "--name", "a"]), 0),
            os(&["worker", "--name", "a-gpu0", "--device", "cuda:0"])
        );
    }
}
