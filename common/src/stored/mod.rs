//! The planned graph as bytes, stored once by a sweep's first coordinator so that a restart
//! restores it in a fraction of the time planning takes (a million jobs: seconds of hashing).
//!
//! A stored graph is used only when it was planned from the same sweep by the same planner
//! ([`plan_digest`]), its checksum holds, and a sample of its ids is what this planner derives
//! from their specs ([`JobGraph::ids_agree`]); anything else is refused and the graph planned.
//!
//! Layout ([`crate::codec`]): magic, plan digest (32 bytes), the tables of names and settings
//! ([`specs`]), jobs, then per job its id (16 bytes when it is 32 lowercase hex digits, else
//! the text), key, spec (its fields, names and settings as table numbers), dependencies as
//! places in the graph (each before the job's own), and gate.

use sha2::{Digest, Sha256};

use crate::codec::{Malformed, Reader, Unsealed, put_bytes, put_varint, seal, unseal};
use crate::graph::{Job, JobGraph, JobId};
use crate::spec::Sweep;

mod specs;
use specs::{SpecReader, SpecWriter};

const MAGIC: &[u8; 8] = b"PGGRAPH2";

/// Changes whenever planning may give another graph for the same sweep file: this crate's
/// version, and a number to raise with any change to expansion or ids between versions.
const PLANNER: &str = concat!("promptgrid-common ", env!("CARGO_PKG_VERSION"), " graph 1");

/// Jobs whose ids a restore checks against this planner's (spread over the graph).
pub const ID_SAMPLE: usize = 256;

/// Why a stored graph was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Invalid {
    #[error("not a stored graph")]
    Magic,
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated or malformed")]
    Malformed,
    #[error("planned from another sweep file or by another planner")]
    OtherPlan,
    #[error("its job ids are not the ones this planner derives")]
    Ids,
}

impl From<Malformed> for Invalid {
    fn from(_: Malformed) -> Invalid {
        Invalid::Malformed
    }
}

/// What a graph was planned from: this planner and the whole sweep.
pub fn plan_digest(sweep: &Sweep) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(PLANNER.as_bytes());
    h.update([0]);
    h.update(serde_json::to_vec(sweep).unwrap_or_default());
    h.finalize().into()
}

/// The graph planned from `sweep`, as bytes.
pub fn encode(graph: &JobGraph, sweep: &Sweep) -> Vec<u8> {
    let jobs = graph.jobs();
    let mut specs = SpecWriter::default();
    // About 50 bytes a synthetic job, 60 a transfer job.
    let mut body = Vec::with_capacity(16 + jobs.len() * 64);
    put_varint(&mut body, jobs.len() as u64);
    for (i, j) in jobs.iter().enumerate() {
        let id = j.id.as_str();
        match hex_id(id) {
            Some(raw) => {
                body.push(0);
                body.extend_from_slice(&raw);
            }
            None => {
                body.push(1);
                put_bytes(&mut body, id.as_bytes());
            }
        }
        put_bytes(&mut body, j.key.as_bytes());
        specs.spec(&mut body, &j.spec);
        let deps = graph.deps(i);
        put_varint(&mut body, deps.len() as u64);
        for &k in deps {
            put_varint(&mut body, u64::from(k));
        }
        match &j.gate {
            None => body.push(0),
            Some((k, by)) => {
                body.push(1);
                put_varint(&mut body, u64::from(*k));
                specs.blob(&mut body, by);
            }
        }
    }
    let mut out = Vec::with_capacity(body.len() + 4096);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&plan_digest(sweep));
    specs.tables(&mut out);
    out.extend_from_slice(&body);
    seal(&mut out);
    out
}

/// The 16 bytes of an id that is 32 lowercase hex digits (as every planned id is).
fn hex_id(id: &str) -> Option<[u8; 16]> {
    let lower = id.len() == 32 && id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let mut raw = [0u8; 16];
    (lower && hex::decode_to_slice(id, &mut raw).is_ok()).then_some(raw)
}

