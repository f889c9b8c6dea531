//! Where the fast encoder's time goes: pre-tokenization alone, then the whole encode, on a
//! JSONL(.gz) corpus. `cargo run --profile perf -p tokenmill-shards --example fastbpe_profile
//! -- TOKENIZER CORPUS`.

use std::io::Read;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let json = tokenmill_shards::tokenizer::read_tokenizer_json(std::path::Path::new(&args[1]))
        .expect("tokenizer");
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&args[2]).expect("corpus"))
        .read_to_end(&mut raw)
        .expect("gzip");
    let texts: Vec<String> = String::from_utf8_lossy(&raw)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(String::from))
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    use tokenmill_shards::fastbpe::pretok::SplitRule;
    for pat in [
        r"\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
    ] {
        let r = SplitRule::new(pat).expect("compiles");
        let t0 = Instant::now();
        let mut n = 0usize;
        for t in &texts {
            r.split(t, &mut |_| n += 1);
        }
        println!(
            "{pat}: {n} pieces, {:.1} MB/s",
            bytes as f64 / 1e6 / t0.elapsed().as_secs_f64()
        );
    }
    {
        let fast = tokenmill_shards::fastbpe::FastBpe::from_json(&json).expect("fast form");
        let mut seen = std::collections::HashSet::new();
        let mut lens = [0usize; 4];
        for t in &texts {
            fast.for_each_piece(t, &mut |p: &str| {
                lens[p.len().min(3)] += 1;
                seen.insert(p.to_string());
            });
        }
        println!(
            "{} distinct pieces; pieces of 1, 2, 3+ bytes: {:?}",
            seen.len(),
            &lens[1..]
        );
    }
    for round in 0..2 {
        let fast = tokenmill_shards::fastbpe::FastBpe::from_json(&json).expect("fast form");
        let t0 = Instant::now();
        let mut pieces = 0usize;
        for t in &texts {
            fast.for_each_piece(t, &mut |_| pieces += 1);
        }
        let pre = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let tokens: usize = texts
            .iter()
            .map(|t| fast.encode(t).map_or(0, |v| v.len()))
            .sum();
        let all = t0.elapsed().as_secs_f64();
        println!(
            "round {round}: {} MB, {pieces} pieces: pre-tokenize {:.1} MB/s; encode {tokens} tokens {:.1} MB/s",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / pre,
            bytes as f64 / 1e6 / all
        );
    }
}
