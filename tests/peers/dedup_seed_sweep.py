#!/usr/bin/env python3
"""Recall of tokenmill's LSH (Python emulation, see dedup_peers.py --emulate-tokenmill)
and datasketch's over many seeds, against theory 1-(1-s^r)^b.

usage: python dedup_seed_sweep.py --texts TEXTS.jsonl --truth TEXTS.truth.jsonl [--seeds 20]
                                  [--bands 14] [--rows 8] [--ngram 5] [--max-shingles 100000]

One seed's recall is noisy (sd ~3.5 pairs of ~50 on the make_dedup_corpus.py corpus);
the mean over seeds tells whether an implementation is biased. Counts, per seed,
the injected near-duplicate pairs found and all pairs with exact Jaccard in [0.5, 0.9).
"""
import argparse
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dedup_peers as dp  # noqa: E402
from datasketch import MinHash, MinHashLSH  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--texts", required=True)
ap.add_argument("--truth", required=True)
ap.add_argument("--seeds", type=int, default=20)
ap.add_argument("--bands", type=int, default=14)
ap.add_argument("--rows", type=int, default=8)
ap.add_argument("--ngram", type=int, default=5)
ap.add_argument("--max-shingles", type=int, default=100_000)
a = ap.parse_args()
B, R, K = a.bands, a.rows, a.bands * a.rows

texts = dp.load_texts(a.texts)
sets = {i: s for i, s in enumerate(dp.shingle_set(t, a.ngram, a.max_shingles) for t in texts) if s}
docs = sorted(sets)
bs = [[x.encode() for x in sets[i]] for i in docs]
truth = [json.loads(l) for l in open(a.truth, encoding="utf-8") if l.strip()]
near = [(min(t["doc"], t["source"]), max(t["doc"], t["source"])) for t in truth if t["kind"] == "near"]
allj = dp.all_pair_jaccards(sets)
mid = [p for p, j in allj.items() if 0.5 <= j < 0.9]
pn = [dp.p_lsh(allj.get(p, 0.0), B, R) for p in near]
exp_near, sd_near = sum(pn), sum(p * (1 - p) for p in pn) ** 0.5
exp_mid = sum(dp.p_lsh(allj[p], B, R) for p in mid)
print(f"injected near pairs {len(near)}: expected found {exp_near:.2f} (sd {sd_near:.2f}); "
      f"pairs with J in [0.5,0.9): {len(mid)}, expected found {exp_mid:.2f}")
print(f"{'seed':>4} {'tm near':>8} {'tm mid':>7} {'ds near':>8} {'ds mid':>7}")
tot = [0, 0, 0, 0]
for seed in range(1, a.seeds + 1):
    ns = types.SimpleNamespace(bands=B, rows=R, ngram=a.ngram, seed=seed, max_shingles=a.max_shingles)
    tm = dp.emulate_tokenmill(texts, ns)
    ms = MinHash.bulk(bs, num_perm=K, seed=seed)
    lsh = MinHashLSH(num_perm=K, params=(B, R))
    for d, m in zip(docs, ms):
        lsh.insert(d, m)
    ds = {(min(d, e), max(d, e)) for d, m in zip(docs, ms) for e in lsh.query(m) if e != d}
    row = [sum(p in tm for p in near), sum(p in tm for p in mid), sum(p in ds for p in near), sum(p in ds for p in mid)]
    tot = [x + y for x, y in zip(tot, row)]
    print(f"{seed:>4} {row[0]:>8} {row[1]:>7} {row[2]:>8} {row[3]:>7}", flush=True)
S = a.seeds
print(f"mean {tot[0]/S:>8.2f} {tot[1]/S:>7.2f} {tot[2]/S:>8.2f} {tot[3]/S:>7.2f}   "
      f"(expected {exp_near:.2f} near, {exp_mid:.2f} mid)")
