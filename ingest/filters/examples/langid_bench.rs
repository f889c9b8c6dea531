//! Measures language identifiers: accuracy (by script group) and speed, on real multilingual
//! text of the shared test data, to choose the one `tokenmill-filters` uses.
//!
//! ```sh
//! cargo run -p tokenmill-filters --example langid_bench --features compare-langid --profile perf [-- DATA_DIR]
//! ```
//!
//! Detectors: whatlang 0.18 (70 languages), whatlang restricted to the 20 languages lingua is
//! built with here, whichlang 0.1 (16 languages), lingua 1.8 (20 languages selected through
//! cargo features, models preloaded). Datasets (`DATA_DIR/multilingual`, default
//! `$TOKENMILL_TEST_DATA` or `../shared/data`):
//!
//! * `whatlang-examples.json`: one paragraph per language, 69 languages (`{"eng": text}`);
//! * the UDHR in 532 languages (`udhr-532-languages.tar.gz`, extracted with `tar` to a
//!   temporary folder): every `<p>` and `<li>` of at least 20 characters as a paragraph, and
//!   each translation's paragraphs joined as a document; the language is `iso6393` of
//!   `udhr-index.tsv`;
//! * `wagahaiwa_nekodearu.ja.txt`: each line of at least 20 characters, Japanese.
//!
//! Codes are compared after folding individual languages into their macrolanguage (`arb` →
//! `ara`, `cmn` → `zho`, `pes` → `fas`, `nob`/`nno` → `nor`, ...), so that a detector is not
//! marked wrong for naming the macrolanguage. A detector is scored only on the languages it
//! supports (its coverage is reported); a text it gives no answer for counts as wrong.

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

/// Individual language → macrolanguage (only where a detector names the macrolanguage or
/// another member).
fn fold(code: &str) -> &str {
    match code {
        "arb" => "ara",
        "cmn" => "zho",
        "pes" | "prs" => "fas",
        "nob" | "nno" => "nor",
        "lvs" => "lav",
        "ekk" => "est",
        "zsm" | "zlm" => "msa",
        "als" => "sqi",
        "azj" => "aze",
        "uzn" => "uzb",
        "khk" => "mon",
        "npi" => "nep",
        "swh" => "swa",
        "ory" => "ori",
        "ydd" => "yid",
        "twi" | "fat" => "aka",
        other => other,
    }
}

/// Latin-script languages of Europe (folded codes).
const EUROPEAN_LATIN: [&str; 45] = [
    "eng", "deu", "fra", "spa", "por", "ita", "nld", "swe", "dan", "nor", "fin", "est", "lav",
    "lit", "pol", "ces", "slk", "slv", "hrv", "bos", "srp", "hun", "ron", "cat", "glg", "eus",
    "gle", "cym", "isl", "fao", "mlt", "sqi", "lat", "epo", "ltz", "bre", "gla", "fry", "roh",
    "oci", "cos", "sme", "gsw", "fur", "lld",
];

const GROUPS: [&str; 7] = [
    "Latin (Europe)",
    "Latin (other)",
    "Cyrillic",
    "CJK",
    "Arabic script",
    "Indic",
    "other",
];

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Script {
    Latin,
    Cyrillic,
    Cjk,
    Arabic,
    Indic,
    Other,
}

fn script_of(c: char) -> Option<Script> {
    let cp = c as u32;
    Some(match cp {
        0x41..=0x5A | 0x61..=0x7A | 0xC0..=0x24F | 0x1E00..=0x1EFF => Script::Latin,
        0x400..=0x52F | 0x1C80..=0x1C8F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x600..=0x6FF | 0x750..=0x77F | 0x8A0..=0x8FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => {
            Script::Arabic
        }
        0x900..=0xDFF => Script::Indic,
        0x1100..=0x11FF
        | 0x3040..=0x30FF
        | 0x3130..=0x318F
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xAC00..=0xD7AF => Script::Cjk,
        _ if c.is_alphabetic() => Script::Other,
        _ => return None,
    })
}

/// The script group of a text (its most frequent script) in language `lang` (folded).
fn group_of(text: &str, lang: &str) -> usize {
    let mut counts = BTreeMap::new();
    for s in text.chars().filter_map(script_of) {
        *counts.entry(s).or_insert(0usize) += 1;
    }
    let script = counts
        .into_iter()
        .max_by_key(|&(s, n)| (n, std::cmp::Reverse(s)))
        .map(|(s, _)| s);
    match script {
        Some(Script::Latin) if EUROPEAN_LATIN.contains(&lang) => 0,
        Some(Script::Latin) => 1,
        Some(Script::Cyrillic) => 2,
        Some(Script::Cjk) => 3,
        Some(Script::Arabic) => 4,
        Some(Script::Indic) => 5,
        _ => 6,
    }
}

