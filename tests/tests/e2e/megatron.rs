//! Megatron-LM compatibility: the shards tokenmill writes are byte-identical to what
//! Megatron-core's own `IndexedDatasetBuilder` writes for the same sequences (fixtures made by
//! `tests/peers/make_megatron_fixture.py` with megatron-core 0.16.1), tokenmill reads Megatron's
//! files, and — where the Python peer environment exists — Megatron's reader reads a tokenmill
//! dataset back token for token (`tests/peers/megatron_read.py`).

use std::process::Command;

use tokenmill_shards::{DocSource, Shard, ShardWriter, TokenDtype};
use tokenmill_tests::{data, fixture, repo_root};

const U16_DOCS: &[&[u32]] = &[
    &[15496, 11, 995, 0],
    &[0, 1, 2, 3, 65535, 50256],
    &[],
    &[
        464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256,
    ],
];

fn src(id: &str) -> DocSource<'_> {
    DocSource {
        id,
        source: "fixture",
        offset: 0,
        url: None,
        text_xxh3: 0,
        lang: None,
        lang_score: None,
    }
}

#[test]
fn tokenmill_writes_the_bytes_megatron_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::create(dir.path(), "fixture-u16", TokenDtype::Uint16).unwrap();
    for (i, d) in U16_DOCS.iter().enumerate() {
        w.push(d, src(&i.to_string())).unwrap();
    }
    w.finish().unwrap();
    for ext in ["bin", "idx"] {
        let ours = std::fs::read(dir.path().join(format!("fixture-u16.{ext}"))).unwrap();
        let megatron = std::fs::read(fixture(&format!("megatron/fixture-u16.{ext}"))).unwrap();
        assert_eq!(ours, megatron, ".{ext} differs from Megatron's");
    }
}

#[test]
fn tokenmill_reads_megatron_files_including_multi_sequence_documents() {
    let u16 = Shard::open(&fixture("megatron/fixture-u16")).unwrap();
    assert_eq!(u16.dtype(), TokenDtype::Uint16);
    for (i, d) in U16_DOCS.iter().enumerate() {
        assert_eq!(&u16.document(i).unwrap(), d);
    }
    let i32 = Shard::open(&fixture("megatron/fixture-i32")).unwrap();
    assert_eq!(i32.dtype(), TokenDtype::Int32);
    assert_eq!(i32.len(), 5);
    assert_eq!(
        i32.index().document_index_len(),
        4,
        "document_indices [0, 1, 4, 5]"
    );
    assert_eq!(
        i32.document(0).unwrap(),
        vec![100000, 128000, 2147483647, 0]
    );
    assert_eq!(i32.document(2).unwrap(), vec![70000, 70001]);
    assert_eq!(i32.document(4).unwrap(), vec![129279]);
}

#[test]
#[ignore = "needs the Python peers (megatron-core, tests/peers/README.md): cargo test -p tokenmill-tests --test e2e -- --ignored megatron"]
fn megatron_reader_reads_a_tokenmill_dataset() {
    let py = tokenmill_tests::peers_python("megatron-core");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = tokenmill_pipelines::BuildConfig::default();
    cfg.input.paths = vec![
        data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz")
            .display()
            .to_string(),
    ];
    cfg.tokenizer.path = data("tokenizers/deepseek-v3.tokenizer.json.gz");
    cfg.output.dir = out.clone();
    cfg.output.shard_bytes = 1 << 20;
    cfg.run.quiet = true;
    let built = tokenmill_pipelines::build(&cfg).unwrap();
    assert_eq!(built.manifest.dtype, TokenDtype::Int32);
    let o = Command::new(py)
        .arg(repo_root().join("tests/peers/megatron_read.py"))
        .arg(&out)
        .arg("--dump-first")
        .arg("3")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let first: Vec<Vec<u32>> = serde_json::from_str(lines[lines.len() - 2]).unwrap();
    let summary: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["sequences"], built.manifest.documents);
    assert_eq!(summary["tokens"], built.manifest.tokens);
    let ds = tokenmill_shards::Dataset::open(&out).unwrap();
    let shard = ds.shard(0).unwrap();
    for (i, seq) in first.iter().enumerate() {
        assert_eq!(&shard.document(i).unwrap(), seq);
    }
}
