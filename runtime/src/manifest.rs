//! The graph a sweep last published, kept in its artifact store, so that a run of an edited
//! sweep can say which jobs it reuses and which changed.

use std::collections::BTreeMap;
use std::fmt;

use promptgrid_common::JobGraph;

use crate::error::{Error, Result};
use crate::streams::SweepStreams;

const MANIFEST: &str = "manifest/graph.json";

/// Differences by job key between the previous run's graph and this one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GraphChanges {
    /// Whether there was a previous run at all.
    pub previous: bool,
    pub reused: usize,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same key, different id: a setting or an upstream job changed.
    pub changed: Vec<String>,
}

impl GraphChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for GraphChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.previous {
            return write!(f, "new sweep: {} jobs", self.added.len());
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

/// Compares `graph` with the stored manifest, then stores `graph` as the new one.
pub async fn update(streams: &SweepStreams, graph: &JobGraph) -> Result<GraphChanges> {
    let old: Option<BTreeMap<String, String>> =
        crate::objects::read_object(&streams.artifacts, MANIFEST)
            .await?
            .and_then(|buf| serde_json::from_slice(&buf).ok());
    let new: BTreeMap<String, String> = graph
        .jobs()
        .iter()
        .map(|j| (j.key.clone(), j.id.0.to_string()))
        .collect();
    let mut changes = GraphChanges {
        previous: old.is_some(),
        ..GraphChanges::default()
    };
    let old = old.unwrap_or_default();
    for (key, id) in &new {
        match old.get(key) {
            None => changes.added.push(key.clone()),
            Some(o) if o != id => changes.changed.push(key.clone()),
            Some(_) => changes.reused += 1,
        }
    }
    changes.removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    if old != new {
        let bytes = serde_json::to_vec(&new).unwrap_or_default();
        streams
            .artifacts
            .put(MANIFEST, &mut bytes.as_slice())
            .await
            .map_err(Error::nats)?;
    }
    Ok(changes)
}
