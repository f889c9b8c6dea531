#!/usr/bin/env python3
"""FineWeb-like filtering peer: datatrove's own pipeline, in process, on WARC files.

usage: python datatrove_fineweb.py WARC [WARC ...] [--out KEPT.jsonl] [--json STATS.json]
                                   [--passes 3] [--timeout 1.0] [--c4-terminal-punct] [--verbose]

For each WARC file separately, the pipeline of datatrove's examples/fineweb.py
minus its URLFilter and LanguageFilter steps (the language filter downloads a
fastText model at run time; the URL filter is not part of this peer):

  WarcReader(file)                              (datatrove.pipeline.readers)
  Trafilatura(favour_precision=True)            (timeout 1 s, deduplicate=True)
  GopherRepetitionFilter()                      (defaults)
  GopherQualityFilter()                         (defaults)
  C4QualityFilter(filter_no_terminal_punct=False)   (as FineWeb; the class
                                                 default is True: --c4-terminal-punct)
  FineWebQualityFilter()                        (defaults)

The steps are chained in process exactly as datatrove's executors do
(`data = step(data, rank=0, world_size=1)`), single worker, no executor and
no logging folder. Between steps a pass-through tap records which document ids
reach each stage; each filter gets an in-memory exclusion sink, so every
dropped document's reason (datatrove's own `filter_reason`) is recorded.

Offline: nothing is downloaded. The English word tokenizer of the Gopher,
C4 and FineWeb filters is datatrove's SpaCyTokenizer("en") = spacy.blank("en")
+ "sentencizer" (no model download, but the `spacy` package must be
installed: it is not in datatrove's `processing` extra). NLTK punkt is NOT
used for English. The reader needs python-magic (libmagic1) and faust-cchardet.

Output:
  stdout   a markdown funnel per file and a summary table
  --out    JSONL of the kept documents: {"file", "id", "url", "date", "text"}
           (id = WARC-Record-ID verbatim, e.g. "<urn:uuid:...>"; url =
           WARC-Target-URI as warcio returns it; text = after C4's line edits)
  --json   every number: record counts by type, reader funnel, per-stage
           kept counts and drop reasons, per-document fate, timings

Timing: documents/s = documents read by WarcReader / wall time of one whole
pass (reading, gunzip, WARC parsing, extraction in datatrove's sandbox
subprocess incl. its start, all filters); --passes passes, best reported.
An untimed warcio scan of each file first counts records by type, HTTP
status and payload type, and re-applies datatrove's own `process_record`
to say how many response records the reader skips.
"""

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path


class ExclusionSink:
    """Duck-typed stand-in for a datatrove DiskWriter used as exclusion_writer.

    BaseFilter.run does `with exclusion_writer as w: ... w.write(doc, rank)`
    after setting doc.metadata["filter_reason"]; we only remember (id, reason).
    """

    def __init__(self, stage, fates):
        self.stage = stage
        self.fates = fates

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, doc, rank=0, **kwargs):
        self.fates[doc.id] = {"dropped_at": self.stage, "reason": doc.metadata.get("filter_reason")}


def tap(data, stage, seen, urls):
    """Pass documents through unchanged, remembering the ids that reach `stage` (and their urls)."""
    for doc in data:
        seen[stage].append(doc.id)
        urls.setdefault(doc.id, doc.metadata.get("url"))
        yield doc


def scan_warc(path):
    """Untimed warcio scan: record types, HTTP statuses, payload types, and the reader's verdict."""
    from warcio.archiveiterator import ArchiveIterator
    from datatrove.pipeline.readers.warc import process_record

    rec_types = Counter()
    statuses = Counter()
    payload_types = Counter()
    content_encodings = Counter()
    reader_kept = 0
    reader_skipped = Counter()
    status_by_id = {}
    skipped_records = []
    error = None
    with open(path, "rb") as f:
        try:
            for record in ArchiveIterator(f):
                rec_types[record.rec_type] += 1
                if record.rec_type not in ("response", "conversion"):
                    continue
                rid = record.rec_headers.get_header("WARC-Record-ID")
                if record.http_headers is not None:
                    status = record.http_headers.get_statuscode()
                    statuses[status] += 1
                    status_by_id[rid] = status
                    enc = record.http_headers.get_header("Content-Encoding")
                    if enc:
                        content_encodings[enc] += 1
                payload_types[str(record.rec_headers.get_header("WARC-Identified-Payload-Type"))] += 1
                if process_record(record):
                    reader_kept += 1
                else:
                    reader_skipped[record.rec_type] += 1
                    skipped_records.append({
                        "id": rid,
                        "url": record.rec_headers.get_header("WARC-Target-URI"),
                        "http_content_type": record.http_headers.get_header("Content-Type")
                        if record.http_headers is not None else None,
                    })
        except Exception as e:  # e.g. a truncated gzip member
            error = f"{type(e).__name__}: {e}"
    return {
        "record_types": dict(rec_types),
        "http_status": dict(statuses),
        "payload_types": dict(payload_types),
        "content_encodings": dict(content_encodings),
        "reader_would_keep": reader_kept,
        "reader_would_skip": dict(reader_skipped),
        "reader_skipped_records": skipped_records,
        "scan_error": error,
    }, status_by_id


