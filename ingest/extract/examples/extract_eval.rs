//! Extraction quality and speed on the article-extraction benchmark pages
//! (`../shared/data/extraction`): word-level precision, recall and F1 against the ground-truth
//! article text — the metric of `tests/peers/extraction_eval.py`, which runs trafilatura on the
//! same pages — and pages/s on one core.
//!
//! ```sh
//! cargo run -p tokenmill-extract --example extract_eval --profile perf -- [DATA_DIR] [--out ours.json] [--per-page]
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

fn words(t: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for w in t
        .to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
    {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

/// (overlap, predicted, truth) word counts.
fn overlap(pred: &str, truth: &str) -> (u64, u64, u64) {
    let (p, t) = (words(pred), words(truth));
    let o = p
        .iter()
        .map(|(w, c)| (*c).min(*t.get(w).unwrap_or(&0)))
        .sum();
    (o, p.values().sum(), t.values().sum())
}

fn prf(o: u64, p: u64, t: u64) -> (f64, f64, f64) {
    let pr = if p == 0 {
        if t == 0 { 1.0 } else { 0.0 }
    } else {
        o as f64 / p as f64
    };
    let rc = if t == 0 { 1.0 } else { o as f64 / t as f64 };
    let f = if pr + rc == 0.0 {
        0.0
    } else {
        2.0 * pr * rc / (pr + rc)
    };
    (pr, rc, f)
}

/// Prints the table row of `texts` (one per page) extracted in `best` seconds.
fn row(
    name: &str,
    pages: &[(String, String, String)],
    texts: &[String],
    best: f64,
    bytes: usize,
    per_page: bool,
) {
    let (mut sp, mut sr, mut sf) = (0.0, 0.0, 0.0);
    let (mut to, mut tp, mut tt) = (0, 0, 0);
    for ((id, _, truth), text) in pages.iter().zip(texts) {
        let (o, p, t) = overlap(text, truth);
        let (pr, rc, f) = prf(o, p, t);
        if per_page {
            println!(
                "{name:<22} {:<14} P {pr:.3} R {rc:.3} F1 {f:.3}  ({p} words, truth {t})",
                &id[..12]
            );
        }
        sp += pr;
        sr += rc;
        sf += f;
        to += o;
        tp += p;
        tt += t;
    }
    let n = pages.len() as f64;
    let (mp, mr, mf) = prf(to, tp, tt);
    println!(
        "| {name} | {:.3} | {:.3} | {:.3} | {mp:.3} | {mr:.3} | {mf:.3} | {:.0} | {:.1} |",
        sp / n,
        sr / n,
        sf / n,
        n / best,
        bytes as f64 / best / 1e6
    );
}

/// The Rust extractors on crates.io, same pages, same metric.
#[cfg(feature = "compare-extractors")]
fn peers(pages: &[(String, String, String)], bytes: usize, per_page: bool) {
    type Run = Box<dyn Fn(&str, &str) -> String>;
    let runs: Vec<(&str, Run)> = vec![
        (
            "trafilatura-rs 0.6 (balanced)",
            Box::new(|h: &str, _u: &str| {
                trafilatura::extract(h, &trafilatura::Options::default())
                    .map(|r| r.content_text)
                    .unwrap_or_default()
            }),
        ),
        (
            "trafilatura-rs 0.6 (precision)",
            Box::new(|h: &str, _u: &str| {
                let o = trafilatura::Options::default()
                    .with_focus(trafilatura::ExtractionFocus::FavorPrecision);
                trafilatura::extract(h, &o)
                    .map(|r| r.content_text)
                    .unwrap_or_default()
            }),
        ),
        (
            "dom_smoothie 0.19",
            Box::new(|h: &str, u: &str| {
                let cfg = dom_smoothie::Config {
                    text_mode: dom_smoothie::TextMode::Formatted,
                    ..Default::default()
                };
                dom_smoothie::Readability::new(h, Some(u), Some(cfg))
                    .and_then(|mut r| r.parse())
                    .map(|a| a.text_content.to_string())
                    .unwrap_or_default()
            }),
        ),
    ];
    let gt: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            std::path::Path::new(
                &std::env::var("TOKENMILL_TEST_DATA").unwrap_or_else(|_| "../shared/data".into()),
            )
            .join("extraction/ground-truth.json"),
        )
        .expect("ground truth"),
    )
    .expect("json");
    for (name, f) in runs {
        let mut best = f64::MAX;
        let mut texts = Vec::new();
        for _ in 0..3 {
            let t0 = Instant::now();
            texts = pages
                .iter()
                .map(|(id, h, _)| f(h, gt[id]["url"].as_str().unwrap_or("https://example.com/")))
                .collect();
            best = best.min(t0.elapsed().as_secs_f64());
        }
        row(name, pages, &texts, best, bytes, per_page);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--") && !a.ends_with(".json"))
        .cloned()
        .unwrap_or_else(|| {
            std::env::var("TOKENMILL_TEST_DATA").unwrap_or_else(|_| "../shared/data".into())
        });
    let out = args
        .iter()
        .position(|a| a == "--out")
        .map(|i| args[i + 1].clone());
    let per_page = args.iter().any(|a| a == "--per-page");
    let dir = std::path::Path::new(&dir).join("extraction");
    let gt: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("ground-truth.json")).expect("ground truth"),
    )
    .expect("json");
    let mut pages = Vec::new();
    for (id, v) in gt.as_object().expect("object") {
        let mut html = String::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join("html").join(format!("{id}.html.gz"))).expect("page"),
        )
        .read_to_string(&mut html)
        .expect("utf-8 page");
        pages.push((
            id.clone(),
            html,
            v["articleBody"].as_str().unwrap_or("").to_string(),
        ));
    }
    pages.sort();
    let bytes: usize = pages.iter().map(|p| p.1.len()).sum();
    #[cfg(feature = "compare-extractors")]
    peers(&pages, bytes, per_page);
    for (name, opts) in [
        ("tokenmill", tokenmill_extract::ExtractorConfig::default()),
        (
            "tokenmill precision",
            tokenmill_extract::ExtractorConfig {
                favor_precision: true,
                ..Default::default()
            },
        ),
    ] {
        let mut best = f64::MAX;
        let mut texts = Vec::new();
        for _ in 0..20 {
            let t0 = Instant::now();
            texts = pages
                .iter()
                .map(|(_, h, _)| tokenmill_extract::extract(h, &opts).text)
                .collect();
            best = best.min(t0.elapsed().as_secs_f64());
        }
        row(name, &pages, &texts, best, bytes, per_page);
        if let Some(o) = &out
            && name == "tokenmill"
        {
            let m: serde_json::Map<String, serde_json::Value> = pages
                .iter()
                .zip(&texts)
                .map(|((id, _, _), t)| (id.clone(), t.clone().into()))
                .collect();
            std::fs::write(o, serde_json::to_string(&m).expect("json")).expect("write");
        }
    }
}
