//! [`Sweep`] from its [`raw`] form: the header, models, tasks and per-(model, task) settings
//! (the studies are [`super::studies`]'s).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use toml::Spanned;

use super::raw;
use super::validate::{Ctx, check_name, check_relative, seed_list};
use super::{Head, Layout, ModelSpec, PromptSettings, Sweep, TaskSpec};
use crate::catalog::{Catalog, TaskKind};
use crate::error::{SpecError, SpecResult};

impl Sweep {
    pub(super) fn resolve(
        file: &Path,
        source: &str,
        raw: raw::Sweep,
        catalog: &Catalog,
    ) -> SpecResult<Sweep> {
        let ctx = Ctx { file, source };
        let name = raw.sweep.name.get_ref().clone();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ctx.err(
                &raw.sweep.name,
                "sweep.name",
                "use letters, digits, '-' and '_' only (it scopes NATS subjects and buckets)",
            ));
        }

        let base = PromptSettings::default();
        let sweep_prompt = raw.prompt.unwrap_or_default();
        let seeds = match &sweep_prompt.seeds {
            Some(seeds) => seed_list(&ctx, seeds, "prompt.seeds")?,
            None => vec![1],
        };
        let base = sweep_prompt.apply(&ctx, "prompt", base)?;

        // Models.
        if raw.models.is_empty() {
            return Err(SpecError::at_key(
                file,
                source,
                "model",
                "the sweep names no [[model]]",
            ));
        }
        let mut models = Vec::new();
        let mut model_prompts = BTreeMap::new();
        for m in raw.models {
            let model_name = m.name.get_ref().clone();
            check_name(&ctx, &m.name, "model.name")?;
            if models.iter().any(|x: &ModelSpec| x.name == model_name) {
                return Err(ctx.err(
                    &m.name,
                    "model.name",
                    format!("model `{model_name}` is defined twice"),
                ));
            }
            let path = match &m.path {
                Some(p) => {
                    check_relative(&ctx, p, "model.path")?;
                    p.get_ref().clone()
                }
                None => model_name.clone(),
            };
            let arch = *m.arch.get_ref();
            if !arch.is_encoder() && (m.head.is_some() || m.layout.is_some()) {
                let at = m
                    .head
                    .as_ref()
                    .map(Spanned::span)
                    .or(m.layout.as_ref().map(Spanned::span));
                return Err(SpecError::at(
                    file,
                    source,
                    at.map_or(0, |s| s.start),
                    "model.head",
                    format!("model `{model_name}` is T5: head and layout are for encoders"),
                ));
            }
            // A model may run its own seeds (a slow model one, a fast one several).
            let model_seeds = match m.prompt.as_ref().and_then(|p| p.seeds.as_ref()) {
                Some(list) => Some(seed_list(&ctx, list, "model.prompt.seeds")?),
                None => None,
            };
            let settings = match m.prompt {
                Some(p) => p.apply(&ctx, "model.prompt", base.clone())?,
                None => base.clone(),
            };
            model_prompts.insert(model_name.clone(), settings);
            models.push(ModelSpec {
                name: model_name,
                path,
                arch,
                head: m.head.map_or(Head::Mlm, |h| *h.get_ref()),
                layout: m.layout.map_or(Layout::Prefix, |l| *l.get_ref()),
                seeds: model_seeds.filter(|own| *own != seeds),
            });
        }

        // Tasks.
        if raw.tasks.is_empty() {
            return Err(SpecError::at_key(
                file,
                source,
                "task",
                "the sweep names no [[task]]",
            ));
        }
        let mut tasks: Vec<TaskSpec> = Vec::new();
        let mut task_prompts = BTreeMap::new();
        for t in raw.tasks {
            let task_name = t.name.get_ref().clone();
            let Some(def) = catalog.get(&task_name) else {
                return Err(ctx.err(&t.name, "task.name", catalog.unknown_task(&task_name)));
            };
            if tasks.iter().any(|x| x.name() == task_name) {
                return Err(ctx.err(
                    &t.name,
                    "task.name",
                    format!("task `{task_name}` is listed twice"),
                ));
            }
            let mut def = def.clone();
            if let Some(words) = &t.verbalizer {
                if def.kind != TaskKind::Classification {
                    return Err(ctx.err(
                        words,
                        "task.verbalizer",
                        format!("`{task_name}` generates text: it has no verbalizer"),
                    ));
                }
                if words.get_ref().len() != def.labels.len() {
                    return Err(ctx.err(
                        words,
                        "task.verbalizer",
                        format!(
                            "{} words for the {} labels {:?} of `{task_name}`",
                            words.get_ref().len(),
                            def.labels.len(),
                            def.labels
                        ),
                    ));
                }
                if let Some(v) = def.verbalizer.as_mut() {
                    v.encoder = words.get_ref().clone();
                    v.bert = None;
                }
            }
            if let Some(dir) = &t.data_dir {
                check_relative(&ctx, dir, "task.data_dir")?;
                def.data_dir = Some(dir.get_ref().clone());
            }
            if let Some(p) = t.prompt {
                if let Some(seeds) = &p.seeds {
                    return Err(ctx.err(
                        seeds,
                        "task.prompt.seeds",
                        "seeds are set for the sweep ([prompt]) or for a model, not for a task",
                    ));
                }
                task_prompts.insert(task_name.clone(), p);
            }
            // Generation tasks on an encoder: no template, no mask, nothing to read out.
            if def.kind == TaskKind::Generation
                && let Some(m) = models.iter().find(|m| m.arch.is_encoder())
            {
                return Err(ctx.err(
                    &t.name,
                    "task.name",
                    format!(
                        "`{task_name}` is a generation task, T5 only, but model `{}` is an encoder",
                        m.name
                    ),
                ));
            }
            tasks.push(TaskSpec { def });
        }

        // Settings per (model, task): sweep < model < task.
        let mut settings = BTreeMap::new();
        for m in &models {
            for t in &tasks {
                let mut s = model_prompts[&m.name].clone();
                if let Some(p) = task_prompts.get(t.name()) {
                    s = p.apply(&ctx, "task.prompt", s)?;
                }
                // Refused here rather than ignored by every encoder job at run time.
                if m.arch.is_encoder() && s.official_padding {
                    return Err(SpecError::at_key(
                        file,
                        source,
                        "official_padding",
                        format!(
                            "model `{}` is an encoder: official_padding is the official T5 \
                             training's batches (task `{}`); set it on the T5 models only",
                            m.name,
                            t.name(),
                        ),
                    ));
                }
                settings
                    .entry(m.name.clone())
                    .or_insert_with(BTreeMap::new)
                    .insert(t.name().to_string(), s);
            }
        }

        let task_names: BTreeSet<&str> = tasks.iter().map(|t| t.name()).collect();
        let studies = raw
            .studies
            .map(|s| s.resolve(&ctx, &models, &seeds, &task_names))
            .transpose()?
            .unwrap_or_default();
        let synthetic = raw.synthetic.map(|s| s.resolve(&ctx)).transpose()?;

        Ok(Sweep {
            name,
            description: raw.sweep.description,
            file: file.to_path_buf(),
            catalog: catalog.source().clone(),
            seeds,
            models,
            tasks,
            settings,
            studies,
            synthetic,
        })
    }
}
