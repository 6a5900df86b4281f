//! What produced a result set: the setups (promptgrid version and commit, torch, device,
//! precision, threads) its done jobs recorded, so that the report says what its numbers come
//! from and flags a result set whose jobs ran on different setups (their scores may differ by
//! setup alone; docs/results.md, "Determinism and provenance").

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::schema::JobRow;

/// One setup, as the `jobs` table's provenance columns record it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Setup {
    pub version: String,
    pub commit: String,
    pub torch: String,
    pub device: String,
    pub precision: String,
    pub threads: Option<i64>,
}

/// The done jobs per setup, and how many done jobs recorded none (older workers).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    pub setups: BTreeMap<Setup, usize>,
    pub unrecorded: usize,
}

impl Provenance {
    /// Counts the setups of the done attempts in `jobs`.
    pub fn of(jobs: &[JobRow]) -> Provenance {
        let mut out = Provenance::default();
        for j in jobs.iter().filter(|j| j.status == "done") {
            let unknown = || "unknown".to_string();
            let setup = match (&j.promptgrid_version, &j.device, &j.precision) {
                (Some(version), Some(device), Some(precision)) => Setup {
                    version: version.clone(),
                    commit: j.git_commit.clone().unwrap_or_else(unknown),
                    torch: j.torch_version.clone().unwrap_or_else(unknown),
                    device: device.clone(),
                    precision: precision.clone(),
                    threads: j.threads,
                },
                _ => {
                    out.unrecorded += 1;
                    continue;
                }
            };
            *out.setups.entry(setup).or_default() += 1;
        }
        out
    }

    /// Whether the jobs ran on more than one setup (an unrecorded one counts as another).
    pub fn is_mixed(&self) -> bool {
        self.setups.len() + usize::from(self.unrecorded > 0 && !self.setups.is_empty()) > 1
    }

    /// The parts of the setup that differ between jobs: `version`, `device`, ...
    pub fn differing(&self) -> Vec<&'static str> {
        let Some(first) = self.setups.keys().next() else {
            return Vec::new();
        };
        let differs = |same: &dyn Fn(&Setup) -> bool| !self.setups.keys().all(same);
        [
            ("version", differs(&|s| s.version == first.version)),
            ("commit", differs(&|s| s.commit == first.commit)),
            ("torch", differs(&|s| s.torch == first.torch)),
            ("device", differs(&|s| s.device == first.device)),
            ("precision", differs(&|s| s.precision == first.precision)),
            ("threads", differs(&|s| s.threads == first.threads)),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect()
    }

    /// The report's section; empty when no done job recorded a setup.
    pub fn markdown(&self) -> String {
        if self.setups.is_empty() {
            return String::new();
        }
        let mut md = String::from("## Provenance\n\n");
        if self.is_mixed() {
            let mut differing = self.differing();
            if self.unrecorded > 0 {
                differing.push("unrecorded");
            }
            let _ = writeln!(
                md,
                "**Mixed setups** ({}): the jobs of this result set ran on {} setups, and scores \
                 may differ by setup alone; compare results within one setup.\n",
                differing.join(", "),
                self.setups.len() + usize::from(self.unrecorded > 0)
            );
        }
        md.push_str(
            "| promptgrid | commit | torch | device | precision | threads | done jobs |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for (s, n) in &self.setups {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {n} |",
                s.version,
                s.commit,
                s.torch,
                s.device,
                s.precision,
                s.threads.map_or("–".into(), |t| t.to_string())
            );
        }
        if self.unrecorded > 0 {
            let _ = writeln!(md, "| (not recorded) | | | | | | {} |", self.unrecorded);
        }
        md.push('\n');
        md
    }
}
