//! Runs every filter over the real corpora of the shared test data and prints, per corpus, the
//! funnel in FineWeb's order (Gopher repetition → Gopher quality → C4 → FineWeb), what
//! language id says, the most frequent drop rules, the lines C4 removed and what PII
//! formatting replaced.
//!
//! ```sh
//! cargo run -p tokenmill-filters --example filter_stats --profile perf [-- [DATA_DIR] [--verdicts FILE]]
//! ```
//!
//! `DATA_DIR` defaults to `$TOKENMILL_TEST_DATA`, else `../shared/data` beside the repository.
//! `--verdicts FILE` writes each document's quality verdict (`null` for kept, else
//! `filter/rule`) per corpus as JSON, which `peers/datatrove_filters.py --ours FILE` compares
//! with datatrove's.
//! Corpora: every `jsonl/*.jsonl.gz` and `jsonl/*.json.gz` (one JSON object per line, its
//! `"text"` field a document) and the files of `text/` (each file one document).

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use tokenmill_filters::{C4LineCounts, Drop, FiltersConfig, LanguageFilter, detect};

type Res<T> = Result<T, Box<dyn Error>>;

/// One corpus: its name and its documents.
struct Corpus {
    name: String,
    docs: Vec<String>,
    /// Lines that were not a JSON object with a string `text`.
    bad_lines: usize,
}

/// The data folder and where to write verdicts, from the command line.
fn args() -> Res<(PathBuf, Option<PathBuf>)> {
    let mut dir = None;
    let mut verdicts = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--verdicts" {
            verdicts = Some(args.next().ok_or("--verdicts needs a file")?.into());
        } else {
            dir = Some(PathBuf::from(arg));
        }
    }
    let dir = dir
        .or_else(|| std::env::var_os("TOKENMILL_TEST_DATA").map(PathBuf::from))
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../../shared/data")
        });
    Ok((dir, verdicts))
}

fn read_jsonl(path: &Path) -> Res<Corpus> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = BufReader::new(MultiGzDecoder::new(file));
    let mut corpus = Corpus {
        name: file_name(path),
        docs: Vec::new(),
        bad_lines: 0,
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{}: line {}: {e}", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let text = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned));
        match text {
            Some(text) => corpus.docs.push(text),
            None => corpus.bad_lines += 1,
        }
    }
    Ok(corpus)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn sorted_files(dir: &Path) -> Res<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// What happened to one corpus.
#[derive(Default)]
struct Stats {
    docs: usize,
    english: usize,
    after: [usize; 4],
    kept_english: usize,
    drops: HashMap<String, usize>,
    c4_lines: C4LineCounts,
    pii_changed: usize,
    pii_changed_all: usize,
    verdicts: Vec<Option<String>>,
    chars_in: usize,
    chars_out: usize,
    quality_time: Duration,
    lang_time: Duration,
}

fn run(corpus: &Corpus, filters: &FiltersConfig, language: &LanguageFilter) -> Stats {
    let mut s = Stats {
        docs: corpus.docs.len(),
        ..Default::default()
    };
    for doc in &corpus.docs {
        s.chars_in += doc.chars().count();
        let t = Instant::now();
        let (_, lang) = language.check_text(doc);
        s.lang_time += t.elapsed();
        let english = lang.is_ok();
        s.pii_changed_all +=
            usize::from(matches!(filters.pii.apply(doc), std::borrow::Cow::Owned(_)));
        s.english += usize::from(english);
        if let Err(d) = &lang {
            *s.drops.entry(d.key()).or_default() += 1;
        }

        let t = Instant::now();
        let verdict = (|| -> Result<String, Drop> {
            filters.gopher_repetition.check(doc)?;
            s.after[0] += 1;
            filters.gopher_quality.check(doc)?;
            s.after[1] += 1;
            let text = filters.c4.apply_counted(doc, &mut s.c4_lines)?;
            s.after[2] += 1;
            filters.fineweb.check(&text)?;
            s.after[3] += 1;
            Ok(text)
        })();
        s.quality_time += t.elapsed();
        s.verdicts.push(verdict.as_ref().err().map(Drop::key));
        match verdict {
            Ok(text) => {
                s.kept_english += usize::from(english);
                let formatted = filters.pii.apply(&text);
                s.pii_changed += usize::from(formatted != text);
                s.chars_out += formatted.chars().count();
            }
            Err(d) => *s.drops.entry(d.key()).or_default() += 1,
        }
    }
    s
}

