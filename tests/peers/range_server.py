#!/usr/bin/env python3
"""A static file server with HTTP Range support, for tokenmill's object-store tests.

`python3 -m http.server` ignores `Range`; object_store's HTTP store resumes a body cut midway
with a range request (`bytes=N-M`, checked against the ETag), so this server answers `HEAD`
and `GET` with `Content-Length`, `ETag`, `Last-Modified`, `Accept-Ranges` and, for a range,
`206 Partial Content` with `Content-Range`.

    python3 range_server.py DIR [--port 0] [--drop-first]

`--drop-first`: the first GET of each file sends its headers and half its body, then drops the
connection, so that the client's retry is exercised. Prints `READY <port>` once listening.
`GET /__stats` returns JSON: per path, the GETs served and the connections dropped.
"""

import argparse
import email.utils
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {}
LOCK = threading.Lock()


def make_handler(root, drop_first):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("range_server: " + (fmt % args) + "\n")

        def _file(self):
            rel = self.path.split("?", 1)[0].lstrip("/")
            full = os.path.realpath(os.path.join(root, rel))
            if not full.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(full):
                return None, rel
            return full, rel

        def _headers(self, full, status, length, extra=()):
            st = os.stat(full)
            self.send_response(status)
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", '"%x-%x"' % (st.st_size, st.st_mtime_ns))
            self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()

        def do_HEAD(self):
            full, _ = self._file()
            if full is None:
                self.send_error(404)
                return
            self._headers(full, 200, os.path.getsize(full))

        def do_GET(self):
            if self.path == "/__stats":
                with LOCK:
                    body = json.dumps(STATS).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)
                return
            full, rel = self._file()
            if full is None:
                self.send_error(404)
                return
            size = os.path.getsize(full)
            start, end = 0, size - 1
            status, extra = 200, []
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
            if m:
                if m.group(1):
                    start = int(m.group(1))
                    end = int(m.group(2)) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                end = min(end, size - 1)
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", "bytes */%d" % size)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
                extra = [("Content-Range", "bytes %d-%d/%d" % (start, end, size))]
            length = end - start + 1
            with LOCK:
                s = STATS.setdefault(rel, {"gets": 0, "dropped": 0})
                s["gets"] += 1
                drop = drop_first and s["gets"] == 1 and length > 1
                if drop:
                    s["dropped"] += 1
            self._headers(full, status, length, extra)
            with open(full, "rb") as f:
                f.seek(start)
                data = f.read(length)
            if drop:
                self.wfile.write(data[: length // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--drop-first", action="store_true")
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.root, a.drop_first))
    srv.daemon_threads = True
    print("READY %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