struct Sample {
    lang: String,
    group: usize,
    text: String,
}

impl Sample {
    fn new(lang: &str, text: String) -> Self {
        let lang = fold(lang).to_owned();
        Self {
            group: group_of(&text, &lang),
            lang,
            text,
        }
    }
}

struct Dataset {
    name: &'static str,
    samples: Vec<Sample>,
}

/// A language identifier under test: its folded answer for a text.
trait Detect {
    fn name(&self) -> &str;
    fn supports(&self, lang: &str) -> bool;
    fn detect(&self, text: &str) -> Option<&str>;
    /// whatlang's confidence, for the threshold table.
    fn confidence(&self, _text: &str) -> Option<f64> {
        None
    }
}

struct Whatlang {
    name: String,
    detector: whatlang::Detector,
    langs: HashSet<&'static str>,
}

impl Whatlang {
    fn new(allow: Option<&[&str]>) -> Self {
        let all: Vec<whatlang::Lang> = whatlang::Lang::all()
            .iter()
            .copied()
            .filter(|l| allow.is_none_or(|a| a.contains(&fold(l.code()))))
            .collect();
        let langs = all.iter().map(|l| fold(l.code())).collect();
        let (name, detector) = match allow {
            None => ("whatlang 0.18 (70)".to_owned(), whatlang::Detector::new()),
            Some(a) => (
                format!("whatlang 0.18, allowlist ({})", a.len()),
                whatlang::Detector::with_allowlist(all),
            ),
        };
        Self {
            name,
            detector,
            langs,
        }
    }
}

impl Detect for Whatlang {
    fn name(&self) -> &str {
        &self.name
    }
    fn supports(&self, lang: &str) -> bool {
        self.langs.contains(lang)
    }
    fn detect(&self, text: &str) -> Option<&str> {
        self.detector.detect_lang(text).map(|l| fold(l.code()))
    }
    fn confidence(&self, text: &str) -> Option<f64> {
        self.detector.detect(text).map(|i| i.confidence())
    }
}

struct Whichlang;

impl Detect for Whichlang {
    fn name(&self) -> &str {
        "whichlang 0.1 (16)"
    }
    fn supports(&self, lang: &str) -> bool {
        whichlang::LANGUAGES
            .iter()
            .any(|l| fold(l.three_letter_code()) == lang)
    }
    fn detect(&self, text: &str) -> Option<&str> {
        Some(fold(whichlang::detect_language(text).three_letter_code()))
    }
}

struct Lingua {
    detector: lingua::LanguageDetector,
    codes: Vec<(lingua::Language, String)>,
}

impl Lingua {
    fn new() -> Self {
        let mut languages: Vec<lingua::Language> = lingua::Language::all().into_iter().collect();
        languages.sort();
        let codes = languages
            .iter()
            .map(|l| (*l, fold(&l.iso_code_639_3().to_string()).to_owned()))
            .collect();
        let detector = lingua::LanguageDetectorBuilder::from_languages(&languages)
            .with_preloaded_language_models()
            .build();
        Self { detector, codes }
    }
}

impl Detect for Lingua {
    fn name(&self) -> &str {
        "lingua 1.8 (20)"
    }
    fn supports(&self, lang: &str) -> bool {
        self.codes.iter().any(|(_, c)| c == lang)
    }
    fn detect(&self, text: &str) -> Option<&str> {
        let lang = self.detector.detect_language_of(text)?;
        self.codes
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, c)| c.as_str())
    }
}

/// Accuracy of one detector on one set of samples.
#[derive(Default)]
struct Score {
    scored: usize,
    correct: usize,
    by_group: [(usize, usize); 7],
    bytes: usize,
    time: Duration,
}

impl Score {
    fn accuracy(&self) -> String {
        pct(self.correct, self.scored)
    }
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.1} %", 100.0 * a as f64 / b as f64)
    }
}

fn score(d: &dyn Detect, samples: &[&Sample]) -> Score {
    let mut s = Score::default();
    for sample in samples {
        let t = Instant::now();
        let answer = d.detect(&sample.text);
        s.time += t.elapsed();
        let ok = answer == Some(sample.lang.as_str());
        s.scored += 1;
        s.correct += usize::from(ok);
        s.bytes += sample.text.len();
        let g = &mut s.by_group[sample.group];
        g.0 += 1;
        g.1 += usize::from(ok);
    }
    s
}

