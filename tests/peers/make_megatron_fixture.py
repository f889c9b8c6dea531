#!/usr/bin/env python3
"""Write a small dataset with Megatron-core's own IndexedDatasetBuilder.

Usage:
    python make_megatron_fixture.py OUTDIR

Creates in OUTDIR:
  * fixture-u16.{bin,idx}  uint16 tokens (dtype code 8), one sequence per
    document (the layout tokenmill writes), including an empty sequence and
    the extreme values 0 and 65535;
  * fixture-i32.{bin,idx}  int32 tokens (dtype code 4), ids above 65535, and
    one document made of several sequences (via add_document), so
    document_indices is not simply [0, 1, ..., S];
  * manifest.json          a minimal manifest: {"shards": [{"name", "documents",
    "tokens"}, ...]} (no top-level dtype, since the two shards differ).

It is a reference for what Megatron itself writes, and input for
megatron_read.py.
"""

import json
import os
import sys
import warnings

import numpy as np


def main(argv):
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[0]
    os.makedirs(out, exist_ok=True)

    warnings.filterwarnings("ignore")
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    shards = []

    # uint16: one sequence per document, like tokenmill.
    u16_docs = [
        [15496, 11, 995, 0],
        [0, 1, 2, 3, 65535, 50256],
        [],
        [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13, 50256],
    ]
    prefix = os.path.join(out, "fixture-u16")
    b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for doc in u16_docs:
        # torch has no uint16 tensors on every version; int32 holds all values,
        # and the builder casts to its dtype before writing.
        b.add_item(torch.tensor(doc, dtype=torch.int32))
        b.end_document()
    b.finalize(prefix + ".idx")
    shards.append({"name": "fixture-u16", "documents": len(u16_docs),
                   "tokens": sum(len(d) for d in u16_docs)})

    # int32: large ids, and one document of three sequences.
    prefix = os.path.join(out, "fixture-i32")
    b = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    b.add_item(torch.tensor([100000, 128000, 2**31 - 1, 0], dtype=torch.int32))
    b.end_document()
    multi = [7, 8, 9, 70000, 70001, 1, 2, 3, 4]
    b.add_document(torch.tensor(multi, dtype=torch.int32), lengths=[3, 2, 4])
    b.add_item(torch.tensor([129279], dtype=torch.int32))
    b.end_document()
    b.finalize(prefix + ".idx")
    # "documents" in a tokenmill manifest counts sequences (one per document).
    shards.append({"name": "fixture-i32", "documents": 5, "tokens": 4 + len(multi) + 1})

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"shards": shards}, f, indent=2)
        f.write("\n")
    print(json.dumps({"out": out, "shards": [s["name"] for s in shards]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
