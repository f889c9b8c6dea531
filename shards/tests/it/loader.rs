//! The loader: exact epochs, elastic determinism, resumption, blending, exclusion, bad input.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use tokenmill_shards::loader::{
    DatasetSpec, Loader, LoaderConfig, LoaderState, Packing, Prefetcher, Sample, Shuffle,
};
use tokenmill_shards::{DocSource, Manifest, ShardWriter, TokenDtype, TokenizerIdentity};

const EOS: u32 = 7;

/// Writes a dataset of `shards` shards with documents of the given lengths (cycled), token
/// values derived from the global position so content can be checked. Returns the total tokens.
fn write_dataset(
    dir: &Path,
    shards: usize,
    docs_per_shard: usize,
    lens: &[u64],
    tokenizer_sha: &str,
) -> u64 {
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = Vec::new();
    let mut k = 0usize;
    let mut global = 0u64;
    for s in 0..shards {
        let name = format!("s{s:03}");
        let mut w = ShardWriter::create(dir, &name, TokenDtype::Uint16).unwrap();
        for d in 0..docs_per_shard {
            let len = lens[k % lens.len()];
            k += 1;
            let mut toks: Vec<u32> = (0..len.saturating_sub(1))
                .map(|i| 100 + ((global + i) % 60_000) as u32)
                .collect();
            if len > 0 {
                toks.push(EOS);
            }
            global += len;
            let id = format!("doc-{s}-{d}");
            w.push(
                &toks,
                DocSource {
                    id: &id,
                    source: "synthetic",
                    offset: (s * docs_per_shard + d) as u64,
                    url: None,
                    text_xxh3: 0,
                    lang: None,
                    lang_score: None,
                },
            )
            .unwrap();
        }
        entries.push(w.finish().unwrap());
    }
    // A stand-in tokenizer.json, distinct per `tokenizer_sha`, whose sha256 the manifest records
    // (what `verify` checks).
    let tok_json = format!("{{\"stand_in_for\": \"{tokenizer_sha}\"}}");
    std::fs::write(dir.join("tokenizer.json"), &tok_json).unwrap();
    let tok = TokenizerIdentity {
        file: "t.json".into(),
        sha256: tokenmill_shards::checksum::sha256_hex(tok_json.as_bytes()),
        vocab_size: 65_536,
        eos_token: Some("<eos>".into()),
        eos_id: Some(EOS),
        engine: "hf".into(),
    };
    Manifest::new(tok, TokenDtype::Uint16, entries)
        .store(dir)
        .unwrap();
    global
}

fn cfg(seq_len: u64, global_batch: u64, packing: Packing) -> LoaderConfig {
    LoaderConfig {
        seq_len,
        global_batch,
        packing,
        shuffle: Shuffle::Full,
        seed: 99,
        ..Default::default()
    }
}

/// Global position of each target of a sample that counts in the loss.
fn target_positions(l: &Loader, s: &Sample) -> Vec<(u32, u64, u64)> {
    let ds = l.dataset(s.source);
    let _ = ds;
    let mut out = Vec::new();
    for sp in &s.spans {
        for k in 0..sp.len as u64 {
            let pos_in_sample = sp.start as u64 + k;
            if pos_in_sample >= 1 && s.loss_mask[pos_in_sample as usize - 1] == 1 {
                out.push((sp.shard, sp.doc, sp.doc_offset + k));
            }
        }
    }
    out
}

#[test]
fn windows_epoch_serves_every_target_once() {
    let dir = tempfile::tempdir().unwrap();
    let total = write_dataset(dir.path(), 3, 40, &[5, 1, 17, 64, 0, 33, 2], "a");
    let seq = 16;
    let mut l = Loader::open(dir.path(), cfg(seq, 4, Packing::Windows)).unwrap();
    let n = l.epoch_len();
    assert_eq!(n, (total - 1) / seq);
    let mut seen = BTreeMap::new();
    let mut served = 0;
    while served < n {
        for s in l.next_batch().unwrap().samples {
            if l.state().epoch == 0 || served < n {
                for t in target_positions(&l, &s) {
                    *seen.entry(t).or_insert(0) += 1;
                }
            }
            served += 1;
            if served == n {
                break;
            }
        }
    }
    assert_eq!(seen.len() as u64, n * seq, "targets 1..=n*seq, each once");
    assert!(seen.values().all(|&c| c == 1));
}

