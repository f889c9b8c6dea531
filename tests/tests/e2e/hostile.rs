//! Hostile sizes and hostile paths: each refused or streamed with its limit named, under a
//! memory limit far below the sizes claimed; paths out of a dataset, a build or a checkpoint
//! refused, never followed.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use tokenmill_pipelines::config::BuildConfig;
use tokenmill_tests::{data, tokenmill_bin};

/// Virtual memory limit (KiB) for the hostile-size runs: 3 GiB, against inputs that inflate
/// to 2–4 GiB (the debug binary alone maps ~0.5 GiB).
const LIMIT_KIB: u64 = 3 << 20;

/// Runs `tokenmill ARGS` under `ulimit -v LIMIT_KIB`; (success, stdout + stderr).
fn tokenmill_limited(args: &[&Path]) -> (bool, String) {
    let mut cmd = format!(
        "ulimit -v {LIMIT_KIB}; exec '{}'",
        tokenmill_bin().display()
    );
    for a in args {
        cmd.push_str(&format!(" '{}'", a.display()));
    }
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// One gzip member of `bytes`.
fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Gzip members inflating to `n` × 64 MiB of spaces (one member compressed once, repeated).
fn spaces_gz(n: usize) -> Vec<u8> {
    gz(&vec![b' '; 64 << 20]).repeat(n)
}

fn build_limited(input: &Path, out: &Path) -> (bool, String) {
    tokenmill_limited(&[
        Path::new("build"),
        input,
        Path::new("--tokenizer"),
        &data("tokenizers/gpt2.tokenizer.json"),
        Path::new("--out"),
        out,
        Path::new("--threads"),
        Path::new("1"),
        Path::new("--quiet"),
    ])
}

fn skipped(out: &Path) -> serde_json::Value {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    s["documents_skipped"].clone()
}

/// Every file under `dir` (recursively) whose bytes contain `needle`, or stderr text.
fn mentions(dir: &Path, needle: &str) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            mentions(&p, needle)
        } else {
            std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        }
    })
}

#[test]
fn a_jsonl_line_inflating_to_2_gib_is_skipped_as_too_large_within_3_gib() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bomb.jsonl.gz");
    let mut f = std::fs::File::create(&input).unwrap();
    f.write_all(&gz(br#"{"id":"big","text":""#)).unwrap();
    f.write_all(&spaces_gz(32)).unwrap(); // 2 GiB inside the string, one line
    f.write_all(&gz(
        b"\"}\n{\"id\":\"ok\",\"text\":\"A small document after the bomb.\"}\n",
    ))
    .unwrap();
    drop(f);
    assert!(std::fs::metadata(&input).unwrap().len() < 16 << 20);
    let out = dir.path().join("ds");
    let (ok, text) = build_limited(&input, &out);
    assert!(ok, "{text}");
    let m = tokenmill_shards::Manifest::load(&out).unwrap();
    assert_eq!(m.documents, 1, "the line after the bomb is read");
    assert_eq!(skipped(&out)["too_large"], 1, "{text}");
    assert!(
        text.contains("max_record_bytes") || mentions(&out, "max_record_bytes"),
        "the skip names the limit: {text}"
    );
}

/// A `response` record (WARC/1.0) with `block` as its HTTP message.
fn warc_record(id: &str, block: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{id}>\r\nWARC-Target-URI: http://example.com/{id}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: {}\r\n\r\n",
        block.len()
    )
    .into_bytes();
    r.extend_from_slice(block);
    r.extend_from_slice(b"\r\n\r\n");
    r
}

fn html_response(body: &[u8], encoding: &str) -> Vec<u8> {
    let mut b = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n{encoding}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    b.extend_from_slice(body);
    b
}

const PAGE: &[u8] = b"<html><head><title>Fine</title></head><body><p>This page is an ordinary one, with a paragraph of real text that the extractor keeps as the main content of the page.</p><p>A second paragraph follows the first one so that the page has enough words to pass.</p></body></html>";

