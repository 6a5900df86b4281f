//! Templates: `{field}` takes the example's text, `{mask}` the mask token, `{sep}` the
//! separator token. Field text is cut,
//! longest field first, until the encoded template fits the token budget.
//!
//! The official layout encodes a template as the official formatters build their inputs
//! (formatter/MNLIPromptRobertaFormatter.py:39-44, SST2PromptRobertaFormatter.py:39-42): the
//! start token, then each run of text between `{mask}` / `{sep}` encoded on its own without
//! special tokens and without the spaces around it, the separators, and the end token. So
//! `"{mask} {hypothesis} {sep} {premise}"` gives `<s> <mask> hypothesis </s> premise </s>`,
//! with `hypothesis` tokenized as the official `tokenizer.encode(sent1)` does (no `Ġ`), and every
//! field stripped as the official readers do. There the budget counts text tokens only, as the
//! official `max_len` does, and the last field is cut first, as the official truncation (the end
//! of the sequence) does.

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
    /// Cut the field that comes last in the template first, rather than the longest.
    fn cut_last_field_first(&self) -> bool {
        false
    }
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

/// A text's tokens with the byte offset where each starts.
type Pieces = Vec<(String, usize)>;

/// The official formatters' encoding (see the module doc).
struct Segments<'a> {
    tok: &'a EncoderTokenizer,
    start: Option<i64>,
    end: Option<i64>,
    sep_id: Option<i64>,
}

impl<'a> Segments<'a> {
    fn new(tok: &'a EncoderTokenizer) -> MlResult<Segments<'a>> {
        let (start, end) = tok.sequence_ends()?;
        Ok(Segments {
            tok,
            start,
            end,
            sep_id: tok.token_id(&tok.sep_token),
        })
    }
}

impl TemplateTokenizer for Segments<'_> {
    /// Splits the rendered text at the mask and separator tokens' texts and encodes each run
    /// of text alone, trimmed.
    fn template_ids(&self, text: &str) -> MlResult<Vec<i64>> {
        let mut specials = vec![(self.tok.mask_token.as_str(), Some(self.tok.mask_id))];
        if !self.tok.sep_token.is_empty() {
            specials.push((self.tok.sep_token.as_str(), self.sep_id));
        }
        let mut ids: Vec<i64> = self.start.into_iter().collect();
        let mut rest = text;
        loop {
            let next = specials
                .iter()
                .filter_map(|&(t, id)| rest.find(t).map(|at| (at, t.len(), id)))
                .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            let (run, special) = match next {
                Some((at, len, id)) => (&rest[..at], Some((at + len, id))),
                None => (rest, None),
            };
            let run = run.trim();
            if !run.is_empty() {
                ids.extend(self.tok.encode_plain(run)?);
            }
            match special {
                Some((after, id)) => {
                    ids.extend(id);
                    rest = &rest[after..];
                }
                None => break,
            }
        }
        ids.extend(self.end);
        Ok(ids)
    }
    fn field_pieces(&self, text: &str) -> MlResult<Vec<(String, usize)>> {
        self.tok.pieces(text)
    }
    fn mask_text(&self) -> &str {
        &self.tok.mask_token
    }
    fn sep_text(&self) -> &str {
        &self.tok.sep_token
    }
    fn cut_last_field_first(&self) -> bool {
        true
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
    let ids = if tok.official_encoding() {
        let segments = Segments::new(tok)?;
        // Special tokens do not count against the budget, as in the official formatters (max_len
        // sentence tokens plus <s> and </s>, or max_len + 3 in all for a pair); the mask leaves
        // the text for prompt slot 0, so the positions hold one more.
        let specials = usize::from(segments.start.is_some())
            + usize::from(segments.end.is_some())
            + template.matches("{mask}").count()
            + template.matches("{sep}").count();
        let budget = (budget + specials).min(max_positions + 1);
        // The official readers strip every field (dataset/MNLIDataset.py: `.strip()`, ...).
        let fields: BTreeMap<String, String> = fields
            .iter()
            .map(|(k, v)| (k.clone(), v.trim().to_string()))
            .collect();
        fit(
            &segments,
            template,
            &fields,
            budget,
            prompt_len,
            max_positions,
        )?
    } else {
        fit(tok, template, fields, budget, prompt_len, max_positions)?
    };
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
        let last_first = tok.cut_last_field_first();
        // The field to cut: (name, pieces, where it stands in the template).
        let mut chosen: Option<(String, Pieces, usize)> = None;
        for (name, value) in &fields {
            let Some(at) = template.rfind(&format!("{{{name}}}")) else {
                continue;
            };
            let pieces = tok.field_pieces(value)?;
            if pieces.is_empty() {
                continue;
            }
            let better = chosen.as_ref().is_none_or(|(_, p, a)| {
                if last_first {
                    at > *a
                } else {
                    pieces.len() > p.len()
                }
            });
            if better {
                chosen = Some((name.clone(), pieces, at));
            }
        }
        let Some((name, pieces, _)) = chosen else {
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
