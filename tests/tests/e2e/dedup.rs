//! Dedup on real text: controlled edits at known Jaccard similarities, chains of edits, spilling,
//! determinism, cross-file exact copies, CJK, the threshold — and the decisions recorded.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokenmill_dedup::{DedupConfig, Fingerprinter, jaccard};
use tokenmill_ingest::ReadConfig;
use tokenmill_pipelines::dedup::{dedup_files, fingerprint_files};
use tokenmill_tests::{data, gunzip};

fn real_texts() -> Vec<String> {
    gunzip(&data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz"))
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .filter(|t| t.split_whitespace().count() >= 200)
        .collect()
}

/// Replaces a fraction `f` of the words of `t` with marker words (deterministic).
fn edit(t: &str, f: f64, salt: usize) -> String {
    let mut words: Vec<String> = t.split_whitespace().map(str::to_string).collect();
    let n = words.len();
    let k = ((n as f64) * f).round() as usize;
    for j in 0..k {
        let i = (j * 7919 + salt * 104_729) % n;
        words[i] = format!("edit{salt}x{j}");
    }
    words.join(" ")
}

fn write_jsonl(path: &Path, texts: &[String]) {
    let mut f = std::fs::File::create(path).unwrap();
    for (i, t) in texts.iter().enumerate() {
        writeln!(f, "{}", serde_json::json!({"id": format!("{}-{i}", path.file_stem().unwrap().to_string_lossy()), "text": t})).unwrap();
    }
}

struct Corpus {
    _dir: tempfile::TempDir,
    files: Vec<PathBuf>,
    /// (edited doc number, source doc number, true Jaccard of their shingle sets)
    pairs: Vec<(u64, u64, f64)>,
    /// The edited texts (the second file).
    edited: Vec<String>,
}

fn corpus() -> Corpus {
    let texts = real_texts();
    let base = texts.len();
    let cfg = DedupConfig::default();
    let fp = Fingerprinter::new(&cfg);
    let mut edited = Vec::new();
    let mut pairs = Vec::new();
    let fractions = [0.0, 0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.2, 0.35];
    for (k, src) in (0..base).step_by(3).take(180).enumerate() {
        let f = fractions[k % fractions.len()];
        let t = edit(&texts[src], f, k);
        let j = jaccard(&fp.shingle_set(&texts[src]), &fp.shingle_set(&t));
        pairs.push(((base + edited.len()) as u64, src as u64, j));
        edited.push(t);
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    write_jsonl(&a, &texts);
    write_jsonl(&b, &edited);
    Corpus {
        files: vec![a, b],
        pairs,
        edited,
        _dir: dir,
    }
}

#[test]
fn near_duplicates_are_found_by_true_jaccard_and_recorded() {
    let c = corpus();
    let out = tempfile::tempdir().unwrap();
    let cfg = DedupConfig::default();
    let (o, report) = dedup_files(&c.files, &ReadConfig::default(), &cfg, out.path(), 2).unwrap();
    // Precision/recall of "removed" against the true Jaccard, by band.
    let bins = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)];
    let mut table = String::from(
        "| true Jaccard | pairs | removed | theory 1-(1-s^8)^14 at midpoint |\n|---|---|---|---|\n",
    );
    let mut by_bin = Vec::new();
    for &(lo, hi) in &bins {
        let inb: Vec<_> = c.pairs.iter().filter(|p| p.2 >= lo && p.2 < hi).collect();
        let removed = inb
            .iter()
            .filter(|p| {
                o.removed(p.0)
                    .is_some_and(|d| d.kept == p.1 || d.cluster == p.1.min(d.cluster))
            })
            .count();
        let mid = ((lo + hi.min(1.0)) / 2.0_f64).min(1.0);
        table.push_str(&format!(
            "| [{lo:.1}, {:.1}) | {} | {} | {:.3} |\n",
            hi.min(1.0),
            inb.len(),
            removed,
            cfg.candidate_probability(mid)
        ));
        by_bin.push((inb.len(), removed));
    }
    println!("{table}");
    // High similarity: found; low similarity: left alone.
    let (n_hi, r_hi) = by_bin[4];
    assert!(
        n_hi >= 20 && r_hi * 100 >= n_hi * 97,
        "J>=0.9: {r_hi}/{n_hi}"
    );
    let (n_lo, r_lo) = by_bin[0];
    assert!(n_lo >= 10 && r_lo * 100 <= n_lo * 5, "J<0.5: {r_lo}/{n_lo}");
    // Every removed document names the kept one, which is earlier, not removed, and within the
    // threshold of it.
    for d in &o.decisions {
        assert!(d.kept < d.doc && o.removed(d.kept).is_none());
    }
    let texts: Vec<String> = real_texts().into_iter().chain(c.edited.clone()).collect();
    assert_removals_verified(&o, &texts, cfg.threshold);
    assert_eq!(report.kept + report.removed, report.read.documents);
    // The recorded tables agree.
    let removed = tokenmill_pipelines::sql::query_dir(
        out.path(),
        "SELECT count(*) AS n FROM removed WHERE kept_source LIKE '%a.jsonl'",
    )
    .unwrap();
    let n =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(removed[0].column(0))
            .value(0);
    assert_eq!(n as u64, report.removed);
}