#[test]
fn gzip_bomb_warcs_are_skipped_as_too_large_within_3_gib() {
    let dir = tempfile::tempdir().unwrap();
    // (1) A gzip member inflating to 2 GiB: one record of 2 GiB, over max_record_bytes.
    let input = dir.path().join("bomb.warc.gz");
    let mut f = std::fs::File::create(&input).unwrap();
    let block = 2u64 << 30;
    let head = format!(
        "WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:bomb>\r\nWARC-Target-URI: http://example.com/bomb\r\nContent-Type: application/http; msgtype=response\r\nContent-Length: {block}\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n"
    );
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 << 20];
    for _ in 0..32 {
        e.write_all(&chunk).unwrap();
    }
    f.write_all(&e.finish().unwrap()).unwrap();
    // (2) A small record whose HTTP body is `Content-Encoding: gzip` inflating to 4 GiB.
    let bomb_body = spaces_gz(64);
    f.write_all(&gz(&warc_record(
        "encoded",
        &html_response(&bomb_body, "Content-Encoding: gzip\r\n"),
    )))
    .unwrap();
    // (3) An ordinary page after both.
    f.write_all(&gz(&warc_record("fine", &html_response(PAGE, ""))))
        .unwrap();
    drop(f);
    let out = dir.path().join("ds");
    let (ok, text) = build_limited(&input, &out);
    assert!(ok, "{text}");
    let sk = skipped(&out);
    assert_eq!(
        sk["too_large"], 2,
        "the member and the encoded body: {sk} {text}"
    );
    assert!(
        text.contains("max_record_bytes") || mentions(&out, "max_record_bytes"),
        "the skip names the limit: {text}"
    );
}

/// A small dataset of three documents (GPT-2), built in process.
fn small_dataset(dir: &Path) -> PathBuf {
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\":\"a\",\"text\":\"The first document.\"}\n{\"id\":\"b\",\"text\":\"The second one.\"}\n{\"id\":\"c\",\"text\":\"And a third.\"}\n",
    )
    .unwrap();
    let out = dir.join("ds");
    tokenmill_pipelines::build(&build_cfg(&input, &out)).unwrap();
    out
}

fn build_cfg(input: &Path, out: &Path) -> BuildConfig {
    let mut cfg = BuildConfig::default();
    cfg.input.paths = vec![input.display().to_string()];
    cfg.tokenizer.path = data("tokenizers/gpt2.tokenizer.json");
    cfg.output.dir = out.to_path_buf();
    cfg.run.quiet = true;
    cfg
}

#[test]
fn an_idx_claiming_10_to_the_12_documents_is_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let out = small_dataset(dir.path());
    let m = tokenmill_shards::Manifest::load(&out).unwrap();
    let idx = m.shards[0].idx_path(&out);
    let mut b = std::fs::read(&idx).unwrap();
    let n: u64 = 1_000_000_000_000;
    b[18..26].copy_from_slice(&n.to_le_bytes());
    b[26..34].copy_from_slice(&(n + 1).to_le_bytes());
    std::fs::write(&idx, &b).unwrap();
    // The manifest's checksum updated too, so that `verify` reaches the index itself.
    let sum =
        tokenmill_shards::manifest::hex64(tokenmill_shards::checksum::xxh3_file(&idx).unwrap());
    tamper_manifest(&out, |v| v["shards"][0]["idx_xxh3"] = sum.clone().into());
    // `verify`, and `inspect` of a document (its summary reads only the manifest).
    let zero = Path::new("0");
    let inspect_doc = [
        Path::new("inspect"),
        &out,
        Path::new("--shard"),
        zero,
        Path::new("--index"),
        zero,
    ];
    for args in [&[Path::new("verify"), &out][..], &inspect_doc[..]] {
        let (ok, text) = tokenmill_limited(args);
        assert!(!ok, "{args:?}: {text}");
        assert!(
            text.contains(".idx")
                && text.contains("1000000000000 sequences")
                && text.contains("bytes, file has"),
            "{args:?}: {text}"
        );
    }
    // The loader's way in.
    let ds = tokenmill_shards::Dataset::open(&out).unwrap();
    let e = ds.shard(0).unwrap_err().to_string();
    assert!(e.contains("1000000000000 sequences"), "{e}");
}

