//! Checks on single values of a sweep file, each error pointing at the value's line:
//! names, relative paths, counts, and the `[prompt]` tables layered on their base settings.

use std::path::{Component, Path};

use toml::Spanned;

use super::raw::Prompt;
use super::{Init, PromptSettings};
use crate::error::{SpecError, SpecResult};

/// The file and its text, to turn spans into locations.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
    pub(super) source: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err<T>(
        &self,
        at: &Spanned<T>,
        key: &str,
        message: impl Into<String>,
    ) -> SpecError {
        SpecError::at(self.file, self.source, at.span().start, key, message)
    }
}

pub(super) fn check_name(ctx: &Ctx, name: &Spanned<String>, key: &str) -> SpecResult<()> {
    let n = name.get_ref();
    if n.is_empty()
        || !n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ctx.err(
            name,
            key,
            format!("`{n}`: use letters, digits, '-', '_' and '.' only"),
        ));
    }
    Ok(())
}

/// Paths in a sweep are resolved under a worker's roots: they must stay inside them.
pub(super) fn check_relative(ctx: &Ctx, path: &Spanned<String>, key: &str) -> SpecResult<()> {
    let p = Path::new(path.get_ref());
    if path.get_ref().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(ctx.err(
            path,
            key,
            format!(
                "`{}` must be a relative path inside the worker's root, without `..`",
                path.get_ref()
            ),
        ));
    }
    Ok(())
}

/// A list of seeds: at least one, none twice.
pub(super) fn seed_list(ctx: &Ctx, seeds: &Spanned<Vec<u64>>, key: &str) -> SpecResult<Vec<u64>> {
    let list = seeds.get_ref();
    if list.is_empty() {
        return Err(ctx.err(seeds, key, "list at least one seed"));
    }
    for (i, s) in list.iter().enumerate() {
        if list[..i].contains(s) {
            return Err(ctx.err(seeds, key, format!("seed {s} is listed twice")));
        }
    }
    Ok(list.clone())
}

pub(super) fn positive(
    ctx: &Ctx,
    v: &Option<Spanned<i64>>,
    key: &str,
    allow_zero: bool,
) -> SpecResult<Option<u32>> {
    let Some(v) = v else { return Ok(None) };
    let n = *v.get_ref();
    let min = if allow_zero { 0 } else { 1 };
    if n < min || n > i64::from(u32::MAX) {
        let what = if allow_zero {
            "zero or a positive whole number"
        } else {
            "a positive whole number"
        };
        return Err(ctx.err(v, key, format!("must be {what}, not {n}")));
    }
    Ok(Some(n as u32))
}

impl Prompt {
    /// These settings on top of `base`; `at` names the table in errors.
    pub(super) fn apply(
        &self,
        ctx: &Ctx,
        at: &str,
        mut base: PromptSettings,
    ) -> SpecResult<PromptSettings> {
        let key = |k: &str| format!("{at}.{k}");
        if let Some(v) = positive(ctx, &self.length, &key("length"), false)? {
            base.length = v;
        }
        if let Some(init) = &self.init {
            base.init = init.get_ref().parse::<Init>().map_err(|_| {
                ctx.err(
                    init,
                    &key("init"),
                    format!(
                        "`{}`: use \"random\", \"vocab\" or \"from:<prompt file>\"",
                        init.get_ref()
                    ),
                )
            })?;
        }
        if let Some(lr) = &self.learning_rate {
            let v = *lr.get_ref();
            if !(v.is_finite() && v > 0.0) {
                return Err(ctx.err(
                    lr,
                    &key("learning_rate"),
                    format!("must be a positive number, not {v}"),
                ));
            }
            base.learning_rate = v;
        }
        if let Some(p) = &self.dropout {
            let v = *p.get_ref();
            if !(0.0..1.0).contains(&v) {
                return Err(ctx.err(
                    p,
                    &key("dropout"),
                    format!("must be a probability in [0, 1), not {v}"),
                ));
            }
            base.dropout = v;
        }
        if let Some(eps) = &self.adam_eps {
            let v = *eps.get_ref();
            if !(v.is_finite() && v > 0.0) {
                return Err(ctx.err(
                    eps,
                    &key("adam_eps"),
                    format!("must be a positive number, not {v}"),
                ));
            }
            base.adam_eps = v;
        }
        if let Some(v) = self.official_padding {
            base.official_padding = v;
        }
        let fields: [(&Option<Spanned<i64>>, &str, bool, &mut u32); 7] = [
            (&self.batch_size, "batch_size", false, &mut base.batch_size),
            (&self.grad_accum, "grad_accum", false, &mut base.grad_accum),
            (&self.max_steps, "max_steps", false, &mut base.max_steps),
            (&self.eval_every, "eval_every", false, &mut base.eval_every),
            (
                &self.max_text_tokens,
                "max_text_tokens",
                false,
                &mut base.max_text_tokens,
            ),
            (
                &self.dev_examples,
                "dev_examples",
                true,
                &mut base.dev_examples,
            ),
            (
                &self.checkpoint_every,
                "checkpoint_every",
                true,
                &mut base.checkpoint_every,
            ),
        ];
        for (value, name, allow_zero, slot) in fields {
            if let Some(v) = positive(ctx, value, &key(name), allow_zero)? {
                *slot = v;
            }
        }
        Ok(base)
    }
}
