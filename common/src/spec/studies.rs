//! The `[studies]` and `[synthetic]` tables resolved against the sweep's models and tasks.

use std::collections::BTreeSet;

use super::raw::{self, Pairs};
use super::types::{
    CrossModelPair, CrossTaskStudy, Indicator, IndicatorStudy, ModelSpec, ProjectorSettings,
    Studies, SyntheticSpec, TptPairs, TptSettings, TptStudy,
};
use super::validate::{Ctx, positive, seed_list};
use crate::error::{SpecError, SpecResult};

impl raw::Synthetic {
    pub(super) fn resolve(self, ctx: &Ctx) -> SpecResult<SyntheticSpec> {
        let count = positive(ctx, &Some(self.count), "synthetic.count", false)?.unwrap_or(1);
        let fan_in = positive(ctx, &self.fan_in, "synthetic.fan_in", true)?.unwrap_or(0);
        let duration_ms = match &self.duration_ms {
            Some(d) => {
                let (lo, hi) = *d.get_ref();
                if lo < 0 || hi < lo || hi > i64::from(u32::MAX) {
                    return Err(ctx.err(
                        d,
                        "synthetic.duration_ms",
                        format!("[min, max] with 0 <= min <= max, not [{lo}, {hi}]"),
                    ));
                }
                (lo as u32, hi as u32)
            }
            None => (0, 0),
        };
        let fail_probability = match &self.fail_probability {
            Some(p) if !(0.0..=1.0).contains(p.get_ref()) => {
                return Err(ctx.err(
                    p,
                    "synthetic.fail_probability",
                    format!("must lie in [0, 1], not {}", p.get_ref()),
                ));
            }
            Some(p) => *p.get_ref(),
            None => 0.0,
        };
        let payload_bytes =
            positive(ctx, &self.payload_bytes, "synthetic.payload_bytes", true)?.unwrap_or(0);
        Ok(SyntheticSpec {
            count,
            fan_in,
            duration_ms,
            fail_probability,
            payload_bytes,
            seed: self.seed.unwrap_or(0),
        })
    }
}