#[test]
fn sample_tokens_are_the_shard_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 2, 30, &[9, 40, 3, 120], "a");
    for packing in [Packing::Windows, Packing::Documents] {
        let l = Loader::open(dir.path(), cfg(32, 2, packing)).unwrap();
        let shards: Vec<_> = (0..2).map(|s| l.dataset(0).shard(s).unwrap()).collect();
        for id in 0..l.samples_of(0) {
            let s = l.sample(0, id);
            assert_eq!(s.tokens.len(), 33);
            for sp in &s.spans {
                let doc = shards[sp.shard as usize].document(sp.doc as usize).unwrap();
                let want = &doc[sp.doc_offset as usize..(sp.doc_offset + sp.len as u64) as usize];
                assert_eq!(
                    &s.tokens[sp.start as usize..(sp.start + sp.len) as usize],
                    want,
                    "{packing:?} sample {id}"
                );
            }
        }
    }
}

#[test]
fn document_packing_keeps_short_documents_whole_and_covers_every_target() {
    let dir = tempfile::tempdir().unwrap();
    let lens = [5u64, 1, 17, 64, 0, 33, 2, 200, 9, 31, 32, 33];
    write_dataset(dir.path(), 2, 50, &lens, "a");
    let seq = 32;
    let l = Loader::open(dir.path(), cfg(seq, 1, Packing::Documents)).unwrap();
    let ds = l.dataset(0);
    let mut pieces: BTreeMap<(u32, u64), Vec<(u64, u32)>> = BTreeMap::new();
    let mut targets: BTreeMap<(u32, u64, u64), u32> = BTreeMap::new();
    for id in 0..l.samples_of(0) {
        let s = l.sample(0, id);
        let used: u32 = s.spans.iter().map(|sp| sp.len).sum();
        assert!(used as u64 <= seq + 1);
        // Padding is masked.
        assert!(
            s.loss_mask[used.max(1) as usize - 1..]
                .iter()
                .all(|&m| m == 0)
        );
        for sp in &s.spans {
            pieces
                .entry((sp.shard, sp.doc))
                .or_default()
                .push((sp.doc_offset, sp.len));
        }
        for t in target_positions(&l, &s) {
            *targets.entry(t).or_insert(0) += 1;
        }
    }
    for s in 0..2usize {
        let shard = ds.shard(s).unwrap();
        for d in 0..shard.len() {
            let len = shard.index().length(d);
            let p = pieces.get(&(s as u32, d as u64));
            if len == 0 {
                assert!(p.is_none());
                continue;
            }
            let p = p.unwrap();
            if len <= seq + 1 {
                assert_eq!(
                    p,
                    &vec![(0, len as u32)],
                    "a document that fits is never split"
                );
            } else {
                assert!(p.len() > 1);
            }
            // Every token but the first is a target exactly once.
            for k in 1..len {
                assert_eq!(
                    targets.get(&(s as u32, d as u64, k)),
                    Some(&1),
                    "shard {s} doc {d} token {k}"
                );
            }
        }
    }
}

fn stream(l: &mut Loader, steps: usize) -> Vec<Vec<(usize, u64, u64)>> {
    (0..steps)
        .map(|_| {
            l.next_batch()
                .unwrap()
                .samples
                .iter()
                .map(|s| (s.source, s.epoch, s.index))
                .collect()
        })
        .collect()
}

#[test]
fn global_order_does_not_depend_on_world_size() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 3, 40, &[50, 7, 90], "a");
    let global = 8;
    let gather = |world: u64| -> Vec<Vec<(usize, u64, u64)>> {
        let mut per_rank: Vec<Vec<Vec<(usize, u64, u64)>>> = (0..world)
            .map(|rank| {
                let mut c = cfg(24, global, Packing::Documents);
                c.rank = rank;
                c.world = world;
                stream(&mut Loader::open(dir.path(), c).unwrap(), 30)
            })
            .collect();
        (0..30)
            .map(|step| {
                per_rank
                    .iter_mut()
                    .flat_map(|r| std::mem::take(&mut r[step]))
                    .collect()
            })
            .collect()
    };
    let (one, four, eight) = (gather(1), gather(4), gather(8));
    assert_eq!(one, four);
    assert_eq!(four, eight);
    // Ranks are disjoint within a step.
    for step in &eight {
        let set: HashSet<_> = step.iter().collect();
        assert_eq!(set.len(), step.len());
    }
}

