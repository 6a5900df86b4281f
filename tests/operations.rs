//! Running promptgrid on a cluster, through the real binary against real nats-server children:
//! JSON logs that name the job on every line, `worker --gpus` supervising one worker process per
//! GPU, and the deployment recipes under `deploy/` (well-formed, and every flag they pass is
//! one the CLI has).

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use promptgrid_common::spec::SyntheticSpec;
use promptgrid_runtime::jobloop::synthetic_graph;
use promptgrid_runtime::server::NatsServer;
use promptgrid_runtime::{CoordinatorConfig, NatsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_promptgrid");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn nats(dir: &Path) -> NatsServer {
    NatsServer::start(&dir.join("nats"), &[])
        .unwrap_or_else(|e| panic!("{e} (`. scripts/env.sh` puts nats-server on PATH)"))
}

/// Polls `f` every 50 ms until it is true; panics after `limit`.
fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn alive(pid: u32) -> bool {
    signal(pid, "0")
}

/// Lines of a `--log-format json` log; every non-empty line must be a JSON object.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_of_a_job_carry_its_sweep_key_attempt_and_worker() {
    let dir = tempfile::tempdir().unwrap();
    let srv = nats(dir.path());
    let url = srv.url();
    let log = dir.path().join("worker.log");
    let mut worker = Command::new(BIN)
        .args(["--log-format", "json", "worker", "--nats", url.as_str()])
        .args([
            "--sweep",
            "jsonlogs",
            "--name",
            "node7-gpu0",
            "--threads",
            "1",
        ])
        .arg("--models-root")
        .arg(dir.path())
        .arg("--data-root")
        .arg(dir.path())
        // The default filter: what a cluster worker logs without RUST_LOG.
        .env_remove("RUST_LOG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();

    let spec = SyntheticSpec {
        count: 2,
        fan_in: 0,
        duration_ms: (200, 200),
        fail_probability: 0.0,
        payload_bytes: 0,
        seed: 1,
    };
    let graph = synthetic_graph("jsonlogs", spec);
    let mut cfg = CoordinatorConfig::new(NatsConfig::new(&url), "jsonlogs", graph.clone());
    cfg.progress = false;
    let out = tokio::time::timeout(Duration::from_secs(60), promptgrid_runtime::run(cfg))
        .await
        .expect("the sweep finishes")
        .unwrap();
    assert!(out.complete(), "{out:?}");
    assert!(signal(worker.id(), "TERM"));
    let status = tokio::task::block_in_place(|| wait_exit(&mut worker, Duration::from_secs(30)));
    assert!(status.success(), "{status}");

    let lines = json_lines(&log);
    let keys: HashSet<&str> = graph.jobs().iter().map(|j| j.key.as_str()).collect();
    let finished: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "job finished")
        .collect();
    assert_eq!(finished.len(), 2, "{lines:#?}");
    let mut seen = HashSet::new();
    for l in &finished {
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["target"], "promptgrid::job");
        assert_eq!(l["sweep"], "jsonlogs");
        assert_eq!(l["worker"], "node7-gpu0");
        assert_eq!(l["attempt"], 1);
        assert_eq!(l["kind"], "synthetic");
        assert_eq!(l["spans"], "job");
        let key = l["job"].as_str().unwrap();
        assert!(keys.contains(key), "{key} is not a job of the sweep");
        seen.insert(key);
        assert!(l["elapsed_ms"].as_u64().unwrap() >= 200, "{l}");
    }
    assert_eq!(seen.len(), 2, "one line per job");
    // Every line of a job, not only the last: the started lines carry the same fields.
    let started: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "job started")
        .collect();
    assert_eq!(started.len(), 2);
    for l in &started {
        assert!(keys.contains(l["job"].as_str().unwrap()));
        assert_eq!(l["sweep"], "jsonlogs");
        assert_eq!(l["attempt"], 1);
        assert_eq!(l["worker"], "node7-gpu0");
    }
    let stopped = lines
        .iter()
        .find(|l| l["message"] == "worker stopped")
        .unwrap_or_else(|| panic!("no `worker stopped` line: {lines:#?}"));
    assert_eq!(stopped["message"], "worker stopped");
    assert_eq!(stopped["done"], 2);
}

