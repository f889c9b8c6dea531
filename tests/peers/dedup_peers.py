#!/usr/bin/env python3
"""MinHash-LSH peers for tokenmill's fuzzy dedup: datasketch and datatrove.

usage: python dedup_peers.py --texts TEXTS.jsonl [--bands 14] [--rows 8] [--ngram 5]
                             [--seed 42] [--max-shingles 100000]
                             [--pairs-out PAIRS.jsonl] [--compare OURS.jsonl]
                             [--truth TEXTS.truth.jsonl] [--exact-all]
                             [--emulate-tokenmill OUT.jsonl]
                             [--repeat 3] [--no-update-loop] [--no-datatrove] [--json]

TEXTS.jsonl: one JSON object per line with a string "text"; document number =
0-based index of the non-blank lines (tokenmill's JSONL reader skips blank
lines without counting them; a line without a string "text" is an error here,
since tokenmill would skip it and renumber).

Shingles replicate tokenmill (dedup/src/normalize.rs + shingle.rs, default
config) as strings: NFKC; ASCII punctuation, U+2000-206F, U+3000-303F,
U+FF01-FF0F, U+FF1A-FF20 and «»¡¿· separate words; Unicode White_Space (what
Rust's char::is_whitespace tests) separates words; everything else is
lowercased char by char; one space between words. Words: space-separated,
except that each character of an unspaced script (kana, CJK, Hangul
syllables, Thai) is a word of its own. Shingles: n consecutive words joined by
" ", the first --max-shingles windows only; a doc of 1..n-1 words has one
shingle (all its words); an empty doc has none and is skipped.

(1) datasketch: MinHash(num_perm=bands*rows, seed) per document, timed three
    ways (best of --repeat, single process):
      update_batch: MinHash(num_perm, seed) + m.update_batch(shingle bytes)
      bulk:         MinHash.bulk(all shingle-byte lists, num_perm, seed)
      update_loop:  MinHash(num_perm, seed) + m.update(b) for each shingle
    Shingle strings are computed and utf-8 encoded before the clock starts
    (that Python shingling is timed separately, "shingling").
    MinHashLSH(num_perm, params=(bands, rows)): insert every doc, query every
    doc; candidate pairs (i < j) with their exact Jaccard.
(2) datatrove MinhashDedupSignature (MinhashConfig n_grams=ngram,
    num_buckets=bands, hashes_per_bucket=rows, seed; English spaCy word
    tokenizer, xxhash64, 64-bit hashes), timed as
      text_to_signature: get_shingles(text) + get_signature() in memory
                         (its own normalisation + tokenizer + hashing)
      shingles_only / signature_only: the two halves of that
      step_run: MinhashDedupSignature.run() over Document objects, writing
                the 14 bucket files to a temp folder and sorting them.
    datatrove normalises and tokenises differently (simplify_text: numbers,
    weekdays, months folded; spaCy tokens; docs shorter than n tokens get no
    signature), so its shingle sets differ: it is a speed peer. Its LSH
    candidate pairs (same bands over its signatures) are counted for context.
(3) --compare OURS.jsonl ({"a": i, "b": j} per line): pair-set overlap with
    datasketch, and agreement by true-Jaccard bin. Without --exact-all the
    pairs in a bin are the union of both pair sets; with --exact-all they are
    all pairs of documents (exact Jaccard of every pair through an inverted
    index), so the fractions are recalls. p_mid = 1-(1-s^r)^b at the bin
    midpoint; p_mean = the mean of that over the pairs of the bin (the
    expected fraction found).
--emulate-tokenmill OUT.jsonl: writes the pairs tokenmill itself should give
    (its hashing re-done in Python with xxhash's xxh3-64); with --compare,
    says whether OURS equals them exactly.
--truth: recall of the injected (doc, source) pairs of make_dedup_corpus.py.
"""

import argparse
import json
import os
import platform
import string
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from importlib import metadata

# ---------------------------------------------------------------- shingling

_ASCII_PUNCT = frozenset(string.punctuation)
_EXTRA_PUNCT = frozenset("«»¡¿·")
# Unicode White_Space (Rust char::is_whitespace). Differs from str.isspace,
# which is also true for U+001C..U+001F.
_WHITE_SPACE = frozenset(
    [chr(c) for c in range(0x09, 0x0E)]
    + [chr(c) for c in (0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000)]
    + [chr(c) for c in range(0x2000, 0x200B)]
)