#[test]
fn resumed_stream_equals_the_uninterrupted_one_across_epochs() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 2, 20, &[30, 11, 4], "a");
    let c = cfg(16, 4, Packing::Windows);
    let mut a = Loader::open(dir.path(), c.clone()).unwrap();
    let epoch_len = a.epoch_len();
    let steps = (3 * epoch_len / 4) as usize + 3; // about three epochs
    let full = stream(&mut a, steps);
    let mut b = Loader::open(dir.path(), c.clone()).unwrap();
    let cut = steps / 2 + 1;
    let head = stream(&mut b, cut);
    let saved: LoaderState =
        serde_json::from_str(&serde_json::to_string(&b.state()).unwrap()).unwrap();
    assert!(
        saved.epoch >= 1,
        "the cut is past an epoch boundary: {saved:?}"
    );
    let mut r = Loader::open(dir.path(), c).unwrap();
    r.resume(saved);
    let tail = stream(&mut r, steps - cut);
    assert_eq!([head, tail].concat(), full);
    // Epochs differ in order but hold the same samples.
    let e0: Vec<u64> = full
        .iter()
        .flatten()
        .filter(|s| s.1 == 0)
        .map(|s| s.2)
        .collect();
    let e1: Vec<u64> = full
        .iter()
        .flatten()
        .filter(|s| s.1 == 1)
        .map(|s| s.2)
        .collect();
    assert_ne!(e0[..8], e1[..8]);
    let (mut s0, mut s1) = (e0.clone(), e1[..e0.len().min(e1.len())].to_vec());
    s0.sort_unstable();
    s1.sort_unstable();
    assert_eq!(s0, (0..epoch_len).collect::<Vec<_>>());
    assert_eq!(s1.len() as u64, epoch_len.min(s1.len() as u64));
}

#[test]
fn prefetcher_serves_the_same_stream() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 2, 30, &[30, 11, 4], "a");
    let c = cfg(16, 4, Packing::Documents);
    let direct = stream(&mut Loader::open(dir.path(), c.clone()).unwrap(), 20);
    let mut p = Prefetcher::new(Loader::open(dir.path(), c).unwrap(), 3);
    let got: Vec<Vec<_>> = (0..20)
        .map(|_| {
            p.next_batch()
                .unwrap()
                .samples
                .iter()
                .map(|s| (s.source, s.epoch, s.index))
                .collect()
        })
        .collect();
    assert_eq!(got, direct);
    assert_eq!(p.state().step, 20);
    let mut back = p.into_loader();
    assert_eq!(back.state().step, 20);
    let next = back.next_batch().unwrap();
    assert_eq!(next.step, 20);
}

#[test]
fn blends_are_exact_and_refuse_other_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    write_dataset(&a, 1, 50, &[40], "same");
    write_dataset(&b, 1, 50, &[20], "same");
    write_dataset(&c, 1, 50, &[20], "other");
    let specs = [
        DatasetSpec {
            dir: a.clone(),
            weight: 3.0,
        },
        DatasetSpec {
            dir: b.clone(),
            weight: 1.0,
        },
    ];
    let mut conf = cfg(8, 10, Packing::Windows);
    conf.blend_period = 100;
    let mut l = Loader::open_blend(&specs, conf.clone()).unwrap();
    let mut counts = [0u64; 2];
    for _ in 0..40 {
        for s in l.next_batch().unwrap().samples {
            counts[s.source] += 1;
        }
    }
    assert_eq!(counts, [300, 100]);
    let err = Loader::open_blend(
        &[
            DatasetSpec {
                dir: a,
                weight: 1.0,
            },
            DatasetSpec {
                dir: c.clone(),
                weight: 1.0,
            },
        ],
        conf,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("tokenized differently") && err.contains(&c.display().to_string()),
        "{err}"
    );
}

