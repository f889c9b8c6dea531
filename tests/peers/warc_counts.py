#!/usr/bin/env python3
"""Peer: warcio (the community's reference WARC reader) counts each file's records per type and
lists its HTML responses with a 2xx status.

Usage: python warc_counts.py FILE.warc[.gz] ...

Prints one JSON object per file:
  {"file": ..., "types": {"response": n, ...}, "html_2xx": [record ids], "error": null | "..."}
A response is HTML when its HTTP Content-Type (or, without HTTP headers, its WARC
Content-Type) is text/html or application/xhtml+xml. A file warcio cannot finish reading
reports what it read before the error, and the error.
"""

import json
import sys

from warcio.archiveiterator import ArchiveIterator

HTML = ("text/html", "application/xhtml+xml")


def media_type(value):
    return (value or "").split(";")[0].strip().lower()


def count(path):
    types, html, error = {}, [], None
    try:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f, arc2warc=True):
                t = rec.rec_type
                types[t] = types.get(t, 0) + 1
                if t != "response":
                    continue
                rid = rec.rec_headers.get_header("WARC-Record-ID")
                if rec.http_headers is not None:
                    status = rec.http_headers.get_statuscode()
                    ct = rec.http_headers.get_header("Content-Type")
                else:
                    status, ct = "200", rec.rec_headers.get_header("Content-Type")
                try:
                    ok = 200 <= int(status or 0) < 300
                except ValueError:
                    ok = False
                if ok and media_type(ct) in HTML:
                    html.append(rid)
    except Exception as e:  # noqa: BLE001 — a peer reports any failure as data
        error = f"{type(e).__name__}: {e}"
    return {"file": path, "types": types, "html_2xx": html, "error": error}


def main(argv):
    for p in argv:
        print(json.dumps(count(p)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