def build_pipeline(path, args, fates):
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.readers import WarcReader

    return [
        ("reader", WarcReader(str(path.parent), glob_pattern=path.name, recursive=False)),
        ("trafilatura", Trafilatura(favour_precision=True, timeout=args.timeout)),
        ("gopher_rep", GopherRepetitionFilter(exclusion_writer=ExclusionSink("gopher_rep", fates))),
        ("gopher_qual", GopherQualityFilter(exclusion_writer=ExclusionSink("gopher_qual", fates))),
        ("c4", C4QualityFilter(filter_no_terminal_punct=args.c4_terminal_punct,
                               exclusion_writer=ExclusionSink("c4", fates))),
        ("fineweb_qual", FineWebQualityFilter(exclusion_writer=ExclusionSink("fineweb_qual", fates))),
    ]


STAGES = ["reader", "trafilatura", "gopher_rep", "gopher_qual", "c4", "fineweb_qual"]


def run_once(path, args):
    """One whole pass over one WARC file.

    Returns a dict: kept (docs), seen ({stage: ids out of it}), fates ({id: fate of each
    dropped doc}), urls ({id: url}), stats (datatrove's per-step Stats as dicts), wall (s),
    error (None, or the exception that stopped the pass; the counts are then partial).
    """
    fates = {}
    steps = build_pipeline(path, args, fates)
    seen = {name: [] for name in STAGES}
    urls = {}
    kept = []
    error = None
    t0 = time.perf_counter()
    data = None
    for name, step in steps:
        data = step(data, rank=0, world_size=1)
        data = tap(data, name, seen, urls)  # ids that came OUT of this step
    try:
        for doc in data:
            kept.append({"id": doc.id, "url": doc.metadata.get("url"), "date": doc.metadata.get("date"),
                         "text": doc.text})
    except Exception as e:  # e.g. EOFError from a truncated .gz: datatrove's reader does not catch it
        error = f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    stats = {name: step.stats.to_dict() for name, step in steps}
    # documents dropped by the extractor have no exclusion writer: fill them in
    extracted = set(seen["trafilatura"])
    for doc_id in seen["reader"]:
        if doc_id not in extracted and doc_id not in fates:
            fates[doc_id] = {"dropped_at": "trafilatura", "reason": "empty/timeout/error (see stats)"}
    for doc_id, fate in fates.items():
        fate["url"] = urls.get(doc_id)
    return {"kept": kept, "seen": seen, "fates": fates, "urls": urls, "stats": stats, "wall": wall,
            "error": error}


def time_total(step_stats):
    """Total seconds of a step's track_time() from a datatrove Stats.to_dict()."""
    t = step_stats.get("time_stats")
    return t.get("total", 0.0) if isinstance(t, dict) else 0.0


