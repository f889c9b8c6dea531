//! `build` end to end: tokens equal the tokenizer's own output, provenance points back at the
//! source, output is deterministic across thread counts, and a killed build resumes exactly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokenmill_pipelines::config::{
    BuildConfig, InputConfig, OutputConfig, RunConfig, TokenizerConfig,
};
use tokenmill_pipelines::inspect;
use tokenmill_shards::{Dataset, TokenDtype};
use tokenmill_tests::{data, gunzip, tokenmill_bin, tree_bytes};
use tokenmill_trainer::train::LogKind;

fn cfg(
    inputs: &[PathBuf],
    tokenizer: &Path,
    out: &Path,
    threads: usize,
    shard_bytes: u64,
) -> BuildConfig {
    BuildConfig {
        sft: None,
        input: InputConfig {
            paths: inputs.iter().map(|p| p.display().to_string()).collect(),
            ..Default::default()
        },
        tokenizer: TokenizerConfig {
            path: tokenizer.to_path_buf(),
            ..Default::default()
        },
        output: OutputConfig {
            dir: out.to_path_buf(),
            shard_bytes,
            keep_excluded_text: false,
            stage: None,
        },
        dedup: Default::default(),
        extract: Default::default(),
        filters: None,
        sql: Default::default(),
        run: RunConfig {
            threads,
            quiet: true,
        },
    }
}

#[test]
fn gpt2_build_matches_the_tokenizer_and_provenance_points_back() {
    let input = data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz");
    let tok_path = data("tokenizers/gpt2.tokenizer.json");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let built = tokenmill_pipelines::build(&cfg(
        std::slice::from_ref(&input),
        &tok_path,
        &out,
        2,
        256 << 10,
    ))
    .unwrap();
    let m = &built.manifest;
    assert_eq!(m.dtype, TokenDtype::Uint16);
    assert_eq!(m.tokenizer.vocab_size, 50257);
    assert_eq!(m.tokenizer.eos_id, Some(50256));
    // 27 of the 697 documents have no text: dropped as `empty_text`, counted.
    assert_eq!(built.stats.documents_read, 697);
    assert_eq!(built.stats.documents_skipped.get("empty_text"), Some(&27));
    assert_eq!(m.documents, 670);
    assert!(
        m.shards.len() >= 4,
        "256 KiB shards: {} shards",
        m.shards.len()
    );
    tokenmill_shards::verify(&out).unwrap();

    // Independent tokenization with the tokenizers library itself (the non-fast path).
    let reference = tokenizers::Tokenizer::from_file(&tok_path).unwrap();
    let raw = gunzip(&input);
    let lines: Vec<serde_json::Value> = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap())
        .filter(|v| !v["text"].as_str().unwrap().trim().is_empty())
        .collect();
    let ds = Dataset::open(&out).unwrap();
    let mut seen = 0;
    for s in 0..m.shards.len() {
        let shard = ds.shard(s).unwrap();
        let prov = ds.provenance(s).unwrap();
        for (i, p) in prov.iter().enumerate() {
            // Re-read the source record at the recorded offset.
            let line_end = raw[p.offset as usize..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap();
            let rec: serde_json::Value =
                serde_json::from_slice(&raw[p.offset as usize..p.offset as usize + line_end])
                    .unwrap();
            assert_eq!(rec["id"].as_str(), Some(p.id.as_str()));
            let text = rec["text"].as_str().unwrap();
            assert_eq!(p.text_xxh3, xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
            let mut want = reference.encode(text, false).unwrap().get_ids().to_vec();
            want.push(50256);
            assert_eq!(shard.document(i).unwrap(), want, "document {}", p.id);
            assert_eq!(p.tokens as usize, want.len());
            seen += 1;
        }
    }
    assert_eq!(seen, lines.len());
}

#[test]
fn deepseek_v3_vocabulary_needs_int32_shards() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let tok = data("tokenizers/deepseek-v3.tokenizer.json.gz");
    let built = tokenmill_pipelines::build(&cfg(
        &[data("jsonl/olmo-c4-sample.01.json.gz")],
        &tok,
        &out,
        2,
        1 << 30,
    ))
    .unwrap();
    let m = &built.manifest;
    assert_eq!(m.dtype, TokenDtype::Int32);
    assert!(m.tokenizer.vocab_size > 65536, "{}", m.tokenizer.vocab_size);
    assert_eq!(
        m.tokenizer.eos_token.as_deref(),
        Some("<｜end▁of▁sentence｜>")
    );
    tokenmill_shards::verify(&out).unwrap();
    let ds = Dataset::open(&out).unwrap();
    let t = inspect::dataset_tokenizer(&ds).unwrap();
    let v = inspect::by_position(&ds, &t, 0, 0).unwrap();
    assert!(
        v.text.ends_with("<｜end▁of▁sentence｜>"),
        "{}",
        &v.text[v.text.len().saturating_sub(80)..]
    );
}

