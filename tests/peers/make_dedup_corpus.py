#!/usr/bin/env python3
"""Build a small JSONL corpus with injected near-duplicates and exact copies.

usage: python make_dedup_corpus.py OUT.jsonl [--seed 1] [--source FILE.jsonl.gz]
                                  [--near 100] [--exact 20]
                                  [--min-edit 0.01] [--max-edit 0.09]

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

Source documents of injected ones are distinct (no document is copied twice).
Next to OUT.jsonl it writes OUT.truth.jsonl, one line per injected document:
{"doc": k, "source": j, "kind": "near"|"exact", "edit_fraction": f,
 "edits": e, "words": w}, where f = e / w is the realised fraction (0 for exact).

Deterministic for a given --seed and source file (uses only random.Random).
"""

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path

DEFAULT_SOURCE = "/work/shared/data/jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz"
MIN_WORDS = 20


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", default=DEFAULT_SOURCE)
    ap.add_argument("--near", type=int, default=100)
    ap.add_argument("--exact", type=int, default=20)
    ap.add_argument("--min-edit", type=float, default=0.01)
    ap.add_argument("--max-edit", type=float, default=0.09)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    base = read_texts(a.source)
    vocab = sorted({w for _, t in base for w in t.split()})
    eligible = [j for j, (_, t) in enumerate(base) if len(t.split()) >= MIN_WORDS]
    if a.near + a.exact > len(eligible):
        sys.exit(f"only {len(eligible)} documents of >= {MIN_WORDS} words; asked for {a.near + a.exact} sources")
    sources = rng.sample(eligible, a.near + a.exact)
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

    with open(a.out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tp = truth_path(a.out)
    with open(tp, "w", encoding="utf-8") as f:
        for t in truth:
            f.write(json.dumps(t) + "\n")
    print(
        f"{len(rows)} docs ({len(base)} source, {a.near} near, {a.exact} exact) -> {a.out}; truth -> {tp}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
