//! `tokenmill bench extract`: main-content extraction on two sets of real pages, scored by each
//! set's own rule, side by side with trafilatura (Python, run by `tests/peers/extraction_peer.py`
//! on the same files) and timed on one core.
//!
//! * **multilingual** (`extraction-multilingual/`, 106 varied pages: blogs, government, company
//!   and shop pages, forums, news; German, English, French, Spanish, Polish, …): snippets that
//!   must be in the main text and snippets that must not ([`tokenmill_extract::eval`]). Reported
//!   for the development part, the part held aside while developing
//!   ([`tokenmill_extract::eval::held_aside`]), all pages, and per language with ≥ 10 pages.
//! * **articles** (`extraction/`, 20 English news pages with their article text): word-level
//!   precision/recall/F1, macro (mean over pages) and micro (summed counts).
//! * **udhr** (`multilingual/udhr-532-languages.tar.gz`, the Universal Declaration of Human
//!   Rights in 532 languages and some 40 scripts): pages that are all main text — a preamble in
//!   a `header`, thirty `article` elements, lists — so every block is wanted
//!   ([`tokenmill_extract::eval::score_blocks`]); what it finds is text lost to a heuristic
//!   that does not hold across languages and scripts (sentence punctuation, word counts,
//!   commas). Reported for all pages, for their paragraphs and list items only (`paragraphs`:
//!   headings left out, as extractors differ by design on titles), and per script with ≥ 10
//!   pages.
//!
//! Pages are decoded as the build decodes a WARC response (`tokenmill_ingest::http`: BOM,
//! declared charset unless the bytes contradict it, detection); trafilatura gets the raw bytes
//! and decodes them itself.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokenmill_extract::ExtractorConfig;
use tokenmill_extract::eval::{
    Prf, SnippetCounts, WordCounts, held_aside, score_blocks, score_snippets, score_words,
};
use tokenmill_ingest::http::{HttpPayload, decode_body};

/// `tokenmill bench extract`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shared data folder (default: `$TOKENMILL_TEST_DATA`, else `../shared/data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The Python with trafilatura (default: `.venv-extract/bin/python`, else the peers'
    /// Python, `$TOKENMILL_PEERS_PYTHON` or `.venv-peers/bin/python`).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Only tokenmill: do not run trafilatura.
    #[arg(long)]
    pub no_peer: bool,
    /// Timed passes per extractor and set; the fastest is reported.
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
    /// Also print, per multilingual page, the snippets each extractor misses or keeps wrongly,
    /// and why ours does (the block's fate and its element).
    #[arg(long)]
    pub per_page: bool,
    /// Which of our configurations `--per-page` explains.
    #[arg(long, value_enum, default_value_t = Mode::Default)]
    pub per_page_mode: Mode,
    /// Write every row as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The page sets to run (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "multilingual,articles,udhr"
    )]
    pub sets: Vec<Set>,
}

/// The page sets of the bench.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// 106 varied pages, snippets that must and must not be in the text.
    Multilingual,
    /// 20 news pages with their article text.
    Articles,
    /// The UDHR in 532 languages, every block main text.
    Udhr,
}

impl Set {
    fn name(self) -> &'static str {
        match self {
            Set::Multilingual => "multilingual",
            Set::Articles => "articles",
            Set::Udhr => "udhr",
        }
    }
}

/// Our extractor's configurations in the table.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The defaults.
    Default,
    /// `include_comments`.
    Comments,
    /// `favor_precision`.
    Precision,
}

/// What a page is scored against.
#[derive(Debug, Clone)]
pub enum Truth {
    /// The article's text (word-level scoring).
    Words(String),
    /// Every text block of the page (all of it is main text).
    Blocks(Vec<tokenmill_extract::eval::TextBlock>),
    /// Snippets that must and must not be in the output.
    Snippets {
        /// Must be in the main text.
        with: Vec<String>,
        /// Must not.
        without: Vec<String>,
    },
}

