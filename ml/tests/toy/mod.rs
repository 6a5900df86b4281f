//! A generated toy task shared by the tuning and projector tests: sentences of filler words
//! holding one cue word, labelled by the cue's class. A tuned prompt must learn to route the
//! cue to the mask (a random frozen model does not), so the task measures the tuning.

use std::collections::BTreeMap;

use promptgrid_ml::Example;

/// `n` examples drawn from `seed`; `cues[label]` is the word that decides the label.
pub fn generate(n: usize, seed: u64, cues: [&str; 2]) -> Vec<Example> {
    let filler = [
        "the", "movie", "film", "story", "plot", "was", "is", "this", "acting", "music", "and",
        "very", "really", "quite",
    ];
    let mut state = seed;
    let mut next = move |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    (0..n)
        .map(|_| {
            let label = next(2);
            let mut words: Vec<&str> = (0..4 + next(4))
                .map(|_| filler[next(filler.len())])
                .collect();
            // A draw for the cue's word within its class (one word per class here): the tuning
            // tests' thresholds were set on this sequence of draws.
            let _ = next(1);
            let at = next(words.len() + 1);
            words.insert(at, cues[label]);
            Example {
                fields: BTreeMap::from([("text".to_string(), words.join(" "))]),
                label,
            }
        })
        .collect()
}