def _is_sep(c):
    if c in _ASCII_PUNCT or c in _EXTRA_PUNCT or c in _WHITE_SPACE:
        return True
    o = ord(c)
    return 0x2000 <= o <= 0x206F or 0x3000 <= o <= 0x303F or 0xFF01 <= o <= 0xFF0F or 0xFF1A <= o <= 0xFF20


def normalize(text):
    out = []
    pending = False
    for c in unicodedata.normalize("NFKC", text):
        if _is_sep(c):
            pending = True
            continue
        if pending and out:
            out.append(" ")
        pending = False
        out.append(c.lower())
    return "".join(out)


def _is_unspaced(o):
    return (
        0x3040 <= o <= 0x30FF
        or 0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF
        or 0xF900 <= o <= 0xFAFF
        or 0xAC00 <= o <= 0xD7AF
        or 0x0E00 <= o <= 0x0E7F
        or 0x20000 <= o <= 0x2FFFF
    )


def words(norm):
    out = []
    if not norm:
        return out
    for tok in norm.split(" "):
        if not any(_is_unspaced(ord(c)) for c in tok):
            out.append(tok)
            continue
        run = []
        for c in tok:
            if _is_unspaced(ord(c)):
                if run:
                    out.append("".join(run))
                    run = []
                out.append(c)
            else:
                run.append(c)
        if run:
            out.append("".join(run))
    return out


def shingle_set(text, n, max_shingles):
    w = words(normalize(text))
    if not w:
        return set()
    if len(w) < n:
        return {" ".join(w)}
    windows = min(len(w) - n + 1, max_shingles)
    return {" ".join(w[i : i + n]) for i in range(windows)}


# ---------------------------------------------------------------- helpers


def load_texts(path):
    texts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            t = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(t, str):
                sys.exit(f"ERROR: {path}:{lineno}: no string 'text' (tokenmill would skip it and renumber)")
            texts.append(t)
    return texts


def load_pairs(path):
    pairs = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                a, b = int(o["a"]), int(o["b"])
                pairs.add((min(a, b), max(a, b)))
    return pairs


def jaccard(x, y):
    if not x and not y:
        return 0.0
    inter = len(x & y)
    return inter / (len(x) + len(y) - inter)


def best_of(repeat, fn):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def rate(n, secs):
    return {"seconds": round(secs, 6), "docs": n, "docs_per_s": round(n / secs, 2) if secs > 0 else None}


def version(pkg):
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def p_lsh(s, bands, rows):
    return 1.0 - (1.0 - s**rows) ** bands


def band_pairs(sigs, bands, rows):
    """Candidate pairs of docs sharing any whole band: {doc: signature sequence}."""
    pairs = set()
    for b in range(bands):
        buckets = defaultdict(list)
        for d, sig in sigs.items():
            buckets[tuple(sig[b * rows : (b + 1) * rows])].append(d)
        for docs in buckets.values():
            for i in range(len(docs)):
                for j in range(i + 1, len(docs)):
                    x, y = docs[i], docs[j]
                    pairs.add((min(x, y), max(x, y)))
    return pairs


def all_pair_jaccards(sets):
    """{(i, j): J} for every pair with J > 0, by an inverted index of shingles."""
    index = defaultdict(list)
    for d, s in sets.items():
        for sh in s:
            index[sh].append(d)
    inter = defaultdict(int)
    for docs in index.values():
        if len(docs) < 2:
            continue
        docs.sort()
        for i in range(len(docs)):
            for j in range(i + 1, len(docs)):
                inter[(docs[i], docs[j])] += 1
    return {p: c / (len(sets[p[0]]) + len(sets[p[1]]) - c) for p, c in inter.items()}


BINS = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]


def bin_of(j):
    for k, (lo, hi) in enumerate(BINS):
        if lo <= j < hi or (k == len(BINS) - 1 and j <= hi):
            return k
    return 0


# ---------------------------------------------------------------- tokenmill emulation

_M64 = (1 << 64) - 1


def _splitmix(state):
    state = (state + 0x9E3779B97F4A7C15) & _M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return state, z ^ (z >> 31)


