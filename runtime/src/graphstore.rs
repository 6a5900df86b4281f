//! The planned graph in the sweep's artifact store, beside the state snapshot: stored by the
//! coordinator that planned it, restored by a restart instead of planning again (at a million
//! jobs planning was most of a resume). What may be restored is decided in
//! [`promptgrid_common::stored`]: a graph of another sweep file or planner, or one that fails
//! its checksum or its sample of ids, is ignored and the graph planned.

use promptgrid_common::{JobGraph, Sweep, stored};

use crate::error::{Error, Result};
use crate::streams::SweepStreams;

/// Where the graph is kept, next to the manifest and snapshot it goes with.
pub const GRAPH_ARTIFACT: &str = "manifest/graph.bin";

/// The graph of `sweep`, and whether it was restored rather than planned.
pub async fn restore_or_plan(streams: &SweepStreams, sweep: &Sweep) -> (JobGraph, bool) {
    match crate::objects::read_object(&streams.artifacts, GRAPH_ARTIFACT).await {
        Ok(Some(bytes)) => match stored::decode(&bytes, sweep) {
            Ok(graph) => return (graph, true),
            Err(e) => tracing::warn!(sweep = %sweep.name, "stored graph ignored: {e}"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(sweep = %sweep.name, error = %e, "stored graph unreadable"),
    }
    (JobGraph::build(sweep), false)
}

/// Stores `graph`, planned from `sweep`, for the restarts to come. A put replaces the object
/// whole: a crash midway leaves the previous one, or none.
pub async fn store(streams: &SweepStreams, graph: &JobGraph, sweep: &Sweep) -> Result<()> {
    let bytes = stored::encode(graph, sweep);
    streams
        .artifacts
        .put(GRAPH_ARTIFACT, &mut bytes.as_slice())
        .await
        .map_err(Error::nats)?;
    Ok(())
}
