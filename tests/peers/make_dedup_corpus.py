#!/usr/bin/env python3
"""Build a small JSONL corpus with injected near-duplicates and exact copies.

usage: python make_dedup_corpus.py OUT.jsonl [--seed 1] [--source FILE.jsonl.gz]
                                  [--near 100] [--exact 20]
                                  [--min-edit 0.01] [--max-edit 0.09]
                                  [--families 0] [--family-size 4]
                                  [--family-bins 0.5,0.6,0.7,0.8,0.9,1.0]

Reads the "text" field of every line of the source (gzip or plain JSONL),
drops empty / whitespace-only texts, and writes them to OUT.jsonl as
{"id": ..., "text": ...} (document number = 0-based line index). Then it
appends, in a shuffled order:

* --near near-duplicates: a copy of a random source document (at least 20
  words) in which a fraction f of its words, f drawn uniformly from
  [--min-edit, --max-edit] (mean 5 % by default), are each either replaced by
  a random word of the corpus or deleted (50/50). Whitespace between the
  remaining words is kept as it was.
* --exact exact copies of random source documents.
* --families families of near-duplicates with known Jaccard similarities, for
  measuring clustering (chains and stars): a source document (at least
  FAMILY_MIN_WORDS words) and 1 to --family-size - 1 copies, each an edit of
  an earlier member of its family (its parent: the source or a copy, drawn at
  random, so families hold chains A~B~C as well as stars), with the exact
  Jaccard similarity of its shingle set (dedup_peers.shingle_set, tokenmill's
  5-word shingles) with the parent drawn uniformly from one of the bins of
  --family-bins (the edit fraction is searched for until the similarity falls
  in the bin; a member whose bin is not reached in 40 tries is left out).

Source documents of injected ones are distinct (no document is copied twice).
Next to OUT.jsonl it writes OUT.truth.jsonl, one line per injected document:
{"doc": k, "source": j, "kind": "near"|"exact", "edit_fraction": f,
 "edits": e, "words": w}, where f = e / w is the realised fraction (0 for exact);
family members add "family", "parent" (the document edited) and
"jaccard_parent" (exact Jaccard with it), with kind "family".

Deterministic for a given --seed and source file (uses only random.Random).
"""

import argparse
import gzip
import json
import os
import random
import re
import sys
from pathlib import Path

DEFAULT_SOURCE = "/work/shared/data/jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz"
MIN_WORDS = 20
FAMILY_MIN_WORDS = 100


