//! A JetStream cluster of real `nats-server` processes on loopback, with routes between them:
//! each server has its own client port, route port and store, kept across a SIGKILL and
//! restart.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use promptgrid_runtime::NatsConfig;
use promptgrid_runtime::server::{NatsServer, free_port};

pub struct Cluster {
    _dir: tempfile::TempDir,
    pub servers: Vec<NatsServer>,
}

impl Cluster {
    /// `n` servers named n0, n1, ... of the cluster `pg`; fails loudly without the binary.
    pub fn start(n: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<String> = (0..n)
            .map(|_| format!("nats://127.0.0.1:{}", free_port().unwrap()))
            .collect();
        let all = routes.join(",");
        let servers = (0..n)
            .map(|i| {
                let name = Cluster::name(i);
                let args = [
                    "-n",
                    name.as_str(),
                    "--cluster_name",
                    "pg",
                    "--cluster",
                    routes[i].as_str(),
                    "--routes",
                    all.as_str(),
                ];
                NatsServer::start(&dir.path().join(&name), &args)
                    .unwrap_or_else(|e| panic!("{e} (CI must install nats-server)"))
            })
            .collect();
        Cluster { _dir: dir, servers }
    }

    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    pub fn index(name: &str) -> usize {
        name.trim_start_matches('n').parse().unwrap()
    }

    pub fn url(&self, i: usize) -> String {
        self.servers[i].url()
    }

    /// Every server's client URL, the way `--nats` takes a cluster.
    pub fn urls(&self) -> String {
        (0..self.servers.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every server answers JetStream requests (the cluster has a meta leader).
    pub async fn ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for i in 0..self.servers.len() {
            let js = jetstream::new(NatsConfig::new(self.url(i)).connect().await.unwrap());
            while js.query_account().await.is_err() {
                assert!(Instant::now() < deadline, "the cluster formed no JetStream");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The server that leads `stream`, asked of server `via`.
    pub async fn leader(&self, via: usize, stream: &str) -> Option<String> {
        let client = NatsConfig::new(self.url(via)).connect().await.ok()?;
        // A short timeout: a request that the dead leader would have answered fails fast, so
        // an election is timed to a fraction of a second.
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_millis(250))
            .build(client);
        let s = js.get_stream(stream).await.ok()?;
        s.cached_info().cluster.as_ref()?.leader.clone()
    }
}
