//! Seed corpora, built from the real files of `../shared/data` (never copied into the
//! repository): records and gzip members of real WARC/WET/WAT files, lines of real JSONL
//! corpora, real HTML pages, a dataset built from real text with a tokenizer cut down from
//! GPT-2's, real tokenizers cut down to a few hundred tokens, the configurations in the
//! repository, and a checkpoint of [`crate::targets::config::micro_model`].

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Largest seed written (AFL++'s default input limit is 1 MiB; small seeds mutate faster).
const MAX_SEED: usize = 256 << 10;

/// Seeds by target name.
pub type Seeds = BTreeMap<&'static str, Vec<Vec<u8>>>;

/// Builds every target's seeds from the data folder `data`.
pub fn build(data: &Path) -> Seeds {
    let mut s = Seeds::new();
    let warcs = files(&data.join("warc"));
    for w in &warcs {
        let raw = std::fs::read(w).expect("read a WARC file");
        let members = gzip_members(&raw, 6);
        for (i, (gz, plain)) in members.iter().enumerate() {
            if i < 4 {
                push(&mut s, "warc", gz.to_vec());
                push(&mut s, "warc", plain.clone());
            }
            if let Some(block) = http_block(plain) {
                push(&mut s, "http", block.to_vec());
            }
        }
        // Several members in a row, as files hold them.
        let run: Vec<u8> = members
            .iter()
            .take(3)
            .flat_map(|(gz, _)| gz.to_vec())
            .collect();
        push(&mut s, "warc", run);
    }
    let jsonl = files(&data.join("jsonl"));
    let mut texts = Vec::new();
    for j in &jsonl {
        let lines = first_lines(j, 5);
        let body: Vec<u8> = lines
            .iter()
            .flat_map(|l| [l.as_bytes(), b"\n"].concat())
            .collect();
        for container in 0..4u8 {
            let file = match container {
                1 => gzip(&body),
                2 => zstd::encode_all(&body[..], 3).expect("zstd in memory"),
                _ => body.clone(),
            };
            push(&mut s, "jsonl", [&[container][..], &file].concat());
        }
        for l in &lines {
            if let Some(t) = serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("text").and_then(Value::as_str).map(str::to_string))
            {
                texts.push(t);
            }
        }
    }
    for (mode, conv) in conversations(&texts).into_iter().enumerate() {
        let chat = (mode as u8 + 1) << 2;
        push(&mut s, "jsonl", [&[chat][..], conv.as_bytes()].concat());
    }
    let parquet = text_parquet(&texts[..texts.len().min(12)]);
    push(&mut s, "parquet", [&[0u8][..], &parquet].concat());
    push(&mut s, "parquet", [&[1u8][..], &parquet].concat());
    for page in files(&data.join("extraction").join("html"))
        .iter()
        .chain(&files(&data.join("extraction-multilingual").join("html")))
        .take(24)
    {
        push(&mut s, "html", std::fs::read(page).expect("read a page"));
    }
    let gpt2 = std::fs::read(data.join("tokenizers/gpt2.tokenizer.json")).expect("gpt2");
    let small_gpt2 = cut_bpe(&gpt2, 320);
    push(&mut s, "tokenizer", small_gpt2.clone());
    let mut ds = Vec::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(data.join("tokenizers/deepseek-v3.tokenizer.json.gz"))
            .expect("deepseek tokenizer"),
    )
    .read_to_end(&mut ds)
    .expect("gunzip the DeepSeek-V3 tokenizer");
    push(&mut s, "tokenizer", cut_bpe(&ds, 600));
    let bert = std::fs::read(data.join("tokenizers/bert-base-uncased.tokenizer.json"))
        .expect("bert tokenizer");
    push(&mut s, "tokenizer", cut_wordpiece(&bert, 1200));
    dataset_seeds(&mut s, &jsonl[0], &small_gpt2);
    config_seeds(&mut s);
    push(&mut s, "checkpoint", checkpoint_seed());
    s
}