/// One page of a set.
#[derive(Debug, Clone)]
pub struct Page {
    /// The article id or the multilingual file name.
    pub key: String,
    /// The page decoded as the build decodes it.
    pub html: String,
    /// Its main text's language (whatlang on the `with` snippets), for the per-language rows.
    pub lang: Option<&'static str>,
    /// Its script (whatlang), for the per-script rows of the `udhr` set.
    pub script: Option<String>,
    /// In the part held aside while developing.
    pub held: bool,
    /// The ground truth.
    pub truth: Truth,
}

/// The shared data folder: `explicit`, else `$TOKENMILL_TEST_DATA`, else `../shared/data`.
pub fn data_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("TOKENMILL_TEST_DATA").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data"))
}

fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?,
    )
    .read_to_end(&mut out)
    .with_context(|| format!("{}: not a gzip file", path.display()))?;
    Ok(out)
}

fn decode(path: &Path, bytes: Vec<u8>) -> Result<String> {
    match decode_body("text/html", bytes).1 {
        HttpPayload::Html { text, .. } => Ok(text),
        _ => bail!("{}: not an HTML page", path.display()),
    }
}

fn json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?,
    )
    .with_context(|| format!("{}: not valid JSON", path.display()))
}

/// The 20 article pages of `data/extraction`, sorted by id.
pub fn load_articles(data: &Path) -> Result<Vec<Page>> {
    let dir = data.join("extraction");
    let gt = json(&dir.join("ground-truth.json"))?;
    let mut pages = Vec::new();
    for (id, v) in gt.as_object().context("ground-truth.json: not an object")? {
        let path = dir.join("html").join(format!("{id}.html.gz"));
        let html = decode(&path, gunzip(&path)?)?;
        pages.push(Page {
            key: id.clone(),
            html,
            lang: Some("eng"),
            script: None,
            held: false,
            truth: Truth::Words(v["articleBody"].as_str().unwrap_or("").to_string()),
        });
    }
    pages.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pages)
}

/// The 106 pages of `data/extraction-multilingual`, sorted by file name.
pub fn load_multilingual(data: &Path) -> Result<Vec<Page>> {
    let dir = data.join("extraction-multilingual");
    let meta = json(&dir.join("evaldata.json"))?;
    let mut pages = Vec::new();
    for (url, v) in meta.as_object().context("evaldata.json: not an object")? {
        let file = v["file"]
            .as_str()
            .with_context(|| format!("evaldata.json: {url} has no file"))?;
        let strs = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (with, without) = (strs("with"), strs("without"));
        let path = dir.join("html").join(format!("{file}.gz"));
        let html = decode(&path, gunzip(&path)?)?;
        let lang = whatlang::detect_lang(&with.join(" ")).map(|l| l.code());
        pages.push(Page {
            key: file.to_string(),
            html,
            lang,
            script: None,
            held: held_aside(file),
            truth: Truth::Snippets { with, without },
        });
    }
    pages.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pages)
}