/// The graph stored in `bytes`, if it was planned from `sweep` by this planner and is intact.
pub fn decode(bytes: &[u8], sweep: &Sweep) -> Result<JobGraph, Invalid> {
    let body = unseal(bytes, MAGIC).map_err(|e| match e {
        Unsealed::Magic => Invalid::Magic,
        Unsealed::Checksum => Invalid::Checksum,
    })?;
    let mut r = Reader { b: body };
    if r.take(32)? != plan_digest(sweep) {
        return Err(Invalid::OtherPlan);
    }
    let mut specs = SpecReader::tables(&mut r)?;
    let n = r.usize()?;
    // Every job takes bytes: a corrupt count cannot make us reserve memory for nothing.
    if n > r.b.len() {
        return Err(Invalid::Malformed);
    }
    let mut jobs: Vec<Job> = Vec::with_capacity(n);
    let mut dep_end: Vec<u32> = Vec::with_capacity(n);
    let mut deps: Vec<u32> = Vec::with_capacity(n * 2);
    let mut hex_buf = [0u8; 32];
    for _ in 0..n {
        let id = match r.byte()? {
            0 => {
                hex::encode_to_slice(r.take(16)?, &mut hex_buf).map_err(|_| Malformed)?;
                JobId::new(std::str::from_utf8(&hex_buf).map_err(|_| Malformed)?)
            }
            1 => JobId::new(r.string()?),
            _ => return Err(Invalid::Malformed),
        };
        let key = r.string()?;
        let spec = specs.spec(&mut r)?;
        let deps_len = r.usize()?;
        if deps_len > r.b.len() {
            return Err(Invalid::Malformed);
        }
        for _ in 0..deps_len {
            deps.push(r.u32()?);
        }
        dep_end.push(u32::try_from(deps.len()).map_err(|_| Malformed)?);
        let gate = match r.byte()? {
            0 => None,
            1 => {
                let k = r.u32()?;
                Some((k, specs.indicator(&mut r)?))
            }
            _ => return Err(Invalid::Malformed),
        };
        jobs.push(Job {
            id,
            key,
            spec,
            gate,
        });
    }
    if !r.b.is_empty() {
        return Err(Invalid::Malformed);
    }
    // Checks that every dependency comes before its dependent.
    let graph = JobGraph::from_jobs(jobs, dep_end, deps).ok_or(Invalid::Malformed)?;
    if !graph.ids_agree(sweep, ID_SAMPLE) {
        return Err(Invalid::Ids);
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{JobKind, JobSpec, TptSource};
    use crate::spec::SyntheticSpec;

    fn synthetic(count: u32, seed: u64) -> Sweep {
        let spec = SyntheticSpec {
            count,
            fan_in: 2,
            duration_ms: (0, 5),
            fail_probability: 0.1,
            payload_bytes: 3,
            seed,
        };
        Sweep::synthetic_only("s", spec)
    }

    fn same(a: &JobGraph, b: &JobGraph) {
        assert_eq!(a.jobs(), b.jobs());
        for j in a.jobs() {
            assert_eq!(a.position(&j.id), b.position(&j.id));
        }
        assert_eq!(a.dep_table(), b.dep_table());
    }

    #[test]
    fn a_synthetic_graph_restores_as_planned() {
        let sweep = synthetic(2_000, 7);
        let graph = JobGraph::build(&sweep);
        let bytes = encode(&graph, &sweep);
        same(&decode(&bytes, &sweep).unwrap(), &graph);
    }

    /// The demo, and the smoke sweep, which plans every kind of job, a projected TPT source
    /// and gated TPT jobs: every field of every spec comes back.
    #[test]
    fn planned_grids_restore_as_planned() {
        let catalog = crate::catalog::Catalog::builtin().unwrap();
        for (name, source) in [
            ("demo.toml", include_str!("../../../sweeps/demo.toml")),
            ("smoke.toml", include_str!("../../../sweeps/smoke.toml")),
        ] {
            let sweep = Sweep::parse(std::path::Path::new(name), source, &catalog).unwrap();
            let graph = JobGraph::build(&sweep);
            assert!(graph.edge_count() > 0);
            same(&decode(&encode(&graph, &sweep), &sweep).unwrap(), &graph);
        }
        let sweep = Sweep::parse(
            std::path::Path::new("smoke.toml"),
            include_str!("../../../sweeps/smoke.toml"),
            &catalog,
        )
        .unwrap();
        let graph = JobGraph::build(&sweep);
        let kinds = graph.counts();
        for kind in JobKind::ALL
            .into_iter()
            .filter(|&k| k != JobKind::Synthetic)
        {
            assert!(kinds.contains_key(&kind), "smoke plans no {kind:?} job");
        }
        assert!(graph.jobs().iter().any(|j| j.gate.is_some()));
        assert!(graph.jobs().iter().any(|j| matches!(
            j.spec,
            JobSpec::Tpt {
                source: TptSource::Projected { .. },
                ..
            }
        )));
    }

    #[test]
    fn another_sweep_a_changed_byte_or_other_ids_are_refused() {
        let sweep = synthetic(500, 1);
        let graph = JobGraph::build(&sweep);
        let bytes = encode(&graph, &sweep);
        assert_eq!(
            decode(&bytes, &synthetic(500, 2)).err(),
            Some(Invalid::OtherPlan)
        );
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        assert_eq!(decode(&bad, &sweep).err(), Some(Invalid::Checksum));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1], &sweep).err(),
            Some(Invalid::Checksum)
        );
        // Ids another planner would have derived, sealed as if they were right.
        let mut jobs = graph.jobs().to_vec();
        for j in &mut jobs {
            j.id = JobId::new(format!("{:0>32}", &j.id.as_str()[1..]));
        }
        let (dep_end, deps) = graph.dep_table();
        let (dep_end, deps) = (dep_end.to_vec(), deps.to_vec());
        // Dependencies that do not fit the jobs are refused: too few, or one that is not
        // before its dependent.
        assert!(JobGraph::from_jobs(jobs.clone(), dep_end.clone(), vec![]).is_none());
        let mut forward = deps.clone();
        let last = *dep_end.last().unwrap() as usize - 1;
        forward[last] = jobs.len() as u32 - 1;
        assert!(JobGraph::from_jobs(jobs.clone(), dep_end.clone(), forward).is_none());
        let forged = JobGraph::from_jobs(jobs, dep_end, deps).unwrap();
        assert_eq!(
            decode(&encode(&forged, &sweep), &sweep).err(),
            Some(Invalid::Ids)
        );
    }
}