/// Writes `seeds` under `out/<target>/seed-NNNN`.
pub fn write(seeds: &Seeds, out: &Path) -> std::io::Result<()> {
    for (target, list) in seeds {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, bytes) in list.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), bytes)?;
        }
    }
    Ok(())
}

fn push(s: &mut Seeds, target: &'static str, bytes: Vec<u8>) {
    if bytes.len() <= MAX_SEED {
        s.entry(target).or_default().push(bytes);
    }
}

/// The regular files of `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

/// The first `n` gzip members of `raw`, each as its compressed bytes and its contents.
fn gzip_members(raw: &[u8], n: usize) -> Vec<(&[u8], Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while out.len() < n && !rest.is_empty() {
        let mut d = flate2::bufread::GzDecoder::new(rest);
        let mut plain = Vec::new();
        if d.read_to_end(&mut plain).is_err() {
            break;
        }
        let left = d.into_inner();
        let used = rest.len() - left.len();
        out.push((&rest[..used], plain));
        rest = left;
    }
    out
}

/// The block after the WARC headers of a `response` record (its HTTP response).
fn http_block(record: &[u8]) -> Option<&[u8]> {
    let head_end = record.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&record[..head_end]).ok()?;
    if !head.contains("WARC-Type: response") {
        return None;
    }
    Some(&record[head_end + 4..])
}

fn first_lines(path: &Path, n: usize) -> Vec<String> {
    let file = std::fs::File::open(path).expect("open a JSONL file");
    let r: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    std::io::BufReader::new(r)
        .lines()
        .take(n)
        .map(|l| l.expect("a line"))
        .map(|l| {
            // Long documents are cut (at a character boundary) to keep seeds small.
            let v: Value = serde_json::from_str(&l).expect("a JSON line");
            let mut v = v;
            if let Some(t) = v.get("text").and_then(Value::as_str) {
                let cut: String = t.chars().take(3000).collect();
                v["text"] = Value::String(cut);
            }
            v.to_string()
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).expect("in memory");
    gz.finish().expect("in memory")
}

/// Real texts cut into turns, in OpenAI, ShareGPT and Alpaca layout.
fn conversations(texts: &[String]) -> Vec<String> {
    let turns: Vec<String> = texts
        .iter()
        .take(6)
        .map(|t| t.chars().take(400).collect())
        .collect();
    let (q, a) = (&turns[0], &turns[1]);
    let openai = [
        json!({"messages": [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": q}, {"role": "assistant", "content": a}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "text", "text": turns[2]}]},
            {"role": "assistant", "content": turns[3]}]}),
    ];
    let sharegpt = [json!({"conversations": [{"from": "human", "value": q},
        {"from": "gpt", "value": a}, {"from": "human", "value": turns[4]},
        {"from": "gpt", "value": turns[5]}]})];
    let alpaca = [
        json!({"instruction": q, "input": "", "output": a}),
        json!({"instruction": turns[2], "input": turns[3], "output": turns[4]}),
    ];
    let lines = |v: &[Value]| v.iter().map(|x| format!("{x}\n")).collect::<String>();
    vec![lines(&openai), lines(&sharegpt), lines(&alpaca)]
}

/// A Parquet input with `id`, `text` and `url` columns.
fn text_parquet(texts: &[String]) -> Vec<u8> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let ids: Vec<String> = (0..texts.len()).map(|i| format!("doc-{i}")).collect();
    let urls: Vec<String> = (0..texts.len())
        .map(|i| format!("https://example.org/{i}"))
        .collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
        (
            "text",
            Arc::new(StringArray::from(texts.to_vec())) as ArrayRef,
        ),
        ("url", Arc::new(StringArray::from(urls)) as ArrayRef),
    ])
    .expect("a batch");
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
        .expect("a Parquet writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
    out
}

