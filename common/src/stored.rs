//! The planned graph as bytes, stored once by a sweep's first coordinator so that a restart
//! restores it in a fraction of the time planning takes (a million jobs: seconds of hashing).
//!
//! A stored graph is used only when it was planned from the same sweep by the same planner
//! ([`plan_digest`]), its checksum holds, and a sample of its ids is what this planner derives
//! from their specs ([`JobGraph::ids_agree`]); anything else is refused and the graph planned.
//!
//! Layout ([`crate::codec`]): magic, plan digest (32 bytes), jobs, then per job its id (16
//! bytes when it is 32 lowercase hex digits, else the text), key, spec (synthetic fields, or
//! the spec's JSON), dependencies as places in the graph (before the job's own), and gate.

use sha2::{Digest, Sha256};

use crate::codec::{Malformed, Reader, Unsealed, put_bytes, put_varint, seal, unseal};
use crate::graph::{Job, JobGraph, JobId, JobSpec, NOT_IN_GRAPH};
use crate::spec::{Indicator, Sweep};

const MAGIC: &[u8; 8] = b"PGGRAPH1";

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

/// Tags of a job's encoded spec.
const SPEC_SYNTHETIC: u8 = 0;
const SPEC_JSON: u8 = 1;

/// The graph planned from `sweep`, as bytes.
pub fn encode(graph: &JobGraph, sweep: &Sweep) -> Vec<u8> {
    let jobs = graph.jobs();
    // About 50 bytes a synthetic job.
    let mut out = Vec::with_capacity(64 + jobs.len() * 56);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&plan_digest(sweep));
    put_varint(&mut out, jobs.len() as u64);
    for j in jobs {
        let id = j.id.as_str();
        match hex_id(id) {
            Some(raw) => {
                out.push(0);
                out.extend_from_slice(&raw);
            }
            None => {
                out.push(1);
                put_bytes(&mut out, id.as_bytes());
            }
        }
        put_bytes(&mut out, j.key.as_bytes());
        match &j.spec {
            JobSpec::Synthetic {
                index,
                duration_ms,
                fail,
                payload_bytes,
            } => {
                out.push(SPEC_SYNTHETIC);
                put_varint(&mut out, u64::from(*index));
                put_varint(&mut out, u64::from(*duration_ms));
                out.push(u8::from(*fail));
                put_varint(&mut out, u64::from(*payload_bytes));
            }
            spec => {
                out.push(SPEC_JSON);
                put_bytes(&mut out, &serde_json::to_vec(spec).unwrap_or_default());
            }
        }
        put_varint(&mut out, j.deps.len() as u64);
        for d in &j.deps {
            // 0, then the id, for a dependency outside the graph.
            match graph.position(d) {
                Some(k) => put_varint(&mut out, k as u64 + 1),
                None => {
                    put_varint(&mut out, 0);
                    put_bytes(&mut out, d.as_str().as_bytes());
                }
            }
        }
        match &j.gate {
            None => out.push(0),
            Some((k, by)) => {
                out.push(1);
                put_varint(&mut out, u64::from(*k));
                put_bytes(&mut out, &serde_json::to_vec(by).unwrap_or_default());
            }
        }
    }
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
    let n = r.usize()?;
    // Every job takes bytes: a corrupt count cannot make us reserve memory for nothing.
    if n > r.b.len() {
        return Err(Invalid::Malformed);
    }
    let mut jobs: Vec<Job> = Vec::with_capacity(n);
    let mut places: Vec<u32> = Vec::with_capacity(n * 2);
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
        let spec = match r.byte()? {
            SPEC_SYNTHETIC => JobSpec::Synthetic {
                index: r.u32()?,
                duration_ms: r.u32()?,
                fail: r.byte()? != 0,
                payload_bytes: r.u32()?,
            },
            SPEC_JSON => serde_json::from_slice(r.bytes()?).map_err(|_| Invalid::Malformed)?,
            _ => return Err(Invalid::Malformed),
        };
        let deps_len = r.usize()?;
        if deps_len > r.b.len() {
            return Err(Invalid::Malformed);
        }
        let mut deps = Vec::with_capacity(deps_len);
        for _ in 0..deps_len {
            let (dep, place) = match r.usize()? {
                0 => (JobId::new(r.string()?), NOT_IN_GRAPH),
                // A dependency comes before its dependent.
                k if k <= jobs.len() => (jobs[k - 1].id.clone(), k as u32 - 1),
                _ => return Err(Invalid::Malformed),
            };
            deps.push(dep);
            places.push(place);
        }
        let gate = match r.byte()? {
            0 => None,
            1 => {
                let k = r.u32()?;
                let by: Indicator =
                    serde_json::from_slice(r.bytes()?).map_err(|_| Invalid::Malformed)?;
                Some((k, by))
            }
            _ => return Err(Invalid::Malformed),
        };
        jobs.push(Job {
            id,
            key,
            spec,
            deps,
            gate,
        });
    }
    if !r.b.is_empty() {
        return Err(Invalid::Malformed);
    }
    let graph = JobGraph::from_jobs(jobs, places).ok_or(Invalid::Malformed)?;
    if !graph.ids_agree(sweep, ID_SAMPLE) {
        return Err(Invalid::Ids);
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(a.clone().take_dep_places(), b.clone().take_dep_places());
    }

    #[test]
    fn a_synthetic_graph_restores_as_planned() {
        let sweep = synthetic(2_000, 7);
        let graph = JobGraph::build(&sweep);
        let bytes = encode(&graph, &sweep);
        same(&decode(&bytes, &sweep).unwrap(), &graph);
    }

    #[test]
    fn a_planned_grid_restores_as_planned() {
        let source = include_str!("../../sweeps/demo.toml");
        let catalog = crate::catalog::Catalog::builtin().unwrap();
        let sweep = Sweep::parse(std::path::Path::new("demo.toml"), source, &catalog).unwrap();
        let graph = JobGraph::build(&sweep);
        assert!(graph.jobs().iter().any(|j| !j.deps.is_empty()));
        same(&decode(&encode(&graph, &sweep), &sweep).unwrap(), &graph);
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
        let mut forged = JobGraph::from_jobs(jobs, vec![]).unwrap_or_default();
        assert!(
            forged.is_empty(),
            "places that do not fit the edges are refused"
        );
        let places = graph.clone().take_dep_places();
        let mut jobs = graph.jobs().to_vec();
        for j in &mut jobs {
            j.id = JobId::new(format!("{:0>32}", &j.id.as_str()[1..]));
        }
        forged = JobGraph::from_jobs(jobs, places).unwrap();
        assert_eq!(
            decode(&encode(&forged, &sweep), &sweep).err(),
            Some(Invalid::Ids)
        );
    }
}