/// Copies of the 697-document corpus as `n` separate inputs (independent tasks).
fn many_inputs(dir: &Path, n: usize) -> Vec<PathBuf> {
    let src = data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz");
    (0..n)
        .map(|i| {
            let p = dir.join(format!("part-{i:02}.jsonl.gz"));
            std::fs::copy(&src, &p).unwrap();
            p
        })
        .collect()
}

fn dataset_files(out: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    tree_bytes(out, &|rel| rel == "stats.json")
}

#[test]
fn output_is_byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = many_inputs(dir.path(), 3);
    let tok = data("tokenizers/gpt2.tokenizer.json");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    tokenmill_pipelines::build(&cfg(&inputs, &tok, &a, 1, 300 << 10)).unwrap();
    tokenmill_pipelines::build(&cfg(&inputs, &tok, &b, 2, 300 << 10)).unwrap();
    let (fa, fb) = (dataset_files(&a), dataset_files(&b));
    assert!(fa.len() > 10, "{} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(v == &fb[k], "{k} differs between 1 and 2 threads");
    }
    // Re-running on a finished dataset redoes nothing and changes nothing.
    let again = tokenmill_pipelines::build(&cfg(&inputs, &tok, &a, 2, 300 << 10)).unwrap();
    assert_eq!(again.stats.tasks_resumed, 3);
    assert_eq!(dataset_files(&a), fa);
    // Another plan in the same directory is refused.
    let err = tokenmill_pipelines::build(&cfg(&inputs[..2], &tok, &a, 2, 300 << 10))
        .unwrap_err()
        .to_string();
    assert!(err.contains("other inputs or settings"), "{err}");
}

#[test]
fn a_killed_build_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = many_inputs(dir.path(), 8);
    let tok = data("tokenizers/gpt2.tokenizer.json");
    let reference = dir.path().join("reference");
    tokenmill_pipelines::build(&cfg(&inputs, &tok, &reference, 2, 200 << 10)).unwrap();

    let out = dir.path().join("killed");
    let args = |out: &Path| {
        let mut a: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        a.extend([
            "--tokenizer".into(),
            tok.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ]);
        a.extend([
            "--shard-bytes".into(),
            (200u64 << 10).to_string(),
            "--threads".into(),
            "1".into(),
            "--quiet".into(),
        ]);
        a
    };
    let mut child = Command::new(tokenmill_bin())
        .arg("build")
        .args(args(&out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first task is published and before the last one is.
    let tasks = out.join(".build").join("tasks");
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_dir(&tasks).map(|d| d.count()).unwrap_or(0);
        if n >= 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no task finished in 300 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "build exited before any task finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Published task records only (an interrupted atomic write leaves a `.tmp`).
    let done_before = std::fs::read_dir(&tasks)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json")
        })
        .count();
    assert!(
        done_before < 8,
        "the build finished before it could be killed"
    );
    assert!(
        !out.join("manifest.json").exists(),
        "killed build must not have a manifest"
    );

    let st = Command::new(tokenmill_bin())
        .arg("build")
        .args(args(&out))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert!(stats["tasks_resumed"].as_u64().unwrap() >= done_before as u64);
    let (fr, fk) = (dataset_files(&reference), dataset_files(&out));
    let keys = |m: &std::collections::BTreeMap<String, Vec<u8>>| {
        m.keys()
            .filter(|k| !k.contains("plan.json"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&fr), keys(&fk));
    for k in keys(&fr) {
        assert!(
            fr[&k] == fk[&k],
            "{k} differs after resume:\n{}\n{}",
            String::from_utf8_lossy(&fr[&k]),
            String::from_utf8_lossy(&fk[&k])
        );
    }
}

