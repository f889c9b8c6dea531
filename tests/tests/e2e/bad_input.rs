//! Bad input: every case is a clear error naming file, record and offset, or a counted skip,
//! and the counts reconcile (read = written + skipped by reason).

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use tokenmill_ingest::{DocumentReader, OnError, ReadConfig, ReadStats, SkipReason};
use tokenmill_pipelines::config::{
    BuildConfig, InputConfig, OutputConfig, RunConfig, TokenizerConfig,
};
use tokenmill_tests::data;

fn count(path: &Path, opts: &ReadConfig) -> (u64, ReadStats) {
    let mut r = DocumentReader::open(path, opts).unwrap();
    let mut n = 0;
    for b in &mut r {
        n += b.unwrap().num_rows() as u64;
    }
    (n, r.stats().clone())
}

fn fail_opts() -> ReadConfig {
    ReadConfig {
        chat: None,
        on_error: OnError::Fail,
        ..Default::default()
    }
}

fn first_error(path: &Path) -> String {
    let mut r = DocumentReader::open(path, &fail_opts()).unwrap();
    loop {
        match r.next() {
            Some(Ok(_)) => continue,
            Some(Err(e)) => return e.to_string(),
            None => panic!("{} read without error", path.display()),
        }
    }
}

#[test]
fn truncated_warc_record_is_a_counted_skip_or_a_located_error() {
    let p = data("warc/resiliparse-clipped.warc.gz");
    let (docs, stats) = count(&p, &ReadConfig::default());
    assert_eq!(docs, 0);
    assert_eq!(
        stats.skipped.by_reason.get(&SkipReason::TruncatedRecord),
        Some(&1),
        "{stats:?}"
    );
    let s = &stats.skipped.samples[0];
    assert_eq!(s.offset, 0);
    assert!(
        s.detail.contains("urn:uuid:f3dfa8fa") && s.detail.contains("of 88275"),
        "{}",
        s.detail
    );
    let err = first_error(&p);
    assert!(
        err.contains("resiliparse-clipped.warc.gz")
            && err.contains("byte offset 0")
            && err.contains("truncated"),
        "{err}"
    );
}

/// Compressed offsets of the gzip members of a file.
fn member_offsets(raw: &[u8]) -> Vec<usize> {
    let mut offs = Vec::new();
    let mut rest = raw;
    while !rest.is_empty() {
        offs.push(raw.len() - rest.len());
        let mut d = flate2::bufread::GzDecoder::new(&mut rest);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap();
    }
    offs
}

#[test]
fn corrupt_gzip_member_is_skipped_and_reading_resumes_at_the_next_member() {
    let src = data("warc/resiliparse-cc-main-2020-34-excerpt.warc.gz");
    let raw = std::fs::read(&src).unwrap();
    let offs = member_offsets(&raw);
    assert_eq!(offs.len(), 50);
    let (good_docs, good) = count(&src, &ReadConfig::default());
    // Damage the deflate data in the middle of member 20.
    let mut bad = raw.clone();
    let mid = (offs[20] + offs[21]) / 2;
    for b in &mut bad[mid..mid + 16] {
        *b ^= 0x5a;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("damaged.warc.gz");
    std::fs::write(&p, &bad).unwrap();
    let (docs, stats) = count(&p, &ReadConfig::default());
    assert_eq!(
        stats.skipped.by_reason.get(&SkipReason::CorruptGzip),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(stats.skipped.samples[0].offset, offs[20] as u64);
    // Exactly one record lost, every other one read.
    let records = |d: u64, s: &ReadStats| d + s.skipped.total() + s.ignored.values().sum::<u64>();
    assert_eq!(records(docs, &stats), records(good_docs, &good));
    assert!(docs + 1 >= good_docs);
    let err = first_error(&p);
    assert!(
        err.contains("damaged.warc.gz")
            && err.contains(&format!("byte offset {}", offs[20]))
            && err.contains("corrupt gzip"),
        "{err}"
    );
}

#[test]
fn malformed_jsonl_lines_are_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(b"{\"id\":\"a\",\"text\":\"fine\"}\n").unwrap();
    f.write_all(b"{\"id\":\"b\",\"text\":\"unterminated\n")
        .unwrap();
    f.write_all(b"{\"id\":\"c\",\"body\":\"no text field\"}\n")
        .unwrap();
    f.write_all(b"{\"id\":\"d\",\"text\":42}\n").unwrap();
    f.write_all(b"{\"id\":\"e\",\"text\":\"caf\xe9\"}\n")
        .unwrap();
    f.write_all(b"\n   \n").unwrap();
    f.write_all(b"[1,2]\n").unwrap();
    f.write_all(b"{\"id\":\"f\",\"text\":\"also fine\"}")
        .unwrap();
    drop(f);
    let (docs, stats) = count(&p, &ReadConfig::default());
    assert_eq!(docs, 2);
    let by = &stats.skipped.by_reason;
    assert_eq!(by.get(&SkipReason::MalformedJson), Some(&2));
    assert_eq!(by.get(&SkipReason::MissingText), Some(&2));
    assert_eq!(by.get(&SkipReason::InvalidUtf8), Some(&1));
    assert_eq!(stats.read(), 7);
    let err = first_error(&p);
    assert!(
        err.contains("bad.jsonl: record 2 at byte offset 25: malformed_json"),
        "{err}"
    );
}

#[test]
fn empty_files_hold_no_documents() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["empty.jsonl", "empty.txt", "empty.warc.gz", "empty.warc"] {
        let p = dir.path().join(name);
        std::fs::write(&p, b"").unwrap();
        let (docs, stats) = count(&p, &ReadConfig::default());
        assert_eq!((docs, stats.read()), (0, 0), "{name}");
    }
}

