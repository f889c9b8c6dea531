//! Development view of the multilingual snippet set: per page, the `with` snippets our output
//! misses and the `without` snippets it keeps (and trafilatura's, from a file written by
//! `tests/peers/extraction_peer.py`). The full benchmark, with the pipeline's charset
//! decoding, is `tokenmill bench extract`.
//!
//! ```sh
//! cargo run -p tokenmill-extract --example extract_snippets --profile perf -- \
//!     [--data DIR] [--peer traf.json] [--held] [--all] [--page NAME]
//! ```
//! Without `--held` or `--all` only the development part (not [`held_aside`]) is scored.

use std::io::Read;

use tokenmill_extract::eval::{SnippetCounts, held_aside, score_snippets};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let data = opt("--data").unwrap_or_else(|| {
        std::env::var("TOKENMILL_TEST_DATA").unwrap_or_else(|_| "../shared/data".into())
    });
    let held = args.iter().any(|a| a == "--held");
    let all = args.iter().any(|a| a == "--all");
    let page = opt("--page");
    let dir = std::path::Path::new(&data).join("extraction-multilingual");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("evaldata.json")).expect("evaldata"))
            .expect("json");
    let peer: Option<serde_json::Value> = opt("--peer")
        .map(|p| serde_json::from_slice(&std::fs::read(p).expect("peer file")).expect("peer json"));
    let (mut ours, mut theirs) = (SnippetCounts::default(), SnippetCounts::default());
    let mut n = 0;
    let mut secs = 0.0;
    let mut entries: Vec<_> = meta.as_object().expect("object").iter().collect();
    entries.sort_by_key(|(_, v)| v["file"].as_str().unwrap_or("").to_string());
    for (_url, v) in entries {
        let file = v["file"].as_str().expect("file");
        if let Some(p) = &page
            && !file.contains(p.as_str())
        {
            continue;
        }
        if !all && held_aside(file) != held {
            continue;
        }
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(
            std::fs::File::open(dir.join("html").join(format!("{file}.gz"))).expect("page"),
        )
        .read_to_end(&mut raw)
        .expect("gunzip");
        // Development only: Latin-1 for the pages that are not UTF-8 (the benchmark command
        // decodes as the pipeline does).
        let html = String::from_utf8(raw.clone())
            .unwrap_or_else(|_| raw.iter().map(|&b| b as char).collect());
        let strs = |k: &str| -> Vec<String> {
            v[k].as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (with, without) = (strs("with"), strs("without"));
        let t0 = std::time::Instant::now();
        let text = tokenmill_extract::extract(&html, &Default::default()).text;
        secs += t0.elapsed().as_secs_f64();
        let r = score_snippets(&text, &with, &without);
        ours.add(r.counts);
        n += 1;
        let t = peer.as_ref().map(|p| {
            let tt = p["modes"]["default"]["texts"]["multilingual"][file]
                .as_str()
                .unwrap_or("");
            score_snippets(tt, &with, &without)
        });
        if let Some(t) = &t {
            theirs.add(t.counts);
        }
        if !r.missing.is_empty() || !r.unwanted.is_empty() || page.is_some() {
            println!(
                "{file}  ours tp{} fn{} fp{}{}  ({} chars)",
                r.counts.tp,
                r.counts.fn_,
                r.counts.fp,
                t.as_ref()
                    .map(|t| format!(
                        " | traf tp{} fn{} fp{}",
                        t.counts.tp, t.counts.fn_, t.counts.fp
                    ))
                    .unwrap_or_default(),
                text.chars().count()
            );
            let refs: Vec<&str> = r.missing.iter().map(|s| s.as_str()).collect();
            let why = tokenmill_extract::eval::explain(&html, &Default::default(), &refs);
            for (s, w) in r.missing.iter().zip(why) {
                println!("    missing: {}", s.chars().take(70).collect::<String>());
                println!("        why: {w:?}");
            }
            let refs: Vec<&str> = r.unwanted.iter().map(|s| s.as_str()).collect();
            let why = tokenmill_extract::eval::explain(&html, &Default::default(), &refs);
            for (s, w) in r.unwanted.iter().zip(why) {
                println!("    unwanted: {}", s.chars().take(70).collect::<String>());
                println!("        why: {w:?}");
            }
        }
        if page.is_some() {
            println!("---\n{text}\n---");
        }
    }
    let show = |name: &str, c: SnippetCounts| {
        let p = c.prf();
        println!(
            "{name:<12} pages {n:>3}  P {:.3} R {:.3} F1 {:.3}  (tp {} fn {} fp {} tn {})",
            p.p, p.r, p.f1, c.tp, c.fn_, c.fp, c.tn
        );
    };
    show("tokenmill", ours);
    println!(
        "tokenmill    {:.0} pages/s (one pass, one core)",
        n as f64 / secs
    );
    if peer.is_some() {
        show("trafilatura", theirs);
    }
}