/// Word-level (precision, recall) of `a` against `b` (bags of lower-case words).
fn word_pr(a: &str, b: &str) -> (f64, f64) {
    let bag = |t: &str| {
        let mut m = std::collections::HashMap::new();
        for w in t
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            *m.entry(w.to_string()).or_insert(0u64) += 1;
        }
        m
    };
    let (x, y) = (bag(a), bag(b));
    let o: u64 = x
        .iter()
        .map(|(w, c)| (*c).min(*y.get(w).unwrap_or(&0)))
        .sum();
    (
        o as f64 / x.values().sum::<u64>().max(1) as f64,
        o as f64 / y.values().sum::<u64>().max(1) as f64,
    )
}

#[test]
fn warc_responses_are_extracted_and_agree_with_common_crawls_wet_text() {
    let dir = tempfile::tempdir().unwrap();
    let tok = data("tokenizers/gpt2.tokenizer.json");
    let warc = tokenmill_pipelines::build(&cfg(
        &[data("warc/whirlwind-cc-main-2024-22.warc.gz")],
        &tok,
        &dir.path().join("w"),
        1,
        1 << 20,
    ))
    .unwrap();
    let wet = tokenmill_pipelines::build(&cfg(
        &[data("warc/whirlwind-cc-main-2024-22.warc.wet.gz")],
        &tok,
        &dir.path().join("wet"),
        1,
        1 << 20,
    ))
    .unwrap();
    assert_eq!((warc.manifest.documents, wet.manifest.documents), (1, 1));
    let text = |d: &str| {
        let ds = Dataset::open(&dir.path().join(d)).unwrap();
        let t = tokenmill_pipelines::inspect::dataset_tokenizer(&ds).unwrap();
        let v = tokenmill_pipelines::inspect::by_position(&ds, &t, 0, 0).unwrap();
        (v.provenance, v.text.replace("<|endoftext|>", ""))
    };
    let ((pw, ours), (pc, cc)) = (text("w"), text("wet"));
    assert_eq!(pw.url, pc.url);
    assert_eq!(
        pw.url.as_deref(),
        Some("https://an.wikipedia.org/wiki/Escopete")
    );
    // Common Crawl's WET keeps every text node (menus and footers included); ours keeps the
    // article: everything we keep is in the WET text, and the article is most of it.
    let (p, r) = word_pr(&ours, &cc);
    eprintln!(
        "WARC extraction vs WET: {p:.3} of our words are in it, we keep {r:.3} of its words; {} vs {} chars",
        ours.len(),
        cc.len()
    );
    assert!(ours.contains("Escopete ye un municipio"), "{ours}");
    assert!(p > 0.95 && r > 0.25 && ours.len() < cc.len() / 2, "{p} {r}");
    // The funnel: one document in, one out of extraction.
    let ex = &warc.stats.funnel.rows[0];
    assert_eq!(
        (ex.stage.as_str(), ex.docs_in, ex.docs_out),
        ("extract", 1, 1)
    );
    assert!(ex.bytes_out < ex.bytes_in / 5, "{ex:?}");
}