#[test]
fn invalid_utf8_text_and_truncated_gzip_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.txt");
    std::fs::write(&p, b"na\xefve text in latin-1\n").unwrap();
    let (docs, stats) = count(&p, &ReadConfig::default());
    assert_eq!(docs, 0);
    assert_eq!(
        stats.skipped.by_reason.get(&SkipReason::InvalidUtf8),
        Some(&1)
    );

    // A .jsonl.gz cut in half: the documents before the cut are kept, the rest is one skip.
    let src = std::fs::read(data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz")).unwrap();
    let p = dir.path().join("cut.jsonl.gz");
    std::fs::write(&p, &src[..src.len() / 2]).unwrap();
    let (docs, stats) = count(&p, &ReadConfig::default());
    assert!(docs > 100 && docs < 697, "{docs}");
    assert_eq!(
        stats.skipped.by_reason.get(&SkipReason::CorruptCompression),
        Some(&1),
        "{stats:?}"
    );
}

fn write_parquet_without_text(path: &Path) {
    let col: StringArray = vec![Some("x"), Some("y"), Some("z")].into_iter().collect();
    let batch = RecordBatch::try_from_iter([("body", Arc::new(col) as _)]).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn bad_inputs(dir: &Path) -> Vec<PathBuf> {
    let bad_jsonl = dir.join("b-bad.jsonl");
    std::fs::write(
        &bad_jsonl,
        b"{\"text\":\"ok one\"}\nnot json\n{\"x\":1}\n{\"text\":\"\"}\n{\"text\":\"ok two\"}\n",
    )
    .unwrap();
    let empty = dir.join("c-empty.jsonl");
    std::fs::write(&empty, b"").unwrap();
    let latin = dir.join("d-latin1.txt");
    std::fs::write(&latin, b"caf\xe9\n").unwrap();
    let pq = dir.join("e-nocol.parquet");
    write_parquet_without_text(&pq);
    let clipped = dir.join("a-clipped.warc.gz");
    std::fs::copy(data("warc/resiliparse-clipped.warc.gz"), &clipped).unwrap();
    let good = dir.join("f-good.jsonl.gz");
    std::fs::copy(
        data("jsonl/olmo-c4_100_domains-theguardian.jsonl.gz"),
        &good,
    )
    .unwrap();
    vec![clipped, bad_jsonl, empty, latin, pq, good]
}

fn cfg(inputs: &[PathBuf], out: &Path, on_error: OnError) -> BuildConfig {
    let mut c = BuildConfig {
        sft: None,
        input: InputConfig {
            paths: inputs.iter().map(|p| p.display().to_string()).collect(),
            ..Default::default()
        },
        tokenizer: TokenizerConfig {
            path: data("tokenizers/gpt2.tokenizer.json"),
            ..Default::default()
        },
        output: OutputConfig {
            dir: out.to_path_buf(),
            shard_bytes: 1 << 20,
            keep_excluded_text: false,
            stage: None,
        },
        dedup: Default::default(),
        extract: Default::default(),
        filters: None,
        sql: Default::default(),
        run: RunConfig {
            threads: 2,
            quiet: true,
        },
    };
    c.input.read.on_error = on_error;
    c
}

#[test]
fn build_over_bad_inputs_reconciles_every_document() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = bad_inputs(dir.path());
    let guardian = std::io::BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&inputs[5]).unwrap(),
    ))
    .lines()
    .filter(|l| !l.as_ref().unwrap().trim().is_empty())
    .count() as u64;
    let out = dir.path().join("ds");
    let o = tokenmill_pipelines::build(&cfg(&inputs, &out, OnError::Skip)).unwrap();
    let s = &o.stats;
    let skipped: u64 = s.documents_skipped.values().sum();
    assert_eq!(s.documents_read, s.documents_written + skipped, "{s:?}");
    let get = |k: &str| s.documents_skipped.get(k).copied().unwrap_or(0);
    assert_eq!(get("truncated_record"), 1);
    assert_eq!(get("malformed_json"), 1);
    assert_eq!(get("missing_text"), 1);
    assert_eq!(get("empty_text"), 1);
    assert_eq!(get("invalid_utf8"), 1);
    assert_eq!(get("missing_column"), 3);
    assert_eq!(s.documents_written, 2 + guardian);
    assert_eq!(o.manifest.documents, s.documents_written);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(on_disk["documents_skipped"]["missing_column"], 3);
    assert!(!on_disk["skip_samples"].as_array().unwrap().is_empty());

    let out2 = dir.path().join("ds-fail");
    let err = format!(
        "{:#}",
        tokenmill_pipelines::build(&cfg(&inputs, &out2, OnError::Fail)).unwrap_err()
    );
    assert!(
        err.contains(".warc.gz")
            || err.contains(".jsonl")
            || err.contains(".txt")
            || err.contains(".parquet"),
        "{err}"
    );
    assert!(err.contains("byte offset"), "{err}");
    assert!(
        !out2.join("manifest.json").exists(),
        "a failed build publishes no manifest"
    );
}