fn per_second(n: usize, d: Duration) -> String {
    if d.is_zero() {
        "-".into()
    } else {
        format!("{:.0}", n as f64 / d.as_secs_f64())
    }
}

fn main() -> Res<()> {
    let (dir, verdicts_path) = args()?;
    let mut corpora = Vec::new();
    for path in sorted_files(&dir.join("jsonl"))? {
        let name = file_name(&path);
        if name.ends_with(".jsonl.gz") || name.ends_with(".json.gz") {
            corpora.push(read_jsonl(&path)?);
        }
    }
    let mut texts = Corpus {
        name: "text/*.txt (one document per file)".into(),
        docs: Vec::new(),
        bad_lines: 0,
    };
    for path in sorted_files(&dir.join("text"))? {
        texts
            .docs
            .push(std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    corpora.push(texts);

    let filters = FiltersConfig::default();
    filters.validate()?;
    let language = filters.language.clone();
    println!("data: {}", dir.display());
    println!(
        "language filter: {:?} with confidence >= {}\n",
        language.languages, language.min_confidence
    );
    println!(
        "| corpus | docs | English (whatlang ≥ 0.65) | after Gopher rep. | after Gopher qual. | after C4 | after FineWeb (kept) | kept and English | chars kept (of all) | PII: docs changed (all / kept) | quality docs/s | langid docs/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for corpus in &corpora {
        let s = run(corpus, &filters, &language);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} % | {} / {} | {} | {} |",
            corpus.name,
            s.docs,
            s.english,
            s.after[0],
            s.after[1],
            s.after[2],
            s.after[3],
            s.kept_english,
            100.0 * s.chars_out as f64 / s.chars_in.max(1) as f64,
            s.pii_changed_all,
            s.pii_changed,
            per_second(s.docs, s.quality_time),
            per_second(s.docs, s.lang_time),
        );
        if corpus.bad_lines > 0 {
            println!(
                "|   ({} lines without a string \"text\" skipped) |",
                corpus.bad_lines
            );
        }
        all.push((corpus.name.clone(), s));
    }

    println!("\nDrop rules (quality funnel; language drops counted separately):\n");
    println!("| corpus | drops, most frequent first |");
    println!("|---|---|");
    for (name, s) in &all {
        let mut drops: Vec<_> = s.drops.iter().collect();
        drops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let list: Vec<String> = drops.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("| {name} | {} |", list.join(", "));
    }

    println!("\nLines C4 removed (over all documents that reached C4):\n");
    println!(
        "| corpus | long_word | no_terminal_punct | too_few_words | javascript | policy | kept |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, s) in &all {
        let c = s
            .c4_lines
            .by_rule()
            .iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
            .join(" | ");
        println!("| {name} | {c} |");
    }

    if let Some(path) = verdicts_path {
        let map: std::collections::BTreeMap<&str, &Vec<Option<String>>> = all
            .iter()
            .map(|(name, s)| (name.as_str(), &s.verdicts))
            .collect();
        std::fs::write(&path, serde_json::to_string(&map)?)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("\nverdicts written to {}", path.display());
    }

    // Detected languages of the first corpus with many languages, for orientation.
    for corpus in &corpora {
        let mut langs: HashMap<&str, usize> = HashMap::new();
        for doc in &corpus.docs {
            *langs
                .entry(detect(doc).map_or("none", |g| g.code))
                .or_default() += 1;
        }
        let mut langs: Vec<_> = langs.into_iter().collect();
        langs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = langs
            .iter()
            .take(8)
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        println!("\nlanguages of {}: {}", corpus.name, top.join(", "));
    }
    Ok(())
}
