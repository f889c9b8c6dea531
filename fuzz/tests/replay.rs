//! CI's share of the fuzzing: every target runs over its seeds (built from the real files of
//! `../shared/data`), the corpus a campaign saved (`fuzz/corpus/<target>/`) and the inputs that
//! once crashed it (`fuzz/regressions/<target>/`), for at most 20 s per target. A panic names
//! the target and the file.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BUDGET: Duration = Duration::from_secs(20);

fn saved(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file() && p.file_name().is_none_or(|n| n != "README.md"));
    v.sort();
    v
}

#[test]
fn every_target_survives_its_seeds_corpus_and_regressions() {
    let seeds = tokenmill_fuzz::seeds::build(&tokenmill_tests::data_dir());
    let mut report = Vec::new();
    for t in tokenmill_fuzz::TARGETS {
        // Regressions and seeds always run; the saved corpus as far as the budget goes.
        let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
        let read = |p: &PathBuf| (p.display().to_string(), std::fs::read(p).expect("read"));
        inputs.extend(saved("regressions", t.name).iter().map(read));
        let n_seeds = seeds.get(t.name).map_or(0, Vec::len);
        assert!(n_seeds > 0, "target {} has no seeds", t.name);
        for (i, s) in seeds[t.name].iter().enumerate() {
            inputs.push((format!("seed {i}"), s.clone()));
        }
        let must = inputs.len();
        inputs.extend(saved("corpus", t.name).iter().map(read));
        let start = Instant::now();
        let mut ran = 0;
        for (name, bytes) in &inputs {
            if ran >= must && start.elapsed() > BUDGET {
                break;
            }
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(bytes)));
            assert!(r.is_ok(), "fuzz target {} panicked on {name}", t.name);
            ran += 1;
        }
        report.push(format!(
            "{:<11} {ran}/{} inputs in {:.1} s",
            t.name,
            inputs.len(),
            start.elapsed().as_secs_f64()
        ));
    }
    println!("{}", report.join("\n"));
}

/// The seeds start the campaigns deep in the parsers: the seed dataset verifies, the seed
/// checkpoint loads, the seed shards open with their masks, and the cut-down GPT-2 tokenizer
/// is taken by both encoders.
#[test]
fn the_seeds_are_valid_inputs() {
    let seeds = tokenmill_fuzz::seeds::build(&tokenmill_tests::data_dir());
    let dir = tokenmill_fuzz::scratch().join("valid-seeds");
    std::fs::create_dir_all(&dir).unwrap();

    let parts = tokenmill_fuzz::split(&seeds["manifest"][0], 5);
    let m: serde_json::Value = serde_json::from_slice(parts[0]).unwrap();
    let name = m["shards"][0]["name"].as_str().unwrap();
    std::fs::write(dir.join("manifest.json"), parts[0]).unwrap();
    std::fs::write(dir.join("tokenizer.json"), parts[1]).unwrap();
    for (ext, p) in [
        ("idx", parts[2]),
        ("bin", parts[3]),
        ("prov.parquet", parts[4]),
    ] {
        std::fs::write(dir.join(format!("{name}.{ext}")), p).unwrap();
    }
    let report = tokenmill_shards::verify(&dir);
    assert!(
        report.is_ok(),
        "the seed dataset does not verify: {report:?}"
    );

    let parts = tokenmill_fuzz::split(&seeds["checkpoint"][0], 5);
    let ck = dir.join("checkpoint");
    std::fs::create_dir_all(&ck).unwrap();
    for (f, p) in tokenmill_fuzz::targets::config::CHECKPOINT_FILES
        .iter()
        .zip(&parts)
    {
        std::fs::write(ck.join(f), p).unwrap();
    }
    let model = tokenmill_fuzz::targets::config::micro_model();
    let mut params = vec![0f32; model.layout.len()];
    let mut opt = tokenmill_trainer::optim::AdamW::new(Default::default(), &model.layout);
    let st = tokenmill_trainer::train::load_checkpoint(&ck, &model, &mut params, &mut opt);
    assert_eq!(st.expect("the seed checkpoint loads").step, 7);
    assert!(params.iter().any(|&p| p != 0.0));

    for s in &seeds["shard"] {
        let parts = tokenmill_fuzz::split(s, 4);
        for (ext, p) in ["idx", "bin", "mask.idx", "mask.bin"].iter().zip(&parts) {
            std::fs::write(dir.join(format!("s.{ext}")), p).unwrap();
        }
        let mut shard = tokenmill_shards::Shard::open(&dir.join("s")).expect("seed shard");
        assert!(!shard.is_empty());
        if !parts[2].is_empty() {
            shard.attach_masks(&dir.join("s")).expect("seed masks");
        }
    }

    let gpt2 = &seeds["tokenizer"][0];
    assert!(tokenizers::Tokenizer::from_bytes(gpt2).is_ok());
    let fast = tokenmill_shards::fastbpe::FastBpe::from_json(gpt2).expect("fast encoder");
    assert!(fast.encode("Hello there, world").is_some());
    let _ = std::fs::remove_dir_all(&dir);
}
