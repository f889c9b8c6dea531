"""tokenmill's web recipe against datatrove's FineWeb pipeline on the same WARC files.

Both sides: WARC reader → main-content extraction → Gopher repetition → Gopher quality → C4
(FineWeb's settings: no terminal-punctuation line rule) → FineWeb quality. Language id is left
out of both: datatrove's language filter downloads a fastText model at run time, which cannot
happen here (tokenmill's `[filters.language]` is disabled for the comparison); so are the URL
filter and PII formatting (not in datatrove's FineWeb example without downloads either).

Prints documents read, kept, documents/s per core (one process each, single thread, best of N
passes; inputs repeated `--repeat` times so start-up costs do not dominate), and how many kept
documents the two agree on (by WARC-Record-ID).

    .venv-extract/bin/python tests/peers/web_pipeline_compare.py --tokenmill target/perf/tokenmill \\
        ../shared/data/warc/dolma-wget-sample-0000.warc.gz ...
"""

import argparse
import pathlib
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = """
[input]
on_error = "skip"
[filters.url]
enabled = false
[filters.language]
enabled = false
[filters.pii]
enabled = false
[filters.c4]
filter_no_terminal_punct = false
"""


def run_tokenmill(binary, files, passes):
    best, kept = None, set()
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "recipe.toml")
        open(cfg, "w").write(RECIPE)
        for _ in range(passes):
            out = os.path.join(d, "out")
            t0 = time.perf_counter()
            p = subprocess.run([binary, "extract", "--config", cfg, "--out", out, "--json", *files],
                               capture_output=True, text=True, check=True, env={**os.environ, "RAYON_NUM_THREADS": "1"})
            wall = time.perf_counter() - t0
            st = json.loads(p.stdout)
            if best is None or wall < best[0]:
                best = (wall, st)
            kept = {json.loads(l)["id"] for l in open(os.path.join(out, "kept.jsonl"))}
    wall, st = best
    read = st["documents_read"] - st["reader_skips"]
    return {"read": read, "kept": len(kept), "seconds": wall, "docs_per_s": read / wall, "ids": kept}


def run_datatrove(files, passes):
    sys.path.insert(0, HERE)
    import datatrove_fineweb as dt  # noqa: E402  (the peer script of this folder)

    best = None
    kept = set()
    for _ in range(passes):
        t0 = time.perf_counter()
        read = 0
        ids = set()
        for f in files:
            r = dt.run_once(pathlib.Path(f), argparse.Namespace(timeout=1.0, c4_terminal_punct=False))
            read += len(r["seen"]["reader"])
            ids |= {k["id"] for k in r["kept"]}
        wall = time.perf_counter() - t0
        if best is None or wall < best[0]:
            best = (wall, read)
        kept = ids
    wall, read = best
    return {"read": read, "kept": len(kept), "seconds": wall, "docs_per_s": read / wall, "ids": kept}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--tokenmill", required=True)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    # distinct names for the repeats (tokenmill de-duplicates its input list)
    links = tempfile.mkdtemp()
    files = []
    for f in a.files:
        for i in range(a.repeat):
            p = os.path.join(links, f"{i}-{os.path.basename(f)}")
            os.symlink(os.path.abspath(f), p)
            files.append(p)
    t = run_tokenmill(a.tokenmill, files, a.passes)
    d = run_datatrove(files, a.passes)
    both = t["ids"] & d["ids"]
    print(f"{len(a.files)} WARC files × {a.repeat}, best of {a.passes} passes, one core each\n")
    print("| pipeline | documents read | kept | seconds | documents/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("tokenmill", t), ("datatrove 0.10.1", d)):
        print(f"| {name} | {r['read']} | {r['kept']} | {r['seconds']:.2f} | {r['docs_per_s']:.0f} | "
              f"{r['docs_per_s'] / d['docs_per_s']:.1f}× |")
    print(f"\nkept by both: {len(both)}; only tokenmill: {len(t['ids'] - d['ids'])}; "
          f"only datatrove: {len(d['ids'] - t['ids'])}")
    for i in sorted(t["ids"] - d["ids"]):
        print("  only tokenmill:", i)
    for i in sorted(d["ids"] - t["ids"]):
        print("  only datatrove:", i)


if __name__ == "__main__":
    main()
