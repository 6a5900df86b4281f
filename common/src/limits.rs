//! How long a soft prompt a model can take, from its `config.json` alone: the one rule the worker
//! checks before it allocates anything and `promptgrid plan --models-root` checks before a sweep
//! runs. Without it a typo such as `prompt.length = 100000` is accepted and then grinds a worker
//! into out-of-memory, job after job.

use std::path::Path;

/// Tokens an encoder input holds besides the prompt even with empty text: the start token, the
/// mask and the end token.
pub const MIN_TEMPLATE_TOKENS: usize = 3;

/// T5's encoder input holds at least its `</s>` besides the prompt.
pub const MIN_T5_TOKENS: usize = 1;

/// Where a model puts the prompt, which decides what bounds its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptPlacement {
    /// The prompt takes ordinary consecutive positions before the template (PEFT).
    Prefix,
    /// The official layout: the prompt's positions get no position embedding, so the model's
    /// positions do not bound it; attention over it still costs (L + text)² per layer.
    Official,
    /// T5's encoder: relative positions, inputs kept within `n_positions` (default 512).
    T5,
}

/// The positions a model's `config.json` gives an input: for BERT/RoBERTa
/// `max_position_embeddings` (default 512) less RoBERTa's offset (`pad_token_id + 1`), for T5
/// `n_positions` (default 512).
pub fn positions_from_config(config: &serde_json::Value) -> usize {
    let int = |key: &str| config.get(key).and_then(serde_json::Value::as_i64);
    let model_type = config
        .get("model_type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if model_type == "t5" {
        return int("n_positions").filter(|&n| n > 0).unwrap_or(512) as usize;
    }
    let max = int("max_position_embeddings").unwrap_or(512);
    let offset = match model_type {
        "roberta" | "xlm-roberta" => int("pad_token_id").unwrap_or(1) + 1,
        _ => 0,
    };
    (max - offset).max(0) as usize
}

/// Reads a model folder's `config.json` for [`positions_from_config`] and the placement its
/// `model_type` implies for an encoder laid out as `official` (true) or prefix.
pub fn read_limits(config_path: &Path, official: bool) -> Result<(usize, PromptPlacement), String> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| format!("{}: cannot read: {e}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: invalid config: {e}", config_path.display()))?;
    let placement = match config.get("model_type").and_then(serde_json::Value::as_str) {
        Some("t5") => PromptPlacement::T5,
        _ if official => PromptPlacement::Official,
        _ => PromptPlacement::Prefix,
    };
    Ok((positions_from_config(&config), placement))
}

/// The longest prompt a model with `positions` input positions takes in `placement`.
pub fn max_prompt_len(placement: PromptPlacement, positions: usize) -> usize {
    match placement {
        PromptPlacement::Prefix => positions.saturating_sub(MIN_TEMPLATE_TOKENS),
        // No position embedding bounds it. The ceiling is the model's own positions: the
        // sequence is then at most twice what the model was trained on (the paper uses 100 of
        // 512), where a longer prompt is all but certainly a typo that would exhaust memory.
        PromptPlacement::Official => positions,
        PromptPlacement::T5 => positions.saturating_sub(MIN_T5_TOKENS),
    }
}

/// Checks `prompt_len` against a model with `positions` input positions; the error says what
/// the limit is and why, for the caller to prefix with the model and the setting.
pub fn check_prompt_len(
    placement: PromptPlacement,
    positions: usize,
    prompt_len: usize,
) -> Result<(), String> {
    if placement == PromptPlacement::Official && prompt_len == 0 {
        return Err(
            "the official layout puts the mask at prompt slot 0, so the prompt needs at least one token"
                .into(),
        );
    }
    let max = max_prompt_len(placement, positions);
    if prompt_len <= max {
        return Ok(());
    }
    Err(match placement {
        PromptPlacement::Prefix => format!(
            "a prompt of {prompt_len} tokens does not fit the model's {positions} positions: \
             at most {max}, leaving {MIN_TEMPLATE_TOKENS} for the start, mask and end tokens"
        ),
        PromptPlacement::Official => format!(
            "a prompt of {prompt_len} tokens is over the ceiling of {max}: the official layout \
             gives the prompt no positions, but attention over a prompt longer than the model's \
             {positions} positions would exhaust memory (the paper uses 100)"
        ),
        PromptPlacement::T5 => format!(
            "a prompt of {prompt_len} tokens does not fit T5's {positions} input positions \
             (n_positions): at most {max}, leaving room for the `</s>`"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_placement() {
        let bert = serde_json::json!({"model_type": "bert", "max_position_embeddings": 512});
        let roberta = serde_json::json!({"model_type": "roberta", "max_position_embeddings": 514, "pad_token_id": 1});
        let t5 = serde_json::json!({"model_type": "t5"});
        assert_eq!(positions_from_config(&bert), 512);
        assert_eq!(positions_from_config(&roberta), 512);
        assert_eq!(positions_from_config(&t5), 512);
        assert!(check_prompt_len(PromptPlacement::Prefix, 512, 509).is_ok());
        let e = check_prompt_len(PromptPlacement::Prefix, 512, 510).unwrap_err();
        assert!(e.contains("at most 509"), "{e}");
        assert!(check_prompt_len(PromptPlacement::Official, 512, 512).is_ok());
        let e = check_prompt_len(PromptPlacement::Official, 512, 100_000).unwrap_err();
        assert!(e.contains("ceiling of 512"), "{e}");
        assert!(check_prompt_len(PromptPlacement::Official, 512, 0).is_err());
        assert!(check_prompt_len(PromptPlacement::T5, 512, 512).is_err());
        assert!(check_prompt_len(PromptPlacement::Prefix, 512, 0).is_ok());
    }
}
