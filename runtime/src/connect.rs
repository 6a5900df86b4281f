//! Connecting to NATS the standard ways: one server or a comma-separated list of a cluster's
//! (the client picks one and fails over to the others, and to those the cluster announces),
//! user/password or token in the URL or flags, a credentials file, TLS with a CA and a client
//! certificate. Environment variables
//! (`NATS_URL`, `NATS_USER`, `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS`, `NATS_CA`,
//! `NATS_CERT`, `NATS_KEY`) fill whatever the flags leave unset.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// How to reach the NATS server.
#[derive(Debug, Clone, Default)]
pub struct NatsConfig {
    /// `nats://[user:pass@]host:port`, or several separated by commas (the servers of one
    /// cluster); `tls://` requires TLS.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A `.creds` file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// CA bundle that signed the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key, for servers that verify clients.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub require_tls: bool,
    /// Shown in the server's connection list (`worker-3@host`).
    pub name: Option<String>,
}

impl NatsConfig {
    pub fn new(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            ..NatsConfig::default()
        }
    }

    /// Fills unset fields from the standard environment variables.
    pub fn with_env(mut self) -> NatsConfig {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if self.url.is_empty() {
            self.url = var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into());
        }
        self.user = self.user.or_else(|| var("NATS_USER"));
        self.password = self.password.or_else(|| var("NATS_PASSWORD"));
        self.token = self.token.or_else(|| var("NATS_TOKEN"));
        self.credentials = self
            .credentials
            .or_else(|| var("NATS_CREDS").map(PathBuf::from));
        self.tls_ca = self.tls_ca.or_else(|| var("NATS_CA").map(PathBuf::from));
        self.tls_cert = self
            .tls_cert
            .or_else(|| var("NATS_CERT").map(PathBuf::from));
        self.tls_key = self.tls_key.or_else(|| var("NATS_KEY").map(PathBuf::from));
        self
    }

    /// Connects, retrying for up to 10 s while the server is not up yet (a coordinator or
    /// worker started together with it); bad credentials fail at once.
    pub async fn connect(&self) -> Result<async_nats::Client> {
        use async_nats::ConnectErrorKind as Kind;
        let servers = server_list(&self.url)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.options().await?.connect(servers.as_slice()).await {
                Ok(client) => return Ok(client),
                Err(e)
                    if matches!(e.kind(), Kind::Io | Kind::TimedOut | Kind::Dns)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(Error::Connect {
                        url: redact(&self.url),
                        message: e.to_string(),
                    });
                }
            }
        }
    }

    async fn options(&self) -> Result<async_nats::ConnectOptions> {
        let mut opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            // Reconnects forever: a restarted server must not kill workers or the coordinator.
            .max_reconnects(None);
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        if let Some(c) = &self.credentials {
            opts = opts
                .credentials_file(c)
                .await
                .map_err(|e| Error::io(format!("cannot read credentials {}", c.display()), e))?;
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => opts = opts.add_client_certificate(c.clone(), k.clone()),
            (None, None) => {}
            _ => return Err(Error::Config("--tls-cert and --tls-key go together".into())),
        }
        if self.require_tls || requires_tls(&self.url) {
            opts = opts.require_tls(true);
        }
        if let Some(n) = &self.name {
            opts = opts.name(n);
        }
        Ok(opts)
    }
}

/// The servers of `--nats` (or `NATS_URL`): one URL, or several separated by commas.
pub fn server_list(urls: &str) -> Result<Vec<async_nats::ServerAddr>> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .map(|url| {
            if url.is_empty() {
                return Err(Error::Config(format!(
                    "--nats (NATS_URL): `{}` has an empty entry",
                    redact(urls)
                )));
            }
            url.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::Config(format!(
                    "--nats (NATS_URL): `{}` is not a NATS server address: {e}",
                    redact(url)
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(servers)
}

/// Whether any server of the list is a `tls://` one.
pub fn requires_tls(urls: &str) -> bool {
    urls.split(',').any(|u| u.trim().starts_with("tls://"))
}

/// The URLs without their passwords, for messages.
fn redact(urls: &str) -> String {
    urls.split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_separated_list_is_a_cluster_of_servers() {
        let list = server_list("nats://a:4222,nats://b:4223, nats://u:p@c:4224").unwrap();
        let hosts: Vec<(String, u16)> = list
            .iter()
            .map(|s| (s.host().to_string(), s.port()))
            .collect();
        assert_eq!(
            hosts,
            [("a".into(), 4222), ("b".into(), 4223), ("c".into(), 4224)]
        );
        assert_eq!(server_list("nats://h:4222").unwrap().len(), 1);
        assert!(requires_tls("nats://a:1,tls://b:2"));
        assert!(!requires_tls("nats://a:1,nats://b:2"));
    }

    #[test]
    fn a_bad_entry_is_named_without_its_password() {
        let err = server_list("nats://a:4222,nats://u:secret@b:x").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("--nats (NATS_URL): `nats://***@b:x` is not a NATS server address"),
            "{msg}"
        );
        assert!(!msg.contains("secret"), "{msg}");
        let err = server_list("nats://a:4222,").unwrap_err().to_string();
        assert_eq!(
            err,
            "--nats (NATS_URL): `nats://a:4222,` has an empty entry"
        );
    }
}