def counters_of(step_stats):
    """Plain {label: total} from a datatrove Stats.to_dict() (drops time stats)."""
    out = {}
    for label, value in step_stats.get("stats", step_stats).items():
        if isinstance(value, dict) and "total" in value:
            out[label] = value["total"]
        elif isinstance(value, (int, float)):
            out[label] = value
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("warcs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="JSONL of kept documents (file, id, url, date, text)")
    ap.add_argument("--json", type=Path, help="all numbers as JSON")
    ap.add_argument("--passes", type=int, default=3, help="timed passes per file, best reported (default 3)")
    ap.add_argument("--timeout", type=float, default=1.0,
                    help="datatrove extractor per-document timeout in s (datatrove default 1)")
    ap.add_argument("--c4-terminal-punct", action="store_true",
                    help="C4QualityFilter(filter_no_terminal_punct=True), the class default (FineWeb used False)")
    ap.add_argument("--verbose", action="store_true", help="keep datatrove's INFO logging")
    args = ap.parse_args()

    import datatrove
    import trafilatura
    from datatrove.utils.logging import logger

    if not args.verbose:
        logger.remove()
        logger.add(sys.stderr, level="WARNING")

    try:
        from importlib.metadata import version

        dt_version = version("datatrove")
    except Exception:
        dt_version = getattr(datatrove, "__version__", "?")

    results = {}
    out_f = args.out.open("w", encoding="utf-8") if args.out else None
    for path in args.warcs:
        path = path.resolve()
        scan, status_by_id = scan_warc(path)
        runs = []
        for _ in range(args.passes):
            run = run_once(path, args)
            runs.append(run)
            if run["error"]:
                break  # a broken file: report the partial first pass, do not repeat
        first = runs[0]
        best = min(runs, key=lambda r: r["wall"])
        fingerprint = [[(d["id"], d["text"]) for d in r["kept"]] for r in runs]
        kept, seen, fates, urls = first["kept"], first["seen"], first["fates"], first["urls"]
        n_read = len(seen["reader"])
        res = {
            "file": str(path),
            "scan": scan,
            "error": first["error"],
            "documents_read": n_read,
            "kept_per_stage": {s: len(seen[s]) for s in STAGES},
            "drop_reasons": {s: dict(Counter(f["reason"] for f in fates.values() if f["dropped_at"] == s))
                             for s in STAGES[1:]},
            "step_counters": {s: counters_of(best["stats"][s]) for s in STAGES},
            # datatrove's own per-step time (track_time) in the best pass; the extractor's includes
            # the IPC to its sandbox subprocess
            "step_time_s": {s: time_total(best["stats"][s]) for s in STAGES},
            "non_200_read": sum(1 for i in seen["reader"] if status_by_id.get(i) not in (None, "200")),
            "documents": {i: fates.get(i, {"kept": True, "url": urls.get(i)}) for i in seen["reader"]},
            "kept": [{"id": d["id"], "url": d["url"]} for d in kept],
            "wall_s_passes": [r["wall"] for r in runs],
            "best_wall_s": best["wall"],
            "documents_per_s": n_read / best["wall"] if best["wall"] else None,
            "deterministic": all(f == fingerprint[0] for f in fingerprint),
        }
        if out_f:
            for d in kept:
                out_f.write(json.dumps({"file": path.name, **d}, ensure_ascii=False) + "\n")
        results[path.name] = res
    if out_f:
        out_f.close()

    # ---- markdown output -------------------------------------------------
    print(f"datatrove {dt_version}, trafilatura {trafilatura.__version__}, single worker, in process, "
          f"best of {args.passes} passes; C4 filter_no_terminal_punct={args.c4_terminal_punct}\n")
    print("| file | records | responses | read | extracted | gopher_rep | gopher_qual | c4 | fineweb_qual (kept) | docs/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        n_rec = sum(r["scan"]["record_types"].values())
        n_resp = r["scan"]["record_types"].get("response", 0) + r["scan"]["record_types"].get("conversion", 0)
        k = r["kept_per_stage"]
        label = f"{name} (ERROR, partial)" if r["error"] else name
        print(f"| {label} | {n_rec} | {n_resp} | {k['reader']} | {k['trafilatura']} | {k['gopher_rep']} | "
              f"{k['gopher_qual']} | {k['c4']} | {k['fineweb_qual']} | {r['documents_per_s']:.1f} |")
    for name, r in results.items():
        print(f"\n{name}:")
        if r["scan"]["scan_error"]:
            print(f"  warcio scan error: {r['scan']['scan_error']}")
        if r["error"]:
            print(f"  pipeline error (counts are up to it): {r['error']}")
        print(f"  record types {r['scan']['record_types']}; HTTP status {r['scan']['http_status']}; "
              f"payload types {r['scan']['payload_types']}")
        print(f"  reader skipped {r['scan']['reader_would_skip']} response records; non-200 read: {r['non_200_read']}")
        for rec in r["scan"]["reader_skipped_records"]:
            print(f"    skipped {rec['id']} {rec['url']} (HTTP Content-Type {rec['http_content_type']})")
        for s, reasons in r["drop_reasons"].items():
            if reasons:
                print(f"  dropped at {s}: {reasons}")
        print(f"  extractor counters: {r['step_counters']['trafilatura']}")
        print(f"  best wall {r['best_wall_s']:.3f} s (passes {', '.join(f'{w:.3f}' for w in r['wall_s_passes'])}), "
              f"deterministic={r['deterministic']}")
        for d in r["kept"]:
            print(f"  kept {d['id']} {d['url']}")

    if args.json:
        out = {"datatrove_version": dt_version, "trafilatura_version": trafilatura.__version__,
               "python": sys.version.split()[0], "passes": args.passes, "timeout_s": args.timeout,
               "c4_filter_no_terminal_punct": args.c4_terminal_punct, "files": results}
        args.json.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