#[test]
fn missing_tokenizer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(
        &[data("jsonl/olmo-c4-sample.01.json.gz")],
        &dir.path().join("ds"),
        OnError::Skip,
    );
    c.tokenizer.path = dir.path().join("no-such-tokenizer.json");
    let err = tokenmill_pipelines::build(&c).unwrap_err().to_string();
    assert!(
        err.contains("no-such-tokenizer.json") && err.contains("not found"),
        "{err}"
    );
}

/// A build of the Guardian sample into `out`, skipping bad records.
fn guardian(out: &Path) -> BuildConfig {
    cfg(
        &[data("jsonl/olmo-c4_100_domains-theguardian.jsonl.gz")],
        out,
        OnError::Skip,
    )
}

#[test]
fn corrupt_shards_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    tokenmill_pipelines::build(&guardian(&out)).unwrap();
    tokenmill_shards::verify(&out).unwrap();
    let m = tokenmill_shards::Manifest::load(&out).unwrap();
    let bin = m.shards[0].bin_path(&out);
    let idx = m.shards[0].idx_path(&out);

    // One flipped bit in the tokens: verify reports the checksum of that file.
    let mut b = std::fs::read(&bin).unwrap();
    b[100] ^= 1;
    std::fs::write(&bin, &b).unwrap();
    let err = tokenmill_shards::verify(&out).unwrap_err().to_string();
    assert!(
        err.contains(&bin.display().to_string()) && err.contains("checksum"),
        "{err}"
    );
    b[100] ^= 1;
    std::fs::write(&bin, &b).unwrap();

    // A truncated index: opening the shard fails with the file named, no out-of-bounds read.
    let i = std::fs::read(&idx).unwrap();
    std::fs::write(&idx, &i[..i.len() - 5]).unwrap();
    let ds = tokenmill_shards::Dataset::open(&out).unwrap();
    let err = ds.shard(0).unwrap_err().to_string();
    assert!(
        err.contains(&idx.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );
    let mut first = String::new();
    std::fs::File::open(out.join("manifest.json"))
        .unwrap()
        .read_to_string(&mut first)
        .unwrap();
    assert!(first.contains("tokenmill-dataset"));
}

