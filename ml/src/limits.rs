//! The prompt-length bound of an encoder, checked before a prompt or a batch is allocated
//! (the rule itself is shared with `promptgrid plan`: [`promptgrid_common::limits`]).

use promptgrid_common::limits::{self, PromptPlacement};

use super::config::EncoderConfig;
use super::error::{MlError, MlResult};
use promptgrid_common::spec::Layout;

/// Checks that a prompt of `prompt_len` tokens fits the encoder of `config` (named `model` in
/// the error) in `layout`: in the prefix layout next to the shortest template, in the official
/// layout under its ceiling of the model's positions.
pub fn check_prompt_len(
    config: &EncoderConfig,
    layout: Layout,
    prompt_len: usize,
    model: &str,
) -> MlResult<()> {
    let positions = config.max_tokens();
    let placement = match layout {
        Layout::Prefix => PromptPlacement::Prefix,
        Layout::Official => PromptPlacement::Official,
    };
    limits::check_prompt_len(placement, positions, prompt_len).map_err(|message| match layout {
        Layout::Prefix => MlError::PromptTooLong {
            prompt_len,
            template_len: limits::MIN_TEMPLATE_TOKENS,
            max_positions: positions,
        },
        Layout::Official => MlError::PromptLength {
            model: model.to_string(),
            prompt_len,
            message,
        },
    })
}
