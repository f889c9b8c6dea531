"""datatrove's quality filters on the corpora `examples/filter_stats.rs` reads, for comparison.

Runs datatrove 0.10.1's GopherRepetitionFilter -> GopherQualityFilter ->
C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter (FineWeb's order and
settings, English spaCy tokenizer) on every document of DATA/jsonl/*.jsonl.gz, *.json.gz and
DATA/text/* (one document per file), and prints the funnel. With --ours (the JSON that
`filter_stats --verdicts` writes) it also prints, per corpus, how many documents get the same
verdict (kept, or dropped by the same filter and rule) and lists the disagreements.

    .venv-extract/bin/pip install "datatrove[processing,io]" spacy   # see tests/peers
    .venv-extract/bin/python ingest/filters/peers/datatrove_filters.py [--data DIR] [--ours FILE]
"""

import argparse
import gzip
import json
import os
import time
from collections import Counter
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

# datatrove's reasons -> tokenmill's filter/rule names.
QUALITY = {
    "gopher_short_doc": "words",
    "gopher_long_doc": "words",
    "gopher_below_avg_threshold": "mean_word_length",
    "gopher_above_avg_threshold": "mean_word_length",
    "gopher_too_many_hashes": "hash_ratio",
    "gopher_too_many_ellipsis": "ellipsis_ratio",
    "gopher_too_many_bullets": "bullet_lines_ratio",
    "gopher_too_many_end_ellipsis": "ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "alpha_words_ratio",
    "gopher_enough_stop_words": "stop_words",
}


def rule_name(stage, reason):
    if stage == "gopher_repetition" and reason.startswith("duplicated_"):
        return "dup_%s_gram" % reason.split("_")[1]
    if stage == "gopher_quality":
        return QUALITY.get(reason, reason)
    return reason


def corpora(data):
    out = []
    for path in sorted((data / "jsonl").iterdir()):
        if path.name.endswith(".jsonl.gz") or path.name.endswith(".json.gz"):
            docs = []
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line).get("text")
                    except (ValueError, AttributeError):
                        text = None
                    if isinstance(text, str):
                        docs.append(text)
            out.append((path.name, docs))
    texts = [p.read_text(encoding="utf-8") for p in sorted((data / "text").iterdir()) if p.is_file()]
    out.append(("text/*.txt (one document per file)", texts))
    return out


def main():
    ap = argparse.ArgumentParser()
    default = os.environ.get("TOKENMILL_TEST_DATA", str(Path(__file__).resolve().parents[4] / "shared" / "data"))
    ap.add_argument("--data", default=default)
    ap.add_argument("--ours", help="JSON written by filter_stats --verdicts")
    args = ap.parse_args()

    stages = [
        ("gopher_repetition", GopherRepetitionFilter()),
        ("gopher_quality", GopherQualityFilter()),
        ("c4", C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb", FineWebQualityFilter()),
    ]
    ours = json.load(open(args.ours)) if args.ours else None
    print("| corpus | docs | after Gopher rep. | after Gopher qual. | after C4 | after FineWeb (kept) | docs/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    verdicts = {}
    for name, docs in corpora(Path(args.data)):
        after = [0] * len(stages)
        mine = []
        start = time.perf_counter()
        for i, text in enumerate(docs):
            doc = Document(text=text, id=str(i))
            verdict = None
            for k, (stage, f) in enumerate(stages):
                res = f.filter(doc)
                ok, reason = (res, None) if isinstance(res, bool) else res
                if not ok:
                    verdict = "%s/%s" % (stage, rule_name(stage, reason or "?"))
                    break
                after[k] += 1
            mine.append(verdict)
        secs = time.perf_counter() - start
        verdicts[name] = mine
        print("| %s | %d | %s | %.0f |" % (name, len(docs), " | ".join(map(str, after)), len(docs) / secs))

    print()
    for name, mine in verdicts.items():
        print("datatrove drops, %s: %s" % (name, ", ".join("%s %d" % kv for kv in Counter(v for v in mine if v).most_common())))
    if ours is None:
        return
    print("\n| corpus | docs | same verdict | both kept | both dropped, same rule | dropped by the same filter, other rule | kept by one only |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    disagreements = []
    for name, mine in verdicts.items():
        theirs = ours.get(name)
        if theirs is None or len(theirs) != len(mine):
            print("| %s | %d | (no matching verdicts in --ours) | | | | |" % (name, len(mine)))
            continue
        same = sum(a == b for a, b in zip(mine, theirs))
        kept = sum(a is None and b is None for a, b in zip(mine, theirs))
        same_rule = sum(a is not None and a == b for a, b in zip(mine, theirs))
        same_filter = sum(
            a is not None and b is not None and a != b and a.split("/")[0] == b.split("/")[0] for a, b in zip(mine, theirs)
        )
        one = sum((a is None) != (b is None) for a, b in zip(mine, theirs))
        print("| %s | %d | %d | %d | %d | %d | %d |" % (name, len(mine), same, kept, same_rule, same_filter, one))
        disagreements += [(name, i, a, b) for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
    print("\ndisagreements (corpus, document, datatrove, tokenmill):")
    for d in disagreements:
        print("  %s #%d: %s | %s" % d)


if __name__ == "__main__":
    main()
