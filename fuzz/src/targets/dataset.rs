//! Files of a built dataset: shards (`.idx` + `.bin`, loss masks), `manifest.json` (and what
//! `verify` checks it against), provenance tables, `tokenizer.json`.

use tokenmill_shards::fastbpe::FastBpe;
use tokenmill_shards::{Manifest, Shard};

/// Parts: `.idx`, `.bin`, `.mask.idx`, `.mask.bin` of one shard. Opens it, attaches the masks,
/// and reads documents, tokens and positions, checking them against the index.
pub fn shard(data: &[u8]) {
    let [idx, bin, midx, mbin] = crate::split(data, 4)[..] else {
        unreachable!("split gives 4 parts")
    };
    let dir = crate::scratch();
    for (ext, bytes) in [
        ("idx", idx),
        ("bin", bin),
        ("mask.idx", midx),
        ("mask.bin", mbin),
    ] {
        crate::scratch_file(&format!("s.{ext}"), bytes);
    }
    let prefix = dir.join("s");
    let Ok(mut shard) = Shard::open(&prefix) else {
        return;
    };
    let masked = shard.attach_masks(&prefix).is_ok();
    let index = shard.index();
    let n = shard.len();
    let mut sum = 0u64;
    for i in 0..n {
        sum += index.length(i);
    }
    assert_eq!(
        sum,
        shard.total_tokens(),
        "lengths do not add up to the total"
    );
    for i in (0..n).take(64) {
        let doc = shard.document(i).expect("a validated index's document");
        assert_eq!(doc.len() as u64, index.length(i));
        let start = index.token_start(i);
        let again = shard
            .tokens(start, start + index.length(i))
            .expect("in range");
        assert_eq!(doc, again, "document {i} read two ways differs");
        if masked {
            assert_eq!(
                shard.document_mask(i).map(<[u8]>::len),
                Some(doc.len()),
                "mask of document {i}"
            );
        }
    }
    let total = shard.total_tokens();
    for t in [0, total / 3, total / 2, total.saturating_sub(1), total] {
        match index.sequence_of_token(t) {
            Some(i) => {
                let s = index.token_start(i);
                assert!(
                    s <= t && t < s + index.length(i),
                    "token {t} placed in sequence {i} at {s}+{}",
                    index.length(i)
                );
            }
            None => assert!(t >= total, "token {t} of {total} not found"),
        }
    }
    assert!(shard.document(n).is_err());
}

/// Parts: `manifest.json`, `tokenizer.json`, and the first shard's `.idx`, `.bin` and
/// `.prov.parquet` (written under the name the manifest gives it, when that is a plain name).
/// Loads the manifest and runs `verify` on the whole directory.
pub fn manifest(data: &[u8]) {
    let [manifest, tokenizer, idx, bin, prov] = crate::split(data, 5)[..] else {
        unreachable!("split gives 5 parts")
    };
    let dir = crate::scratch().join("dataset");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dataset directory");
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).expect("write");
    write(tokenmill_shards::MANIFEST_FILE, manifest);
    write("tokenizer.json", tokenizer);
    let Ok(m) = Manifest::load(&dir) else {
        return;
    };
    if let Some(first) = m.shards.first() {
        write(&format!("{}.idx", first.name), idx);
        write(&format!("{}.bin", first.name), bin);
        write(&format!("{}.prov.parquet", first.name), prov);
    }
    if let Ok(report) = tokenmill_shards::verify(&dir) {
        let _ = report;
        // A dataset that verifies must also open and read.
        let ds = tokenmill_shards::Dataset::open(&dir).expect("a verified dataset opens");
        for s in 0..ds.manifest().shards.len() {
            let shard = ds.shard(s).expect("a verified shard opens");
            let rows = ds.provenance(s).expect("a verified provenance table reads");
            assert_eq!(rows.len(), shard.len(), "provenance rows ≠ documents");
        }
    }
}

/// A provenance table (`<shard>.prov.parquet`).
pub fn provenance(data: &[u8]) {
    let path = crate::scratch_file("p.prov.parquet", data);
    let _ = tokenmill_shards::provenance::read_provenance(&path);
}

/// Texts the two encoders are compared on: scripts, digits, spaces, contractions, emoji,
/// the GPT-2 end-of-text token and invalid-looking sequences.
const SAMPLES: &[&str] = &[
    "Hello, world! It's 2026-12-03 and we've got 3.14159 reasons.",
    "  leading spaces\tand\ttabs\n\nnew lines   trailing  ",
    "Ünïcödé — “quotes” and ½ fractions; 東京は日本の首都です。 Привет, мир! مرحبا",
    "emoji 🦀🚀 and combining e\u{301} and zero\u{200b}width",
    "code: fn main() { println!(\"{}\", x[0] + 1); } // 0x1f8b",
    "<|endoftext|> between <|endoftext|>texts",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// `tokenizer.json` bytes: Hugging Face's loader and the fast encoder's must not panic; when
/// both accept it, every sample the fast encoder encodes must get Hugging Face's ids.
pub fn tokenizer(data: &[u8]) {
    let hf = tokenmill_shards::tokenizer::parse_hf(data);
    let fast = FastBpe::from_json(data);
    let (Ok(hf), Ok(fast)) = (hf, fast) else {
        return;
    };
    for text in SAMPLES {
        let Some(ids) = fast.encode(text) else {
            continue;
        };
        let Ok(enc) = hf.encode_fast(*text, false) else {
            continue;
        };
        assert_eq!(
            ids,
            enc.get_ids(),
            "fast encoder ≠ Hugging Face on {text:?}"
        );
    }
}
