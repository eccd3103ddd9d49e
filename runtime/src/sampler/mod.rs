//! Choosing the next token from the logits.

use crate::tokenizer::TokenId;

/// The highest logit's token; ties go to the lowest id. NaN logits never win.
pub fn argmax(logits: &[f32]) -> TokenId {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as TokenId
}