/// A byte-level BPE `tokenizer.json` cut to its first `keep` ids: the merges among them, and
/// its added tokens renumbered after them (so `<|endoftext|>` stays).
fn cut_bpe(json: &[u8], keep: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(json).expect("tokenizer JSON");
    let vocab = v["model"]["vocab"]
        .as_object()
        .expect("a BPE vocab")
        .clone();
    let kept: serde_json::Map<String, Value> = vocab
        .into_iter()
        .filter(|(_, id)| id.as_u64().is_some_and(|i| i < keep))
        .collect();
    let merges: Vec<Value> = v["model"]["merges"]
        .as_array()
        .expect("merges")
        .iter()
        .filter(|m| {
            let (a, b) = match m {
                Value::String(s) => match s.split_once(' ') {
                    Some((a, b)) => (a.to_string(), b.to_string()),
                    None => return false,
                },
                Value::Array(p) => (
                    p[0].as_str().unwrap_or_default().to_string(),
                    p[1].as_str().unwrap_or_default().to_string(),
                ),
                _ => return false,
            };
            kept.contains_key(&a) && kept.contains_key(&b) && kept.contains_key(&(a + &b))
        })
        .cloned()
        .collect();
    let mut next = keep;
    let mut vocab = kept;
    if let Some(added) = v["added_tokens"].as_array_mut() {
        added.truncate(3);
        for t in added.iter_mut() {
            let content = t["content"].as_str().unwrap_or_default().to_string();
            t["id"] = json!(next);
            vocab.insert(content, json!(next));
            next += 1;
        }
    }
    v["model"]["vocab"] = Value::Object(vocab);
    v["model"]["merges"] = Value::Array(merges);
    serde_json::to_vec(&v).expect("serialises")
}

/// A WordPiece `tokenizer.json` cut to its first `keep` ids (special tokens included).
fn cut_wordpiece(json: &[u8], keep: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(json).expect("tokenizer JSON");
    let vocab = v["model"]["vocab"].as_object().expect("a vocab").clone();
    v["model"]["vocab"] = Value::Object(
        vocab
            .into_iter()
            .filter(|(_, id)| id.as_u64().is_some_and(|i| i < keep))
            .collect(),
    );
    serde_json::to_vec(&v).expect("serialises")
}

/// Builds a dataset from the first documents of `jsonl` with `tokenizer` (in a temporary
/// directory) and makes the `shard`, `manifest` and `provenance` seeds from it.
fn dataset_seeds(s: &mut Seeds, jsonl: &Path, tokenizer: &[u8]) {
    let tmp = tempfile::tempdir_in(crate::scratch()).expect("temporary directory");
    let tmp = tmp.path();
    let input = tmp.join("docs.jsonl");
    let lines: String = first_lines(jsonl, 12)
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&input, lines).expect("write the input");
    let tok = tmp.join("tokenizer.json");
    std::fs::write(&tok, tokenizer).expect("write the tokenizer");
    let mut cfg = tokenmill_pipelines::BuildConfig::default();
    cfg.input.paths = vec![input.display().to_string()];
    cfg.tokenizer.path = tok;
    cfg.output.dir = tmp.join("ds");
    cfg.output.shard_bytes = 1 << 20; // one shard: the manifest seed carries its files
    cfg.run.quiet = true;
    cfg.run.threads = 1;
    tokenmill_pipelines::build::build(&cfg).expect("build the seed dataset");
    let dir = &cfg.output.dir;
    let m = tokenmill_shards::Manifest::load(dir).expect("the seed dataset's manifest");
    let read = |p: PathBuf| std::fs::read(&p).expect("a dataset file");
    for (i, sh) in m.shards.iter().enumerate().take(3) {
        let (idx, bin, prov) = (
            read(sh.idx_path(dir)),
            read(sh.bin_path(dir)),
            read(sh.prov_path(dir)),
        );
        // Loss masks: every other document trained on, as an SFT build writes them.
        let shard = tokenmill_shards::Shard::open(&dir.join(&sh.name)).expect("open");
        let lengths: Vec<u32> = (0..shard.len())
            .map(|d| shard.index().length(d) as u32)
            .collect();
        let midx = tokenmill_shards::mask::encode_mask_index(&lengths).expect("mask index");
        let mbin: Vec<u8> = lengths
            .iter()
            .enumerate()
            .flat_map(|(d, &n)| std::iter::repeat_n((d % 2) as u8, n as usize))
            .collect();
        push(s, "shard", crate::join(&[&idx, &bin, &midx, &mbin]));
        push(s, "shard", crate::join(&[&idx, &bin, b"", b""]));
        push(s, "provenance", prov.clone());
        if i == 0 {
            let manifest = read(dir.join(tokenmill_shards::MANIFEST_FILE));
            let tokenizer = read(dir.join("tokenizer.json"));
            push(
                s,
                "manifest",
                crate::join(&[&manifest, &tokenizer, &idx, &bin, &prov]),
            );
        }
    }
}