impl raw::Studies {
    pub(super) fn resolve(
        self,
        ctx: &Ctx,
        models: &[ModelSpec],
        sweep_seeds: &[u64],
        tasks: &BTreeSet<&str>,
    ) -> SpecResult<Studies> {
        let known_task = |name: &str, at: &dyn Fn(String) -> SpecError| -> SpecResult<()> {
            if tasks.contains(name) {
                Ok(())
            } else {
                Err(at(format!("`{name}` is not a task of this sweep")))
            }
        };
        let cross_task = self.cross_task.map(|c| CrossTaskStudy {
            split: c.split.map_or("test".to_string(), |s| s.into_inner()),
        });
        let indicators = match self.indicators {
            Some(i) => {
                let mut list = Vec::new();
                for name in i.list.get_ref() {
                    let Some(ind) = Indicator::parse(name) else {
                        let all: Vec<&str> = Indicator::ALL.iter().map(|i| i.name()).collect();
                        return Err(ctx.err(
                            &i.list,
                            "studies.indicators.list",
                            format!("unknown indicator `{name}`; use {}", all.join(", ")),
                        ));
                    };
                    if !list.contains(&ind) {
                        list.push(ind);
                    }
                }
                let on_window = positive(ctx, &i.on_window, "studies.indicators.on_window", false)?
                    .unwrap_or(3);
                Some(IndicatorStudy {
                    list,
                    on_window,
                    on_sliding: i.on_sliding.unwrap_or(false),
                })
            }
            None => None,
        };
        let tpt = match self.tpt {
            Some(t) => {
                let pairs = match t.pairs {
                    None => TptPairs::All,
                    Some(spanned) => match spanned.get_ref() {
                        Pairs::Named(n) => match n.as_str() {
                            "all" => TptPairs::All,
                            "within_type" => TptPairs::WithinType,
                            other => {
                                return Err(ctx.err(&spanned, "studies.tpt.pairs", format!("`{other}`: use \"all\", \"within_type\" or a list of [source, target] pairs")));
                            }
                        },
                        Pairs::Listed(list) => {
                            for (s, t) in list {
                                for name in [s, t] {
                                    known_task(name, &|m| {
                                        ctx.err(&spanned, "studies.tpt.pairs", m)
                                    })?;
                                }
                                if s == t {
                                    return Err(ctx.err(
                                        &spanned,
                                        "studies.tpt.pairs",
                                        format!("[{s}, {t}]: a task cannot be its own TPT source"),
                                    ));
                                }
                            }
                            TptPairs::Listed(list.clone())
                        }
                    },
                };
                let top_k = match (t.top_k, t.by) {
                    (None, None) => None,
                    (Some(k), Some(by)) => {
                        let k = positive(ctx, &Some(k), "studies.tpt.top_k", false)?.unwrap_or(1);
                        let ind = Indicator::parse(by.get_ref()).ok_or_else(|| {
                            ctx.err(
                                &by,
                                "studies.tpt.by",
                                format!("unknown indicator `{}`", by.get_ref()),
                            )
                        })?;
                        Some((k, ind))
                    }
                    (Some(k), None) => {
                        return Err(ctx.err(
                            &k,
                            "studies.tpt.top_k",
                            "top_k needs `by`, the indicator that ranks sources",
                        ));
                    }
                    (None, Some(by)) => {
                        return Err(ctx.err(&by, "studies.tpt.by", "`by` needs top_k"));
                    }
                };
                let models_of_tpt = match t.models {
                    Some(list) => {
                        for m in list.get_ref() {
                            if !models.iter().any(|x| &x.name == m) {
                                return Err(ctx.err(
                                    &list,
                                    "studies.tpt.models",
                                    format!("unknown model `{m}`"),
                                ));
                            }
                        }
                        Some(list.into_inner())
                    }
                    None => None,
                };
                let seeds = match &t.seeds {
                    Some(list) => {
                        let seeds = seed_list(ctx, list, "studies.tpt.seeds")?;
                        let runs = |seed: &u64| {
                            models
                                .iter()
                                .filter(|m| {
                                    models_of_tpt.as_ref().is_none_or(|l| l.contains(&m.name))
                                })
                                .any(|m| m.seeds_or(sweep_seeds).contains(seed))
                        };
                        if let Some(seed) = seeds.iter().find(|s| !runs(s)) {
                            return Err(ctx.err(
                                list,
                                "studies.tpt.seeds",
                                format!("seed {seed} is not a seed of any model TPT runs on"),
                            ));
                        }
                        Some(seeds)
                    }
                    None => None,
                };
                let learning_rate = match &t.learning_rate {
                    Some(lr) if !(lr.get_ref().is_finite() && *lr.get_ref() > 0.0) => {
                        return Err(ctx.err(
                            lr,
                            "studies.tpt.learning_rate",
                            format!("must be a positive number, not {}", lr.get_ref()),
                        ));
                    }
                    lr => lr.as_ref().map(|v| *v.get_ref()),
                };
                let settings = TptSettings {
                    learning_rate,
                    batch_size: positive(ctx, &t.batch_size, "studies.tpt.batch_size", false)?,
                    max_steps: positive(ctx, &t.max_steps, "studies.tpt.max_steps", false)?,
                };
                Some(TptStudy {
                    pairs,
                    top_k,
                    from_projected: t.from_projected,
                    models: models_of_tpt,
                    stop_when_matched: t.stop_when_matched,
                    seeds,
                    settings,
                })
            }
            None => None,
        };
        let mut cross_model = Vec::new();
        for c in self.cross_model {
            for (m, key) in [
                (&c.src, "studies.cross_model.src"),
                (&c.tgt, "studies.cross_model.tgt"),
            ] {
                if !models.iter().any(|x| &x.name == m.get_ref()) {
                    return Err(ctx.err(m, key, format!("unknown model `{}`", m.get_ref())));
                }
            }
            if c.src.get_ref() == c.tgt.get_ref() {
                return Err(ctx.err(
                    &c.tgt,
                    "studies.cross_model.tgt",
                    "source and target model are the same",
                ));
            }
            if c.objectives.get_ref().is_empty() {
                return Err(ctx.err(
                    &c.objectives,
                    "studies.cross_model.objectives",
                    "list at least one objective",
                ));
            }
            if c.train_tasks.get_ref().is_empty() {
                return Err(ctx.err(
                    &c.train_tasks,
                    "studies.cross_model.train_tasks",
                    "list at least one training task",
                ));
            }
            for t in c.train_tasks.get_ref() {
                known_task(t, &|m| {
                    ctx.err(&c.train_tasks, "studies.cross_model.train_tasks", m)
                })?;
            }
            if cross_model
                .iter()
                .any(|p: &CrossModelPair| &p.src == c.src.get_ref() && &p.tgt == c.tgt.get_ref())
            {
                return Err(ctx.err(
                    &c.src,
                    "studies.cross_model",
                    format!(
                        "the pair {} -> {} is listed twice",
                        c.src.get_ref(),
                        c.tgt.get_ref()
                    ),
                ));
            }
            let learning_rate = match &c.learning_rate {
                Some(lr) if !(lr.get_ref().is_finite() && *lr.get_ref() > 0.0) => {
                    return Err(ctx.err(
                        lr,
                        "studies.cross_model.learning_rate",
                        format!("must be a positive number, not {}", lr.get_ref()),
                    ));
                }
                Some(lr) => *lr.get_ref(),
                None => 1e-4,
            };
            let mut objectives = c.objectives.get_ref().clone();
            objectives.sort();
            objectives.dedup();
            cross_model.push(CrossModelPair {
                src: c.src.get_ref().clone(),
                tgt: c.tgt.get_ref().clone(),
                objectives,
                train_tasks: c.train_tasks.get_ref().clone(),
                settings: ProjectorSettings {
                    hidden: positive(ctx, &c.hidden, "studies.cross_model.hidden", false)?
                        .unwrap_or(768),
                    learning_rate,
                    steps: positive(ctx, &c.steps, "studies.cross_model.steps", false)?
                        .unwrap_or(1000),
                    batch_size: positive(
                        ctx,
                        &c.batch_size,
                        "studies.cross_model.batch_size",
                        false,
                    )?
                    .unwrap_or(16),
                },
            });
        }
        if tpt.as_ref().is_some_and(|t| t.from_projected) && cross_model.is_empty() {
            return Err(SpecError::at_key(
                ctx.file,
                ctx.source,
                "from_projected",
                "TPT from projected prompts needs a [[studies.cross_model]] pair",
            ));
        }
        let train = self.train.is_some()
            || cross_task.is_some()
            || tpt.is_some()
            || !cross_model.is_empty()
            || indicators.is_some();
        Ok(Studies {
            train,
            cross_task,
            tpt,
            cross_model,
            indicators,
        })
    }
}