/// A crawl with what the web is full of: non-200 responses, a redirect, an image, binary bytes
/// served as HTML, an empty body, broken markup, an undeclared Latin-1 page and a payload the
/// crawler truncated. Each is handled with a recorded reason, nothing panics, and the funnel
/// reconciles.
#[test]
fn a_crawls_bad_records_are_recorded_and_the_funnel_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let warc =
        tokenmill_cli::commands::quickstart::corpus::write_warc(&dir.path().join("crawl"), 20, 3)
            .unwrap();
    let recipe = tokenmill_tests::repo_root().join("pipelines/examples/web.toml");
    let mut c = BuildConfig::from_file(&recipe).unwrap();
    c.input.paths = vec![warc.display().to_string()];
    c.tokenizer.path = data("tokenizers/gpt2.tokenizer.json");
    c.output.dir = dir.path().join("ds");
    c.output.keep_excluded_text = true;
    c.run.quiet = true;
    let out = tokenmill_pipelines::build(&c).unwrap();
    let s = &out.stats;
    let skipped: u64 = s.documents_skipped.values().sum();
    assert_eq!(s.documents_read, s.documents_written + skipped, "{s:?}");
    assert_eq!(s.documents_skipped["http_status"], 2, "a 404 and a 301");
    assert_eq!(
        s.documents_skipped["non_text_payload"], 2,
        "an image, binary as text/html"
    );
    assert_eq!(s.documents_skipped["empty_text"], 1, "an empty body");
    assert!(
        s.skip_samples
            .iter()
            .any(|k| k.detail.contains("HTTP status 404"))
    );
    // The broken page, the Latin-1 page and the truncated one are read and extracted (the
    // French page is then dropped by the English language filter, with its text recorded).
    let ex = s.funnel.rows.iter().find(|r| r.stage == "extract").unwrap();
    assert_eq!(ex.docs_in, 20 + 3);
    let q = tokenmill_pipelines::sql::query_dir(
        &dir.path().join("ds"),
        "SELECT url, stage, rule, text FROM excluded WHERE url LIKE '%cafe%' OR url LIKE '%broken-markup%' OR url LIKE '%long.example%'",
    )
    .unwrap();
    use arrow::array::AsArray;
    let mut seen = Vec::new();
    for b in &q {
        let c = |i| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8).unwrap();
        let (url, stage, text) = (c(0), c(1), c(3));
        for r in 0..b.num_rows() {
            let (u, st, t) = (
                url.as_string::<i32>().value(r).to_string(),
                stage.as_string::<i32>().value(r).to_string(),
                text.as_string::<i32>().value(r).to_string(),
            );
            if u.contains("cafe") {
                assert_eq!(st, "language");
                assert!(t.contains("café") && t.contains("crème brûlée"), "{t}");
            }
            if u.contains("broken-markup") {
                assert!(
                    t.contains("5 < 6 o'clock") && t.contains("especially for commuters"),
                    "{t}"
                );
            }
            if u.contains("long.example") {
                assert!(t.contains("observatory opened"), "{t}");
            }
            seen.push(u);
        }
    }
    assert!(seen.iter().any(|u| u.contains("cafe")), "{seen:?}");
    // The records the reader skipped are in the table too, with their id and URL.
    let q = tokenmill_pipelines::sql::query_dir(
        &dir.path().join("ds"),
        "SELECT rule, count(*) AS n, count(url) AS urls FROM excluded WHERE stage = 'read' GROUP BY rule ORDER BY rule",
    )
    .unwrap();
    let mut got = Vec::new();
    for b in &q {
        let rule = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        for r in 0..b.num_rows() {
            got.push((
                rule.as_string::<i32>().value(r).to_string(),
                b.column(1)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(r),
                b.column(2)
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(r),
            ));
        }
    }
    assert_eq!(
        got,
        vec![
            ("empty_text".to_string(), 1, 1),
            ("http_status".to_string(), 2, 2),
            ("non_text_payload".to_string(), 2, 2),
        ]
    );
}

