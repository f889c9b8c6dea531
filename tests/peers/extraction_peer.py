#!/usr/bin/env python3
"""trafilatura's output on the two extraction sets, for `tokenmill bench extract` to score.

usage: python extraction_peer.py [--data DIR] [--passes N] [--modes default,precision,...]
                                 [--sets multilingual,articles,udhr] OUT.json

Sets (under DIR, default $TOKENMILL_TEST_DATA or ../shared/data beside the repository):
  articles      extraction/html/<id>.html.gz           (20 English news/blog pages)
  multilingual  extraction-multilingual/html/<file>.gz (106 varied pages, several languages)
  udhr          multilingual/udhr-532-languages.tar.gz  (the UDHR in 532 languages, all main text)

Every page is handed to trafilatura.extract as the raw bytes of the file (gunzipped before
any clock starts): trafilatura detects the charset itself, as it does on crawled bytes.
Output format "txt"; the modes' keyword arguments are listed in MODES. Timing: only the
extract(...) calls, one page after another; --passes passes per mode after an untimed warm-up
page, best pass reported; trafilatura's caches are reset before each pass (their text caches
would make later passes faster, and deduplicate=True would drop text seen in a former pass).

OUT.json: {"trafilatura": VERSION, "modes": {MODE: {"kwargs": {...}, "seconds": {SET: best},
           "texts": {SET: {KEY: text}}}}} where KEY is the article id or the multilingual file
name (the UDHR's: its file name in the archive's `declaration/`). No scoring here: tokenmill scores both extractors with the same code.
"""

import argparse
import gzip
import json
import os
import sys
import tarfile
import time
from pathlib import Path

MODES = {
    "default": {},
    "precision": {"favor_precision": True},
    "recall": {"favor_recall": True},
    # What datatrove's Trafilatura step (FineWeb's settings) calls.
    "datatrove": {"favor_precision": True, "include_comments": False, "deduplicate": True},
}

WARMUP = (
    "<html><head><title>warm-up</title></head><body><article><p>"
    + "A small warm-up paragraph with enough words to be extracted by anyone. " * 5
    + "</p></article></body></html>"
)


def data_dir(arg):
    if arg:
        return Path(arg)
    env = os.environ.get("TOKENMILL_TEST_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load(d, names):
    sets = {}
    if "articles" in names:
        sets["articles"] = {}
        for p in sorted((d / "extraction" / "html").glob("*.html.gz")):
            sets["articles"][p.name[: -len(".html.gz")]] = gzip.decompress(p.read_bytes())
    if "multilingual" in names:
        sets["multilingual"] = {}
        ml = d / "extraction-multilingual"
        meta = json.loads((ml / "evaldata.json").read_text(encoding="utf-8"))
        for v in meta.values():
            sets["multilingual"][v["file"]] = gzip.decompress((ml / "html" / (v["file"] + ".gz")).read_bytes())
    if "udhr" in names:
        sets["udhr"] = {}
        with tarfile.open(d / "multilingual" / "udhr-532-languages.tar.gz") as tar:
            for m in sorted(tar.getmembers(), key=lambda m: m.name):
                if m.isfile() and m.name.startswith("declaration/") and m.name.endswith(".html"):
                    sets["udhr"][m.name[len("declaration/"):]] = tar.extractfile(m).read()
    unknown = set(names) - set(sets)
    if unknown:
        sys.exit(f"unknown sets {sorted(unknown)}; known: articles, multilingual, udhr")
    return sets


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--modes", default="default,precision,datatrove")
    ap.add_argument("--sets", default="multilingual,articles,udhr")
    args = ap.parse_args()

    import trafilatura
    from trafilatura.meta import reset_caches
    from trafilatura.deduplication import LRU_TEST

    sets = load(data_dir(args.data), args.sets.split(","))
    result = {"trafilatura": trafilatura.__version__, "modes": {}}
    for mode in args.modes.split(","):
        if mode not in MODES:
            sys.exit(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        kwargs = MODES[mode]
        entry = {"kwargs": kwargs, "seconds": {}, "texts": {}}
        for name, pages in sets.items():
            best, first = None, None
            for _ in range(max(1, args.passes)):
                reset_caches()
                trafilatura.extract(WARMUP, **kwargs)
                LRU_TEST.clear()
                texts, total = {}, 0.0
                for key, raw in pages.items():
                    t0 = time.perf_counter()
                    out = trafilatura.extract(raw, **kwargs)
                    total += time.perf_counter() - t0
                    texts[key] = out or ""
                best = total if best is None else min(best, total)
                first = first or texts
            entry["seconds"][name] = best
            entry["texts"][name] = first
        result["modes"][mode] = entry
        print(f"{mode}: " + ", ".join(f"{s} {len(sets[s])} pages in {t:.2f} s" for s, t in entry["seconds"].items()),
              file=sys.stderr)
    args.out.write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