/// The 532 pages of `data/multilingual/udhr-532-languages.tar.gz`, sorted by file name.
pub fn load_udhr(data: &Path) -> Result<Vec<Page>> {
    let path = data.join("multilingual/udhr-532-languages.tar.gz");
    let file =
        std::fs::File::open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut pages = Vec::new();
    for entry in archive
        .entries()
        .with_context(|| format!("{}: not a tar.gz", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: bad entry", path.display()))?;
        let name = entry
            .path()
            .with_context(|| format!("{}: bad member name", path.display()))?
            .to_string_lossy()
            .into_owned();
        let Some(file) = name
            .strip_prefix("declaration/")
            .filter(|f| f.ends_with(".html"))
            .map(String::from)
        else {
            continue;
        };
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: {name}: cannot read", path.display()))?;
        let member = path.join(&name);
        let html = decode(&member, bytes)?;
        let blocks = tokenmill_extract::eval::udhr_blocks(&html);
        if blocks.is_empty() {
            bail!("{}: no text blocks", member.display());
        }
        let all: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
        // whatlang names the Han script after its largest language
        let script =
            whatlang::detect_script(&all.join(" ")).map(|s| s.name().replace("Mandarin", "Han"));
        pages.push(Page {
            key: file,
            html,
            lang: None,
            script,
            held: false,
            truth: Truth::Blocks(blocks),
        });
    }
    if pages.len() < 500 {
        bail!("{}: {} pages, expected 532", path.display(), pages.len());
    }
    pages.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(pages)
}

/// Extracts every page with `opts`, `passes` times; the texts and the fastest pass in seconds.
pub fn run_ours(pages: &[Page], opts: &ExtractorConfig, passes: usize) -> (Vec<String>, f64) {
    let mut best = f64::INFINITY;
    let mut texts = Vec::new();
    for _ in 0..passes.max(1) {
        let t0 = Instant::now();
        texts = pages
            .iter()
            .map(|p| tokenmill_extract::extract(&p.html, opts).text)
            .collect();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (texts, best)
}

/// A row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// `multilingual` or `articles`.
    pub set: String,
    /// `dev`, `held`, `all`, `lang:xx` (multilingual) or `macro`/`micro` (articles).
    pub part: String,
    /// The extractor and its settings.
    pub extractor: String,
    /// Pages scored.
    pub pages: usize,
    /// Precision.
    pub p: f64,
    /// Recall.
    pub r: f64,
    /// F1.
    pub f1: f64,
    /// Pages per second on one core (whole set).
    pub pages_per_s: Option<f64>,
}

/// The rows of one extractor's `texts` (one per page, in `pages` order) on a set.
pub fn score(
    set: &str,
    extractor: &str,
    pages: &[Page],
    texts: &[String],
    seconds: Option<f64>,
) -> Vec<Row> {
    let speed = seconds.map(|s| pages.len() as f64 / s.max(1e-9));
    let row = |part: String, n: usize, prf: Prf, speed: Option<f64>| Row {
        set: set.into(),
        part,
        extractor: extractor.into(),
        pages: n,
        p: prf.p,
        r: prf.r,
        f1: prf.f1,
        pages_per_s: speed,
    };
    if pages.iter().all(|p| matches!(p.truth, Truth::Words(_))) {
        let (mut micro, mut sums, mut n) = (WordCounts::default(), (0.0, 0.0, 0.0), 0);
        for (p, t) in pages.iter().zip(texts) {
            if let Truth::Words(truth) = &p.truth {
                let c = score_words(t, truth);
                let f = c.prf();
                micro.add(c);
                sums = (sums.0 + f.p, sums.1 + f.r, sums.2 + f.f1);
                n += 1;
            }
        }
        let d = n.max(1) as f64;
        let mut mac = Prf::new(sums.0 / d, sums.1 / d);
        mac.f1 = sums.2 / d; // the mean of the pages' F1, as the benchmark reports it
        return vec![
            row("macro".into(), n, mac, speed),
            row("micro".into(), n, micro.prf(), None),
        ];
    }
    let mut parts: BTreeMap<String, (usize, SnippetCounts)> = BTreeMap::new();
    for (p, t) in pages.iter().zip(texts) {
        let c = match &p.truth {
            Truth::Snippets { with, without } => score_snippets(t, with, without).counts,
            Truth::Blocks(blocks) => {
                let r = score_blocks(t, blocks);
                let e = parts.entry("paragraphs".into()).or_default();
                e.0 += 1;
                e.1.add(r.body);
                r.counts
            }
            Truth::Words(_) => continue,
        };
        let mut add = |k: String| {
            let e = parts.entry(k).or_default();
            e.0 += 1;
            e.1.add(c);
        };
        if matches!(p.truth, Truth::Snippets { .. }) {
            add(if p.held { "held" } else { "dev" }.into());
        }
        add("all".into());
        if let Some(l) = p.lang {
            add(format!("lang:{l}"));
        }
        if let Some(s) = &p.script {
            add(format!("script:{s}"));
        }
    }
    let mut rows = Vec::new();
    for part in ["dev", "held", "all", "paragraphs"] {
        if let Some((n, c)) = parts.get(part) {
            rows.push(row(
                part.into(),
                *n,
                c.prf(),
                if part == "all" { speed } else { None },
            ));
        }
    }
    for (part, (n, c)) in &parts {
        if (part.starts_with("lang:") || part.starts_with("script:")) && *n >= 10 {
            rows.push(row(part.clone(), *n, c.prf(), None));
        }
    }
    rows
}

/// trafilatura's texts per mode and set, and its seconds per set, from the peer script.
type PeerOutput = BTreeMap<
    String,
    (
        BTreeMap<String, BTreeMap<String, String>>,
        BTreeMap<String, f64>,
    ),
>;

fn run_peer(python: &Path, data: &Path, passes: usize, sets: &str) -> Result<(String, PeerOutput)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/peers/extraction_peer.py");
    let out = tempfile::NamedTempFile::new()?;
    let status = Command::new(python)
        .arg(&script)
        .arg(out.path())
        .arg("--data")
        .arg(data)
        .arg("--passes")
        .arg(passes.to_string())
        .arg("--sets")
        .arg(sets)
        .status()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !status.success() {
        bail!(
            "{} {} failed ({status}); install the peer with `python3 -m venv .venv-extract && .venv-extract/bin/pip install trafilatura lxml_html_clean`",
            python.display(),
            script.display()
        );
    }
    let v = json(out.path())?;
    let version = v["trafilatura"].as_str().unwrap_or("?").to_string();
    let mut modes = PeerOutput::new();
    for (mode, m) in v["modes"].as_object().context("peer output: no modes")? {
        let mut texts = BTreeMap::new();
        for (set, t) in m["texts"].as_object().context("peer output: no texts")? {
            let per: BTreeMap<String, String> = t
                .as_object()
                .context("peer output: texts")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect();
            texts.insert(set.clone(), per);
        }
        let secs = m["seconds"]
            .as_object()
            .context("peer output: no seconds")?
            .iter()
            .filter_map(|(k, v)| v.as_f64().map(|s| (k.clone(), s)))
            .collect();
        modes.insert(mode.clone(), (texts, secs));
    }
    Ok((version, modes))
}

