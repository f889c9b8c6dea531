#!/usr/bin/env python3
"""Peer check: read a tokenmill dataset with Megatron-core's own reader.

Usage:
    python megatron_read.py DATASET_DIR [--dump-first N]

DATASET_DIR holds `manifest.json` and, for each entry of its `shards` list,
`<name>.bin` + `<name>.idx` (Megatron MMIDIDX indexed dataset, version 1).

Each shard is read twice:
  * by `megatron.core.datasets.indexed_dataset.IndexedDataset(prefix, mmap=True)`;
  * by an independent numpy parser written from the format spec below.
Every sequence must come back identical (dtype and values) from both, and the
sequence count and document_indices must agree.

.idx layout (all little-endian):
    off  size  field
    0    9     magic b"MMIDIDX\\x00\\x00"
    9    8     u64 version = 1
    17   1     u8 dtype code (8 = uint16, 4 = int32)
    18   8     u64 S = sequence count
    26   8     u64 D = document count = len(document_indices)
    34   4*S   int32 sequence lengths (tokens)
    ..   8*S   int64 sequence byte pointers into .bin
    ..   8*D   int64 document indices (sequence index boundaries, [0, ..., S])

Loss masks: a shard whose manifest entry has `masks` also has
`<name>.mask.bin` + `<name>.mask.idx` (one uint8 per token, dtype code 1), read by
the same IndexedDataset: one mask sequence per token sequence, same lengths, values
0/1, as many 1s as the entry's `masks.trained_tokens`.

Output (stdout):
  * with --dump-first N: one line, a JSON array of the first N sequences (in
    manifest shard order, across shards) as lists of ints;
  * with --dump-first-masks N: one line, the first N mask sequences likewise;
  * always, as the last line: {"shards":..,"sequences":..,"tokens":..,
    "mask_shards":..,"masked_in":..,"ok":true}.
Exit status: 0 if everything matches, 1 on any mismatch or malformed file
(message on stderr, prefixed "MISMATCH:" or "ERROR:"), 2 on usage errors.
"""

import argparse
import json
import logging
import os
import struct
import sys
import warnings

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
HEADER_LEN = 34
# Only the token dtypes tokenmill writes.
DTYPE_CODES = {8: np.dtype("<u2"), 4: np.dtype("<i4")}
MANIFEST_DTYPES = {"uint16": 8, "int32": 4}


class Mismatch(Exception):
    pass


def fail(msg):
    raise Mismatch(msg)


def import_megatron_indexed_dataset():
    # megatron.core pulls in torch and warns about missing Apex / Transformer
    # Engine on import; none of that matters for the dataset reader.
    warnings.filterwarnings("ignore")
    logging.getLogger("megatron").setLevel(logging.WARNING)
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset


def parse_shard_numpy(prefix):
    """Parse <prefix>.idx / <prefix>.bin from the spec; return a dict."""
    idx_path = prefix + ".idx"
    bin_path = prefix + ".bin"
    with open(idx_path, "rb") as f:
        idx = f.read()
    if len(idx) < HEADER_LEN:
        fail(f"{idx_path}: {len(idx)} bytes, shorter than the {HEADER_LEN}-byte header")
    if idx[:9] != MAGIC:
        fail(f"{idx_path}: bad magic {idx[:9]!r}, expected {MAGIC!r}")
    (version,) = struct.unpack_from("<Q", idx, 9)
    if version != 1:
        fail(f"{idx_path}: version {version}, expected 1")
    code = idx[17]
    if code not in DTYPE_CODES:
        fail(f"{idx_path}: dtype code {code}, expected 8 (uint16) or 4 (int32)")
    dtype = DTYPE_CODES[code]
    seq_count, doc_count = struct.unpack_from("<QQ", idx, 18)
    expected_len = HEADER_LEN + 4 * seq_count + 8 * seq_count + 8 * doc_count
    if len(idx) != expected_len:
        fail(
            f"{idx_path}: {len(idx)} bytes, expected {expected_len} "
            f"for {seq_count} sequences and {doc_count} document indices"
        )
    off = HEADER_LEN
    lengths = np.frombuffer(idx, dtype="<i4", count=seq_count, offset=off)
    off += 4 * seq_count
    pointers = np.frombuffer(idx, dtype="<i8", count=seq_count, offset=off)
    off += 8 * seq_count
    doc_indices = np.frombuffer(idx, dtype="<i8", count=doc_count, offset=off)

    if seq_count and lengths.min() < 0:
        fail(f"{idx_path}: negative sequence length")
    # Sequences are stored back to back, in order.
    starts = np.zeros(seq_count, dtype=np.int64)
    if seq_count > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize, out=starts[1:])
    if not np.array_equal(pointers, starts):
        bad = int(np.nonzero(pointers != starts)[0][0])
        fail(f"{idx_path}: pointer[{bad}] = {int(pointers[bad])}, expected {int(starts[bad])}")
    if doc_count < 1 or doc_indices[0] != 0 or doc_indices[-1] != seq_count:
        fail(f"{idx_path}: document_indices must run from 0 to {seq_count}, got {doc_indices[:3]}..{doc_indices[-3:]}")
    if doc_count > 1 and np.any(np.diff(doc_indices) < 0):
        fail(f"{idx_path}: document_indices not non-decreasing")

    total_tokens = int(lengths.astype(np.int64).sum())
    bin_size = os.path.getsize(bin_path)
    if bin_size != total_tokens * dtype.itemsize:
        fail(f"{bin_path}: {bin_size} bytes, expected {total_tokens} tokens * {dtype.itemsize}")
    tokens = np.fromfile(bin_path, dtype=dtype) if bin_size else np.zeros(0, dtype=dtype)
    return {
        "code": code,
        "dtype": dtype,
        "lengths": lengths,
        "pointers": pointers,
        "doc_indices": doc_indices,
        "tokens": tokens,
        "total_tokens": total_tokens,
    }


def check_shard(IndexedDataset, prefix, entry, manifest, dump, dump_n):
    ref = parse_shard_numpy(prefix)
    seq_count = len(ref["lengths"])

    # Optional cross-checks against the manifest's own numbers.
    if "dtype" in manifest and MANIFEST_DTYPES.get(manifest["dtype"]) != ref["code"]:
        fail(f"{prefix}.idx: dtype code {ref['code']} but manifest dtype is {manifest['dtype']!r}")
    if "documents" in entry and entry["documents"] != seq_count:
        fail(f"{prefix}: manifest says {entry['documents']} documents, .idx has {seq_count} sequences")
    if "tokens" in entry and entry["tokens"] != ref["total_tokens"]:
        fail(f"{prefix}: manifest says {entry['tokens']} tokens, .idx sums to {ref['total_tokens']}")
    if "bin_bytes" in entry and entry["bin_bytes"] != os.path.getsize(prefix + ".bin"):
        fail(f"{prefix}: manifest says {entry['bin_bytes']} bin bytes, file has {os.path.getsize(prefix + '.bin')}")

    try:
        ds = IndexedDataset(prefix, multimodal=False, mmap=True)
    except Exception as e:  # Megatron refuses the file: that is a mismatch too.
        fail(f"{prefix}: Megatron IndexedDataset failed to open it: {type(e).__name__}: {e}")

    if len(ds) != seq_count:
        fail(f"{prefix}: len(ds) = {len(ds)}, numpy parse has {seq_count} sequences")
    m_doc = np.asarray(ds.document_indices)
    if m_doc.dtype != np.int64 or not np.array_equal(m_doc, ref["doc_indices"]):
        fail(f"{prefix}: Megatron document_indices {m_doc[:5]}.. ({m_doc.dtype}) != numpy {ref['doc_indices'][:5]}..")
    if not np.array_equal(np.asarray(ds.sequence_lengths), ref["lengths"]):
        fail(f"{prefix}: Megatron sequence_lengths differ from numpy parse")
    if ds.index.dtype != ref["dtype"].type:
        fail(f"{prefix}: Megatron dtype {ds.index.dtype} != numpy {ref['dtype']}")

    tokens = ref["tokens"]
    starts = ref["pointers"] // ref["dtype"].itemsize
    for i in range(seq_count):
        got = ds[i]
        start = int(starts[i])
        want = tokens[start : start + int(ref["lengths"][i])]
        if got.dtype != want.dtype:
            fail(f"{prefix}: sequence {i}: Megatron dtype {got.dtype} != numpy {want.dtype}")
        if got.shape != want.shape or not np.array_equal(got, want):
            fail(
                f"{prefix}: sequence {i}: Megatron returned {got.shape[0]} tokens "
                f"{got[:8].tolist()}.., numpy parse {want.shape[0]} tokens {want[:8].tolist()}.."
            )
        if len(dump) < dump_n:
            dump.append(got.tolist())
    del ds
    return seq_count, ref["total_tokens"]


