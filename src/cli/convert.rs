//! From flag groups to the libraries' settings. Each parses its strings with the library's own
//! parser, so a bad value fails with that library's error and exits as bad input (2).

use std::path::Path;

use anyhow::Context;
use promptgrid_common::catalog::{CatalogSource, TaskDef};
use promptgrid_common::error::Location;
use promptgrid_common::plan::Roots;
use promptgrid_common::{SpecError, Sweep};
use promptgrid_ml::{Precision, PrecisionRequest};
use promptgrid_runtime::{CoordinatorConfig, NatsConfig};
use promptgrid_worker::{exec, oneshot};

use super::args::{DeviceArgs, FailureArgs, ModelArgs, NatsArgs, RootArgs, SweepArgs, TaskArgs};

impl SweepArgs {
    pub fn load(&self) -> Result<Sweep, SpecError> {
        Sweep::load_with(&self.sweep, &self.set)
    }
}

impl ModelArgs {
    pub fn oneshot(&self) -> anyhow::Result<oneshot::ModelArgs> {
        let device = self.device.device()?;
        Ok(oneshot::ModelArgs {
            dir: self.dir.clone(),
            head: self.head,
            layout: self.layout,
            device,
            precision: self.device.precision(device)?,
        })
    }
}

impl TaskArgs {
    /// The task's definition from the catalog; an unknown name lists the catalog's tasks.
    pub fn load(&self) -> anyhow::Result<TaskDef> {
        let name = &self.task;
        let catalog = CatalogSource::from_flag(self.catalog.as_deref()).load()?;
        catalog.get(name).cloned().ok_or_else(|| {
            anyhow::Error::new(SpecError::Invalid {
                location: Location::whole(Path::new("--task")),
                key: "task".into(),
                message: catalog.unknown_task(name),
            })
        })
    }
}

impl RootArgs {
    /// The roots as given, for `plan`'s missing-input check.
    pub fn given(self) -> Roots {
        Roots {
            models: self.models_root,
            data: self.data_root,
        }
    }

    /// Both roots, which running jobs needs.
    pub fn required(&self) -> anyhow::Result<exec::Roots> {
        let need = |root: &Option<std::path::PathBuf>, flag: &str| {
            root.clone()
                .with_context(|| format!("{flag} is required to run jobs"))
        };
        Ok(exec::Roots {
            models: need(&self.models_root, "--models-root")?,
            data: need(&self.data_root, "--data-root")?,
        })
    }
}

impl DeviceArgs {
    pub fn device(&self) -> anyhow::Result<exec::Device> {
        Ok(exec::device(&self.device, self.threads)?)
    }

    /// `--precision` as given; checked before any device is opened.
    pub fn precision_request(&self) -> anyhow::Result<PrecisionRequest> {
        Ok(self.precision.parse()?)
    }

    /// The precision `device` runs, logged with the reason (`auto` picks by the hardware).
    pub fn precision(&self, device: exec::Device) -> anyhow::Result<Precision> {
        let (precision, why) = self.precision_request()?.resolve(device);
        tracing::info!(
            device = %exec::device_name(device),
            %precision,
            "matrix products in {precision}: {why}"
        );
        Ok(precision)
    }
}

impl FailureArgs {
    /// The coordinator's failure limits.
    pub fn apply(&self, config: &mut CoordinatorConfig) {
        config.max_failures = self.max_failures;
        config.fail_fast = self.fail_fast;
    }
}

impl NatsArgs {
    pub fn config(&self) -> NatsConfig {
        NatsConfig {
            url: self.nats.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            token: self.nats_token.clone(),
            credentials: self.nats_creds.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            require_tls: promptgrid_runtime::connect::requires_tls(&self.nats),
            name: None,
        }
    }
}