def emulate_tokenmill(texts, a):
    """tokenmill's candidate pairs, re-computed in Python from its Rust source
    (shingle.rs word_hashes/shingles, minhash.rs MinHasher, dedup_cmd.rs
    all_candidate_pairs): xxh3-64 of each word; xxh3-64 of the little-endian
    u64 word hashes of each window; h_i(x) = ((a_i*x + b_i) mod 2^64) >> 32 with
    a_i, b_i from splitmix64(seed); a band's key = xxh3-64 of its rows as LE
    u32. Pairs share a (band, key). Should equal `tokenmill dedup --pairs-out`."""
    import numpy as np
    import xxhash

    k = a.bands * a.rows
    s = a.seed
    av, bv = [], []
    for _ in range(k):
        s, z = _splitmix(s)
        av.append(z | 1)
    for _ in range(k):
        s, z = _splitmix(s)
        bv.append(z)
    A = np.array(av, dtype=np.uint64)
    B = np.array(bv, dtype=np.uint64)
    h = xxhash.xxh3_64_intdigest
    buckets = defaultdict(list)
    for d, t in enumerate(texts):
        w = words(normalize(t))
        if not w:
            continue
        wh = np.array([h(x.encode("utf-8")) for x in w], dtype=np.uint64)
        width = min(a.ngram, len(wh))
        windows = 1 if len(wh) < a.ngram else min(len(wh) - a.ngram + 1, a.max_shingles)
        sh = np.unique(np.array([h(wh[i : i + width].astype("<u8").tobytes()) for i in range(windows)], dtype=np.uint64))
        sig = ((sh[:, None] * A[None, :] + B[None, :]) >> np.uint64(32)).min(axis=0).astype("<u4")
        for b in range(a.bands):
            buckets[(b, h(sig[b * a.rows : (b + 1) * a.rows].tobytes()))].append(d)
    pairs = set()
    for docs in buckets.values():
        for i in range(len(docs)):
            for j in range(i + 1, len(docs)):
                pairs.add((min(docs[i], docs[j]), max(docs[i], docs[j])))
    return pairs


# ---------------------------------------------------------------- peers


def run_datasketch(byte_sets, a, k):
    from datasketch import MinHash, MinHashLSH

    docs = sorted(byte_sets)
    n = len(docs)
    out = {}

    def with_update_batch():
        ms = {}
        for d in docs:
            m = MinHash(num_perm=k, seed=a.seed)
            m.update_batch(byte_sets[d])
            ms[d] = m
        return ms

    secs, ms = best_of(a.repeat, with_update_batch)
    out["update_batch"] = rate(n, secs)

    def with_bulk():
        return MinHash.bulk([byte_sets[d] for d in docs], num_perm=k, seed=a.seed)

    secs, bulk = best_of(a.repeat, with_bulk)
    out["bulk"] = rate(n, secs)
    same = all((m.hashvalues == ms[d].hashvalues).all() for d, m in zip(docs, bulk))
    out["bulk_equals_update_batch"] = bool(same)

    if not a.no_update_loop:

        def with_update_loop():
            res = {}
            for d in docs:
                m = MinHash(num_perm=k, seed=a.seed)
                for b in byte_sets[d]:
                    m.update(b)
                res[d] = m
            return res

        secs, loop = best_of(a.repeat, with_update_loop)
        out["update_loop"] = rate(n, secs)
        out["update_loop_equals_update_batch"] = bool(all((loop[d].hashvalues == ms[d].hashvalues).all() for d in docs))

    out["scheme"] = getattr(ms[docs[0]], "scheme", "legacy") if docs else None

    t0 = time.perf_counter()
    lsh = MinHashLSH(num_perm=k, params=(a.bands, a.rows))
    for d in docs:
        lsh.insert(d, ms[d])
    t1 = time.perf_counter()
    pairs = set()
    for d in docs:
        for e in lsh.query(ms[d]):
            if e != d:
                pairs.add((min(d, e), max(d, e)))
    t2 = time.perf_counter()
    out["lsh_insert_seconds"] = round(t1 - t0, 6)
    out["lsh_query_seconds"] = round(t2 - t1, 6)
    # Sanity: the same pairs by grouping whole bands of the signatures ourselves.
    out["pairs_equal_band_grouping"] = band_pairs({d: ms[d].hashvalues.tolist() for d in docs}, a.bands, a.rows) == pairs
    return out, pairs