fn tamper_manifest(out: &Path, f: impl Fn(&mut serde_json::Value)) {
    let p = out.join("manifest.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

#[test]
fn shard_paths_out_of_a_dataset_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = small_dataset(dir.path());
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    let m = tokenmill_shards::Manifest::load(&out).unwrap();
    let name = m.shards[0].name.clone();
    // A copy of the shard outside the dataset, for names and links to reach.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for ext in ["bin", "idx", "prov.parquet"] {
        std::fs::copy(
            out.join(format!("{name}.{ext}")),
            outside.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
    let escaped = format!("../outside/{name}");
    let absolute = outside.join(&name).display().to_string();
    for bad in [escaped.as_str(), absolute.as_str(), ".."] {
        tamper_manifest(&out, |v| v["shards"][0]["name"] = bad.into());
        for cmd in ["verify", "inspect"] {
            let (ok, text) = tokenmill_limited(&[Path::new(cmd), &out]);
            assert!(!ok, "{cmd} {bad}: {text}");
            assert!(
                text.contains("is not a plain file name"),
                "{cmd} {bad}: {text}"
            );
        }
        std::fs::write(out.join("manifest.json"), &manifest).unwrap();
    }
    // A shard file replaced by a symbolic link out of the dataset.
    for ext in ["bin", "idx", "prov.parquet"] {
        let f = out.join(format!("{name}.{ext}"));
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(outside.join(format!("{name}.{ext}")), &f).unwrap();
        for cmd in ["verify", "inspect"] {
            let (ok, text) = tokenmill_limited(&[Path::new(cmd), &out]);
            assert!(!ok, "{cmd} {ext}: {text}");
            assert!(text.contains("outside the dataset"), "{cmd} {ext}: {text}");
        }
        let e = tokenmill_shards::Dataset::open(&out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the dataset"), "{e}");
        std::fs::remove_file(&f).unwrap();
        std::fs::copy(outside.join(format!("{name}.{ext}")), &f).unwrap();
    }
    // Restored, the dataset verifies.
    tokenmill_shards::verify(&out).unwrap();
}

#[test]
fn a_tampered_task_record_is_not_trusted_and_the_task_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = small_dataset(dir.path());
    let record = out.join(".build/tasks/000000.json");
    let good = std::fs::read(&record).unwrap();
    let rec: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let name = rec["shards"][0]["name"].as_str().unwrap().to_string();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for ext in ["bin", "idx", "prov.parquet"] {
        std::fs::copy(
            out.join(format!("{name}.{ext}")),
            outside.join(format!("{name}.{ext}")),
        )
        .unwrap();
    }
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    let absolute = outside.join(&name).display().to_string();
    for bad in [format!("../outside/{name}"), absolute] {
        let mut r = rec.clone();
        r["shards"][0]["name"] = bad.clone().into();
        std::fs::write(&record, serde_json::to_vec(&r).unwrap()).unwrap();
        tokenmill_pipelines::build(&build_cfg(&input, &out)).unwrap();
        assert_eq!(
            std::fs::read(&record).unwrap(),
            good,
            "{bad}: the task was redone"
        );
        assert_eq!(
            std::fs::read(out.join("manifest.json")).unwrap(),
            manifest,
            "{bad}"
        );
        tokenmill_shards::verify(&out).unwrap();
    }
    // The task's shard replaced by a link out of the output: redone, the link removed (the
    // file it pointed to untouched).
    let bin = out.join(format!("{name}.bin"));
    std::fs::remove_file(&bin).unwrap();
    std::os::unix::fs::symlink(outside.join(format!("{name}.bin")), &bin).unwrap();
    let before = std::fs::read(outside.join(format!("{name}.bin"))).unwrap();
    tokenmill_pipelines::build(&build_cfg(&input, &out)).unwrap();
    assert!(
        !std::fs::symlink_metadata(&bin)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read(outside.join(format!("{name}.bin"))).unwrap(),
        before
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
    tokenmill_shards::verify(&out).unwrap();
}

#[test]
fn checkpoint_paths_out_of_the_run_are_refused_on_resume() {
    use tokenmill_pipelines::train::{read_config, train};
    let dir = tempfile::tempdir().unwrap();
    crate::train::datasets(dir.path());
    let cfg = crate::train::write_config(dir.path(), "run", "steps = 1", "peak = 1e-3");
    train(read_config(&cfg).unwrap(), false, true).unwrap();
    let resume = || {
        train(read_config(&cfg).unwrap(), true, true)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let ck = dir.path().join("run/checkpoints");
    let step = ck.join("step-00000001");
    // `latest` naming a path out of the run.
    let latest = std::fs::read(ck.join("latest")).unwrap();
    let abs = step.display().to_string();
    for bad in ["../../run/checkpoints/step-00000001", abs.as_str(), ".."] {
        std::fs::write(ck.join("latest"), bad).unwrap();
        let e = resume();
        assert!(e.contains("not a checkpoint of this run"), "{bad}: {e}");
    }
    std::fs::write(ck.join("latest"), &latest).unwrap();
    // A sharded index naming files out of the checkpoint.
    let st = std::fs::read(step.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    let index = step.join(tokenmill_trainer::hf::MODEL_INDEX);
    for bad in ["../../../outside.safetensors", "/tmp/outside.safetensors"] {
        let map: serde_json::Map<String, serde_json::Value> = header
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "__metadata__")
            .map(|k| (k.clone(), bad.into()))
            .collect();
        let ix = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(&index, serde_json::to_vec(&ix).unwrap()).unwrap();
        let e = resume();
        assert!(
            e.contains("is not a plain file name beside the index"),
            "{bad}: {e}"
        );
    }
    std::fs::remove_file(&index).unwrap();
    // A checkpoint file, then the checkpoint directory, as links out of the run.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::copy(
        step.join("model.safetensors"),
        outside.join("model.safetensors"),
    )
    .unwrap();
    std::fs::remove_file(step.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("model.safetensors"),
        step.join("model.safetensors"),
    )
    .unwrap();
    let e = resume();
    assert!(e.contains("outside the checkpoint"), "{e}");
    std::fs::remove_file(step.join("model.safetensors")).unwrap();
    std::fs::copy(
        outside.join("model.safetensors"),
        step.join("model.safetensors"),
    )
    .unwrap();
    let moved = outside.join("step-00000001");
    std::fs::rename(&step, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &step).unwrap();
    let e = resume();
    assert!(e.contains("outside the checkpoint"), "{e}");
    std::fs::remove_file(&step).unwrap();
    std::fs::rename(&moved, &step).unwrap();
    train(read_config(&cfg).unwrap(), true, true).unwrap();
}

/// A real Parquet file of three documents whose footer was rewritten to claim 10¹⁰ rows (the
/// file's count and its row group's), the data pages untouched.
fn parquet_claiming_10_to_the_10_rows(path: &Path) {
    use std::sync::Arc;

    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::{FileMetaData, ParquetMetaData, ParquetMetaDataWriter};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    const CLAIM: i64 = 10_000_000_000;
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
    let texts = StringArray::from(vec![
        "The first document of a file that lies about its size.",
        "The second one.",
        "The third one.",
    ]);
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(texts)]).unwrap();
    let mut honest = Vec::new();
    let mut w = ArrowWriter::try_new(&mut honest, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let tmp = path.with_extension("honest.parquet");
    std::fs::write(&tmp, &honest).unwrap();
    let meta = SerializedFileReader::new(std::fs::File::open(&tmp).unwrap())
        .unwrap()
        .metadata()
        .clone();
    std::fs::remove_file(&tmp).unwrap();
    let fm = meta.file_metadata();
    let lying = ParquetMetaData::new(
        FileMetaData::new(
            fm.version(),
            CLAIM,
            fm.created_by().map(str::to_string),
            fm.key_value_metadata().cloned(),
            fm.schema_descr_ptr(),
            fm.column_orders().cloned(),
        ),
        meta.row_groups()
            .iter()
            .map(|rg| {
                rg.clone()
                    .into_builder()
                    .set_num_rows(CLAIM)
                    .build()
                    .unwrap()
            })
            .collect(),
    );
    // The data pages: everything before the old footer (its length is the 4 bytes before
    // the closing magic).
    let n = honest.len();
    let footer = u32::from_le_bytes(honest[n - 8..n - 4].try_into().unwrap()) as usize;
    let mut out = honest[..n - 8 - footer].to_vec();
    ParquetMetaDataWriter::new(&mut out, &lying)
        .finish()
        .unwrap();
    std::fs::write(path, &out).unwrap();
    let check = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    assert_eq!(check.metadata().file_metadata().num_rows(), CLAIM);
}

#[test]
fn a_parquet_file_claiming_10_to_the_10_rows_is_read_within_3_gib() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("liar.parquet");
    parquet_claiming_10_to_the_10_rows(&input);
    let out = dir.path().join("ds");
    let (ok, text) = build_limited(&input, &out);
    assert!(ok, "{text}");
    // The reader goes by the pages, not by the claim: the three real documents, read in
    // batches of 1,024 rows (no buffer sized by the row count), under 3 GiB of address space.
    let m = tokenmill_shards::Manifest::load(&out).unwrap();
    assert_eq!(m.documents, 3);
}