#[test]
fn spilling_and_thread_count_do_not_change_the_result() {
    let c = corpus();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = DedupConfig::default();
    let small = DedupConfig {
        memory_budget_bytes: 64 << 10,
        partitions: 7,
        ..cfg.clone()
    };
    let (oa, _) = dedup_files(&c.files, &ReadConfig::default(), &cfg, a.path(), 1).unwrap();
    let (ob, rb) = dedup_files(&c.files, &ReadConfig::default(), &small, b.path(), 2).unwrap();
    assert!(rb.dedup.spilled_bytes > 0, "the small budget must spill");
    assert_eq!(oa.decisions, ob.decisions);
    for f in ["kept.parquet", "removed.parquet", "clusters.parquet"] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn exact_copies_across_files_cjk_empty_and_capped_documents() {
    let dir = tempfile::tempdir().unwrap();
    let ja = std::fs::read_to_string(data("multilingual/wagahaiwa_nekodearu.ja.txt")).unwrap();
    let paras: Vec<String> = ja
        .split('\n')
        .map(str::trim)
        .filter(|p| p.chars().count() > 80)
        .take(40)
        .map(str::to_string)
        .collect();
    assert_eq!(paras.len(), 40);
    let mut first = paras.clone();
    first.push(String::new()); // empty
    first.push("   ".into()); // whitespace only
    first.push("tiny".into()); // shorter than one n-gram
    first.push("tiny".into()); // its exact copy
    // A second file: an exact copy of paragraph 3, and paragraph 5 with two characters changed.
    let mut p5: Vec<char> = paras[5].chars().collect();
    p5[10] = '猫';
    p5[40] = '犬';
    let second = vec![
        paras[3].clone(),
        p5.into_iter().collect::<String>(),
        "x ".repeat(50_000),
    ];
    let (a, b) = (dir.path().join("1.jsonl"), dir.path().join("2.jsonl"));
    write_jsonl(&a, &first);
    write_jsonl(&b, &second);
    let cfg = DedupConfig {
        max_shingles: 1000,
        ..Default::default()
    };
    let out = tempfile::tempdir().unwrap();
    let (o, r) = dedup_files(
        &[a.clone(), b.clone()],
        &ReadConfig::default(),
        &cfg,
        out.path(),
        2,
    )
    .unwrap();
    assert_eq!(r.dedup.empty, 2);
    assert!(r.dedup.short >= 2);
    let n1 = first.len() as u64;
    let exact = o.removed(n1).expect("cross-file exact copy removed");
    assert_eq!(
        (exact.kept, exact.stage),
        (3, tokenmill_dedup::Stage::Exact)
    );
    let fuzzy = o.removed(n1 + 1).expect("CJK near-duplicate removed");
    assert_eq!(
        (fuzzy.kept, fuzzy.stage),
        (5, tokenmill_dedup::Stage::Fuzzy)
    );
    assert_eq!(o.removed(43).map(|d| d.kept), Some(42), "the short copy");
    // Distinct paragraphs stay.
    assert!((0..40).all(|i| o.removed(i).is_none()));
    let fps = fingerprint_files(&[b], &ReadConfig::default(), &cfg).unwrap();
    assert!(
        !fps[2].1.signature.is_empty(),
        "the enormous document is capped, not dropped"
    );
}

/// Checks every decision of `o` against the texts: a fuzzy removal is at least `t` in exact
/// Jaccard similarity (recomputed) with the kept document, and records that value; an exact one
/// has the same normalised text; the kept document is not removed.
fn assert_removals_verified(o: &tokenmill_dedup::DedupOutcome, texts: &[String], t: f64) {
    let fp = Fingerprinter::new(&DedupConfig::default());
    for d in &o.decisions {
        assert!(
            o.removed(d.kept).is_none(),
            "{d:?}: its kept document was removed"
        );
        let (a, b) = (&texts[d.doc as usize], &texts[d.kept as usize]);
        let j = jaccard(&fp.shingle_set(a), &fp.shingle_set(b));
        match d.stage {
            tokenmill_dedup::Stage::Fuzzy => {
                assert!(j >= t, "{d:?}: J = {j} with the kept document");
                assert!((d.jaccard.unwrap() - j).abs() < 1e-12, "{d:?}: J = {j}");
            }
            tokenmill_dedup::Stage::Exact => {
                assert_eq!(fp.fingerprint(a).exact, fp.fingerprint(b).exact, "{d:?}");
                assert_eq!(d.jaccard, Some(1.0));
            }
            tokenmill_dedup::Stage::Url => {}
        }
    }
}

/// Real documents, each followed through generations of 2 % word edits (A, B = edit(A),
/// C = edit(B), D = edit(C)): neighbours are near-duplicates, the ends of a chain are not. With
/// connected components D went out against A; now every removed document is within the
/// threshold of the document recorded as kept for it.
#[test]
fn every_removed_document_is_within_the_threshold_of_its_kept_document() {
    let base = real_texts();
    let mut texts = Vec::new();
    for (k, src) in base.iter().step_by(5).take(60).enumerate() {
        let mut t = src.clone();
        texts.push(t.clone());
        for g in 1..4 {
            t = edit(&t, 0.02, 1000 + 10 * k + g);
            texts.push(t.clone());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chains.jsonl");
    write_jsonl(&file, &texts);
    let out = tempfile::tempdir().unwrap();
    let cfg = DedupConfig::default();
    let (o, r) = dedup_files(&[file], &ReadConfig::default(), &cfg, out.path(), 2).unwrap();
    assert!(r.dedup.fuzzy_removed >= 60, "{:?}", r.dedup);
    assert!(
        r.dedup.verified_rejected > 0,
        "some chains reach beyond the threshold: {:?}",
        r.dedup
    );
    assert_removals_verified(&o, &texts, cfg.threshold);
    // The table records the same: no fuzzy row below the threshold, none without its value.
    let b = tokenmill_pipelines::sql::query_dir(
        out.path(),
        "SELECT count(*) FROM removed WHERE stage = 'fuzzy' AND (jaccard IS NULL OR jaccard < 0.7)",
    )
    .unwrap();
    let n =
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(b[0].column(0)).value(0);
    assert_eq!(n, 0);
}

#[test]
fn a_higher_threshold_keeps_the_documents_that_do_not_reach_it() {
    let c = corpus();
    let texts: Vec<String> = real_texts().into_iter().chain(c.edited.clone()).collect();
    let out = tempfile::tempdir().unwrap();
    let cfg = DedupConfig {
        threshold: 0.95,
        ..Default::default()
    };
    let (o, r) = dedup_files(&c.files, &ReadConfig::default(), &cfg, out.path(), 2).unwrap();
    assert!(r.dedup.verified_rejected > 0, "{:?}", r.dedup);
    assert_removals_verified(&o, &texts, 0.95);
    for p in &c.pairs {
        if p.2 < 0.95 {
            assert!(
                o.removed(p.0).is_none_or(|d| d.kept != p.1),
                "pair at J={} removed against its source",
                p.2
            );
        }
    }
}

#[test]
fn url_dedup_removes_repeated_pages_only_when_asked() {
    let texts = real_texts();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.jsonl");
    let mut f = std::fs::File::create(&p).unwrap();
    for (i, (t, u)) in [
        (0, "https://www.example.org/page/"),
        (1, "http://example.org/page#comments"),
        (2, "http://example.org/other"),
    ]
    .iter()
    .enumerate()
    {
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": format!("u{i}"), "url": u, "text": texts[*t]})
        )
        .unwrap();
    }
    drop(f);
    let out = tempfile::tempdir().unwrap();
    let (o, _) = dedup_files(
        std::slice::from_ref(&p),
        &ReadConfig::default(),
        &DedupConfig::default(),
        out.path(),
        1,
    )
    .unwrap();
    assert!(o.decisions.is_empty(), "different texts, URL dedup off");
    let cfg = DedupConfig {
        url: true,
        ..Default::default()
    };
    let (o, r) = dedup_files(&[p], &ReadConfig::default(), &cfg, out.path(), 1).unwrap();
    assert_eq!(o.decisions.len(), 1);
    assert_eq!(
        (
            o.decisions[0].doc,
            o.decisions[0].kept,
            o.decisions[0].stage
        ),
        (1, 0, tokenmill_dedup::Stage::Url)
    );
    assert_eq!(r.dedup.url_removed, 1);
}