fn peer_python(explicit: Option<PathBuf>) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    explicit
        .or_else(|| Some(root.join(".venv-extract/bin/python")).filter(|p| p.exists()))
        .or_else(|| crate::peers::python(None, &root))
}

/// Runs `tokenmill bench extract`.
pub fn run(a: Args) -> Result<()> {
    let data = data_dir(a.data.clone());
    let mut sets = Vec::new();
    for set in [Set::Multilingual, Set::Articles, Set::Udhr] {
        if a.sets.contains(&set) {
            let pages = match set {
                Set::Multilingual => load_multilingual(&data)?,
                Set::Articles => load_articles(&data)?,
                Set::Udhr => load_udhr(&data)?,
            };
            sets.push((set.name(), pages));
        }
    }
    if a.per_page && !a.sets.contains(&Set::Multilingual) {
        bail!("--per-page explains the multilingual set: add it to --sets");
    }
    let configs = [
        ("tokenmill", Mode::Default, ExtractorConfig::default()),
        (
            "tokenmill +comments",
            Mode::Comments,
            ExtractorConfig {
                include_comments: true,
                ..Default::default()
            },
        ),
        (
            "tokenmill precision",
            Mode::Precision,
            ExtractorConfig {
                favor_precision: true,
                ..Default::default()
            },
        ),
    ];
    let mut rows = Vec::new();
    // our texts of the multilingual set in the mode `--per-page` explains
    let mut ours_texts = Vec::new();
    for (set, pages) in &sets {
        for (name, mode, opts) in &configs {
            let (texts, secs) = run_ours(pages, opts, a.passes);
            rows.extend(score(set, name, pages, &texts, Some(secs)));
            if *set == "multilingual" && *mode == a.per_page_mode {
                ours_texts = texts;
            }
        }
    }
    let mut peer_texts: Option<BTreeMap<String, String>> = None;
    if a.no_peer {
        println!("trafilatura not run (--no-peer)");
    } else if let Some(py) = peer_python(a.python.clone()) {
        let names: Vec<&str> = sets.iter().map(|(n, _)| *n).collect();
        let (version, modes) = run_peer(&py, &data, a.passes, &names.join(","))?;
        for (mode, (texts, secs)) in &modes {
            for (set, pages) in &sets {
                let per = texts.get(*set).cloned().unwrap_or_default();
                let t: Vec<String> = pages
                    .iter()
                    .map(|p| per.get(&p.key).cloned().unwrap_or_default())
                    .collect();
                let name = format!("trafilatura {version} {mode}");
                rows.extend(score(set, &name, pages, &t, secs.get(*set).copied()));
            }
        }
        peer_texts = modes
            .get("default")
            .and_then(|(t, _)| t.get("multilingual").cloned());
    } else {
        println!(
            "trafilatura not run: no Python with it (make .venv-extract: `python3 -m venv .venv-extract && .venv-extract/bin/pip install trafilatura lxml_html_clean`, or pass --python)"
        );
    }
    if a.per_page {
        let (_, pages) = &sets[0]; // multilingual, when asked for, comes first
        for (p, ours) in pages.iter().zip(&ours_texts) {
            let Truth::Snippets { with, without } = &p.truth else {
                continue;
            };
            let r = score_snippets(ours, with, without);
            let theirs = peer_texts
                .as_ref()
                .map(|t| score_snippets(t.get(&p.key).map_or("", |s| s), with, without).counts);
            if r.missing.is_empty() && r.unwanted.is_empty() {
                continue;
            }
            println!(
                "{}{} [{}]: tokenmill tp {} fn {} fp {}{}",
                p.key,
                if p.held { " (held)" } else { "" },
                p.lang.unwrap_or("?"),
                r.counts.tp,
                r.counts.fn_,
                r.counts.fp,
                theirs
                    .map(|c| format!(" | trafilatura tp {} fn {} fp {}", c.tp, c.fn_, c.fp))
                    .unwrap_or_default()
            );
            let all: Vec<&str> = r
                .missing
                .iter()
                .chain(&r.unwanted)
                .map(|s| s.as_str())
                .collect();
            let opts = &configs
                .iter()
                .find(|c| c.1 == a.per_page_mode)
                .expect("every mode has a configuration")
                .2;
            let why = tokenmill_extract::eval::explain(&p.html, opts, &all);
            for (i, (s, w)) in all.iter().zip(why).enumerate() {
                let kind = if i < r.missing.len() {
                    "missing "
                } else {
                    "unwanted"
                };
                println!(
                    "  {kind} {:?}\n           {w:?}",
                    s.chars().take(60).collect::<String>()
                );
            }
        }
    }
    println!(
        "| set | part | pages | extractor | P | R | F1 | pages/s (1 core) | × trafilatura default |"
    );
    // the peer's default mode's speed per set, for the ratio column
    let peer_speed = |set: &str| {
        rows.iter()
            .find(|r| r.set == set && r.extractor.ends_with(" default") && r.pages_per_s.is_some())
            .and_then(|r| r.pages_per_s)
    };
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|");
    let mut sorted = rows.clone();
    let order = |p: &str| match p {
        "dev" => 0,
        "held" => 1,
        "all" => 2,
        "paragraphs" => 3,
        "macro" => 0,
        "micro" => 1,
        _ => 4,
    };
    let set_order = |s: &str| match s {
        "multilingual" => 0,
        "articles" => 1,
        _ => 2,
    };
    sorted.sort_by(|x, y| {
        (set_order(&x.set), order(&x.part), &x.part).cmp(&(
            set_order(&y.set),
            order(&y.part),
            &y.part,
        ))
    });
    for r in &sorted {
        let ratio = match (r.pages_per_s, peer_speed(&r.set)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.1}×", a / b),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {} | {ratio} |",
            r.set,
            r.part,
            r.pages,
            r.extractor,
            r.p,
            r.r,
            r.f1,
            r.pages_per_s.map(|s| format!("{s:.1}")).unwrap_or_default()
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}
