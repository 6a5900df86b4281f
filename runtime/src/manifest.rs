//! The graph a sweep last published, kept in its artifact store, so that a run of an edited
//! sweep can say which jobs it reuses and which changed.

use std::collections::BTreeMap;
use std::fmt;

use promptgrid_common::JobGraph;
use serde::{Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::streams::SweepStreams;

const MANIFEST: &str = "manifest/graph.json";
/// A digest of the manifest's content. A rerun of an unchanged sweep (every resume) compares
/// digests and neither reads nor writes the manifest, which is tens of MB at a million jobs.
const MANIFEST_DIGEST: &str = "manifest/graph.sha256";

/// Differences by job key between the previous run's graph and this one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphChanges {
    /// Whether there was a previous run at all.
    pub previous: bool,
    /// Jobs in the graph of this run.
    pub jobs: usize,
    pub reused: usize,
    /// Keys of the jobs the previous run did not have; empty for a new sweep, whose jobs are
    /// all new (a million keys are not worth holding to say so).
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same key, different id: a setting or an upstream job changed.
    pub changed: Vec<String>,
    /// The digest of this run's graph (ids and keys in order), which ties the coordinator's
    /// state snapshot to the graph it was taken of.
    pub digest: String,
}

impl GraphChanges {
    pub fn is_empty(&self) -> bool {
        self.added_count() == 0 && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Jobs the previous run did not have (all of them for a new sweep).
    pub fn added_count(&self) -> usize {
        if self.previous {
            self.added.len()
        } else {
            self.jobs
        }
    }
}

impl fmt::Display for GraphChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.previous {
            return write!(f, "new sweep: {} jobs", self.jobs);
        }
        write!(
            f,
            "sweep changed: {} jobs reused, {} added, {} changed, {} removed",
            self.reused,
            self.added.len(),
            self.changed.len(),
            self.removed.len()
        )?;
        for (what, keys) in [
            ("changed", &self.changed),
            ("added", &self.added),
            ("removed", &self.removed),
        ] {
            for k in keys.iter().take(5) {
                write!(f, "\n  {what}: {k}")?;
            }
            if keys.len() > 5 {
                write!(f, "\n  ... and {} more {what}", keys.len() - 5)?;
            }
        }
        Ok(())
    }
}

/// The manifest's (key, id) pairs as a JSON object, written as a `BTreeMap` of them was, from
/// borrowed pairs sorted by key.
struct AsMap<'a>(&'a [(&'a str, &'a str)]);

impl Serialize for AsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The digest of a graph's ids and keys, in the graph's own order (the same on every run of
/// the same sweep; only a changed graph pays for sorting). It ties a state snapshot to its graph.
pub fn digest(graph: &JobGraph) -> String {
    let mut hasher = Sha256::new();
    for j in graph.jobs() {
        hasher.update(j.key.as_bytes());
        hasher.update([0]);
        hasher.update(j.id.as_str().as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

/// Compares `graph` with the stored manifest, then stores `graph` as the new one.
pub async fn update(streams: &SweepStreams, graph: &JobGraph) -> Result<GraphChanges> {
    let digest = digest(graph);
    let old_digest = crate::objects::read_object(&streams.artifacts, MANIFEST_DIGEST).await?;
    if old_digest.as_deref() == Some(digest.as_bytes()) {
        return Ok(GraphChanges {
            previous: true,
            jobs: graph.len(),
            reused: graph.len(),
            digest,
            ..GraphChanges::default()
        });
    }
    let mut new: Vec<(&str, &str)> = graph
        .jobs()
        .iter()
        .map(|j| (j.key.as_str(), j.id.as_str()))
        .collect();
    new.sort_unstable();
    new.dedup_by(|a, b| a.0 == b.0);
    let old: Option<BTreeMap<String, String>> =
        crate::objects::read_object(&streams.artifacts, MANIFEST)
            .await?
            .and_then(|buf| serde_json::from_slice(&buf).ok());
    let mut changes = GraphChanges {
        previous: old.is_some(),
        jobs: new.len(),
        digest: digest.clone(),
        ..GraphChanges::default()
    };
    if let Some(old) = &old {
        let mut in_new = std::collections::HashSet::with_capacity(new.len());
        for &(key, id) in &new {
            in_new.insert(key);
            match old.get(key) {
                None => changes.added.push(key.to_string()),
                Some(o) if o != id => changes.changed.push(key.to_string()),
                Some(_) => changes.reused += 1,
            }
        }
        changes.removed = old
            .keys()
            .filter(|k| !in_new.contains(k.as_str()))
            .cloned()
            .collect();
    }
    let same = old.as_ref().is_some_and(|old| {
        old.len() == new.len()
            && old
                .iter()
                .zip(&new)
                .all(|((k, v), (nk, nv))| k == nk && v == nv)
    });
    if !same {
        let bytes = serde_json::to_vec(&AsMap(&new)).unwrap_or_default();
        streams
            .artifacts
            .put(MANIFEST, &mut bytes.as_slice())
            .await
            .map_err(Error::nats)?;
    }
    // After the manifest: a crash between the two leaves an old digest, and the next run
    // compares the manifests in full.
    streams
        .artifacts
        .put(MANIFEST_DIGEST, &mut digest.as_bytes())
        .await
        .map_err(Error::nats)?;
    Ok(changes)
}
