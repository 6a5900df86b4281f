//! Templates: `{field}` takes the example's text, `{mask}` the mask token, `{sep}` the
//! separator token. Field text is cut,
//! longest field first, until the encoded template fits the token budget.

use std::collections::BTreeMap;

use promptgrid_common::catalog::{MASK_FIELD, SEP_FIELD};

use super::error::{MlError, MlResult};
use super::model::Encoded;
use super::tokenizer::EncoderTokenizer;

/// Fills `template` with `fields`, the mask and the separator token.
pub fn render(
    template: &str,
    fields: &BTreeMap<String, String>,
    mask_token: &str,
    sep_token: &str,
) -> MlResult<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let field = &rest[open + 1..open + close];
        if field == MASK_FIELD {
            out.push_str(mask_token);
        } else if field == SEP_FIELD {
            out.push_str(sep_token);
        } else {
            let value = fields.get(field).ok_or_else(|| {
                MlError::Invalid(format!(
                    "the template uses {{{field}}} but the example has no such field"
                ))
            })?;
            out.push_str(value);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// What filling and truncating a template needs from a tokenizer (encoders' and T5's).
pub(crate) trait TemplateTokenizer {
    /// Ids of a rendered template, with the tokenizer's special tokens.
    fn template_ids(&self, text: &str) -> MlResult<Vec<i64>>;
    /// Tokens of a field's text without special tokens, with the byte offset where each starts.
    fn field_pieces(&self, text: &str) -> MlResult<Vec<(String, usize)>>;
    /// The texts put at `{mask}` and `{sep}`.
    fn mask_text(&self) -> &str;
    fn sep_text(&self) -> &str;
}

impl TemplateTokenizer for EncoderTokenizer {
    fn template_ids(&self, text: &str) -> MlResult<Vec<i64>> {
        self.encode(text)
    }
    fn field_pieces(&self, text: &str) -> MlResult<Vec<(String, usize)>> {
        self.pieces(text)
    }
    fn mask_text(&self) -> &str {
        &self.mask_token
    }
    fn sep_text(&self) -> &str {
        &self.sep_token
    }
}

/// Encodes `template` filled with `fields`, in at most `budget` tokens (special tokens included).
/// `prompt_len` and `max_positions` only word the error when even empty fields do not fit.
pub fn encode(
    tok: &EncoderTokenizer,
    template: &str,
    fields: &BTreeMap<String, String>,
    budget: usize,
    prompt_len: usize,
    max_positions: usize,
) -> MlResult<Encoded> {
    if !template.contains("{mask}") {
        return Err(MlError::Invalid(format!(
            "template {template:?} has no {{mask}}"
        )));
    }
    let ids = fit(tok, template, fields, budget, prompt_len, max_positions)?;
    let mask_index = ids.iter().position(|&i| i == tok.mask_id).ok_or_else(|| {
        MlError::Invalid(format!(
            "template {template:?}: the mask token did not survive tokenization"
        ))
    })?;
    Ok(Encoded { ids, mask_index })
}

/// The ids of `template` filled with `fields`, the longest field cut until they fit `budget`.
pub(crate) fn fit(
    tok: &dyn TemplateTokenizer,
    template: &str,
    fields: &BTreeMap<String, String>,
    budget: usize,
    prompt_len: usize,
    max_positions: usize,
) -> MlResult<Vec<i64>> {
    let mut fields = fields.clone();
    // Each round cuts the longest field by the excess; tokenization at the cut may differ
    // slightly, so a few rounds may be needed.
    for _ in 0..16 {
        let ids = tok.template_ids(&render(template, &fields, tok.mask_text(), tok.sep_text())?)?;
        if ids.len() <= budget {
            return Ok(ids);
        }
        let excess = ids.len() - budget;
        let mut longest: Option<(String, Vec<(String, usize)>)> = None;
        for (name, value) in &fields {
            if !template.contains(&format!("{{{name}}}")) {
                continue;
            }
            let pieces = tok.field_pieces(value)?;
            if longest.as_ref().is_none_or(|(_, p)| pieces.len() > p.len()) {
                longest = Some((name.clone(), pieces));
            }
        }
        let Some((name, pieces)) = longest.filter(|(_, p)| !p.is_empty()) else {
            return Err(MlError::PromptTooLong {
                prompt_len,
                template_len: ids.len(),
                max_positions,
            });
        };
        let keep = pieces.len().saturating_sub(excess);
        let Some(value) = fields.get_mut(&name) else {
            break;
        };
        // Cut where piece `keep` starts, without trailing spaces (byte-level BPE would make
        // them a token of their own); step back a piece whenever that would not shorten it.
        let mut k = keep;
        let cut = loop {
            let mut cut = pieces
                .get(k)
                .map(|p| p.1)
                .unwrap_or(value.len())
                .min(value.len());
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            let cut = value[..cut].trim_end().len();
            if cut < value.len() || k == 0 {
                break cut;
            }
            k -= 1;
        };
        value.truncate(cut);
    }
    Err(MlError::Invalid(format!(
        "template {template:?}: could not truncate the text to {budget} tokens"
    )))
}