def check_masks(IndexedDataset, prefix, entry, lengths_of, mask_dump, dump_n):
    """The loss masks beside a shard (`<prefix>.mask.bin/.idx`, one uint8 per token), read
    by Megatron's IndexedDataset: one mask sequence per token sequence, of the same length,
    values 0/1, and as many 1s as the manifest's `trained_tokens`."""
    try:
        ds = IndexedDataset(prefix + ".mask", multimodal=False, mmap=True)
    except Exception as e:
        fail(f"{prefix}.mask: Megatron IndexedDataset failed to open it: {type(e).__name__}: {e}")
    lengths = lengths_of(prefix)
    if len(ds) != len(lengths):
        fail(f"{prefix}.mask: {len(ds)} sequences, the shard has {len(lengths)}")
    if ds.index.dtype != np.uint8:
        fail(f"{prefix}.mask: dtype {ds.index.dtype}, expected uint8")
    ones = 0
    for i in range(len(ds)):
        m = ds[i]
        if m.shape[0] != int(lengths[i]):
            fail(f"{prefix}.mask: sequence {i} has {m.shape[0]} mask bytes for {int(lengths[i])} tokens")
        if m.size and int(m.max()) > 1:
            fail(f"{prefix}.mask: sequence {i} holds a mask byte {int(m.max())} (0 or 1 expected)")
        ones += int(m.sum(dtype=np.int64))
        if len(mask_dump) < dump_n:
            mask_dump.append(m.tolist())
    want = entry["masks"].get("trained_tokens")
    if want is not None and want != ones:
        fail(f"{prefix}.mask: {ones} masked-in tokens, the manifest says {want}")
    del ds
    return ones


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset_dir")
    ap.add_argument("--dump-first", type=int, default=None, metavar="N",
                    help="print the first N sequences' tokens as a JSON array line")
    ap.add_argument("--dump-first-masks", type=int, default=None, metavar="N",
                    help="print the first N sequences' loss masks as a JSON array line (after the tokens' line)")
    args = ap.parse_args(argv)

    manifest_path = os.path.join(args.dataset_dir, "manifest.json")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        shards = manifest["shards"]
        names = [s["name"] for s in shards]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"ERROR: cannot read shard list from {manifest_path}: {e}", file=sys.stderr)
        return 1

    IndexedDataset = import_megatron_indexed_dataset()
    dump, dump_n = [], args.dump_first or 0
    mask_dump, mask_n = [], args.dump_first_masks or 0
    total_seq = total_tok = 0
    mask_shards = masked_in = 0
    try:
        for entry, name in zip(shards, names):
            prefix = os.path.join(args.dataset_dir, name)
            for ext in (".idx", ".bin"):
                if not os.path.isfile(prefix + ext):
                    fail(f"shard {name!r}: {prefix + ext} is missing")
            n_seq, n_tok = check_shard(IndexedDataset, prefix, entry, manifest, dump, dump_n)
            total_seq += n_seq
            total_tok += n_tok
            if entry.get("masks"):
                mask_shards += 1
                masked_in += check_masks(
                    IndexedDataset, prefix, entry,
                    lambda p: parse_shard_numpy(p)["lengths"], mask_dump, mask_n,
                )
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1

    if args.dump_first is not None:
        print(json.dumps(dump, separators=(",", ":")))
    if args.dump_first_masks is not None:
        print(json.dumps(mask_dump, separators=(",", ":")))
    print(json.dumps({"shards": len(names), "sequences": total_seq, "tokens": total_tok,
                      "mask_shards": mask_shards, "masked_in": masked_in, "ok": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