/// The repository's pipeline recipes and training configurations of every section.
fn config_seeds(s: &mut Seeds) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (mode, rel) in [
        (0u8, "pipelines/examples/web.toml"),
        (1, "docs/precision-train.toml"),
    ] {
        if let Ok(text) = std::fs::read(root.join(rel)) {
            push(s, "config", [&[mode][..], &text].concat());
        }
    }
    let build = r#"
[input]
paths = ["data/*.jsonl.gz"]
on_error = "skip"
[input.jsonl]
text = "text"
id = "id"
[tokenizer]
path = "tokenizer.json"
append_eos = true
[output]
dir = "out"
shard_bytes = 1048576
[dedup]
enabled = true
bands = 14
rows = 8
threshold = 0.8
[sql]
where = "length(text) > 100"
[run]
threads = 2
"#;
    let train = r#"
[model]
preset = "tiny"
vocab_size = 50304
num_nextn_predict_layers = 1
[data]
train = "dataset"
eval = "dataset-eval"
seq_len = 128
batch = 8
[optim]
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
[lr]
peak = 3e-3
min = 3e-4
warmup = 30
constant = 10
decay = 60
[train]
out = "run"
steps = 100
eval_every = 25
checkpoint_every = 50
threads = 2
mtp_lambda = [[0, 0.3], [80, 0.1]]
precision = "fp8"
[train.spikes]
z = 6.0
[parallel]
dp = 2
ep = 2
"#;
    push(s, "config", [&[0u8][..], build.as_bytes()].concat());
    push(s, "config", [&[1u8][..], train.as_bytes()].concat());
}

/// A complete checkpoint of the micro model (random weights and moments), in [`split`]'s
/// parts.
///
/// [`split`]: crate::split
fn checkpoint_seed() -> Vec<u8> {
    use std::collections::HashMap;
    use tokenmill_trainer::hf;
    let model = crate::targets::config::micro_model();
    let n = model.layout.len();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let params: Vec<f32> = (0..n).map(|_| rand() * 0.04).collect();
    let m: Vec<f32> = (0..n).map(|_| rand() * 1e-3).collect();
    let v: Vec<f32> = (0..n).map(|_| (rand() * 1e-3).abs()).collect();
    let tmp = tempfile::tempdir_in(crate::scratch()).expect("temporary directory");
    let dir = tmp.path().join("checkpoint");
    let meta = |t: bool| {
        let mut h = HashMap::from([("format".to_string(), "pt".to_string())]);
        if t {
            h.insert("t".into(), "7".into());
        }
        h
    };
    hf::save(&dir, &model, &params).expect("save the model");
    hf::save_tensors(
        &dir.join("optimizer.safetensors"),
        &model.layout,
        &m,
        "m.",
        meta(true),
    )
    .expect("save m");
    hf::save_tensors(
        &dir.join("optimizer_v.safetensors"),
        &model.layout,
        &v,
        "v.",
        meta(true),
    )
    .expect("save v");
    let state = tokenmill_trainer::train::CheckpointState {
        step: 7,
        loader: Default::default(),
        rng: 42,
        optimizer_t: 7,
        dataset_fingerprint: "0123456789abcdef".into(),
        seq_len: 16,
        batch: 2,
    };
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_vec_pretty(&state).expect("serialises"),
    )
    .expect("write state.json");
    let files: Vec<Vec<u8>> = crate::targets::config::CHECKPOINT_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("a checkpoint file"))
        .collect();
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    crate::join(&parts)
}