/// Stands in for a GPU on a machine without CUDA: records its pid and arguments, then runs
/// the real worker with `--device cpu` instead of `--device cuda:N`.
const FAKE_GPU_CHILD: &str = r#"#!/bin/sh
echo "$$ $*" >> "$PG_TEST_CHILDREN"
for arg; do
    shift
    case "$arg" in
        cuda:*) set -- "$@" cpu ;;
        *) set -- "$@" "$arg" ;;
    esac
done
exec "$PG_TEST_BIN" "$@"
"#;

#[test]
fn gpus_runs_a_worker_per_gpu_restarts_a_killed_one_and_stops_them_all() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let srv = nats(dir.path());
    let url = srv.url();
    let script = dir.path().join("fake-gpu-worker");
    std::fs::write(&script, FAKE_GPU_CHILD).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let calls = dir.path().join("children.txt");
    let log = dir.path().join("parent.log");
    let mut parent = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "worker",
            "--gpus",
            "all",
            "--nats",
            url.as_str(),
        ])
        .args(["--sweep", "gpus", "--threads", "1"])
        .arg("--models-root")
        .arg(dir.path())
        .arg("--data-root")
        .arg(dir.path())
        .env("PROMPTGRID_FAKE_GPUS", "2")
        .env("PROMPTGRID_WORKER_CHILD", &script)
        .env("PG_TEST_CHILDREN", &calls)
        .env("PG_TEST_BIN", BIN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // (pid, arguments) of every child started so far, per GPU.
    let children = |gpu: usize| -> Vec<(u32, String)> {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(&format!("--device cuda:{gpu}")))
            .map(|l| {
                let (pid, args) = l.split_once(' ').unwrap();
                (pid.parse().unwrap(), args.to_string())
            })
            .collect()
    };
    until(Duration::from_secs(30), "a worker per GPU", || {
        children(0).len() == 1 && children(1).len() == 1
    });
    for gpu in 0..2 {
        let (_, args) = &children(gpu)[0];
        // The other flags pass through; --gpus does not.
        assert!(
            args.starts_with(&format!(
                "--log-format json worker --nats {url} --sweep gpus --threads 1"
            )),
            "{args}"
        );
        assert!(!args.contains("--gpus"), "{args}");
    }

    let (victim, _) = children(1)[0];
    assert!(signal(victim, "KILL"));
    until(
        Duration::from_secs(30),
        "the killed worker's restart",
        || children(1).len() == 2,
    );
    let (restarted, _) = children(1)[1];
    assert_ne!(restarted, victim);
    assert_eq!(children(0).len(), 1, "only the crashed worker restarts");
    // The children write to the same stderr; libtorch may add a line of its own.
    let parent_lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let lines = parent_lines();
    let said = |message: &str| {
        lines
            .iter()
            .any(|l| l["message"] == message && l["gpu"] == 1)
    };
    assert!(said("worker for cuda:1 crashed"), "{lines:#?}");
    assert!(said("restarting the worker for cuda:1 in 1s"), "{lines:#?}");

    // SIGTERM to the parent stops every child, and the parent exits cleanly.
    let (survivor, _) = children(0)[0];
    assert!(alive(survivor) && alive(restarted));
    assert!(signal(parent.id(), "TERM"));
    let status = wait_exit(&mut parent, Duration::from_secs(30));
    assert!(status.success(), "{status}");
    for pid in [survivor, restarted] {
        assert!(!alive(pid), "worker {pid} outlived its parent");
    }
    let lines = parent_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "GPU workers stopped" && l["restarts"] == 1),
        "{lines:#?}"
    );
}