def run_datatrove(texts, a):
    from loguru import logger

    logger.disable("datatrove")
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    cfg = MinhashConfig(n_grams=a.ngram, num_buckets=a.bands, hashes_per_bucket=a.rows, seed=a.seed)
    out = {"config": str(cfg), "language": "en"}
    tmp = tempfile.mkdtemp(prefix="dt-minhash-")
    step = MinhashDedupSignature(output_folder=os.path.join(tmp, "warm"), config=cfg)
    out["word_tokenizer"] = type(step.word_tokenizer).__name__
    t0 = time.perf_counter()
    step.get_shingles("Warm up the tokenizer, which loads spaCy on first use.")
    out["tokenizer_load_seconds"] = round(time.perf_counter() - t0, 6)
    n = len(texts)

    def shingles_only():
        return [step.get_shingles(t) for t in texts]

    secs, shingles = best_of(a.repeat, shingles_only)
    out["shingles_only"] = rate(n, secs)
    with_sh = [i for i, s in enumerate(shingles) if s.size]
    out["docs_with_signature"] = len(with_sh)

    def signature_only():
        return {i: step.get_signature(shingles[i]) for i in with_sh}

    secs, sigs = best_of(a.repeat, signature_only)
    out["signature_only"] = rate(len(with_sh), secs)

    def text_to_signature():
        res = {}
        for i, t in enumerate(texts):
            s = step.get_shingles(t)
            if s.size:
                res[i] = step.get_signature(s)
        return res

    secs, _ = best_of(a.repeat, text_to_signature)
    out["text_to_signature"] = rate(n, secs)

    runs = [0]

    def step_run():
        runs[0] += 1
        st = MinhashDedupSignature(output_folder=os.path.join(tmp, f"run{runs[0]}"), config=cfg)
        st.word_tokenizer = step.word_tokenizer  # already loaded
        st.run((Document(text=t, id=str(i)) for i, t in enumerate(texts)), rank=0, world_size=1)

    secs, _ = best_of(a.repeat, step_run)
    out["step_run"] = rate(n, secs)

    flat = {i: [h for bucket in sig for h in bucket] for i, sig in sigs.items()}
    pairs = band_pairs(flat, a.bands, a.rows)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return out, pairs


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-shingles", type=int, default=100_000)
    ap.add_argument("--pairs-out")
    ap.add_argument("--compare")
    ap.add_argument("--truth")
    ap.add_argument("--exact-all", action="store_true")
    ap.add_argument("--emulate-tokenmill", metavar="OUT.jsonl")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-update-loop", action="store_true")
    ap.add_argument("--no-datatrove", action="store_true")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    k = a.bands * a.rows

    texts = load_texts(a.texts)
    n_docs = len(texts)

    secs, sets_list = best_of(a.repeat, lambda: [shingle_set(t, a.ngram, a.max_shingles) for t in texts])
    sets = {i: s for i, s in enumerate(sets_list) if s}
    byte_sets = {i: [x.encode("utf-8") for x in s] for i, s in sets.items()}
    short = sum(1 for s in sets.values() if len(s) == 1 and len(next(iter(s)).split(" ")) < a.ngram)

    report = {
        "versions": {
            "python": platform.python_version(),
            "datasketch": version("datasketch"),
            "datatrove": version("datatrove"),
            "numpy": version("numpy"),
            "spacy": version("spacy"),
            "xxhash": version("xxhash"),
            "unicodedata": unicodedata.unidata_version,
        },
        "settings": {
            "bands": a.bands,
            "rows": a.rows,
            "num_perm": k,
            "ngram": a.ngram,
            "seed": a.seed,
            "max_shingles": a.max_shingles,
            "repeat": a.repeat,
            "threshold_approx": round((1 / a.bands) ** (1 / a.rows), 4),
        },
        "corpus": {
            "texts": a.texts,
            "docs": n_docs,
            "docs_with_shingles": len(sets),
            "short_docs": short,
            "shingles": sum(len(s) for s in sets.values()),
        },
        "timings": {"shingling_python": rate(n_docs, secs)},
    }

    ds, ds_pairs = run_datasketch(byte_sets, a, k)
    report["timings"]["datasketch"] = ds
    ds_j = {p: jaccard(sets[p[0]], sets[p[1]]) for p in ds_pairs}
    report["pairs"] = {
        "datasketch": len(ds_pairs),
        "datasketch_exact_jaccard_ge_0.8": sum(1 for j in ds_j.values() if j >= 0.8),
        "datasketch_identical_sets": sum(1 for j in ds_j.values() if j == 1.0),
    }

    if not a.no_datatrove:
        dt, dt_pairs = run_datatrove(texts, a)
        report["timings"]["datatrove"] = dt
        report["pairs"]["datatrove"] = len(dt_pairs)
        report["pairs"]["datatrove_and_datasketch"] = len(dt_pairs & ds_pairs)

    if a.pairs_out:
        with open(a.pairs_out, "w", encoding="utf-8") as f:
            for p in sorted(ds_pairs):
                f.write(json.dumps({"a": p[0], "b": p[1], "jaccard": round(ds_j[p], 6)}) + "\n")

    emu = None
    if a.emulate_tokenmill:
        t0 = time.perf_counter()
        emu = emulate_tokenmill(texts, a)
        report["timings"]["emulate_tokenmill_seconds"] = round(time.perf_counter() - t0, 3)
        report["pairs"]["tokenmill_emulated"] = len(emu)
        report["pairs"]["tokenmill_emulated_and_datasketch"] = len(emu & ds_pairs)
        with open(a.emulate_tokenmill, "w", encoding="utf-8") as f:
            for p in sorted(emu):
                f.write(json.dumps({"a": p[0], "b": p[1]}) + "\n")

    all_j = None
    if a.exact_all:
        t0 = time.perf_counter()
        all_j = all_pair_jaccards(sets)
        report["timings"]["exact_all_pairs_seconds"] = round(time.perf_counter() - t0, 3)

    def true_j(p):
        if all_j is not None:
            return all_j.get(p, 0.0)
        if p in ds_j:
            return ds_j[p]
        x, y = sets.get(p[0], set()), sets.get(p[1], set())
        return jaccard(x, y)

    if a.compare:
        ours = load_pairs(a.compare)
        inter = ds_pairs & ours
        union = ds_pairs | ours
        cmp = {
            "ours_file": a.compare,
            "datasketch": len(ds_pairs),
            "ours": len(ours),
            "intersection": len(inter),
            "only_datasketch": len(ds_pairs - ours),
            "only_ours": len(ours - ds_pairs),
            "pair_set_jaccard": round(len(inter) / len(union), 6) if union else 1.0,
            "ours_with_empty_doc": sum(1 for p in ours if p[0] not in sets or p[1] not in sets),
            "denominator": "all document pairs" if all_j is not None else "union of both pair sets",
        }
        if emu is not None:
            cmp["ours_equals_emulation"] = ours == emu
            cmp["ours_minus_emulation"] = len(ours - emu)
            cmp["emulation_minus_ours"] = len(emu - ours)
        if all_j is not None:
            m = len(sets)
            population = {p: j for p, j in all_j.items()}
            zero_pairs = m * (m - 1) // 2 - len(population)
            for p in union:  # pairs with J = 0 found by either
                population.setdefault(p, 0.0)
        else:
            population = {p: true_j(p) for p in union}
            zero_pairs = 0
        rows = []
        for idx, (lo, hi) in enumerate(BINS):
            in_bin = [p for p, j in population.items() if bin_of(j) == idx]
            extra = zero_pairs if idx == 0 else 0  # J = 0 pairs found by neither
            total = len(in_bin) + extra
            f_ds = sum(1 for p in in_bin if p in ds_pairs)
            f_ours = sum(1 for p in in_bin if p in ours)
            f_both = sum(1 for p in in_bin if p in ds_pairs and p in ours)
            p_mean = (sum(p_lsh(population[p], a.bands, a.rows) for p in in_bin)) / total if total else None
            rows.append(
                {
                    "bin": f"[{lo},{hi}{']' if idx == len(BINS) - 1 else ')'}",
                    "pairs": total,
                    "found_datasketch": f_ds,
                    "found_ours": f_ours,
                    "found_both": f_both,
                    "frac_datasketch": round(f_ds / total, 4) if total else None,
                    "frac_ours": round(f_ours / total, 4) if total else None,
                    "p_mid": round(p_lsh((lo + hi) / 2, a.bands, a.rows), 4),
                    "p_mean": round(p_mean, 4) if p_mean is not None else None,
                }
            )
        cmp["bins"] = rows
        report["compare"] = cmp
    else:
        ours = None

    if a.truth:
        truth = [json.loads(l) for l in open(a.truth, encoding="utf-8") if l.strip()]
        res = {}
        for kind in ("near", "exact"):
            tp = [(min(t["doc"], t["source"]), max(t["doc"], t["source"])) for t in truth if t["kind"] == kind]
            if not tp:
                continue
            js = [true_j(p) for p in tp]
            r = {
                "pairs": len(tp),
                "found_datasketch": sum(1 for p in tp if p in ds_pairs),
                "expected_found": round(sum(p_lsh(j, a.bands, a.rows) for j in js), 2),
                "jaccard_min": round(min(js), 4),
                "jaccard_mean": round(sum(js) / len(js), 4),
                "jaccard_max": round(max(js), 4),
            }
            if ours is not None:
                r["found_ours"] = sum(1 for p in tp if p in ours)
            res[kind] = r
        report["truth"] = res

    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print_human(report)


