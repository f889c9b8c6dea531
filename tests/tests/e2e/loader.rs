//! The loader over a dataset built from real text: every sample's documents resolve to their
//! source records, and `inspect --sample` shows them.

use tokenmill_pipelines::config::BuildConfig;
use tokenmill_pipelines::inspect;
use tokenmill_shards::Dataset;
use tokenmill_shards::loader::{Loader, LoaderConfig, Packing, Shuffle};
use tokenmill_tests::{data, gunzip};

#[test]
fn samples_resolve_to_their_source_records() {
    let input = data("jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let mut cfg = BuildConfig::default();
    cfg.input.paths = vec![input.display().to_string()];
    cfg.tokenizer.path = data("tokenizers/gpt2.tokenizer.json");
    cfg.output.dir = out.clone();
    cfg.output.shard_bytes = 512 << 10;
    cfg.run.quiet = true;
    tokenmill_pipelines::build(&cfg).unwrap();
    let raw = gunzip(&input);
    let ds = Dataset::open(&out).unwrap();
    let tok = inspect::dataset_tokenizer(&ds).unwrap();

    for packing in [Packing::Windows, Packing::Documents] {
        let lc = LoaderConfig {
            seq_len: 256,
            global_batch: 4,
            packing,
            shuffle: Shuffle::Full,
            seed: 3,
            ..Default::default()
        };
        let mut loader = Loader::open(&out, lc.clone()).unwrap();
        for _ in 0..5 {
            for s in loader.next_batch().unwrap().samples {
                for (span, p) in loader.provenance(&s).unwrap() {
                    assert_eq!(p.shard, ds.manifest().shards[span.shard as usize].name);
                    let end = raw[p.offset as usize..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .unwrap();
                    let rec: serde_json::Value =
                        serde_json::from_slice(&raw[p.offset as usize..p.offset as usize + end])
                            .unwrap();
                    assert_eq!(rec["id"].as_str(), Some(p.id.as_str()));
                    let text = rec["text"].as_str().unwrap();
                    assert_eq!(xxhash_rust::xxh3::xxh3_64(text.as_bytes()), p.text_xxh3);
                    if span.doc_offset == 0 && span.len as u64 == p.tokens {
                        // A whole document: its tokens decode back to the source text + EOS.
                        let toks = &s.tokens[span.start as usize..(span.start + span.len) as usize];
                        assert_eq!(tok.decode(toks).unwrap(), format!("{text}<|endoftext|>"));
                    }
                }
            }
        }
        // `inspect --sample N` shows the documents of the stream's sample N.
        let (id, docs) = inspect::sample_docs(&ds, &tok, lc.clone(), 0, 2).unwrap();
        let mut again = Loader::open(
            &out,
            LoaderConfig {
                global_batch: 1,
                ..lc
            },
        )
        .unwrap();
        again.next_batch().unwrap();
        again.next_batch().unwrap();
        let third = again.next_batch().unwrap().samples.remove(0);
        assert_eq!(third.index, id);
        assert_eq!(docs.iter().map(|d| d.span).collect::<Vec<_>>(), third.spans);
    }
}
