#!/usr/bin/env python3
"""Peer benchmark: HuggingFace `tokenizers` (Python bindings) batch encoding.

Usage:
    python bench_tokenize.py --tokenizer PATH(.json|.json.gz) --texts TEXTS.jsonl[.gz] \
        --threads N [--repeat R] [--json]

Loads every line's "text" field, loads the tokenizer with Tokenizer.from_str,
warms up once, then times tok.encode_batch(texts, add_special_tokens=False)
R times (default 3) and reports the best run. If this tokenizers version has
encode_batch_fast (no offsets), it is timed the same way and reported as a
second object with impl "python-tokenizers-fast".

Output: one JSON object per line (with --json, or by default) like
  {"impl":"python-tokenizers","version":"0.23.2","threads":N,"docs":..,
   "bytes":..,"tokens":..,"seconds":..,"mb_per_s":..,"tokens_per_s":..}
"bytes" is the UTF-8 size of the texts; mb_per_s is bytes / 1e6 / seconds.
Without --json a human-readable line follows each object on stderr.
"""

import argparse
import gzip
import json
import os
import sys
import time


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json or tokenizer.json.gz")
    ap.add_argument("--texts", required=True, help="JSONL (optionally .gz) with a 'text' field per line")
    ap.add_argument("--threads", type=int, required=True, help="RAYON_NUM_THREADS for the Rust side")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported (default 3)")
    ap.add_argument("--json", action="store_true", help="print only the JSON lines")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.repeat < 1:
        ap.error("--threads and --repeat must be >= 1")
    return args


def open_maybe_gz(path, mode):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, mode)
    return open(path, mode)


def load_texts(path):
    texts = []
    with open_maybe_gz(path, "rt") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            text = obj.get("text")
            if not isinstance(text, str):
                raise SystemExit(f"{path}:{lineno}: no string 'text' field")
            texts.append(text)
    return texts


GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_level_alphabet():
    """GPT-2's byte-to-character map, inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


class _Ids:
    def __init__(self, ids):
        self.ids = ids


def tiktoken_variant(path, tok, texts, threads):
    """tiktoken with ranks built from a GPT-2-form tokenizer.json (ByteLevel pre-tokenizer,
    no normalizer, merges in id order), checked to give HF's ids on the texts; [] otherwise."""
    try:
        import tiktoken
    except ImportError:
        return []
    with open_maybe_gz(path, "rt") as f:
        spec = json.load(f)
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or spec.get("normalizer") or spec["model"]["type"] != "BPE":
        return []
    alphabet = byte_level_alphabet()
    ranks = {}
    for token, i in spec["model"]["vocab"].items():
        try:
            ranks[bytes(alphabet[c] for c in token)] = i
        except KeyError:
            return []
    enc = tiktoken.Encoding("from-tokenizer-json", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    want = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    if enc.encode_ordinary_batch(texts, num_threads=threads) != want:
        print("# tiktoken's ids differ from tokenizers' on these texts: no tiktoken row", file=sys.stderr)
        return []

    def run(batch, add_special_tokens=False):
        return [_Ids(x) for x in enc.encode_ordinary_batch(batch, num_threads=threads)]

    return [("python-tiktoken", run)]


def time_best(fn, texts, repeat):
    fn(texts, add_special_tokens=False)  # warm-up (thread pool, caches)
    best, tokens = None, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        encs = fn(texts, add_special_tokens=False)
        dt = time.perf_counter() - t0
        n = sum(len(e.ids) for e in encs)
        if tokens is not None and n != tokens:
            raise SystemExit(f"token count changed between runs: {tokens} vs {n}")
        tokens = n
        best = dt if best is None else min(best, dt)
    return best, tokens


def main(argv=None):
    args = parse_args(argv)
    # Must be set before tokenizers is imported: its rayon pool reads them once.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import tokenizers
    from tokenizers import Tokenizer

    with open_maybe_gz(args.tokenizer, "rt") as f:
        tok = Tokenizer.from_str(f.read())
    texts = load_texts(args.texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)

    variants = [("python-tokenizers", tok.encode_batch)]
    if hasattr(tok, "encode_batch_fast"):
        variants.append(("python-tokenizers-fast", tok.encode_batch_fast))

    for impl, fn in variants + tiktoken_variant(args.tokenizer, tok, texts, args.threads):
        seconds, n_tokens = time_best(fn, texts, args.repeat)
        rec = {
            "impl": impl,
            "version": tokenizers.__version__,
            "threads": args.threads,
            "docs": len(texts),
            "bytes": n_bytes,
            "tokens": n_tokens,
            "seconds": round(seconds, 6),
            "mb_per_s": round(n_bytes / 1e6 / seconds, 3),
            "tokens_per_s": round(n_tokens / seconds, 1),
        }
        print(json.dumps(rec), flush=True)
        if not args.json:
            print(
                f"# {impl} {rec['version']}: {len(texts)} docs, {n_bytes} B, {n_tokens} tokens, "
                f"best of {args.repeat}: {seconds:.4f} s = {rec['mb_per_s']} MB/s, "
                f"{rec['tokens_per_s']:.0f} tok/s ({args.threads} threads)",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