fn data_dir() -> PathBuf {
    std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TOKENMILL_TEST_DATA").map(PathBuf::from))
        .unwrap_or_else(|| {
            std::path::PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../../shared/data")
        })
}

fn read(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()).into())
}

/// Crude HTML to text: the contents of every `<p>` and `<li>`, inner tags removed, a few
/// entities decoded, whitespace collapsed.
fn html_paragraphs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let tag: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if tag != "p" && tag != "li" {
            rest = after;
            continue;
        }
        let close = format!("</{tag}>");
        let Some(end) = after.find(&close) else { break };
        let inner = &after[after.find('>').map_or(0, |i| i + 1).min(end)..end];
        let mut text = String::new();
        let mut in_tag = false;
        for c in inner.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                _ if !in_tag => text.push(c),
                _ => {}
            }
        }
        let text = text
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&nbsp;", " ");
        out.push(text.split_whitespace().collect::<Vec<_>>().join(" "));
        rest = &after[end + close.len()..];
    }
    out
}

fn load(dir: &Path, tmp: &Path) -> Res<Vec<Dataset>> {
    let multi = dir.join("multilingual");
    let examples: BTreeMap<String, String> =
        serde_json::from_str(&read(&multi.join("whatlang-examples.json"))?)?;
    let examples = Dataset {
        name: "whatlang examples (69 languages, 1 paragraph each)",
        samples: examples
            .iter()
            .map(|(lang, text)| Sample::new(lang, text.clone()))
            .collect(),
    };

    let status = Command::new("tar")
        .arg("xzf")
        .arg(multi.join("udhr-532-languages.tar.gz"))
        .arg("-C")
        .arg(tmp)
        .status()
        .map_err(|e| format!("running tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar failed: {status}").into());
    }
    let index = read(&tmp.join("udhr-index.tsv"))?;
    let mut paragraphs = Vec::new();
    let mut documents = Vec::new();
    for (i, line) in index.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(code), Some(lang)) = (cols.first(), cols.get(2)) else {
            return Err(format!("udhr-index.tsv line {}: too few columns", i + 1).into());
        };
        let html = read(&tmp.join("declaration").join(format!("{code}.html")))?;
        let paras: Vec<String> = html_paragraphs(&html)
            .into_iter()
            .filter(|p| p.chars().count() >= 20)
            .collect();
        if paras.is_empty() {
            continue;
        }
        documents.push(Sample::new(lang, paras.join("\n")));
        paragraphs.extend(paras.into_iter().map(|p| Sample::new(lang, p)));
    }

    let novel = read(&multi.join("wagahaiwa_nekodearu.ja.txt"))?;
    let japanese = novel
        .lines()
        .map(str::trim)
        .filter(|l| l.chars().count() >= 20)
        .map(|l| Sample::new("jpn", l.into()));
    Ok(vec![
        examples,
        Dataset {
            name: "UDHR paragraphs (<p>/<li> >= 20 chars)",
            samples: paragraphs,
        },
        Dataset {
            name: "UDHR documents (one per translation)",
            samples: documents,
        },
        Dataset {
            name: "Japanese novel lines (>= 20 chars)",
            samples: japanese.collect(),
        },
    ])
}