def print_human(r):
    v, s, c, t = r["versions"], r["settings"], r["corpus"], r["timings"]
    print("versions: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    print(
        f"settings: {s['bands']} bands x {s['rows']} rows = {s['num_perm']} perms, {s['ngram']}-grams, "
        f"seed {s['seed']}, threshold ~{s['threshold_approx']}, best of {s['repeat']}"
    )
    print(
        f"corpus: {c['docs']} docs, {c['docs_with_shingles']} with shingles ({c['short_docs']} short), "
        f"{c['shingles']} shingles"
    )
    print()
    print(f"{'timing (single process)':44} {'seconds':>10} {'docs/s':>10}")

    def line(name, x):
        print(f"{name:44} {x['seconds']:>10.3f} {x['docs_per_s']:>10.1f}")

    line("shingling (this script, Python)", t["shingling_python"])
    ds = t["datasketch"]
    line("datasketch MinHash + update_batch", ds["update_batch"])
    line("datasketch MinHash.bulk", ds["bulk"])
    if "update_loop" in ds:
        line("datasketch MinHash + update per shingle", ds["update_loop"])
    print(f"{'datasketch LSH insert / query (s)':44} {ds['lsh_insert_seconds']:>10.3f} {ds['lsh_query_seconds']:>10.3f}")
    if "datatrove" in t:
        dt = t["datatrove"]
        line("datatrove text -> signature (in memory)", dt["text_to_signature"])
        line("datatrove get_shingles only", dt["shingles_only"])
        line("datatrove get_signature only", dt["signature_only"])
        line("datatrove MinhashDedupSignature.run", dt["step_run"])
    print()
    p = r["pairs"]
    print("candidate pairs: " + ", ".join(f"{k} {x}" for k, x in p.items()))
    if "compare" in r:
        cm = r["compare"]
        print(
            f"compare with {cm['ours_file']}: datasketch {cm['datasketch']}, ours {cm['ours']}, "
            f"both {cm['intersection']}, only datasketch {cm['only_datasketch']}, only ours {cm['only_ours']}, "
            f"pair-set Jaccard {cm['pair_set_jaccard']}  (bins over {cm['denominator']})"
        )
        if "ours_equals_emulation" in cm:
            print(
                f"ours == Python emulation of tokenmill: {cm['ours_equals_emulation']} "
                f"(ours-emulation {cm['ours_minus_emulation']}, emulation-ours {cm['emulation_minus_ours']})"
            )
        print(f"{'true J':12} {'pairs':>8} {'datasketch':>14} {'ours':>14} {'both':>6} {'p_mid':>7} {'p_mean':>7}")
        for b in cm["bins"]:
            fd = "-" if b["frac_datasketch"] is None else f"{b['frac_datasketch']:.3f} ({b['found_datasketch']})"
            fo = "-" if b["frac_ours"] is None else f"{b['frac_ours']:.3f} ({b['found_ours']})"
            pm = "-" if b["p_mean"] is None else f"{b['p_mean']:.3f}"
            print(f"{b['bin']:12} {b['pairs']:>8} {fd:>14} {fo:>14} {b['found_both']:>6} {b['p_mid']:>7.3f} {pm:>7}")
    if "truth" in r:
        for kind, x in r["truth"].items():
            extra = f", ours {x['found_ours']}" if "found_ours" in x else ""
            print(
                f"injected {kind}: {x['pairs']} pairs, J {x['jaccard_min']}..{x['jaccard_max']} "
                f"(mean {x['jaccard_mean']}), found datasketch {x['found_datasketch']}{extra}, "
                f"expected {x['expected_found']}"
            )


if __name__ == "__main__":
    main()