#[test]
fn verify_checks_the_tokenizer_and_the_provenance_against_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    tokenmill_pipelines::build(&guardian(&out)).unwrap();
    tokenmill_shards::verify(&out).unwrap();
    let tok = out.join("tokenizer.json");
    let original = std::fs::read(&tok).unwrap();
    // Replaced, truncated, emptied, deleted: each refused, naming the file.
    let other = std::fs::read(data("tokenizers/bert-base-uncased.tokenizer.json")).unwrap();
    for (what, bytes) in [
        ("replaced", Some(other)),
        ("truncated", Some(original[..original.len() / 2].to_vec())),
        ("emptied", Some(Vec::new())),
        ("deleted", None),
    ] {
        match &bytes {
            Some(b) => std::fs::write(&tok, b).unwrap(),
            None => std::fs::remove_file(&tok).unwrap(),
        }
        let err = tokenmill_shards::verify(&out).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{what}: {err}");
        if bytes.is_some() {
            assert!(err.contains("is not the manifest's"), "{what}: {err}");
        }
    }
    std::fs::write(&tok, &original).unwrap();
    tokenmill_shards::verify(&out).unwrap();
    // The loader's way to provenance checks the table's checksum before decoding it.
    let ds = tokenmill_shards::Dataset::open(&out).unwrap();
    let prov = ds.manifest().shards[0].prov_path(&out);
    let good = std::fs::read(&prov).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(&prov, &bad).unwrap();
    let err = ds.provenance(0).unwrap_err().to_string();
    assert!(
        err.contains("prov.parquet") && err.contains("checksum"),
        "{err}"
    );
    std::fs::write(&prov, &good).unwrap();
    assert_eq!(
        ds.provenance(0).unwrap().len() as u64,
        ds.manifest().shards[0].documents
    );
}

#[test]
fn a_second_build_into_the_same_directory_is_refused_naming_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    std::fs::create_dir_all(&out).unwrap();
    // A live holder: this test's own process.
    let _held = tokenmill_shards::lock::DirLock::acquire(&out, "build").unwrap();
    let err = tokenmill_pipelines::build(&cfg(
        &[data("jsonl/olmo-c4_100_domains-theguardian.jsonl.gz")],
        &out,
        OnError::Skip,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!("build pid {} on", std::process::id()))
            && err.contains("is writing here"),
        "{err}"
    );
    drop(_held);
    tokenmill_pipelines::build(&guardian(&out)).unwrap();
    assert!(!out.join(tokenmill_shards::lock::LOCK_FILE).exists());
}

#[test]
fn a_60_mib_document_builds_within_a_3_gib_memory_limit() {
    // One JSONL document of 60 MiB of real text (under the 64 MiB record limit). HF
    // `tokenizers` peaked at 7.9 GiB on it (measured, `--tokenizer-engine hf`); the fast
    // encoder streams its pieces.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data("text/tinyshakespeare.txt")).unwrap();
    let mut doc = text.repeat(57);
    doc.truncate(60 << 20);
    while !doc.is_char_boundary(doc.len()) {
        doc.pop();
    }
    let input = dir.path().join("big.jsonl");
    std::fs::write(
        &input,
        format!("{}\n", serde_json::json!({"id": "big", "text": doc})),
    )
    .unwrap();
    let out = dir.path().join("ds");
    let cmd = format!(
        "ulimit -v {}; exec '{}' build '{}' --tokenizer '{}' --out '{}' --threads 1 --quiet",
        3 << 20, // KiB
        tokenmill_tests::tokenmill_bin().display(),
        input.display(),
        data("tokenizers/gpt2.tokenizer.json").display(),
        out.display()
    );
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let m = tokenmill_shards::Manifest::load(&out).unwrap();
    assert_eq!(m.shards.iter().map(|s| s.documents).sum::<u64>(), 1);
    assert_eq!(m.tokenizer.engine, "fast");
}

#[cfg(unix)]
#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    let para =
        "<p>A paragraph of the page that is long enough to be kept, with commas, and a stop.</p>";
    std::fs::write(
        &page,
        format!(
            "<html><body><article>{}</article></body></html>",
            para.repeat(2000)
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(tokenmill_tests::tokenmill_bin())
        .args(["extract"])
        .arg(&page)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `| head -c 0`: the reader closes before anything is written
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}