fn main() -> Res<()> {
    let dir = data_dir();
    let tmp = tempfile::tempdir()?;
    let datasets = load(&dir, tmp.path())?;
    println!("data: {}", dir.display());
    for d in &datasets {
        let langs: HashSet<&str> = d.samples.iter().map(|s| s.lang.as_str()).collect();
        println!(
            "  {}: {} samples, {} languages",
            d.name,
            d.samples.len(),
            langs.len()
        );
    }

    let t = Instant::now();
    let lingua = Lingua::new();
    println!(
        "lingua: models of 20 languages loaded in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let lingua_langs: Vec<&str> = lingua.codes.iter().map(|(_, c)| c.as_str()).collect();
    let whatlang = Whatlang::new(None);
    let whatlang_20 = Whatlang::new(Some(&lingua_langs));
    let detectors: [&dyn Detect; 4] = [&whatlang, &whatlang_20, &Whichlang, &lingua];

    // 1. The languages every detector supports, same samples for all: accuracy and speed.
    println!("\n## Common languages (supported by all four detectors)\n");
    println!("| dataset | samples | languages | detector | accuracy | docs/s | MB/s |");
    println!("|---|---:|---:|---|---:|---:|---:|");
    for d in &datasets {
        let common: Vec<&Sample> = d
            .samples
            .iter()
            .filter(|s| detectors.iter().all(|det| det.supports(&s.lang)))
            .collect();
        let langs: HashSet<&str> = common.iter().map(|s| s.lang.as_str()).collect();
        for det in detectors {
            // An untimed pass first, so that lazy initialisation is not timed.
            score(det, &common);
            let s = score(det, &common);
            let secs = s.time.as_secs_f64().max(1e-9);
            println!(
                "| {} | {} | {} | {} | {} | {:.0} | {:.1} |",
                d.name,
                common.len(),
                langs.len(),
                det.name(),
                s.accuracy(),
                s.scored as f64 / secs,
                s.bytes as f64 / secs / 1e6
            );
        }
    }

    // 2. Each detector on all the languages it supports, by script group.
    println!("\n## Each detector on the languages it supports, by script group\n");
    let header: Vec<&str> = GROUPS.to_vec();
    println!(
        "| dataset | detector | languages covered | samples | accuracy | {} |",
        header.join(" | ")
    );
    println!("|---|---|---:|---:|---:|{}", "---:|".repeat(GROUPS.len()));
    for d in &datasets {
        let all_langs: HashSet<&str> = d.samples.iter().map(|s| s.lang.as_str()).collect();
        for det in detectors {
            let covered = all_langs.iter().filter(|l| det.supports(l)).count();
            let samples: Vec<&Sample> =
                d.samples.iter().filter(|s| det.supports(&s.lang)).collect();
            let s = score(det, &samples);
            let groups: Vec<String> = s
                .by_group
                .iter()
                .map(|&(n, ok)| {
                    if n == 0 {
                        "–".into()
                    } else {
                        format!("{} ({n})", pct(ok, n))
                    }
                })
                .collect();
            println!(
                "| {} | {} | {covered} / {} | {} | {} | {} |",
                d.name,
                det.name(),
                all_langs.len(),
                s.scored,
                s.accuracy(),
                groups.join(" | ")
            );
        }
    }

    // 2b. What whatlang confuses most on UDHR paragraphs.
    if let Some(d) = datasets.get(1) {
        let mut confusions: BTreeMap<(String, String), usize> = BTreeMap::new();
        for s in d.samples.iter().filter(|s| whatlang.supports(&s.lang)) {
            let answer = whatlang.detect(&s.text).unwrap_or("none");
            if answer != s.lang {
                *confusions
                    .entry((s.lang.clone(), answer.to_owned()))
                    .or_default() += 1;
            }
        }
        let mut list: Vec<_> = confusions.into_iter().collect();
        list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> = list
            .iter()
            .take(12)
            .map(|((t, p), n)| format!("{t}→{p} {n}"))
            .collect();
        println!(
            "
whatlang's most frequent confusions on {} (truth→answer): {}",
            d.name,
            top.join(", ")
        );
    }

    // 3. whatlang's confidence: how many texts reach a threshold, and how accurate they are.
    println!("\n## whatlang confidence thresholds (languages whatlang supports)\n");
    println!(
        "| dataset | threshold | share of texts at or above | accuracy at or above | accuracy below |"
    );
    println!("|---|---:|---:|---:|---:|");
    for d in &datasets {
        let answers: Vec<(bool, f64)> = d
            .samples
            .iter()
            .filter(|s| whatlang.supports(&s.lang))
            .map(|s| {
                let ok = whatlang.detect(&s.text) == Some(s.lang.as_str());
                (ok, whatlang.confidence(&s.text).unwrap_or(0.0))
            })
            .collect();
        for threshold in [0.5, 0.65, 0.8, 0.9] {
            let above: Vec<bool> = answers
                .iter()
                .filter(|a| a.1 >= threshold)
                .map(|a| a.0)
                .collect();
            let below: Vec<bool> = answers
                .iter()
                .filter(|a| a.1 < threshold)
                .map(|a| a.0)
                .collect();
            println!(
                "| {} | {threshold} | {} | {} | {} |",
                d.name,
                pct(above.len(), answers.len()),
                pct(above.iter().filter(|&&ok| ok).count(), above.len()),
                pct(below.iter().filter(|&&ok| ok).count(), below.len()),
            );
        }
    }
    Ok(())
}
