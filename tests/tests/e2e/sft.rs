//! Supervised fine-tuning end to end: conversations in the three layouts (OpenAI `messages` in
//! JSONL and Parquet, ShareGPT, Alpaca) built into shards with loss masks beside the tokens
//! (Megatron-readable `.mask.bin/.idx`), one provenance row per conversation, filters and dedup
//! over the conversation text, long ones dropped or cut and counted; `inspect` marks the
//! trained spans; the loader serves the stored masks; a pretrained tiny model fine-tuned on
//! synthetic instructions answers them; bad conversations and templates are named; and
//! (ignored unless transformers is there) the token ids equal `apply_chat_template`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokenmill_ingest::chat::{ChatFields, ChatFormat};
use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::sft::{Overlong, SftConfig};
use tokenmill_shards::loader::{Loader, LoaderConfig, Packing, Shuffle};
use tokenmill_shards::{Dataset, TextTokenizer, TokenizeConfig};
use tokenmill_tests::{data, fixture, repo_root, tokenmill_bin};

/// A conversation: id and (role, content) turns.
type Conv = (String, Vec<(&'static str, String)>);

const WORDS: [&str; 16] = [
    "river", "garden", "harbour", "library", "market", "valley", "tower", "forest", "teacher",
    "farmer", "sailor", "doctor", "painter", "student", "morning", "evening",
];

/// Conversation `i`: a system prompt, a question and an answer, a second exchange for odd `i`;
/// every text different (dedup keeps them all).
fn conversation(i: usize) -> Conv {
    let w = |k: usize| WORDS[(i * 7 + k * 3) % WORDS.len()];
    let mut turns = vec![
        ("system", "You answer in one sentence.".to_string()),
        (
            "user",
            format!("Question {i}: where did the {} meet the {}?", w(0), w(1)),
        ),
        (
            "assistant",
            format!(
                "Answer {i}: the {} met the {} near the {}.",
                w(0),
                w(1),
                w(2)
            ),
        ),
    ];
    if i % 2 == 1 {
        turns.push(("user", format!("And the {} of case {i}?", w(3))));
        turns.push((
            "assistant",
            format!("In case {i} the {} stayed home.", w(3)),
        ));
    }
    (format!("c{i}"), turns)
}

fn openai_line(id: &str, turns: &[(&str, String)]) -> Value {
    let messages: Vec<Value> = turns
        .iter()
        .map(|(r, c)| json!({"role": r, "content": c}))
        .collect();
    json!({"id": id, "messages": messages})
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Writes JSON objects as a Parquet file (schema inferred: `messages` becomes a list of
/// structs).
fn write_parquet(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let (schema, _) =
        arrow::json::reader::infer_json_schema_from_seekable(std::io::Cursor::new(&text), None)
            .unwrap();
    let schema = Arc::new(schema);
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .build(std::io::Cursor::new(text))
        .unwrap();
    let f = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    for b in reader {
        w.write(&b.unwrap()).unwrap();
    }
    w.close().unwrap();
}

fn sft_config(inputs: &[PathBuf], out: &Path, format: &str, sft: SftConfig) -> BuildConfig {
    let format = match format {
        "openai" => ChatFormat::Openai,
        "sharegpt" => ChatFormat::Sharegpt,
        _ => ChatFormat::Alpaca,
    };
    let mut cfg = BuildConfig::default();
    cfg.input.read.chat = Some(ChatFields {
        format,
        ..Default::default()
    });
    cfg.input.paths = inputs.iter().map(|p| p.display().to_string()).collect();
    cfg.tokenizer.path = data("tokenizers/gpt2.tokenizer.json");
    cfg.output.dir = out.to_path_buf();
    cfg.run.quiet = true;
    cfg.sft = Some(sft);
    cfg
}

fn chatml() -> SftConfig {
    SftConfig {
        template: "chatml".into(),
        ..Default::default()
    }
}

/// Every document of a dataset: (id, tokens, mask).
fn documents(dir: &Path) -> Vec<(String, Vec<u32>, Vec<u8>)> {
    let ds = Dataset::open(dir).unwrap();
    let mut out = Vec::new();
    for s in 0..ds.manifest().shards.len() {
        let shard = ds.shard(s).unwrap();
        for (i, p) in ds.provenance(s).unwrap().into_iter().enumerate() {
            out.push((
                p.id,
                shard.document(i).unwrap(),
                shard.document_mask(i).expect("masks").to_vec(),
            ));
        }
    }
    out
}

#[test]
fn conversations_become_shards_with_loss_masks_in_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let convs: Vec<Conv> = (0..12).map(conversation).collect();
    // OpenAI JSONL with the bad and the long, a duplicate, and OpenAI Parquet.
    let mut lines: Vec<Value> = convs[..9]
        .iter()
        .map(|(id, t)| openai_line(id, t))
        .collect();
    lines.push(openai_line("dup-of-c3", &convs[3].1));
    lines.push(json!({"id": "bad-role", "messages": [{"role": "narrator", "content": "Once upon a time."}]}));
    lines.push(json!({"id": "empty-turn", "messages": [{"role": "user", "content": "Hello there?"}, {"role": "assistant", "content": ""}]}));
    let long = "word ".repeat(400);
    lines.push(json!({"id": "too-long", "messages": [{"role": "user", "content": "Say it."}, {"role": "assistant", "content": long}]}));
    write_lines(&d.join("chats.jsonl"), &lines);
    let pq: Vec<Value> = convs[9..]
        .iter()
        .map(|(id, t)| openai_line(id, t))
        .collect();
    write_parquet(&d.join("chats.parquet"), &pq);
    let mut cfg = sft_config(
        &[d.join("chats.jsonl"), d.join("chats.parquet")],
        &d.join("ds"),
        "openai",
        SftConfig {
            max_tokens: Some(200),
            ..chatml()
        },
    );
    cfg.dedup.enabled = true;
    let out = tokenmill_pipelines::build(&cfg).unwrap();
    let st = &out.stats;
    eprintln!("skipped {:?}", st.documents_skipped);
    assert_eq!(st.documents_written, 12, "c0..c11");
    assert_eq!(st.documents_skipped.get("bad_conversation"), Some(&2));
    assert_eq!(st.documents_skipped.get("sft"), Some(&1), "too-long");
    assert_eq!(
        st.documents_skipped.values().sum::<u64>(),
        4,
        "{:?}",
        st.documents_skipped
    );
    let sft_row = st.funnel.rows.iter().find(|r| r.stage == "sft").unwrap();
    assert_eq!((sft_row.docs_in, sft_row.docs_out), (13, 12));
    assert_eq!(sft_row.dropped.get("too_long"), Some(&1));
    // The masks are in the manifest, verified with the rest.
    let m = &out.manifest;
    assert!(m.shards.iter().all(|s| s.masks.is_some()));
    let trained: u64 = m
        .shards
        .iter()
        .map(|s| s.masks.as_ref().unwrap().trained_tokens)
        .sum();
    tokenmill_shards::verify(&d.join("ds")).unwrap();

    // Each conversation is one document whose masked-in tokens are exactly its answers with
    // their end markers; the ids are the rendering's.
    let tok = TextTokenizer::load(&cfg.tokenizer.path, &TokenizeConfig::default()).unwrap();
    let docs = documents(&d.join("ds"));
    let ids: Vec<&str> = docs.iter().map(|x| x.0.as_str()).collect();
    let want: Vec<String> = (0..12).map(|i| format!("c{i}")).collect();
    assert_eq!(ids, want);
    let mut ones = 0;
    for ((id, tokens, mask), (_, turns)) in docs.iter().zip(&convs) {
        let rendered: String = turns
            .iter()
            .map(|(r, c)| format!("<|im_start|>{r}\n{c}<|im_end|>\n"))
            .collect();
        assert_eq!(
            &tok.inner()
                .encode(rendered.as_str(), false)
                .unwrap()
                .get_ids(),
            tokens,
            "{id}"
        );
        let trained: Vec<u32> = tokens
            .iter()
            .zip(mask)
            .filter(|(_, m)| **m == 1)
            .map(|(t, _)| *t)
            .collect();
        let answers: String = turns
            .iter()
            .filter(|(r, _)| *r == "assistant")
            .map(|(_, c)| format!("{c}<|im_end|>\n"))
            .collect();
        assert_eq!(tok.decode(&trained).unwrap(), answers, "{id}");
        ones += trained.len() as u64;
    }
    assert_eq!(ones, trained);

    // The same conversations as ShareGPT and as Alpaca records give the same tokens and masks.
    let share: Vec<Value> = convs
        .iter()
        .map(|(id, t)| {
            let turns: Vec<Value> = t
                .iter()
                .map(|(r, c)| {
                    let from = match *r {
                        "user" => "human",
                        "assistant" => "gpt",
                        other => other,
                    };
                    json!({"from": from, "value": c})
                })
                .collect();
            json!({"id": id, "conversations": turns})
        })
        .collect();
    write_lines(&d.join("share.jsonl"), &share);
    tokenmill_pipelines::build(&sft_config(
        &[d.join("share.jsonl")],
        &d.join("ds-share"),
        "sharegpt",
        chatml(),
    ))
    .unwrap();
    assert_eq!(documents(&d.join("ds-share")), docs);
    let even: Vec<&Conv> = convs.iter().step_by(2).collect();
    let alpaca: Vec<Value> = even
        .iter()
        .map(|(id, t)| json!({"id": id, "system": t[0].1, "instruction": t[1].1, "input": "", "output": t[2].1}))
        .collect();
    write_lines(&d.join("alpaca.jsonl"), &alpaca);
    tokenmill_pipelines::build(&sft_config(
        &[d.join("alpaca.jsonl")],
        &d.join("ds-alpaca"),
        "alpaca",
        chatml(),
    ))
    .unwrap();
    let even_docs: Vec<_> = docs.iter().step_by(2).cloned().collect();
    assert_eq!(documents(&d.join("ds-alpaca")), even_docs);

    // `tokenmill inspect` marks the trained spans.
    let o = std::process::Command::new(tokenmill_bin())
        .args(["inspect"])
        .arg(d.join("ds"))
        .args(["--doc", "c1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, t1) = &convs[1];
    assert!(
        text.contains(&format!("⟦{}<|im_end|>\n⟧", t1[2].1)),
        "{text}"
    );
    assert!(
        text.contains(&format!("⟦{}<|im_end|>\n⟧", t1[4].1)),
        "{text}"
    );
    assert!(text.contains("<|im_start|>user\n"), "{text}");
    assert!(text.contains("loss mask:"), "{text}");
    let o = std::process::Command::new(tokenmill_bin())
        .arg("inspect")
        .arg(d.join("ds"))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(
        summary.contains(&format!(
            "loss masks {trained} of {} tokens trained",
            m.tokens
        )),
        "{summary}"
    );

    // The loader serves the stored masks: a target counts only when the token it predicts is
    // masked in, and over an epoch the targets that count are the trained tokens.
    let lc = LoaderConfig {
        seq_len: 255,
        global_batch: 1,
        packing: Packing::Documents,
        shuffle: Shuffle::None,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::open(&d.join("ds"), lc).unwrap();
    // Index in `docs` of each shard's first document.
    let first_doc: Vec<usize> = m
        .shards
        .iter()
        .scan(0, |n, e| {
            let at = *n;
            *n += e.documents as usize;
            Some(at)
        })
        .collect();
    assert_eq!(first_doc.len(), 2, "a shard per input file");
    let mut counted = 0u64;
    for _ in 0..loader.epoch_len() {
        let b = loader.next_batch().unwrap();
        for s in &b.samples {
            for sp in &s.spans {
                let (_, tokens, mask) = &docs[first_doc[sp.shard as usize] + sp.doc as usize];
                assert_eq!(
                    &s.tokens[sp.start as usize..(sp.start + sp.len) as usize],
                    &tokens[..]
                );
                // Targets start..start + len - 1 predict the document's tokens 1..len.
                let targets = &s.loss_mask[sp.start as usize..(sp.start + sp.len) as usize - 1];
                assert_eq!(targets, &mask[1..]);
            }
            counted += s.loss_mask.iter().map(|&m| m as u64).sum::<u64>();
        }
    }
    assert_eq!(counted, trained);
}

#[test]
fn long_conversations_are_cut_by_policy_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: Vec<Value> = (0..6)
        .map(conversation)
        .map(|(id, t)| openai_line(&id, &t))
        .collect();
    write_lines(&d.join("chats.jsonl"), &lines);
    let mut cfg = sft_config(
        &[d.join("chats.jsonl")],
        &d.join("ds"),
        "openai",
        SftConfig {
            max_tokens: Some(100),
            overlong: Overlong::Truncate,
            ..chatml()
        },
    );
    // The recipe's condition judges the conversation text (the turns' contents).
    cfg.sql.where_ = Some("text NOT LIKE '%case 5%'".into());
    let out = tokenmill_pipelines::build(&cfg).unwrap();
    let docs = documents(&d.join("ds"));
    let ids: Vec<&str> = docs.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(ids, ["c0", "c1", "c2", "c3", "c4"], "c5 asks about case 5");
    assert_eq!(out.stats.documents_skipped.get("sql"), Some(&1));
    assert!(
        docs.iter()
            .all(|(_, t, m)| t.len() <= 100 && m.len() == t.len())
    );
    let row = out
        .stats
        .funnel
        .rows
        .iter()
        .find(|r| r.stage == "sft")
        .unwrap();
    let cut = docs.iter().filter(|(_, t, _)| t.len() == 100).count() as u64;
    assert_eq!(cut, 2, "c1 and c3, of two exchanges, exceed 100 tokens");
    assert_eq!(row.noted.get("truncated"), Some(&cut));
    // A rerun finds the task done (its masks checked with its shards) and changes nothing.
    let again = tokenmill_pipelines::build(&cfg).unwrap();
    assert_eq!(again.stats.tasks_resumed, 1);
    assert_eq!(again.manifest, out.manifest);
    // A task whose mask file went missing is redone.
    let shard = &out.manifest.shards[0].name;
    std::fs::remove_file(d.join("ds").join(format!("{shard}.mask.bin"))).unwrap();
    let redo = tokenmill_pipelines::build(&cfg).unwrap();
    assert_eq!(redo.stats.tasks_resumed, 0);
    assert_eq!(redo.manifest, out.manifest);
    assert_eq!(documents(&d.join("ds")), docs);
}

#[test]
fn bad_conversations_and_failing_templates_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (id, turns) = conversation(2);
    write_lines(
        &d.join("chats.jsonl"),
        &[
            openai_line(&id, &turns),
            json!({"id": "forbidden-7", "messages": [{"role": "user", "content": "a forbidden question"}, {"role": "assistant", "content": "an answer"}]}),
        ],
    );
    // A template that refuses a conversation: the build stops, naming it and where it is.
    let tc = d.join("tokenizer_config.json");
    std::fs::write(
        &tc,
        json!({"chat_template": "{% for m in messages %}{% if 'forbidden' in m['content'] %}{{ raise_exception('no forbidden words') }}{% endif %}{{ m['content'] }}{% endfor %}"}).to_string(),
    )
    .unwrap();
    let cfg = sft_config(
        &[d.join("chats.jsonl")],
        &d.join("ds"),
        "openai",
        SftConfig {
            template: "tokenizer".into(),
            tokenizer_config: Some(tc),
            ..Default::default()
        },
    );
    let err = format!("{:#}", tokenmill_pipelines::build(&cfg).unwrap_err());
    assert!(
        err.contains("forbidden-7") && err.contains("chats.jsonl"),
        "{err}"
    );
    assert!(err.contains("no forbidden words"), "{err}");
    // An unknown role with on_error = "fail": the file, the line and the conversation.
    write_lines(
        &d.join("roles.jsonl"),
        &[
            openai_line(&id, &turns),
            json!({"id": "c-narrated", "messages": [{"role": "narrator", "content": "x"}]}),
        ],
    );
    let mut cfg = sft_config(&[d.join("roles.jsonl")], &d.join("ds2"), "openai", chatml());
    cfg.input.read.on_error = tokenmill_ingest::OnError::Fail;
    let err = format!("{:#}", tokenmill_pipelines::build(&cfg).unwrap_err());
    assert!(
        err.contains("roles.jsonl")
            && err.contains("record 2")
            && err.contains("c-narrated")
            && err.contains("unknown role `narrator`"),
        "{err}"
    );
    // [sft] without conversations, conversations without [sft], an unknown template.
    let mut cfg = sft_config(&[d.join("roles.jsonl")], &d.join("ds3"), "openai", chatml());
    cfg.input.read.chat = None;
    assert!(
        tokenmill_pipelines::build(&cfg)
            .unwrap_err()
            .to_string()
            .contains("[input.chat]")
    );
    let mut cfg = sft_config(&[d.join("roles.jsonl")], &d.join("ds4"), "openai", chatml());
    cfg.sft = None;
    assert!(
        tokenmill_pipelines::build(&cfg)
            .unwrap_err()
            .to_string()
            .contains("[sft]")
    );
    let cfg = sft_config(
        &[d.join("roles.jsonl")],
        &d.join("ds5"),
        "openai",
        SftConfig {
            template: "alpaca-v9".into(),
            ..Default::default()
        },
    );
    assert!(
        tokenmill_pipelines::build(&cfg)
            .unwrap_err()
            .to_string()
            .contains("unknown chat template `alpaca-v9`")
    );
}

/// The ids and text of `apply_chat_template(messages, tokenize=True)` for each conversation of
/// `convs` (OpenAI JSONL), from transformers loading `model_dir` (tokenizer.json +
/// tokenizer_config.json).
fn transformers_ids(py: &Path, model_dir: &Path, convs: &Path) -> Vec<(Vec<u32>, String)> {
    let o = std::process::Command::new(py)
        .arg(repo_root().join("tests/peers/chat_template.py"))
        .arg(model_dir)
        .arg(convs)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                serde_json::from_value(v["ids"].clone()).unwrap(),
                v["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs transformers (TOKENMILL_PEERS_PYTHON or .venv-peers): cargo test -p tokenmill-tests --test e2e -- --ignored sft::"]
fn chat_templates_give_the_ids_transformers_gives() {
    let py = tokenmill_tests::peers_python("transformers");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Conversations with several exchanges, a tool turn, non-ASCII text, padding whitespace;
    // written with each turn's role before its content (transformers renders a turn's keys in
    // the file's order, tokenmill in that one).
    let mut convs: Vec<Conv> = (0..6).map(conversation).collect();
    convs.push((
        "u1".into(),
        vec![
            ("user", "  Grüße aus Köln — 東京は晴れ? 🙂  ".into()),
            ("assistant", "Ja. 晴れです!\n\nZwei Absätze.".into()),
            ("user", "Und das Wetter-Tool?".into()),
            ("tool", "{\"temp\": 21, \"sky\": \"klar\"}".into()),
            ("assistant", "21 Grad, klar.".into()),
        ],
    ));
    #[derive(serde::Serialize)]
    struct Turn<'a> {
        role: &'a str,
        content: &'a str,
    }
    #[derive(serde::Serialize)]
    struct Line<'a> {
        id: &'a str,
        messages: Vec<Turn<'a>>,
    }
    let text: String = convs
        .iter()
        .map(|(id, t)| {
            let messages = t
                .iter()
                .map(|(role, content)| Turn { role, content })
                .collect();
            format!(
                "{}\n",
                serde_json::to_string(&Line { id, messages }).unwrap()
            )
        })
        .collect();
    std::fs::write(d.join("chats.jsonl"), text).unwrap();
    let gpt2 = data("tokenizers/gpt2.tokenizer.json");
    let ds3 = d.join("deepseek-v3.tokenizer.json");
    std::fs::write(
        &ds3,
        tokenmill_tests::gunzip(&data("tokenizers/deepseek-v3.tokenizer.json.gz")),
    )
    .unwrap();
    // (tokenizer, our template setting, the tokenizer_config.json transformers reads)
    let mut cases: Vec<(PathBuf, String, Value)> = Vec::new();
    for (name, src, bos, eos) in tokenmill_pipelines::sft::template::BUILTINS {
        let tok = if name == "deepseek-v3" {
            ds3.clone()
        } else {
            gpt2.clone()
        };
        let mut tc = json!({"tokenizer_class": "PreTrainedTokenizerFast", "chat_template": src});
        // The special tokens of the tokenizer used (transformers would add tokens that are not
        // in the vocabulary): DeepSeek-V3's own, GPT-2's end of text for the others.
        let (bos, eos) = if name == "deepseek-v3" {
            (bos, eos)
        } else {
            ("<|endoftext|>", "<|endoftext|>")
        };
        tc["bos_token"] = json!(bos);
        tc["eos_token"] = json!(eos);
        cases.push((tok, name.to_string(), tc));
    }
    let own: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("chat/tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    cases.push((gpt2.clone(), "tokenizer".into(), own));
    let mut compared = 0;
    for (k, (tok_path, template, tc)) in cases.iter().enumerate() {
        let model_dir = d.join(format!("model-{k}"));
        std::fs::create_dir_all(&model_dir).unwrap();
        std::fs::copy(tok_path, model_dir.join("tokenizer.json")).unwrap();
        std::fs::write(model_dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
        let theirs = transformers_ids(&py, &model_dir, &d.join("chats.jsonl"));
        let mut cfg = sft_config(
            &[d.join("chats.jsonl")],
            &d.join(format!("ds-{k}")),
            "openai",
            SftConfig {
                template: template.clone(),
                tokenizer_config: Some(model_dir.join("tokenizer_config.json")),
                ..Default::default()
            },
        );
        cfg.tokenizer.path = tok_path.clone();
        tokenmill_pipelines::build(&cfg).unwrap();
        let ours = documents(&d.join(format!("ds-{k}")));
        assert_eq!(ours.len(), theirs.len(), "{template}");
        let tok = TextTokenizer::load(tok_path, &TokenizeConfig::default()).unwrap();
        for ((id, ids, _), (their_ids, their_text)) in ours.iter().zip(&theirs) {
            assert_eq!(
                ids,
                their_ids,
                "{template} {id}: ours {:?}\ntheirs {their_text:?}",
                tok.decode(ids).unwrap()
            );
            compared += 1;
        }
    }
    eprintln!("{compared} conversations: identical token ids to transformers' apply_chat_template");
}

/// A synthetic instruction: reverse three letters, or add two digits.
fn instruction(k: u64) -> (String, String) {
    let mut x = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    if k.is_multiple_of(2) {
        let letters: Vec<char> = (0..3).map(|_| (b'a' + next(6) as u8) as char).collect();
        let q: Vec<String> = letters.iter().map(char::to_string).collect();
        let a: Vec<String> = letters.iter().rev().map(char::to_string).collect();
        (format!("reverse: {}", q.join(" ")), a.join(" "))
    } else {
        let (a, b) = (next(5), next(5));
        (format!("add: {a} {b}"), format!("{}", a + b))
    }
}

fn instruction_line(k: u64) -> Value {
    let (q, a) = instruction(k);
    json!({"id": format!("i{k}"), "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
}

/// (exact-match rate, mean gold log-likelihood) of model `run` on `held`: the answer and its
/// end marker, after the prompt, as the SFT encoder tokenizes and masks them.
fn answer_scores(
    run: &Path,
    enc: &tokenmill_pipelines::sft::SftEncoder,
    tok: &TextTokenizer,
    held: &[Value],
) -> (f64, f64) {
    use tokenmill_pipelines::sft::SftOutcome;
    let m = tokenmill_pipelines::eval::EvalModel::load(
        run,
        tokenmill_trainer::train::ComputeDevice::Cpu,
    )
    .unwrap();
    let (mut hits, mut ll) = (0usize, 0.0);
    for v in held {
        let messages: Vec<tokenmill_ingest::chat::Message> =
            serde_json::from_value(v["messages"].clone()).unwrap();
        let SftOutcome::Keep(e) = enc
            .encode(tok.inner(), &messages, "held", "held", 0)
            .unwrap()
        else {
            panic!("held-out conversation dropped")
        };
        let first = e.mask.iter().position(|&x| x == 1).unwrap();
        let r = m
            .loglikelihood(&e.ids[..first], &e.ids[first..], 256)
            .unwrap();
        hits += r.greedy as usize;
        ll += r.logprob;
    }
    (hits as f64 / held.len() as f64, ll / held.len() as f64)
}

#[test]
fn fine_tuning_a_pretrained_model_teaches_it_the_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A tokenizer with ChatML's markers, trained on Shakespeare and the instruction texts.
    let shakespeare = std::fs::read_to_string(data("text/tinyshakespeare.txt")).unwrap();
    let train: Vec<Value> = (0..3000).map(instruction_line).collect();
    let held: Vec<Value> = (100_000..100_064).map(instruction_line).collect();
    let mut corpus: Vec<String> = shakespeare.split("\n\n").map(str::to_string).collect();
    corpus.extend((0..500).map(|k| {
        let (q, a) = instruction(k);
        format!("{q}\n{a}")
    }));
    let opts = tokenmill_shards::bpe::BpeTrainConfig {
        vocab_size: 512,
        special_tokens: vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ],
        ..Default::default()
    };
    let tok_path = d.join("tokenizer.json");
    tokenmill_shards::bpe::train_bpe(corpus.iter(), &opts, &tok_path).unwrap();
    // Pretraining: a little Shakespeare.
    std::fs::write(d.join("pre.txt"), &shakespeare).unwrap();
    let mut pre = BuildConfig::default();
    pre.input.paths = vec![d.join("pre.txt").display().to_string()];
    pre.input.read.text_mode = tokenmill_ingest::TextMode::Blocks;
    pre.tokenizer.path = tok_path.clone();
    pre.output.dir = d.join("pre-ds");
    pre.run.quiet = true;
    tokenmill_pipelines::build(&pre).unwrap();
    // SFT data: the instructions as conversations, masks on the answers.
    write_lines(&d.join("sft.jsonl"), &train);
    let mut cfg = sft_config(
        &[d.join("sft.jsonl")],
        &d.join("sft-ds"),
        "openai",
        chatml(),
    );
    cfg.tokenizer.path = tok_path.clone();
    tokenmill_pipelines::build(&cfg).unwrap();
    let model =
        "[model]\npreset = \"tiny\"\nvocab_size = 512\nhidden_size = 64\nnum_attention_heads = 4\n";
    let run = |name: &str, body: &str| {
        let path = d.join(format!("{name}.toml"));
        std::fs::write(&path, body).unwrap();
        let cfg = tokenmill_pipelines::train::read_config(&path).unwrap();
        tokenmill_pipelines::train::train(cfg, false, true).unwrap();
        d.join(name)
    };
    let pre_run = run(
        "pre",
        &format!(
            "{model}\n[data]\ntrain = \"pre-ds\"\nseq_len = 64\nbatch = 16\n\n[lr]\npeak = 3e-3\nwarmup = 5\n\n[train]\nout = \"pre\"\nsteps = 40\ncheckpoint_every = 40\nthreads = 2\n"
        ),
    );
    // Fine-tuning: the pretrained weights (`[model] init`), documents packing with attention
    // reset (each conversation sees only itself, as at generation), loss on the answers only.
    let sft_run = run(
        "sft",
        "[model]\ninit = \"pre\"\n\n[data]\ntrain = \"sft-ds\"\nseq_len = 64\nbatch = 16\npacking = \"documents\"\nattention_reset = true\n\n[lr]\npeak = 5e-3\nmin = 3e-4\nwarmup = 20\nconstant = 380\ndecay = 200\n\n[train]\nout = \"sft\"\nsteps = 600\ncheckpoint_every = 600\nthreads = 2\n",
    );
    let first = super::train::log(&sft_run)[0].main_loss;
    let enc = tokenmill_pipelines::sft::SftEncoder::new(&chatml(), &tok_path).unwrap();
    let tok = TextTokenizer::load(&tok_path, &TokenizeConfig::default()).unwrap();
    let (em0, ll0) = answer_scores(&pre_run, &enc, &tok, &held);
    let (em1, ll1) = answer_scores(&sft_run, &enc, &tok, &held);
    eprintln!(
        "held-out exact match {em0:.3} → {em1:.3}; gold log-likelihood {ll0:.3} → {ll1:.3} nats; first SFT loss {first:.3}"
    );
    assert!(ll1 > ll0 + 3.0, "gold log-likelihood {ll0:.3} → {ll1:.3}");
    assert!(
        em1 >= 0.5 && em1 >= em0 + 0.4,
        "exact match {em0:.3} → {em1:.3}"
    );
}

#[test]
#[ignore = "needs megatron-core in .venv-peers (or TOKENMILL_PEERS_PYTHON; tests/peers/README.md): cargo test -p tokenmill-tests --test e2e -- --ignored sft::megatron"]
fn megatron_reads_the_loss_masks_beside_the_shards() {
    let py = tokenmill_tests::peers_python("megatron-core");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let lines: Vec<Value> = (0..40)
        .map(conversation)
        .map(|(id, t)| openai_line(&id, &t))
        .collect();
    write_lines(&d.join("chats.jsonl"), &lines);
    // Small shards, so that several shards carry masks.
    let mut cfg = sft_config(&[d.join("chats.jsonl")], &d.join("ds"), "openai", chatml());
    cfg.output.shard_bytes = 4 << 10;
    let built = tokenmill_pipelines::build(&cfg).unwrap();
    let shards = built.manifest.shards.len();
    assert!(shards >= 2, "{shards} shards");
    let o = std::process::Command::new(py)
        .arg(repo_root().join("tests/peers/megatron_read.py"))
        .arg(d.join("ds"))
        .args(["--dump-first", "40", "--dump-first-masks", "40"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let n = lines.len();
    let tokens: Vec<Vec<u32>> = serde_json::from_str(lines[n - 3]).unwrap();
    let masks: Vec<Vec<u8>> = serde_json::from_str(lines[n - 2]).unwrap();
    let summary: Value = serde_json::from_str(lines[n - 1]).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["mask_shards"], shards);
    let ours = documents(&d.join("ds"));
    assert_eq!(ours.len(), 40);
    assert_eq!(tokens.len(), 40);
    for (i, (id, t, m)) in ours.iter().enumerate() {
        assert_eq!(&tokens[i], t, "{id}: tokens as Megatron reads them");
        assert_eq!(&masks[i], m, "{id}: mask as Megatron reads it");
    }
    let trained: u64 = ours
        .iter()
        .map(|(_, _, m)| m.iter().map(|&b| b as u64).sum::<u64>())
        .sum();
    assert_eq!(summary["masked_in"], trained);
    assert!(trained > 0 && trained < built.manifest.tokens);
}