#[test]
fn excluded_documents_are_masked_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 1, 30, &[20, 9, 14], "a");
    let ex = vec!["doc-0-4".to_string(), "doc-0-10".to_string()];
    // Windows: the excluded documents' tokens never count in the loss.
    let mut c = cfg(16, 1, Packing::Windows);
    c.exclude = ex.clone();
    let l = Loader::open(dir.path(), c).unwrap();
    assert_eq!(l.excluded(0).len(), 2);
    let mut masked = 0;
    for id in 0..l.samples_of(0) {
        let s = l.sample(0, id);
        for (shard, doc, _) in target_positions(&l, &s) {
            assert!(!l.excluded(0).contains(&(shard, doc)));
        }
        masked += s
            .spans
            .iter()
            .filter(|sp| l.excluded(0).contains(&(sp.shard, sp.doc)))
            .count();
    }
    assert!(masked > 0);
    // Documents: samples holding them are skipped.
    let mut c = cfg(16, 2, Packing::Documents);
    c.exclude = ex;
    c.shuffle = Shuffle::None;
    let mut l = Loader::open(dir.path(), c).unwrap();
    let n = l.epoch_len();
    let mut served = 0;
    while l.state().epoch == 0 {
        for s in l.next_batch().unwrap().samples {
            assert!(
                s.spans
                    .iter()
                    .all(|sp| !l.excluded(0).contains(&(sp.shard, sp.doc)))
            );
            served += 1;
        }
    }
    assert!(served < n + 2, "{served} of {n}");
}

#[test]
fn bad_datasets_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    write_dataset(&d, 2, 10, &[20], "a");
    // Smaller than one sample.
    let err = Loader::open(&d, cfg(10_000, 1, Packing::Windows))
        .unwrap_err()
        .to_string();
    assert!(err.contains("make no sample"), "{err}");
    // Global batch not a multiple of the world size.
    let mut c = cfg(8, 3, Packing::Windows);
    c.world = 2;
    assert!(Loader::open(&d, c).is_err());
    // A newer manifest version.
    let mpath = d.join("manifest.json");
    let orig = std::fs::read_to_string(&mpath).unwrap();
    std::fs::write(
        &mpath,
        orig.replace("\"format_version\": 1", "\"format_version\": 2"),
    )
    .unwrap();
    let err = Loader::open(&d, cfg(8, 1, Packing::Windows))
        .unwrap_err()
        .to_string();
    assert!(err.contains("manifest.json") && err.contains("v2"), "{err}");
    std::fs::write(&mpath, &orig).unwrap();
    // A shard whose size disagrees with its index.
    let bin = d.join("s001.bin");
    let b = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &b[..b.len() - 2]).unwrap();
    let err = Loader::open(&d, cfg(8, 1, Packing::Windows))
        .unwrap_err()
        .to_string();
    assert!(err.contains("s001.idx"), "{err}");
    // A checksum mismatch with verify on.
    let mut flipped = b.clone();
    flipped[3] ^= 1;
    std::fs::write(&bin, &flipped).unwrap();
    let mut c = cfg(8, 1, Packing::Windows);
    c.verify = true;
    let err = Loader::open(&d, c).unwrap_err().to_string();
    assert!(
        err.contains("s001.bin") && err.contains("checksum"),
        "{err}"
    );
    // A missing shard.
    std::fs::remove_file(&bin).unwrap();
    let err = Loader::open(&d, cfg(8, 1, Packing::Windows))
        .unwrap_err()
        .to_string();
    assert!(err.contains("s001.bin"), "{err}");
}