#[test]
fn gpus_without_gpus_or_with_a_missing_one_is_bad_input() {
    let run = |fake: &str, extra: &[&str]| {
        let out = Command::new(BIN)
            .args(["worker", "--nats", "nats://127.0.0.1:9"])
            .args(["--models-root", ".", "--data-root", "."])
            .args(extra)
            .env("PROMPTGRID_FAKE_GPUS", fake)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("0", &["--gpus", "all"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("this machine has no CUDA device"), "{err}");
    let (code, err) = run("2", &["--gpus", "0,3"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("there is no GPU 3: this machine has 2"),
        "{err}"
    );
    let (code, err) = run("2", &["--gpus", "0", "--device", "cuda:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Deployment recipes

/// `promptgrid [SUB] --help`.
fn help(sub: Option<&str>) -> String {
    let out = Command::new(BIN).args(sub).arg("--help").output().unwrap();
    assert!(out.status.success(), "{sub:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

/// The `--flags` a help text lists: the first long flag of each option line (flags that only
/// appear in descriptions do not count).
fn flags_in(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| {
            l.split(|c: char| c.is_whitespace() || ",<=".contains(c))
                .find(|t| t.starts_with("--") && t.len() > 2)
        })
        .map(str::to_string)
        .collect()
}

/// The subcommands `promptgrid --help` lists.
fn subcommands() -> BTreeSet<String> {
    let text = help(None);
    text.split("Commands:")
        .nth(1)
        .unwrap()
        .split("Options:")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Command lines in shell-like text (continuations joined): from a `promptgrid` word to the end
/// of the line or a shell separator.
fn command_lines(text: &str) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || "\"'`[],=".contains(c))
            .filter(|w| !w.is_empty())
            .collect();
        let mut i = 0;
        while i < words.len() {
            if words[i] != "promptgrid" {
                i += 1;
                continue;
            }
            let end = words[i + 1..]
                .iter()
                .position(|w| ["&", "&&", "|", "||", ";"].contains(w))
                .map_or(words.len(), |p| i + 1 + p);
            out.push(words[i..end].iter().map(|w| w.to_string()).collect());
            i = end;
        }
    }
    out
}

/// A promptgrid invocation: its global flags, subcommand and the subcommand's flags; `None`
/// when the word `promptgrid` is not followed by a subcommand (prose in a comment).
struct Invocation {
    globals: Vec<String>,
    sub: String,
    flags: Vec<String>,
}

fn invocation(words: &[String], subs: &BTreeSet<String>) -> Option<Invocation> {
    let mut i = 1;
    let mut globals = Vec::new();
    while i < words.len() && words[i].starts_with("--") {
        globals.push(words[i].clone());
        i += 2; // every global flag takes a value
    }
    let sub = words.get(i).filter(|w| subs.contains(*w))?.clone();
    let flags = words[i + 1..]
        .iter()
        .filter(|w| w.starts_with("--"))
        .cloned()
        .collect();
    Some(Invocation {
        globals,
        sub,
        flags,
    })
}

/// Every container's command and arguments in a YAML value.
fn containers(value: &serde_norway::Value, out: &mut Vec<Vec<String>>) {
    use serde_norway::Value;
    match value {
        Value::Mapping(m) => {
            if m.contains_key("image") {
                let words = |key: &str| -> Vec<String> {
                    m.get(key)
                        .and_then(Value::as_sequence)
                        .map(|s| {
                            s.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let mut all = words("command");
                all.extend(words("args"));
                out.push(all);
            }
            for v in m.values() {
                containers(v, out);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| containers(v, out)),
        _ => {}
    }
}

fn yaml_documents(text: &str, path: &Path) -> Vec<serde_norway::Value> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn deployment_recipes_are_well_formed_and_pass_only_flags_the_cli_has() {
    let subs = subcommands();
    let global_flags = flags_in(&help(None));
    let deploy = repo().join("deploy");
    let files = files_under(&deploy);
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    let mut kinds: BTreeSet<String> = BTreeSet::new();
    for path in &files {
        let name = path.strip_prefix(&deploy).unwrap().display().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        for d in ["work", "home", "tmp", "root"] {
            assert!(!text.contains(&format!("/{d}/")), "{name}: a machine path");
        }
        let mut lines = command_lines(&text);
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") => {
                let docs = yaml_documents(&text, path);
                assert!(!docs.is_empty(), "{name}: no YAML document");
                for doc in &docs {
                    let kind = doc["kind"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: no kind"));
                    assert!(
                        doc["metadata"]["name"].is_string(),
                        "{name}: {kind} without a name"
                    );
                    kinds.insert(kind.to_string());
                    containers(doc, &mut lines);
                }
            }
            Some("sbatch") | Some("sh") => {
                let out = Command::new("bash").arg("-n").arg(path).output().unwrap();
                assert!(
                    out.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(text.contains("#SBATCH --nodes"), "{name}");
                assert!(text.contains("nats-server -js"), "{name}");
                assert!(text.contains("srun "), "{name}");
            }
            Some("service") => {
                for section in ["[Unit]", "[Service]", "[Install]"] {
                    assert!(text.contains(section), "{name}: no {section}");
                }
                assert!(text.contains("\nExecStart=promptgrid "), "{name}");
            }
            other => panic!("{name}: a recipe of unknown type {other:?}"),
        }
        for words in lines {
            let Some(inv) = invocation(&words, &subs) else {
                continue;
            };
            let allowed = flags_in(&help(Some(inv.sub.as_str())));
            for flag in &inv.flags {
                assert!(
                    allowed.contains(flag),
                    "{name}: `promptgrid {}` has no {flag}",
                    inv.sub
                );
            }
            for flag in &inv.globals {
                assert!(global_flags.contains(flag), "{name}: no global {flag}");
            }
            used.insert((name.clone(), inv.sub.clone()));
        }
    }
    let expect = |file: &str, sub: &str| {
        assert!(
            used.contains(&(file.to_string(), sub.to_string())),
            "{file} runs no `promptgrid {sub}`: {used:?}"
        );
    };
    expect("slurm/promptgrid.sbatch", "coordinator");
    expect("slurm/promptgrid.sbatch", "worker");
    expect("k8s/coordinator-job.yaml", "coordinator");
    expect("k8s/worker-deployment.yaml", "worker");
    expect("systemd/promptgrid-worker.service", "worker");
    for kind in [
        "StatefulSet",
        "Service",
        "Job",
        "Deployment",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }

    // NATS runs with JetStream on a persistent volume; workers ask for a GPU each.
    let docs = yaml_documents(
        &std::fs::read_to_string(deploy.join("k8s/nats.yaml")).unwrap(),
        &deploy,
    );
    let nats = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let container = &nats["spec"]["template"]["spec"]["containers"][0];
    assert!(container["image"].as_str().unwrap().starts_with("nats:"));
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--jetstream"), "{args:?}");
    assert!(nats["spec"]["volumeClaimTemplates"].is_sequence());
    let docs = yaml_documents(
        &std::fs::read_to_string(deploy.join("k8s/worker-deployment.yaml")).unwrap(),
        &deploy,
    );
    let limits = &docs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"];
    assert_eq!(limits["nvidia.com/gpu"].as_u64(), Some(1));
}

/// `--replicas` other than 1, 3 or 5, a malformed entry of a `--nats` server list, and three
/// replicas asked of a lone server are bad input (exit status 2) named in the message; the
/// list itself is accepted.
#[test]
fn replicas_and_server_lists_are_checked_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let srv = nats(dir.path());
    let sweep = repo().join("sweeps/smoke.toml");
    let results = dir.path().join("runs");
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .arg("coordinator")
            .arg(&sweep)
            .arg("--results")
            .arg(&results)
            .args(extra)
            .env_remove("NATS_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["--replicas", "2"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("`2` is not 1, 3 or 5"), "{err}");
    let (code, err) = run(&["--nats", "nats://a:4222,nats://b:x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("`nats://b:x` is not a NATS server address"),
        "{err}"
    );
    // A dead server first in the list: the client goes on to the live one, which runs alone.
    let list = format!("nats://127.0.0.1:1,{}", srv.url());
    let (code, err) = run(&["--nats", list.as_str(), "--replicas", "3"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--replicas 3 needs a JetStream cluster of at least 3 servers"),
        "{err}"
    );
}

/// `promptgrid plan sweep.toml | head -1` where head has already gone: the command ends as `cat`
/// would (SIGPIPE, nothing on stderr), not with a panic from `println!` (exit 101).
#[test]
fn a_printing_command_whose_reader_is_gone_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    // Closed before the child starts: its first write to stdout fails, every time.
    drop(reader);
    let out = Command::new(BIN)
        .arg("plan")
        .arg(repo().join("sweeps/demo.toml"))
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "{stderr}");
}