#[test]
fn inspect_finds_documents_by_id_position_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let tok = data("tokenizers/gpt2.tokenizer.json");
    tokenmill_pipelines::build(&cfg(
        &[
            data("jsonl/cc_en_head-0091.jsonl.gz"),
            data("jsonl/olmo-c4_100_domains-theguardian.jsonl.gz"),
        ],
        &tok,
        &out,
        2,
        16 << 10,
    ))
    .unwrap();
    let ds = Dataset::open(&out).unwrap();
    let t = inspect::dataset_tokenizer(&ds).unwrap();
    let m = ds.manifest();
    assert!(m.shards.len() >= 3);
    let mut global = 0u64;
    for s in 0..m.shards.len() {
        for p in ds.provenance(s).unwrap() {
            // The first and last token of every document resolve to it.
            for g in [global, global + p.tokens - 1] {
                let v = inspect::by_token(&ds, &t, g).unwrap();
                assert_eq!(
                    (v.provenance.shard.as_str(), v.provenance.index),
                    (p.shard.as_str(), p.index)
                );
            }
            global += p.tokens;
        }
    }
    assert!(inspect::by_token(&ds, &t, global).is_err());
    let last = m.shards.len() - 1;
    let p = ds.provenance(last).unwrap().pop().unwrap();
    let found = inspect::by_id(&ds, &t, &p.id).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].provenance, p);
    assert!(found[0].text.ends_with("<|endoftext|>"));
    assert!(inspect::by_id(&ds, &t, "no such id").is_err());
}

#[test]
fn quickstart_runs_without_outside_files() {
    let dir = tempfile::tempdir().unwrap();
    let ds = tokenmill_cli::commands::quickstart::quickstart(
        &tokenmill_cli::commands::quickstart::QuickstartConfig {
            out: dir.path().to_path_buf(),
            docs: 400,
            files: 2,
            vocab_size: 1024,
            seed: 7,
            threads: 2,
            quiet: true,
            train_steps: 40,
        },
    )
    .unwrap();
    // The tiny model trained on the dataset: its loss fell from ln V and a held-out loss exists.
    let log = tokenmill_pipelines::plot::read_log(&dir.path().join("run")).unwrap();
    let train: Vec<_> = log.iter().filter(|l| l.kind == LogKind::Train).collect();
    assert_eq!(train.len(), 40);
    assert!(
        train[39].main_loss < train[0].main_loss - 0.5,
        "{} → {}",
        train[0].main_loss,
        train[39].main_loss
    );
    assert!(log.iter().any(|l| l.kind == LogKind::Eval));
    assert!(dir.path().join("run/loss.svg").is_file());
    let r = tokenmill_shards::verify(&ds).unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ds.join("stats.json")).unwrap()).unwrap();
    let skipped = &stats["documents_skipped"];
    let removed =
        skipped["dedup_exact"].as_u64().unwrap() + skipped["dedup_fuzzy"].as_u64().unwrap();
    assert!(
        removed > 20,
        "the generated copies and near-duplicates are caught: {removed}"
    );
    // 400 generated documents and the poisoned one
    assert_eq!(r.documents + removed, 401);
    assert!(dir.path().join("run/report.html").is_file());
    // The generated crawl went through the web recipe: the funnel is in its stats.
    let web: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dataset-web/stats.json")).unwrap())
            .unwrap();
    assert_eq!(web["funnel"]["rows"][1]["stage"], "extract");
    assert_eq!(web["documents_skipped"]["http_status"], 2);
    assert!(web["documents_written"].as_u64().unwrap() > 10, "{web}");
    assert_eq!(stats["documents_skipped"]["malformed_json"], 1);
    assert_eq!(stats["documents_skipped"]["missing_text"], 1);
}