def read_texts(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    docs = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if not line.strip():
                continue
            obj = json.loads(line)
            text = obj.get("text")
            if not isinstance(text, str) or not text.strip():
                continue
            docs.append((str(obj.get("id", f"line{n}")), text))
    return docs


def truth_path(out):
    out = Path(out)
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(stem + ".truth.jsonl")


def near_copy(text, frac, vocab, rng):
    # Alternating [word, ws, word, ws, ...]; pieces[0] may be leading whitespace "".
    pieces = re.split(r"(\s+)", text)
    word_idx = [i for i in range(0, len(pieces), 2) if pieces[i]]
    nwords = len(word_idx)
    edits = max(1, round(frac * nwords))
    for i in rng.sample(word_idx, edits):
        if rng.random() < 0.5:
            new = rng.choice(vocab)
            # Make sure a substitution really changes the word.
            while new == pieces[i]:
                new = rng.choice(vocab)
            pieces[i] = new
        else:
            pieces[i] = None  # deleted, together with the whitespace after it
    out = []
    for i in range(0, len(pieces), 2):
        if pieces[i] is None:
            continue
        out.append(pieces[i])
        if i + 1 < len(pieces):
            out.append(pieces[i + 1])
    return "".join(out), edits, nwords


def edit_to_bin(parent, lo, hi, vocab, rng, sets, tries=40):
    """An edit of `parent` whose exact Jaccard with it is in [lo, hi) ([lo, hi] when hi is 1),
    searching the edit fraction by bisection; (text, J, edits, words) or None."""
    target = rng.uniform(lo, hi)
    # Each edit changes about n shingles of n-word windows: kept fraction k = 2J / (1 + J),
    # (1 - f)^n = k.
    n = sets.ngram
    f_lo, f_hi = 0.0, 0.6
    f = min(f_hi, max(1e-4, 1 - (2 * target / (1 + target)) ** (1 / n)))
    ps = sets(parent)
    for _ in range(tries):
        text, edits, nwords = near_copy(parent, f, vocab, rng)
        cs = sets(text)
        inter = len(ps & cs)
        j = inter / (len(ps) + len(cs) - inter) if ps or cs else 1.0
        if lo <= j < hi or (hi >= 1.0 and lo <= j <= 1.0):
            return text, j, edits, nwords
        if j >= hi:
            f_lo = f
        else:
            f_hi = f
        f = (f_lo + f_hi) / 2
    return None


def make_families(base, sources, a, vocab, rng, rows, truth):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dedup_peers as dp

    def sets(text):
        return dp.shingle_set(text, sets.ngram, 100_000)

    sets.ngram = 5
    edges = [float(x) for x in a.family_bins.split(",")]
    bins = list(zip(edges, edges[1:]))
    for fam, j in enumerate(sources):
        members = [(j, base[j][1])]  # (doc number, text); the source keeps its own number
        for _ in range(rng.randint(1, a.family_size - 1)):
            parent_doc, parent = rng.choice(members)
            lo, hi = rng.choice(bins)
            got = edit_to_bin(parent, lo, hi, vocab, rng, sets)
            if got is None:
                continue
            text, jp, edits, nwords = got
            k = len(rows)
            rows.append({"id": f"family-{k}-of-{j}", "text": text})
            members.append((k, text))
            truth.append(
                {
                    "doc": k,
                    "source": j,
                    "kind": "family",
                    "family": fam,
                    "parent": parent_doc,
                    "jaccard_parent": round(jp, 6),
                    "edit_fraction": round(edits / nwords, 6),
                    "edits": edits,
                    "words": nwords,
                }
            )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--near", type=int, default=100)
    ap.add_argument("--exact", type=int, default=20)
    ap.add_argument("--min-edit", type=float, default=0.01)
    ap.add_argument("--max-edit", type=float, default=0.09)
    ap.add_argument("--families", type=int, default=0)
    ap.add_argument("--family-size", type=int, default=4, help="at most this many members, source included")
    ap.add_argument("--family-bins", default="0.5,0.6,0.7,0.8,0.9,1.0", help="edges of the Jaccard bins")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    base = read_texts(a.source)
    vocab = sorted({w for _, t in base for w in t.split()})
    eligible = [j for j, (_, t) in enumerate(base) if len(t.split()) >= MIN_WORDS]
    if a.near + a.exact > len(eligible):
        sys.exit(f"only {len(eligible)} documents of >= {MIN_WORDS} words; asked for {a.near + a.exact} sources")
    sources = rng.sample(eligible, a.near + a.exact)
    family_eligible = [j for j in eligible if j not in set(sources) and len(base[j][1].split()) >= FAMILY_MIN_WORDS]
    if a.families > len(family_eligible):
        sys.exit(f"only {len(family_eligible)} more documents of >= {FAMILY_MIN_WORDS} words; asked for {a.families} families")
    family_sources = rng.sample(family_eligible, a.families)
    plan = [("near", j) for j in sources[: a.near]] + [("exact", j) for j in sources[a.near :]]
    rng.shuffle(plan)

    rows, truth = [], []
    for doc_id, text in base:
        rows.append({"id": doc_id, "text": text})
    for kind, j in plan:
        k = len(rows)
        src_id, src_text = base[j]
        if kind == "exact":
            text, edits, nwords = src_text, 0, len(src_text.split())
        else:
            frac = rng.uniform(a.min_edit, a.max_edit)
            text, edits, nwords = near_copy(src_text, frac, vocab, rng)
        rows.append({"id": f"{kind}-{k}-of-{j}", "text": text})
        truth.append(
            {
                "doc": k,
                "source": j,
                "kind": kind,
                "edit_fraction": round(edits / nwords, 6) if kind == "near" else 0.0,
                "edits": edits,
                "words": nwords,
            }
        )

    if a.families:
        make_families(base, family_sources, a, vocab, rng, rows, truth)

    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tp = truth_path(a.out)
    with open(tp, "w", encoding="utf-8") as f:
        for t in truth:
            f.write(json.dumps(t) + "\n")
    fam = sum(1 for t in truth if t["kind"] == "family")
    print(
        f"{len(rows)} docs ({len(base)} source, {a.near} near, {a.exact} exact, {fam} in {a.families} families)"
        f" -> {a.out}; truth -> {tp}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
