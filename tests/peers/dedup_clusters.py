#!/usr/bin/env python3
"""Removal precision and recall of near-duplicate clustering: tokenmill's decisions against
datasketch's greedy LSH query, on a corpus whose exact Jaccard similarities are all known.

usage: python dedup_clusters.py --texts T.jsonl [T2.jsonl ...] [--threshold 0.7]
                                [--precision-at 0.6] [--recall-at 0.8] [--tokenmill BIN]
                                [--decisions NAME=REMOVED.jsonl[,REMOVED2.jsonl ...] ...]
                                [--candidates NAME=PAIRS.jsonl[,...] ...]
                                [--bands 14] [--rows 8] [--ngram 5] [--seed 42]
                                [--max-shingles 100000] [--json]

T.jsonl: e.g. from make_dedup_corpus.py --families (chains and stars of edits at known Jaccard
bins). Shingle sets and the exact Jaccard of every pair of documents (inverted index) come from
dedup_peers.py (tokenmill's normalisation and 5-word shingles). With several corpora the counts
are summed over them.

--tokenmill BIN: runs `BIN dedup T.jsonl --threads 1 --bands --rows --seed --threshold`
    (the values given here) on each corpus, with --pairs-out, and reads its decisions back with
    `BIN sql OUT "SELECT doc, kept_doc FROM removed" --json` (method "tokenmill").
--decisions NAME=FILE[,FILE...]: decisions made elsewhere, one file per corpus, as JSON lines
    {"doc": i, "kept_doc": k} (what that `sql` prints).
--candidates NAME=FILE[,FILE...]: LSH candidate pairs {"a", "b"} of method NAME, one file per
    corpus (tokenmill dedup --pairs-out), to show which pairs the buckets found.

Peers, run here, documents taken in order (keep the earliest), MinHash(bands*rows, seed) and
MinHashLSH(params=(bands, rows)) of datasketch over the same shingle strings:
  datasketch-greedy: each document is queried against the kept ones (an LSH index of the kept
      documents only); removed if any is returned, else inserted. Its kept document is the
      returned one of highest exact Jaccard (the most favourable reading).
  datasketch-greedy-verified: the same, removed only if a returned kept document has exact
      Jaccard >= threshold (the first such in document order).

Measures, per method:
  removed: documents removed.
  precision@x: removed documents whose exact Jaccard with the document recorded as kept for
      them is >= x (x = threshold and each --precision-at).
  recall@x: of the pairs with exact Jaccard >= x (x = threshold and each --recall-at), those
      with at least one document removed (a near-duplicate pair is missed when both stay);
      also per Jaccard bin, over the pairs with J >= 0.5.
  left: pairs >= threshold with both documents kept.
  cand: LSH candidate pairs (where known).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dedup_peers as dp  # noqa: E402

BINS = [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]


def in_bin(j, lo, hi):
    return lo <= j < hi or (hi >= 1.0 and lo <= j <= 1.0)


def load_decisions(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                out[int(o["doc"])] = int(o["kept_doc"])
    return out


def named(arg, corpora):
    name, _, paths = arg.partition("=")
    files = paths.split(",") if paths else []
    if len(files) != corpora:
        sys.exit(f"ERROR: {arg!r}: expected NAME=FILE with one file per corpus ({corpora})")
    return name, files


def datasketch_greedy(sets, a, verify):
    from datasketch import MinHash, MinHashLSH

    k = a.bands * a.rows
    docs = sorted(sets)
    ms = MinHash.bulk([[x.encode("utf-8") for x in sets[d]] for d in docs], num_perm=k, seed=a.seed)
    lsh = MinHashLSH(num_perm=k, params=(a.bands, a.rows))
    removed = {}
    for d, m in zip(docs, ms):
        hits = sorted(lsh.query(m))
        js = [(dp.jaccard(sets[d], sets[h]), h) for h in hits]
        if verify:
            ok = [h for j, h in js if j >= a.threshold]
            if ok:
                removed[d] = ok[0]
                continue
        elif js:
            removed[d] = max(js, key=lambda x: (x[0], -x[1]))[1]
            continue
        lsh.insert(d, m)
    return removed


def run_tokenmill(binary, texts, a, tmp):
    out = os.path.join(tmp, "out")
    pairs = os.path.join(tmp, "pairs.jsonl")
    cmd = [binary, "dedup", texts, "--out", out, "--threads", "1", "--bands", str(a.bands), "--rows", str(a.rows),
           "--seed", str(a.seed), "--ngram", str(a.ngram), "--threshold", str(a.threshold), "--pairs-out", pairs, "--json"]
    stats = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    sql = subprocess.run([binary, "sql", out, "SELECT doc, kept_doc FROM removed", "--json"],
                         check=True, capture_output=True, text=True).stdout
    removed = {}
    for line in sql.splitlines():
        if line.strip():
            o = json.loads(line)
            removed[int(o["doc"])] = int(o["kept_doc"])
    return removed, dp.load_pairs(pairs), stats["dedup"]


def counts(removed, allj, a, candidates=None):
    """Raw counts of one method on one corpus (summed over corpora, then turned into ratios)."""

    def j_of(x, y):
        return allj.get((min(x, y), max(x, y)), 0.0)

    to_kept = [j_of(d, k) for d, k in removed.items()]
    c = {
        "removed": len(removed),
        "kept_doc_also_removed": sum(1 for k in removed.values() if k in removed),
    }
    for x in [a.threshold] + a.recall_at:
        dup = [p for p, j in allj.items() if j >= x]
        c[f"pairs@{x:g}"] = len(dup)
        c[f"resolved@{x:g}"] = sum(1 for p, q in dup if p in removed or q in removed)
    for x in [a.threshold] + a.precision_at:
        c[f"precise@{x:g}"] = sum(1 for j in to_kept if j >= x)
    for lo, hi in [(0.0, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]:
        c[f"to_kept[{lo:g},{hi:g})"] = sum(1 for j in to_kept if lo <= j < hi)
    for lo, hi in BINS:
        ps = [p for p, j in allj.items() if in_bin(j, lo, hi)]
        c[f"bin{lo:g}:pairs"] = len(ps)
        c[f"bin{lo:g}:resolved"] = sum(1 for x, y in ps if x in removed or y in removed)
        if candidates is not None:
            c[f"bin{lo:g}:candidates"] = sum(1 for p in ps if p in candidates)
    if candidates is not None:
        c["candidate_pairs"] = len(candidates)
    return c


def summarise(name, c, a):
    n = c["removed"]
    dup = c[f"pairs@{a.threshold:g}"]
    r = {
        "method": name,
        "removed": n,
        "kept_doc_also_removed": c["kept_doc_also_removed"],
        "precision": {
            f"{x:g}": round(c[f"precise@{x:g}"] / n, 4) if n else None for x in [a.threshold] + a.precision_at
        },
        "recall": {
            f"{x:g}": round(c[f"resolved@{x:g}"] / c[f"pairs@{x:g}"], 4) if c[f"pairs@{x:g}"] else None
            for x in [a.threshold] + a.recall_at
        },
        "pairs_at_threshold": dup,
        "left": dup - c[f"resolved@{a.threshold:g}"],
        "removed_by_j_to_kept": {k[len("to_kept"):]: v for k, v in c.items() if k.startswith("to_kept")},
        "bins": [],
        "counts": c,
    }
    for lo, hi in BINS:
        row = {
            "bin": f"[{lo:g},{hi:g}{']' if hi >= 1.0 else ')'}",
            "pairs": c[f"bin{lo:g}:pairs"],
            "resolved": c[f"bin{lo:g}:resolved"],
        }
        if f"bin{lo:g}:candidates" in c:
            row["candidates"] = c[f"bin{lo:g}:candidates"]
        r["bins"].append(row)
    if "candidate_pairs" in c:
        r["candidate_pairs"] = c["candidate_pairs"]
    return r


def print_human(report, a):
    results = report["results"]
    print(
        f"{len(a.texts)} corpora, {report['docs']} docs, threshold {a.threshold}, "
        f"{a.bands} x {a.rows}, seed {a.seed}"
    )
    ps = [f"prec@{x:g}" for x in [a.threshold] + a.precision_at]
    rs = [f"recall@{x:g}" for x in [a.threshold] + a.recall_at]
    print(
        f"{'method':28} {'removed':>8} "
        + " ".join(f"{p:>9}" for p in ps + rs)
        + f" {'left':>5} {'of':>5} {'cand':>6}"
    )

    def fmt(v):
        return f"{v:>9.4f}" if v is not None else f"{'-':>9}"

    for r in results:
        pv = " ".join(fmt(v) for v in list(r["precision"].values()) + list(r["recall"].values()))
        cp = r.get("candidate_pairs", "")
        print(f"{r['method']:28} {r['removed']:>8} {pv} {r['left']:>5} {r['pairs_at_threshold']:>5} {cp:>6}")
    print()
    print("pairs with at least one document removed (and LSH candidates), by exact Jaccard of the pair:")
    print(f"{'bin':12} {'pairs':>6} " + " ".join(f"{r['method'][:26]:>27}" for r in results))
    for i in range(len(BINS)):
        row = results[0]["bins"][i]
        cells = []
        for r in results:
            b = r["bins"][i]
            c = f" (cand {b['candidates']})" if "candidates" in b else ""
            cells.append(f"{b['resolved']}{c}")
        print(f"{row['bin']:12} {row['pairs']:>6} " + " ".join(f"{c:>27}" for c in cells))
    print()
    print("removed documents by exact Jaccard with the document kept for them:")
    for r in results:
        print(f"  {r['method']:28} " + ", ".join(f"{k} {v}" for k, v in r["removed_by_j_to_kept"].items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", required=True, nargs="+")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--precision-at", type=float, nargs="*", default=[0.6])
    ap.add_argument("--recall-at", type=float, nargs="*", default=[0.8])
    ap.add_argument("--tokenmill", metavar="BIN")
    ap.add_argument("--decisions", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--candidates", action="append", default=[], metavar="NAME=FILE")
    ap.add_argument("--bands", type=int, default=14)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--max-shingles", type=int, default=100_000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    decisions = [named(x, len(a.texts)) for x in a.decisions]
    cands = dict(named(x, len(a.texts)) for x in a.candidates)
    totals = {}  # method -> counts summed over corpora
    tm_stats = []
    docs = 0

    def add(name, c):
        t = totals.setdefault(name, {})
        for k, v in c.items():
            t[k] = t.get(k, 0) + v

    for i, path in enumerate(a.texts):
        texts = dp.load_texts(path)
        docs += len(texts)
        sets = {d: s for d, s in enumerate(dp.shingle_set(t, a.ngram, a.max_shingles) for t in texts) if s}
        allj = dp.all_pair_jaccards(sets)
        if a.tokenmill:
            with tempfile.TemporaryDirectory() as tmp:
                removed, pairs, st = run_tokenmill(a.tokenmill, path, a, tmp)
            tm_stats.append(st)
            add("tokenmill", counts(removed, allj, a, pairs))
        for name, files in decisions:
            c = dp.load_pairs(cands[name][i]) if name in cands else None
            add(name, counts(load_decisions(files[i]), allj, a, c))
        add("datasketch-greedy", counts(datasketch_greedy(sets, a, False), allj, a))
        add("datasketch-greedy-verified", counts(datasketch_greedy(sets, a, True), allj, a))

    report = {
        "texts": a.texts,
        "docs": docs,
        "threshold": a.threshold,
        "settings": {"bands": a.bands, "rows": a.rows, "ngram": a.ngram, "seed": a.seed},
        "tokenmill_stats": tm_stats,
        "results": [summarise(name, c, a) for name, c in totals.items()],
    }
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print_human(report, a)


if __name__ == "__main__":
    main()