#[test]
fn build_with_dedup_drops_copies_records_decisions_and_stays_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    // Two copies of a real corpus plus a third file: every document of the copy is a duplicate.
    let inputs = many_inputs(dir.path(), 2);
    let tok = data("tokenizers/gpt2.tokenizer.json");
    let run = |out: &Path, threads: usize| {
        let mut c = cfg(&inputs, &tok, out, threads, 300 << 10);
        c.dedup.enabled = true;
        tokenmill_pipelines::build(&c).unwrap()
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let oa = run(&a, 1);
    // `b` holds the remains of an abandoned Slurm attempt (a dedup graph with nothing
    // published): the local build decides from the inputs, and cleans it up.
    std::fs::create_dir_all(b.join(".build/dedup-graph/task-000000/bands")).unwrap();
    run(&b, 2);
    assert!(!b.join(".build/dedup-graph").exists());
    // The dataset is byte-identical; `.build/dedup.json` also records how many bytes were
    // spilled, which depends on how many tasks ran at once.
    let files = |d: &Path| tree_bytes(d, &|rel| rel == "stats.json" || rel == ".build/dedup.json");
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(
            v == &fb[k],
            "{k} differs between 1 and 2 threads with dedup on"
        );
    }
    let decisions = |d: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(".build/dedup.json")).unwrap()).unwrap();
        (v["file_docs"].clone(), v["removed"].clone())
    };
    assert_eq!(decisions(&a), decisions(&b));
    let s = &oa.stats;
    let exact = s.documents_skipped.get("dedup_exact").copied().unwrap_or(0);
    assert!(exact >= 670, "the second copy is removed: {exact}");
    assert_eq!(
        s.documents_read,
        s.documents_written + s.documents_skipped.values().sum::<u64>()
    );
    assert!(oa.stats.dedup.as_ref().unwrap().clusters >= 600);
    // The decisions are queryable beside the shards.
    let batches = tokenmill_pipelines::sql::query_dir(&a, "SELECT count(*) FROM dedup_removed WHERE kept_source LIKE '%part-00%' AND source LIKE '%part-01%'").unwrap();
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batches[0].column(0))
        .value(0) as u64;
    assert!(n >= 670, "{n}");
    // Provenance and dedup decisions join on the document id.
    let j = tokenmill_pipelines::sql::query_dir(
        &a,
        "SELECT count(*) FROM provenance p JOIN dedup_removed r ON p.id = r.kept_id",
    )
    .unwrap();
    assert!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(j[0].column(0)).value(0)
            > 0
    );
}

