//! Flag groups that several subcommands flatten in.

use std::path::PathBuf;

use clap::Args;
use promptgrid_common::overrides::Override;
use promptgrid_common::spec::{Head, Layout};

/// A sweep file and the `--set` overrides applied to it.
#[derive(Args)]
pub struct SweepArgs {
    pub sweep: PathBuf,
    /// Override a setting of the sweep file: a dotted key and a TOML value, e.g.
    /// `--set prompt.max_steps=10`, `--set task.sst2.prompt.learning_rate=0.01`,
    /// `--set model.*.head=tied` (repeatable; the same overrides give the same job ids).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<Override>,
}

#[derive(Args)]
pub struct ModelArgs {
    /// A Hugging Face model folder: config.json, model.safetensors, tokenizer.json.
    #[arg(long = "model")]
    pub dir: PathBuf,
    /// mlm (the checkpoint's LM head) or tied (embedding rows).
    #[arg(long, default_value = "mlm")]
    pub head: Head,
    /// prefix (PEFT) or official (mask at prompt slot 0).
    #[arg(long, default_value = "prefix")]
    pub layout: Layout,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// A catalog task and its data folder, for the one-job commands.
#[derive(Args)]
pub struct TaskArgs {
    /// A task of the catalog.
    #[arg(long)]
    pub task: String,
    /// The task's data folder (its split files).
    #[arg(long)]
    pub data: PathBuf,
    /// A task catalog folder to use instead of the one built into promptgrid.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
}

#[derive(Args)]
pub struct RootArgs {
    /// Model folders are resolved under this root.
    #[arg(long, env = "PROMPTGRID_MODELS_ROOT")]
    pub models_root: Option<PathBuf>,
    /// Task data folders are resolved under this root.
    #[arg(long, env = "PROMPTGRID_DATA_ROOT")]
    pub data_root: Option<PathBuf>,
}

#[derive(Args)]
pub struct ResultsArgs {
    /// Tables go to `<results>/<sweep>/<table>/`.
    #[arg(long, default_value = "runs")]
    pub results: PathBuf,
}

#[derive(Args)]
pub struct DeviceArgs {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Intra-op threads of libtorch (default: its own choice).
    #[arg(long)]
    pub threads: Option<i32>,
    /// fp32, bf16 or auto: the type of the frozen model's matrix products (bf16 is
    /// autocast-style mixed precision: the prompt and its optimizer stay float32). auto picks
    /// bf16 where the device runs it natively (a CPU with AVX512-BF16, a CUDA device), else fp32.
    #[arg(long, default_value = "fp32")]
    pub precision: String,
}

#[derive(Args)]
pub struct FailureArgs {
    /// Stop once more than this many jobs are dead.
    #[arg(long)]
    pub max_failures: Option<usize>,
    /// Stop at the first dead job.
    #[arg(long)]
    pub fail_fast: bool,
}

#[derive(Args)]
pub struct NatsArgs {
    /// nats://[user:pass@]host:port, or a cluster's servers separated by commas
    /// (nats://a:4222,nats://b:4222,nats://c:4222) (or NATS_URL).
    #[arg(
        long,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_parser = server_list
    )]
    pub nats: String,
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// A credentials file (JWT and nkey seed).
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA bundle for the server's TLS certificate.
    #[arg(long, env = "NATS_CA")]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, env = "NATS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "NATS_KEY")]
    pub tls_key: Option<PathBuf>,
}

/// `--nats`: one server URL or a comma-separated list, each entry a valid address.
fn server_list(urls: &str) -> Result<String, String> {
    promptgrid_runtime::connect::server_list(urls)
        .map(|_| urls.to_string())
        .map_err(|e| e.to_string())
}

/// `--replicas`: copies of each stream a JetStream cluster keeps, an odd count up to 5.
pub fn replicas(n: &str) -> Result<usize, String> {
    match n.parse::<usize>() {
        Ok(r @ (1 | 3 | 5)) => Ok(r),
        _ => Err(format!(
            "`{n}` is not 1, 3 or 5 (a JetStream cluster keeps an odd number of copies)"
        )),
    }
}
