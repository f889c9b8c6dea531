"""Agreement of tokenmill's extraction with trafilatura on pages nobody tuned for.

The 20 benchmark pages of ../shared/data/extraction were looked at while tokenmill's
extractor was written; this script checks it on other pages: the HTML responses of the WARC
files, extracted by `tokenmill extract WARC... --out DIR` (DIR/kept.jsonl, keyed by
WARC-Record-ID) and by trafilatura (default settings and favor_precision) here. There is no
ground truth, so it prints word-level agreement: the share of tokenmill's words trafilatura
also kept (precision vs trafilatura) and the share of trafilatura's words tokenmill kept
(recall vs trafilatura), per page and overall.

    .venv-extract/bin/python tests/peers/extraction_agreement.py DIR/kept.jsonl WARC...
"""

import collections
import json
import re
import sys

import trafilatura
from warcio.archiveiterator import ArchiveIterator


def bag(t):
    return collections.Counter(re.findall(r"\w+", (t or "").lower()))


def main():
    kept = {}
    for line in open(sys.argv[1], encoding="utf-8"):
        d = json.loads(line)
        kept[d["id"]] = d["text"]
    rows = []
    for path in [a for a in sys.argv[2:] if not a.startswith("--")]:
        with open(path, "rb") as f:
            try:
                for r in ArchiveIterator(f):
                    if r.rec_type != "response":
                        continue
                    rid = r.rec_headers.get_header("WARC-Record-ID")
                    ctype = (r.http_headers.get_header("Content-Type") or "") if r.http_headers else ""
                    if "html" not in ctype or rid not in kept:
                        continue
                    html = r.content_stream().read().decode("utf-8", errors="replace")
                    for mode, kw in (("default", {}), ("precision", {"favor_precision": True})):
                        t = trafilatura.extract(html, **kw) or ""
                        a, b = bag(kept[rid]), bag(t)
                        o = sum((a & b).values())
                        rows.append((mode, path.split("/")[-1], rid, sum(a.values()), sum(b.values()), o))
            except Exception as e:  # the clipped file: warcio stops at the truncation
                print(f"# {path}: {type(e).__name__}: {e}", file=sys.stderr)
    for mode in ("default", "precision"):
        rs = [r for r in rows if r[0] == mode]
        ours = sum(r[3] for r in rs)
        theirs = sum(r[4] for r in rs)
        o = sum(r[5] for r in rs)
        p = o / max(ours, 1)
        rc = o / max(theirs, 1)
        f = 2 * p * rc / max(p + rc, 1e-9)
        both_empty = sum(1 for r in rs if r[3] == 0 and r[4] == 0)
        print(f"| trafilatura {trafilatura.__version__} {mode} | {len(rs)} pages | {ours} | {theirs} | "
              f"{p:.3f} | {rc:.3f} | {f:.3f} |")
        if "--per-page" in sys.argv:
            for r in rs:
                print("   ", r[1], r[2], r[3], r[4], r[5])


if __name__ == "__main__":
    main()
