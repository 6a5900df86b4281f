//! The cross-task section of `report.md` for one model: the relative matrix (with `mean ± sd`
//! over seeds where there are several), the own-prompt scores, the type means, and the margins
//! over the random prompt with the transfers that beat it beyond the seed spread.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::external::matrix_markdown_with;
use crate::seeds::BEYOND_SPREAD_SDS;
use crate::transfer::RANDOM_SOURCE;

use super::{ModelTransfer, OwnVerdict};

/// Marks a cell that beats the random prompt beyond the seed spread.
pub const BEATS_RANDOM_MARK: &str = "†";

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// "Each target is scored on its own split: test (a, b); dev (c)."
fn splits_sentence(splits: &BTreeMap<String, String>) -> String {
    let mut by_split: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (task, split) in splits {
        by_split.entry(split).or_default().push(task);
    }
    let parts: Vec<String> = by_split
        .iter()
        .map(|(split, tasks)| format!("{split} ({})", tasks.join(", ")))
        .collect();
    format!(
        "Each target is scored and normalised on its own split: {}.",
        parts.join("; ")
    )
}

/// What the cells of a seeded matrix are, and the beats-random rule, in words.
fn seeds_paragraph(t: &ModelTransfer) -> String {
    let seeds: Vec<String> = t
        .seeds
        .iter()
        .map(|s| s.map_or("unrecorded".into(), |s| s.to_string()))
        .collect();
    format!(
        "Seeds: {} (n = {}). Each cell is the mean ± sample sd (n − 1) over the seeds that \
         scored it (`(n=k)` where fewer did); relative transfer is normalised per seed, \
         100 · score_k(s→t) / score_k(t→t), then averaged. {BEATS_RANDOM_MARK} marks a transfer \
         that beats the random prompt beyond the seed spread: its margin over the random prompt, \
         paired by seed (d_k = relative_k(s→t) − relative_k(random→t)), has a mean above \
         {BEYOND_SPREAD_SDS} sd of the d_k.\n",
        seeds.join(", "),
        t.seeds.len()
    )
}

/// The cell text of the relative matrix.
fn relative_cell(t: &ModelTransfer, s: &str, tg: &str) -> Option<String> {
    let c = t.relative(s, tg)?;
    let Some(spread) = t.spread(s, tg).filter(|_| t.seeded()) else {
        return Some(format!("{:.1}", c.relative));
    };
    let mut text = spread.relative.display(1);
    if spread.relative.n < t.seeds.len() {
        let _ = write!(text, " (n={})", spread.relative.n);
    }
    // The own prompt beating random is expected, not news: only transfers are marked.
    if s != tg && spread.beats_random() == Some(true) {
        let _ = write!(text, " {BEATS_RANDOM_MARK}");
    }
    Some(text)
}