#[test]
fn the_web_recipe_on_real_warcs_keeps_english_articles_and_records_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tokenmill_tests::repo_root().join("pipelines/examples/web.toml");
    let mut c = BuildConfig::from_file(&recipe).unwrap();
    let warcs: Vec<String> = [
        "warc/dolma-wget-sample-0000.warc.gz",
        "warc/resiliparse-cc-main-2020-34-excerpt.warc.gz",
        "warc/resiliparse-clipped.warc.gz",
        "warc/whirlwind-cc-main-2024-22.warc.gz",
    ]
    .iter()
    .map(|p| data(p).display().to_string())
    .collect();
    c.input.paths = warcs;
    c.tokenizer.path = data("tokenizers/gpt2.tokenizer.json");
    c.output.dir = dir.path().join("web");
    c.output.shard_bytes = 1 << 20;
    c.run.quiet = true;
    let out = tokenmill_pipelines::build(&c).unwrap();
    let s = &out.stats;
    // Nothing lost: read = written + skipped, by reason; the truncated record is named.
    let skipped: u64 = s.documents_skipped.values().sum();
    assert_eq!(s.documents_read, s.documents_written + skipped, "{s:?}");
    assert_eq!(s.documents_skipped["truncated_record"], 1);
    // The funnel runs in FineWeb's order and every stage's output feeds the next.
    let names: Vec<&str> = s.funnel.rows.iter().map(|r| r.stage.as_str()).collect();
    assert_eq!(
        names,
        [
            "url",
            "extract",
            "language",
            "gopher_repetition",
            "gopher_quality",
            "c4",
            "fineweb",
            "pii"
        ]
    );
    let row = |n: &str| s.funnel.rows.iter().find(|r| r.stage == n).unwrap();
    // (documents with a text of their own pass the extract stage without being counted in it)
    let extract_dropped: u64 = row("extract").dropped.values().sum();
    assert_eq!(
        row("url").docs_out - extract_dropped,
        row("language").docs_in
    );
    // index pages whose only text was their footer's copyright notice have no text
    assert!(
        row("extract").dropped.get("no_text").copied().unwrap_or(0) >= 2,
        "{:?}",
        row("extract")
    );
    for w in [
        "language",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "pii",
    ]
    .windows(2)
    {
        assert_eq!(row(w[0]).docs_out, row(w[1]).docs_in, "{w:?}");
    }
    assert_eq!(row("pii").docs_out, s.documents_written);
    assert!(
        row("language").dropped["other_language"] >= 10,
        "{:?}",
        row("language")
    );
    assert!(s.documents_written >= 10, "{s:?}");
    for (stage, n) in s.funnel.dropped_by_stage() {
        assert_eq!(
            s.documents_skipped.get(stage).copied().unwrap_or(0),
            n,
            "{stage}"
        );
    }
    // Every dropped document is in the excluded table, with its rule, value and threshold.
    let q = tokenmill_pipelines::sql::query_dir(
        &dir.path().join("web"),
        "SELECT stage, rule, count(*) AS n, count(value) AS measured, count(url) AS urls FROM excluded GROUP BY stage, rule ORDER BY stage, rule",
    )
    .unwrap();
    use arrow::array::{Array, AsArray};
    let mut total = 0;
    let strs = |c: &arrow::array::ArrayRef| -> Vec<String> {
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap();
        let a = c.as_string::<i32>();
        (0..a.len()).map(|i| a.value(i).to_string()).collect()
    };
    for b in &q {
        let (stage, rule) = (strs(b.column(0)), strs(b.column(1)));
        let n = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        let measured = b.column(3).as_primitive::<arrow::datatypes::Int64Type>();
        let urls = b.column(4).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            total += n.value(i) as u64;
            if stage[i] == "read" {
                continue; // reader skips: a truncated record has no URL yet
            }
            assert_eq!(urls.value(i), n.value(i), "WARC documents have URLs");
            if (stage[i].as_str(), rule[i].as_str()) != ("language", "other_language") {
                assert_eq!(measured.value(i), n.value(i), "{}/{}", stage[i], rule[i]);
            }
        }
    }
    let filtered: u64 = s.funnel.dropped_by_stage().map(|(_, n)| n).sum();
    // every dropped document: the stages' drops and the reader's skips
    assert_eq!(total, filtered + s.documents_skipped["truncated_record"]);
    // Language and confidence are columns of the provenance tables.
    let l = tokenmill_pipelines::sql::query_dir(
        &dir.path().join("web"),
        "SELECT count(*) AS n, sum(CASE WHEN lang = 'en' AND lang_score >= 0.65 THEN 1 ELSE 0 END) AS en FROM provenance",
    )
    .unwrap();
    let n = l[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    let en = l[0]
        .column(1)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!((n as u64, en), (s.documents_written, n));
    // The funnel as a chart and as the SQL table `funnel`.
    let svg = std::fs::read_to_string(dir.path().join("web/funnel.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("gopher_quality"));
    let f = tokenmill_pipelines::sql::query_dir(
        &dir.path().join("web"),
        "SELECT sum(docs_in - docs_out) AS dropped FROM funnel",
    )
    .unwrap();
    let dropped = f[0]
        .column(0)
        .as_primitive::<arrow::datatypes::UInt64Type>()
        .value(0);
    assert_eq!(dropped, filtered);
    tokenmill_shards::verify(&dir.path().join("web")).unwrap();
}

#[test]
fn a_recipe_adds_its_own_sql_condition_and_the_filters_are_sql_functions() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
[filters.language]
languages = ["en"]
[sql]
where = "lang = 'en' AND length(text) > 2000 AND url NOT LIKE '%kyleclo%'"
[output]
keep_excluded_text = true
"#;
    let recipe = dir.path().join("recipe.toml");
    std::fs::write(&recipe, toml).unwrap();
    let mut c = BuildConfig::from_file(&recipe).unwrap();
    c.input.paths = vec![
        data("warc/dolma-wget-sample-0000.warc.gz")
            .display()
            .to_string(),
    ];
    c.tokenizer.path = data("tokenizers/gpt2.tokenizer.json");
    c.output.dir = dir.path().join("ds");
    c.output.shard_bytes = 1 << 20;
    c.run.quiet = true;
    let out = tokenmill_pipelines::build(&c).unwrap();
    let sql = out
        .stats
        .funnel
        .rows
        .iter()
        .find(|r| r.stage == "sql")
        .unwrap();
    assert!(sql.docs_in > sql.docs_out && sql.docs_out > 0, "{sql:?}");
    assert_eq!(sql.docs_out, out.stats.documents_written);
    // Every kept document meets the condition.
    let ds = Dataset::open(&dir.path().join("ds")).unwrap();
    let tok = inspect::dataset_tokenizer(&ds).unwrap();
    for i in 0..ds.provenance(0).unwrap().len() {
        let v = inspect::by_position(&ds, &tok, 0, i).unwrap();
        let text = v.text.replace("<|endoftext|>", "");
        assert!(text.chars().count() > 2000, "{}", v.provenance.id);
        assert!(!v.provenance.url.unwrap_or_default().contains("kyleclo"));
    }
    // The filters as SQL functions agree with the pipeline's verdicts on the dropped texts.
    let q = tokenmill_pipelines::sql::query_dir(
        &dir.path().join("ds"),
        "SELECT stage, rule, drop_reason(text) AS again, lang(text) AS l FROM excluded \
         WHERE stage IN ('gopher_repetition', 'gopher_quality', 'c4', 'fineweb', 'sql')",
    )
    .unwrap();
    use arrow::array::{Array, AsArray};
    let strs = |c: &arrow::array::ArrayRef| -> Vec<Option<String>> {
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).unwrap();
        let a = c.as_string::<i32>();
        (0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
            .collect()
    };
    let mut checked = 0;
    for b in &q {
        let (stage, rule, again, lang) = (
            strs(b.column(0)),
            strs(b.column(1)),
            strs(b.column(2)),
            strs(b.column(3)),
        );
        for i in 0..b.num_rows() {
            let (s, r) = (stage[i].clone().unwrap(), rule[i].clone().unwrap());
            if s == "sql" {
                assert_eq!(lang[i].as_deref().map(|l| l.len()), Some(2));
            } else {
                assert_eq!(again[i].as_deref(), Some(format!("{s}/{r}").as_str()));
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
    // A condition that does not parse is a clear configuration error.
    c.sql.where_ = Some("nope(text)".into());
    c.output.dir = dir.path().join("bad");
    let e = tokenmill_pipelines::build(&c).unwrap_err().to_string();
    assert!(e.contains("[sql] where") && e.contains("nope"), "{e}");
}

#[test]
fn extract_writes_what_a_recipe_keeps_with_scores_and_prints_a_single_page() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tokenmill_tests::repo_root().join("pipelines/examples/web.toml");
    let mut c = BuildConfig::from_file(&recipe).unwrap();
    c.input.paths = vec![
        data("warc/dolma-wget-sample-0000.warc.gz")
            .display()
            .to_string(),
    ];
    let inputs = c.input_files().unwrap();
    let out = dir.path().join("x");
    let st = tokenmill_pipelines::extract::extract(&c, &inputs, &out).unwrap();
    assert_eq!(
        st.documents_read,
        st.documents_kept + st.documents_dropped + st.reader_skips,
        "{st:?}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("kept.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, st.documents_kept);
    for l in &lines {
        assert_eq!(l["lang"], "en");
        assert!(l["lang_score"].as_f64().unwrap() >= 0.65);
        assert!(l["url"].as_str().unwrap().starts_with("http"));
        let s = l["scores"].as_object().unwrap();
        let mwl = s["gopher_quality.mean_word_length"].as_f64().unwrap();
        assert!((3.0..=10.0).contains(&mwl), "{mwl}");
        assert!(s.keys().any(|k| k.starts_with("fineweb.")));
    }
    // Parquet: the same documents.
    let pq = dir.path().join("p");
    tokenmill_pipelines::extract::extract_as(
        &c,
        &inputs,
        &pq,
        tokenmill_pipelines::extract::KeptFormat::Parquet,
    )
    .unwrap();
    let q = tokenmill_pipelines::sql::query_dir(&pq, "SELECT count(*) FROM kept").unwrap();
    use arrow::array::AsArray;
    assert_eq!(
        q[0].column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0) as u64,
        st.documents_kept
    );
    // Derived columns: SQL expressions written with each kept document.
    let mut d = c.clone();
    d.sql.columns = [
        ("words".to_string(), "word_count(text)".to_string()),
        ("host".to_string(), "split_part(url, '/', 3)".to_string()),
        ("long".to_string(), "length(text) > 5000".to_string()),
    ]
    .into_iter()
    .collect();
    let dc = dir.path().join("d");
    tokenmill_pipelines::extract::extract(&d, &inputs, &dc).unwrap();
    for l in std::fs::read_to_string(dc.join("kept.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let cols = &v["columns"];
        assert!(cols["words"].as_u64().unwrap() > 50, "{cols}");
        let url = v["url"].as_str().unwrap();
        assert!(url.contains(cols["host"].as_str().unwrap()), "{cols}");
        assert_eq!(
            cols["long"].as_bool().unwrap(),
            v["text"].as_str().unwrap().chars().count() > 5000
        );
    }
    // One page: its text on stdout.
    let page = dir.path().join("page.html");
    std::fs::write(
        &page,
        "<html><body><nav><a href=/>Home</a></nav><article><p>The committee approved the new \
         library budget after a long debate about opening hours.</p></article>\
         <footer>Copyright</footer></body></html>",
    )
    .unwrap();
    let o = Command::new(tokenmill_bin())
        .arg("extract")
        .arg(&page)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("library budget") && !text.contains("Home") && !text.contains("Copyright"),
        "{text}"
    );
}

#[test]
fn the_fast_encoder_and_hf_build_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = many_inputs(dir.path(), 2);
    let tok = data("tokenizers/deepseek-v3.tokenizer.json.gz");
    let (a, b) = (dir.path().join("hf"), dir.path().join("fast"));
    let with = |out: &Path, engine| {
        let mut c = cfg(&inputs, &tok, out, 2, 300 << 10);
        c.tokenizer.engine = engine;
        tokenmill_pipelines::build(&c).unwrap()
    };
    let ha = with(&a, tokenmill_shards::TokenizerEngine::Hf);
    let hb = with(&b, tokenmill_shards::TokenizerEngine::Fast);
    assert_eq!(ha.manifest.tokenizer.engine, "hf");
    assert_eq!(hb.manifest.tokenizer.engine, "fast");
    // Every shard, index and provenance file the same, byte for byte; the manifests differ
    // only in the engine they record.
    let files = |out: &Path| tree_bytes(out, &|rel| rel == "stats.json" || rel == "manifest.json");
    let (fa, fb) = (files(&a), files(&b));
    assert!(fa.len() > 5, "{} files", fa.len());
    assert_eq!(fa, fb);
    let mut ma = ha.manifest.clone();
    ma.tokenizer.engine = "fast".into();
    assert_eq!(
        serde_json::to_value(&ma).unwrap(),
        serde_json::to_value(&hb.manifest).unwrap()
    );
}

/// `tokenmill build` (with dedup) killed with SIGKILL at 20+ seeded random moments — while
/// reading, tokenizing, writing shards, deduplicating, publishing — and rerun each time until
/// it finishes: every cycle's dataset is byte-identical to an uninterrupted build's.
#[test]
fn build_killed_anywhere_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = many_inputs(dir.path(), 4);
    let tok = data("tokenizers/gpt2.tokenizer.json");
    let args = |out: &Path| {
        let mut a = vec!["build".to_string()];
        a.extend(inputs.iter().map(|p| p.display().to_string()));
        a.extend(
            [
                "--tokenizer",
                &tok.display().to_string(),
                "--out",
                &out.display().to_string(),
                "--dedup",
                "--shard-bytes",
                &(200u64 << 10).to_string(),
                "--threads",
                "2",
                "--quiet",
            ]
            .map(String::from),
        );
        a
    };
    // The plan names its output directory; everything else must be the same bytes.
    crate::killed::killed_anywhere(
        dir.path(),
        "build",
        &args,
        &|rel| rel.contains("plan.json"),
        &["/documents_read", "/documents_written", "/tokens"],
    );
}
