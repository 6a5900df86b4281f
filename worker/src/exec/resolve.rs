//! Names to files, only under this worker's own roots. Job messages carry names; the sweep's
//! model paths and task data folders were checked to be relative when the sweep was read, and
//! are checked again here because they arrive over the network.

use std::path::{Component, Path, PathBuf};

use promptgrid_common::catalog::{Rows, SplitRole, TaskDef};
use promptgrid_common::spec::ModelSpec;

use super::ExecError;

/// Where this worker finds models and data.
#[derive(Debug, Clone)]
pub struct Roots {
    pub models: PathBuf,
    pub data: PathBuf,
}

impl Roots {
    pub fn model_dir(&self, model: &ModelSpec) -> Result<PathBuf, ExecError> {
        Ok(self.models.join(inside(&model.path, "model path")?))
    }

    /// An initial prompt file (`init = "from:<file>"`), under the models root.
    pub fn prompt_file(&self, rel: &str) -> Result<PathBuf, ExecError> {
        Ok(self.models.join(inside(rel, "prompt file")?))
    }

    /// The split file of `task` for `which` (train, dev, or the eval split: test where the task
    /// has one, else dev), and the rows of it that `which` reads (a dev set held out of train).
    pub fn split(&self, task: &TaskDef, which: Split) -> Result<(PathBuf, Rows), ExecError> {
        let dir = self.data.join(inside(task.data_dir(), "task data folder")?);
        let (stem, rows) = task.splits.of(which.role());
        let path = promptgrid_ml::data::find_split(
            &dir,
            inside(stem, "split name")?.to_str().unwrap_or(stem),
        )?;
        Ok((path, rows))
    }
}

/// The splits a job reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Dev,
    /// The scored split; a task without a test split is scored on dev.
    Test,
}

impl Split {
    fn role(self) -> SplitRole {
        match self {
            Split::Train => SplitRole::Train,
            Split::Dev => SplitRole::Dev,
            Split::Test => SplitRole::Test,
        }
    }

    /// The split a sweep names for scoring (`test` or `dev`).
    pub fn scored(name: &str) -> Result<Split, ExecError> {
        match name {
            "test" => Ok(Split::Test),
            "dev" => Ok(Split::Dev),
            other => Err(ExecError::Fatal(format!(
                "unknown split `{other}`: use test or dev"
            ))),
        }
    }
}

/// `rel` as a path that cannot leave the root it is joined to.
fn inside<'a>(rel: &'a str, what: &str) -> Result<&'a Path, ExecError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ExecError::Fatal(format!(
            "{what} `{rel}` is not a relative path inside the worker's root"
        )));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        for bad in ["../etc", "/abs", "a/../../b", ""] {
            assert!(inside(bad, "model path").is_err(), "{bad}");
        }
        assert_eq!(inside("a/b", "x").unwrap(), Path::new("a/b"));
    }
}