pub(super) fn transfer_section(t: &ModelTransfer) -> String {
    let mut md = format!("## Cross-task zero-shot transfer: {}\n\n", t.model);
    let _ = writeln!(md, "{}\n", splits_sentence(&t.splits));
    let _ = writeln!(
        md,
        "Tasks by type: {}.\n",
        t.tasks
            .iter()
            .map(|x| format!("{x} ({})", t.types[x]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if t.seeded() {
        let _ = writeln!(md, "{}", seeds_paragraph(t));
    }
    let mut sources = t.tasks.clone();
    if t.cells.iter().any(|c| c.source == RANDOM_SOURCE) {
        sources.push(RANDOM_SOURCE.into());
    }
    md.push_str("Relative performance (%), rows = source prompt, columns = target task:\n\n");
    md.push_str(&matrix_markdown_with(&sources, &t.tasks, |s, tg| {
        relative_cell(t, s, tg)
    }));
    own_prompts(&mut md, t);
    let _ = writeln!(
        md,
        "\nMean relative performance: within a type {}%, across types {}%.\n",
        opt(t.within_type, 1),
        opt(t.across_types, 1)
    );
    md.push_str("| source type | target type | mean relative (%) |\n|---|---|---|\n");
    for ((s, tt), m) in &t.by_type_pair {
        let _ = writeln!(md, "| {s} | {tt} | {m:.1} |");
    }
    vs_random(&mut md, t);
    md
}

/// The own-prompt scores (the diagonal each column is normalised by) beside the random prompt's,
/// and where the own prompt does not beat it, said in words.
fn own_prompts(md: &mut String, t: &ModelTransfer) {
    md.push_str(
        "\nOwn-prompt scores (the diagonal each column is normalised by) and the random prompt's \
         on the same split:\n\n\
         | target | split | metric | own score | random prompt | own beats random | seeds |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let verdicts = t.own_vs_random();
    for task in &t.tasks {
        let (Some(c), Some(s)) = (t.relative(task, task), t.spread(task, task)) else {
            continue;
        };
        let v = verdicts.iter().find(|v| &v.target == task);
        let _ = writeln!(
            md,
            "| {task} | {} | {} | {} | {} | {} | {} |",
            t.splits.get(task).map_or("–", String::as_str),
            c.metric,
            s.raw.display(4),
            v.map_or("–".into(), |v| v.random.display(4)),
            v.map_or("–", |v| verdict_words(v.verdict, t.seeded())),
            s.raw.n
        );
    }
    let short: Vec<String> = verdicts
        .iter()
        .filter(|v| v.verdict != OwnVerdict::Beats)
        .map(|v| {
            format!(
                "{} ({} against {})",
                v.target,
                v.own.display(4),
                v.random.display(4)
            )
        })
        .collect();
    if !verdicts.is_empty() {
        let _ = writeln!(
            md,
            "\n{}",
            if short.is_empty() {
                "Every own prompt beats the random prompt on its target.".to_string()
            } else {
                format!(
                    "The own prompt does not beat the random prompt{} on: {}. There the \
                     prompt learned too little to tell transfer from noise.",
                    if t.seeded() {
                        " beyond the seed spread"
                    } else {
                        ""
                    },
                    short.join("; ")
                )
            }
        );
    }
}

fn verdict_words(v: OwnVerdict, seeded: bool) -> &'static str {
    match (v, seeded) {
        (OwnVerdict::Beats, true) => "yes, beyond the seed spread",
        (OwnVerdict::Beats, false) => "yes (one seed)",
        (OwnVerdict::WithinSpread, _) => "within the seed spread",
        (OwnVerdict::DoesNotBeat, _) => "no",
    }
}

/// The margin table, and with several seeds the transfers that beat random beyond the spread.
fn vs_random(md: &mut String, t: &ModelTransfer) {
    md.push_str("\nMargin over the random prompt (relative points, mean over targets):\n\n");
    if t.seeded() {
        md.push_str("| source | margin | wins | beyond seed spread |\n|---|---|---|---|\n");
    } else {
        md.push_str("| source | margin | wins |\n|---|---|---|\n");
    }
    for v in &t.vs_random {
        let _ = write!(
            md,
            "| {} | {:+.1} | {}/{} |",
            v.source, v.mean_margin, v.wins, v.targets
        );
        if t.seeded() {
            let _ = write!(md, " {}/{} |", v.beyond_spread, v.judged);
        }
        md.push('\n');
    }
    if !t.seeded() {
        md.push('\n');
        return;
    }
    let beating: Vec<String> = t
        .spread
        .iter()
        .filter(|((s, tg), c)| s != tg && c.beats_random() == Some(true))
        .filter_map(|((s, tg), c)| {
            let m = c.vs_random?;
            Some(format!("{s} → {tg} ({:+.1} ± {:.1})", m.mean, m.sd?))
        })
        .collect();
    let _ = writeln!(
        md,
        "\nTransfers that beat the random prompt beyond the seed spread (margin mean ± sd, \
         relative points): {}.\n",
        if beating.is_empty() {
            "none".to_string()
        } else {
            beating.join(", ")
        }
    );
}