#[test]
fn a_simulated_14_8t_token_dataset_in_10000_shards_serves_random_batches() {
    use tokenmill_shards::loader::simulate::write_sparse_dataset;
    let dir = tempfile::tempdir().unwrap();
    let (shards, per_shard) = (10_000usize, 1_480_000_000u64);
    let m = write_sparse_dataset(dir.path(), shards, per_shard, 2, TokenDtype::Uint16).unwrap();
    assert_eq!(m.tokens, 14_800_000_000_000);
    let mut c = cfg(4096, 16, Packing::Windows);
    c.seed = 5;
    let mut l = Loader::open(dir.path(), c).unwrap();
    assert_eq!(l.epoch_len(), (m.tokens - 1) / 4096);
    let mut shards_hit = HashSet::new();
    for _ in 0..8 {
        for s in l.next_batch().unwrap().samples {
            assert_eq!(s.tokens.len(), 4097);
            assert_eq!(s.spans.iter().map(|sp| sp.len as u64).sum::<u64>(), 4097);
            // Windows: sample i starts at global token i * 4096.
            let sp = s.spans[0];
            let global = sp.shard as u64 * per_shard + sp.doc * (per_shard / 2) + sp.doc_offset;
            assert_eq!(global, s.index * 4096);
            shards_hit.insert(sp.shard);
        }
    }
    assert!(
        shards_hit.len() > 100,
        "a full shuffle spreads over shards: {}",
        shards_hit.len()
    );
    // Document packing over the same shards: long documents are chunked arithmetically.
    let l = Loader::open(dir.path(), cfg(4096, 16, Packing::Documents)).unwrap();
    let per_doc_chunks = (per_shard / 2 - 4097).div_ceil(4096) + 1;
    assert_eq!(l.epoch_len(), shards as u64 * 2 * per_doc_chunks);
    let s = l.sample(0, l.epoch_len() - 1);
    assert_eq!((s.spans[0].shard, s.spans[0].doc), (9_999, 1));
}

#[test]
fn a_dataset_smaller_than_one_batch_wraps_into_the_next_epochs() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 1, 4, &[10], "a");
    let mut l = Loader::open(dir.path(), cfg(8, 8, Packing::Windows)).unwrap();
    assert_eq!(l.epoch_len(), 4);
    let b = l.next_batch().unwrap();
    let epochs: Vec<u64> = b.samples.iter().map(|s| s.epoch).collect();
    assert_eq!(epochs, vec![0, 0, 0, 0, 1, 1, 1, 1]);
    for e in 0..2 {
        let mut ids: Vec<u64> = b
            .samples
            .iter()
            .filter(|s| s.epoch == e)
            .map(|s| s.index)
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![0, 1, 2, 3], "each epoch is a permutation");
    }
    assert_eq!(
        l.state(),
        LoaderState {
            epoch: 2,
            samples_consumed: 0,
            step: 1
        }
    );
}

#[test]
fn document_packing_replays_the_same_samples_whatever_the_checkpoint_spacing() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(
        dir.path(),
        2,
        60,
        &[5, 1, 17, 64, 0, 33, 2, 200, 9, 31, 32, 33, 500],
        "a",
    );
    let open = |every: u64| {
        let mut c = cfg(32, 1, Packing::Documents);
        c.checkpoint_every = every;
        Loader::open(dir.path(), c).unwrap()
    };
    let (a, b, c) = (open(1), open(7), open(256));
    assert_eq!(a.samples_of(0), b.samples_of(0));
    assert_eq!(a.samples_of(0), c.samples_of(0));
    for id in (0..a.samples_of(0)).rev() {
        let s = a.sample(0, id);
        assert_eq!(s, b.sample(0, id), "sample {id}");
        assert_eq!(s, c.sample(0, id), "sample {id}");
    }
}

#[test]
fn skipping_batches_equals_drawing_and_dropping_them() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), 2, 30, &[30, 11, 4], "a");
    for (packing, exclude) in [
        (Packing::Windows, vec![]),
        (Packing::Documents, vec![]),
        (
            Packing::Documents,
            vec!["doc-0-3".to_string(), "doc-1-7".to_string()],
        ),
    ] {
        let mut c = cfg(16, 4, packing);
        c.exclude = exclude;
        let mut drawn = Loader::open(dir.path(), c.clone()).unwrap();
        let all = stream(&mut drawn, 40);
        let mut skipped = Loader::open(dir.path(), c).unwrap();
        stream(&mut skipped, 5);
        skipped.skip_batches(20).unwrap();
        assert_eq!(skipped.state().step, 25);
        assert_eq!(stream(&mut skipped, 15), all[25..], "{packing:?}");
    }
}
