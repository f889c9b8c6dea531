#!/usr/bin/env python3
"""Peer benchmark: what Megatron-core's GPTDataset costs to build its sample index.

Usage:
    python megatron_gptdataset.py DATASET_DIR --seq-len 2048 --samples N
        [--seed 1234] [--all-shards] [--json]

DATASET_DIR is a tokenmill dataset: `manifest.json` plus, per entry of its
`shards` list, `<name>.bin` / `<name>.idx` (Megatron MMIDIDX v1).

Default mode (first shard only): open `IndexedDataset(<dir>/<first shard>)`,
then construct one `GPTDataset` over all its sequences (split "1,0,0", i.e.
every sequence in the train split, as `BlendedMegatronDatasetBuilder` would
pass `numpy.arange(S, dtype=int32)`) with `num_samples=N`. The constructor is
where Megatron builds, and writes to `path_to_cache` as .npy, its three
arrays:
  * document_index (int32, documents x epochs, shuffled),
  * sample_index   (int32 or int64, (samples+1) x 2: document-index position
                    and token offset where every sample starts; built by the
                    C++ extension `helpers_cpp.build_sample_idx_*`),
  * shuffle_index  (uint32, or int64 past 2**32-2 samples; a permutation).
`path_to_cache` is a fresh temp dir each time, so the index is built, never
loaded from a previous run's cache.

--all-shards: every shard in the manifest, through Megatron's own
`BlendedMegatronDatasetBuilder(GPTDataset, [N, 0, 0], ...)` with
`blend = (prefixes, weights = each shard's manifest token count)` -- the
equivalent of `--data-path T1 prefix1 T2 prefix2 ...`. That builds one
GPTDataset per shard (asked for ceil(N * w_i * 1.005) samples each, Megatron's
default `mid_level_dataset_surplus`) plus a `BlendedDataset` of N samples with
two more arrays (dataset_index int16, dataset_sample_index int64). The timed
region is `builder.build()` and so also includes opening each shard's
IndexedDataset. BlendedDataset calls `torch.distributed.get_rank()`
unconditionally when it writes its cache, so this mode first initialises a
single-process gloo group (file:// store in a temp dir, world_size 1).

Measurements (each GPTDataset construction / builder.build() is done twice,
each time into its own fresh cache dir):
  * run 1, untraced: build_seconds (wall clock), a per-step breakdown
    (document index, sample index, shuffle index, numpy.save), and
    /proc/self/status VmRSS before/after (rss_growth_bytes = what the
    process keeps) and VmHWM after resetting it via /proc/self/clear_refs
    (rss_peak_growth_bytes = peak - RSS before);
  * run 2, under tracemalloc: tracemalloc_peak_bytes and build_seconds_traced.
    NOTE: tracemalloc sees numpy's allocations (document_index, shuffle_index,
    temporaries) but NOT the sample_index, which helpers.cpp allocates with
    `new T[]` and hands to numpy through a capsule; RSS does see it.
Then ds[0], ds[1], ds[2] are fetched (from run 1's dataset) and the first 10
token ids of each are reported (`tokens`, i.e. the input half: Megatron draws
seq_len + 1 tokens per sample and splits them into tokens / labels). Index i
goes through the shuffle index, so these are not the first 3 windows of the
data; `first_samples_document_ids` says which documents each sample spans.

bytes_per_sample = total index bytes / samples in the index, and
extrapolated_index_bytes_14_8T_seq4096 = (14.8e12 / 4096) * bytes_per_sample,
a naive scaling as asked for. `extrapolation_model_14_8T_seq4096` redoes it
from Megatron's dtype rules and this dataset's mean tokens per document, one
epoch, one GPTDataset (see `model_extrapolation`).

Output: one JSON object on stdout (with --json, only that; without, a few
human-readable lines first). Exit 0 on success, 2 on usage errors.
"""

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
import warnings

import numpy

TOKENS_14_8T = 14.8e12
SEQ_4096 = 4096


class ShimTokenizer:
    """Minimal stand-in for megatron.core.tokenizers.MegatronTokenizerBase.

    GPTDataset only tokenizes nothing; megatron-core 0.16.1 touches exactly
    these attributes of `config.tokenizer` on the GPTDataset path:
      * vocab_size -- GPTDatasetConfig.__post_init__ derives token_dtype_code
        from it (4 if > 65536 else 8; None allowed). That code is only used
        by IndexedDataset when `sequences_per_dataset` is given, which it is
        not here. Taken from manifest `tokenizer.vocab_size` when present.
      * eod -- GPTDataset.__getitem__ passes it to
        _get_ltor_masks_and_position_ids (only used if reset_position_ids /
        reset_attention_mask / eod_mask_loss, all False here). = manifest
        `tokenizer.eos_id`.
      * eos -- MegatronDataset.__init__ checks the pad id does not collide
        with eos/eod. = eos_id as well.
      * pad -- deliberately absent: MegatronDataset.__init__ catches the
        AttributeError and uses its _PAD_TOKEN_ID = -1, which never collides.
      * unique_identifiers -- MegatronDataset.__init__ json.dumps the config
        with `default=lambda obj: obj.unique_identifiers` to hash the cache
        file names, so the tokenizer must carry a JSON-able dict here.
    """

    def __init__(self, eos_id, vocab_size):
        self.eod = int(eos_id)
        self.eos = int(eos_id)
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.unique_identifiers = {
            "class": "tokenmill-manifest-shim",
            "eod": self.eod,
            "vocab_size": self.vocab_size,
        }


def import_megatron():
    # megatron.core pulls in torch and warns about missing Apex / Transformer
    # Engine on import; irrelevant to dataset building.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch
        from megatron.core.datasets import gpt_dataset, helpers
        from megatron.core.datasets.blended_megatron_dataset_builder import (
            BlendedMegatronDatasetBuilder,
        )
        from megatron.core.datasets.blended_dataset import BlendedDataset
        from megatron.core.datasets.indexed_dataset import IndexedDataset
        from megatron.core.datasets.utils import Split
    return {
        "torch": torch,
        "gpt_dataset": gpt_dataset,
        "helpers": helpers,
        "Builder": BlendedMegatronDatasetBuilder,
        "BlendedDataset": BlendedDataset,
        "IndexedDataset": IndexedDataset,
        "Split": Split,
    }


# ---------------------------------------------------------------- memory ----

def proc_status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) * 1024  # kB -> bytes
    return out


def reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------ step breakdown ------

class StepTimer:
    """Wraps Megatron's index-building steps to time each of them."""

    def __init__(self, mg):
        self.mg = mg
        self.seconds = {}
        self._saved = []

    def _wrap(self, owner, name, label):
        orig = getattr(owner, name)
        depth = [0]
        timer = self

        def wrapper(*args, **kwargs):
            # _build_document_index recurses; only time the outermost call.
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    timer.seconds[label] = timer.seconds.get(label, 0.0) + (
                        time.perf_counter() - t0
                    )

        setattr(owner, name, wrapper)
        self._saved.append((owner, name, orig))

    def __enter__(self):
        g = self.mg["gpt_dataset"]
        self._wrap(g, "_build_document_index", "document_index")
        self._wrap(self.mg["helpers"], "build_sample_idx", "sample_index")
        self._wrap(g, "_build_shuffle_index", "shuffle_index")
        self._wrap(self.mg["helpers"], "build_blending_indices", "blending_indices")
        self._wrap(numpy, "save", "numpy_save")
        return self

    def __exit__(self, *exc):
        for owner, name, orig in reversed(self._saved):
            setattr(owner, name, orig)
        return False


# ------------------------------------------------------------ building ------

def make_config(mg, args, blend, cache_dir, tokenizer):
    return mg["gpt_dataset"].GPTDatasetConfig(
        random_seed=args.seed,
        sequence_length=args.seq_len,
        blend=blend,
        split="1,0,0",
        path_to_cache=cache_dir,
        tokenizer=tokenizer,
        reset_position_ids=False,
        reset_attention_mask=False,
        eod_mask_loss=False,
        # Not part of the index; avoids a seq_len x seq_len mask per ds[i].
        create_attention_mask=False,
    )


def build_once(mg, args, ctx, cache_dir):
    """Build (never load) the index into cache_dir; return the top dataset."""
    if args.all_shards:
        cfg = make_config(mg, args, (ctx["prefixes"], ctx["weights"]), cache_dir, ctx["tok"])
        builder = mg["Builder"](
            mg["gpt_dataset"].GPTDataset, [args.samples, 0, 0], lambda: True, cfg
        )
        return builder.build()[0]
    cfg = make_config(mg, args, ([ctx["prefixes"][0]], None), cache_dir, ctx["tok"])
    indexed = ctx["indexed"]
    indices = numpy.arange(indexed.sequence_lengths.shape[0], dtype=numpy.int32)
    return mg["gpt_dataset"].GPTDataset(
        indexed, ctx["prefixes"][0], indices, args.samples, mg["Split"].train, cfg
    )


def gpt_datasets_of(mg, top):
    if isinstance(top, mg["BlendedDataset"]):
        return list(top.datasets)
    return [top]


def nbytes(a):
    return int(a.nbytes) if a is not None else 0


def index_report(mg, top):
    """Sizes of the built arrays, samples and epochs."""
    parts = gpt_datasets_of(mg, top)
    index_bytes = {"document_index": 0, "sample_index": 0, "shuffle_index": 0}
    dtypes = {}
    per_dataset = []
    for ds in parts:
        tokens_per_epoch = ds._get_num_tokens_per_epoch()
        epochs = ds._get_num_epochs(tokens_per_epoch)
        samples_per_epoch = (
            tokens_per_epoch - ds.config.add_extra_token_to_sequence
        ) // ds.config.sequence_length
        for name in index_bytes:
            arr = getattr(ds, name)
            index_bytes[name] += nbytes(arr)
            dtypes[name] = str(arr.dtype)
        per_dataset.append(
            {
                "path": ds.dataset_path,
                "documents": int(len(ds.indices)),
                "tokens_per_epoch": int(tokens_per_epoch),
                "num_samples_requested": ds.num_samples,
                "samples_per_epoch": int(samples_per_epoch),
                "epochs": int(epochs),
                "samples_built": int(ds.sample_index.shape[0] - 1),
                "document_index_shape": list(ds.document_index.shape),
                "sample_index_shape": list(ds.sample_index.shape),
                "shuffle_index_shape": list(ds.shuffle_index.shape),
            }
        )
    if isinstance(top, mg["BlendedDataset"]):
        index_bytes["dataset_index"] = nbytes(top.dataset_index)
        index_bytes["dataset_sample_index"] = nbytes(top.dataset_sample_index)
        dtypes["dataset_index"] = str(top.dataset_index.dtype)
        dtypes["dataset_sample_index"] = str(top.dataset_sample_index.dtype)
    return index_bytes, dtypes, per_dataset


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.path.getsize(os.path.join(root, name))
    return total


def model_extrapolation(tokens, seq_len, mean_tokens_per_doc, max_doc_tokens):
    """Index bytes Megatron would build for `tokens` tokens, one epoch, one
    GPTDataset, from its dtype rules (gpt_dataset.py / helpers.py, 0.16.1):
    document_index int32 per document (Megatron asserts int32, so more than
    2**31-1 documents in one GPTDataset is not even representable); sample
    index (S+1) x 2 of int32, or int64 once max(len(document_index), longest
    document) > 2**31-1; shuffle index uint32, or int64 from 2**32-2 samples.
    Documents are estimated as tokens / mean_tokens_per_doc of this dataset."""
    samples = int((tokens - 1) // seq_len)
    docs = int(round(tokens / mean_tokens_per_doc))
    int32_max = numpy.iinfo(numpy.int32).max
    sample_elem = 4 if max(docs, max_doc_tokens) <= int32_max else 8
    shuffle_elem = 4 if samples < numpy.iinfo(numpy.uint32).max - 1 else 8
    doc_b = 4 * docs
    sample_b = 2 * (samples + 1) * sample_elem
    shuffle_b = samples * shuffle_elem
    return {
        "tokens": tokens,
        "seq_len": seq_len,
        "samples": samples,
        "documents_estimated": docs,
        "mean_tokens_per_document_used": mean_tokens_per_doc,
        "document_index_bytes": doc_b,
        "document_index_fits_int32": docs <= int32_max,
        "sample_index_bytes": sample_b,
        "sample_index_dtype": "int32" if sample_elem == 4 else "int64",
        "shuffle_index_bytes": shuffle_b,
        "shuffle_index_dtype": "uint32" if shuffle_elem == 4 else "int64",
        "total_bytes": doc_b + sample_b + shuffle_b,
        "note": "if split over several prefixes (blend), add 10 bytes/sample "
        "for BlendedDataset's int16 dataset_index + int64 dataset_sample_index",
    }


# ----------------------------------------------------------------- main -----

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset_dir")
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--samples", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--all-shards", action="store_true")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args()
    if args.seq_len <= 0 or args.samples <= 0:
        ap.error("--seq-len and --samples must be positive")

    with open(os.path.join(args.dataset_dir, "manifest.json")) as f:
        manifest = json.load(f)
    shards = manifest["shards"]
    if not shards:
        ap.error("manifest lists no shards")
    tok_info = manifest.get("tokenizer", {})
    if "eos_id" not in tok_info:
        ap.error("manifest has no tokenizer.eos_id")

    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))

    # Megatron logs through `logging` (INFO by default invisible) and
    # `warnings`; keep its WARNING+ log lines and warnings for the report.
    log_records = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                log_records.append(f"{record.levelname}: {record.getMessage()}")

    mlog = logging.getLogger("megatron")
    mlog.addHandler(Keep())
    mlog.propagate = False

    t0 = time.perf_counter()
    mg = import_megatron()
    import_seconds = time.perf_counter() - t0

    used = shards if args.all_shards else shards[:1]
    ctx = {
        "prefixes": [os.path.abspath(os.path.join(args.dataset_dir, s["name"])) for s in used],
        # Blend weights for --all-shards: tokens per shard (manifest).
        "weights": [float(s["tokens"]) for s in used],
        "tok": ShimTokenizer(tok_info["eos_id"], tok_info.get("vocab_size")),
    }
    if not args.all_shards:
        ctx["indexed"] = mg["IndexedDataset"](ctx["prefixes"][0], multimodal=False, mmap=True)

    tmp_root = tempfile.mkdtemp(prefix="megatron-gptds-")
    caught = []
    try:
        if args.all_shards:
            torch = mg["torch"]
            if not torch.distributed.is_initialized():
                torch.distributed.init_process_group(
                    "gloo",
                    init_method="file://" + os.path.join(tmp_root, "pg"),
                    rank=0,
                    world_size=1,
                )

        # Run 1: untraced -- wall time, RSS, step breakdown.
        cache1 = os.path.join(tmp_root, "cache-run1")
        before = proc_status()
        hwm_reset = reset_peak_rss()
        with warnings.catch_warnings(record=True) as w1, StepTimer(mg) as steps:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            top = build_once(mg, args, ctx, cache1)
            build_seconds = time.perf_counter() - t0
        after = proc_status()
        caught += [f"{x.category.__name__}: {x.message}" for x in w1]
        cache_bytes = dir_bytes(cache1)

        # Run 2: same build into a fresh cache dir, under tracemalloc.
        cache2 = os.path.join(tmp_root, "cache-run2")
        with warnings.catch_warnings(record=True) as w2:
            warnings.simplefilter("always")
            tracemalloc.start()
            tracemalloc.reset_peak()
            base_traced, _ = tracemalloc.get_traced_memory()
            t0 = time.perf_counter()
            top2 = build_once(mg, args, ctx, cache2)
            build_seconds_traced = time.perf_counter() - t0
            _, peak_traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        caught += [f"{x.category.__name__}: {x.message}" for x in w2]
        del top2

        index_bytes, dtypes, per_dataset = index_report(mg, top)
        num_samples_built = len(top)

        # First 3 samples (through the shuffle / blending index).
        heads, doc_ids, ds_ids = [], [], []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(min(3, num_samples_built)):
                sample = top[i]
                heads.append([int(t) for t in sample["tokens"][:10]])
                if isinstance(top, mg["BlendedDataset"]):
                    ds = top.datasets[int(top.dataset_index[i])]
                    j = int(top.dataset_sample_index[i])
                    ds_ids.append(int(top.dataset_index[i]))
                else:
                    ds, j = top, i
                _, docs = ds._query_document_sample_shuffle_indices(j)
                doc_ids.append([int(d) for d in docs])
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    total_index_bytes = sum(index_bytes.values())
    bytes_per_sample = total_index_bytes / num_samples_built
    first = per_dataset[0]
    total_docs = sum(p["documents"] for p in per_dataset)
    total_tokens = sum(p["tokens_per_epoch"] for p in per_dataset)
    # (Keep the IndexedDatasets referenced while reading their arrays: their
    # __del__ closes the mmap under any view still held -> segfault.)
    max_doc = max(int(ds.dataset.sequence_lengths.max()) for ds in gpt_datasets_of(mg, top))

    result = {
        "impl": "megatron-core %s GPTDataset%s"
        % (
            _megatron_version(),
            " via BlendedMegatronDatasetBuilder (all shards)" if args.all_shards else " (first shard)",
        ),
        "dataset_dir": os.path.abspath(args.dataset_dir),
        "shards_used": len(used),
        "documents": total_docs,
        "tokens": total_tokens,
        "seq_len": args.seq_len,
        "seed": args.seed,
        "num_samples_requested": args.samples,
        "num_samples_built": int(num_samples_built),
        "samples_per_epoch": first["samples_per_epoch"]
        if not args.all_shards
        else sum(p["samples_per_epoch"] for p in per_dataset),
        "epochs": first["epochs"] if not args.all_shards else [p["epochs"] for p in per_dataset],
        "build_seconds": round(build_seconds, 6),
        "build_breakdown_seconds": {k: round(v, 6) for k, v in steps.seconds.items()},
        "build_seconds_traced": round(build_seconds_traced, 6),
        "tracemalloc_peak_bytes": int(peak_traced - base_traced),
        "rss_before_bytes": before["VmRSS"],
        "rss_growth_bytes": after["VmRSS"] - before["VmRSS"],
        "rss_peak_growth_bytes": (after["VmHWM"] - before["VmRSS"]) if hwm_reset else None,
        "index_bytes": index_bytes,
        "index_dtypes": dtypes,
        "index_bytes_total": total_index_bytes,
        "cache_files_bytes": cache_bytes,
        "bytes_per_sample": bytes_per_sample,
        "extrapolated_index_bytes_14_8T_seq4096": int(
            round(TOKENS_14_8T / SEQ_4096 * bytes_per_sample)
        ),
        "extrapolation_model_14_8T_seq4096": model_extrapolation(
            TOKENS_14_8T, SEQ_4096, total_tokens / total_docs, max_doc
        ),
        "first_samples_head": heads,
        "first_samples_document_ids": doc_ids,
        # --all-shards only: which shard (manifest order) each sample is drawn
        # from; the document ids above are then shard-local sequence indices.
        "first_samples_shard_ids": ds_ids if args.all_shards else None,
        "per_dataset": per_dataset,
        "megatron_import_seconds": round(import_seconds, 3),
        "megatron_warnings": caught + log_records,
        "helpers_cpp": sys.modules["megatron.core.datasets.helpers_cpp"].__file__,
    }

    say(f"impl                     {result['impl']}")
    say(f"samples built/requested  {num_samples_built} / {args.samples}")
    say(f"samples/epoch, epochs    {result['samples_per_epoch']}, {result['epochs']}")
    say(f"build seconds            {build_seconds:.4f} (traced {build_seconds_traced:.4f})")
    say(f"breakdown                {result['build_breakdown_seconds']}")
    say(f"tracemalloc peak         {result['tracemalloc_peak_bytes']}")
    say(f"RSS growth / peak growth {result['rss_growth_bytes']} / {result['rss_peak_growth_bytes']}")
    say(f"index bytes              {index_bytes} = {total_index_bytes}")
    say(f"bytes/sample             {bytes_per_sample:.3f}")
    say(
        "14.8T tok @4096 naive    %.3f GB"
        % (result["extrapolated_index_bytes_14_8T_seq4096"] / 1e9)
    )
    say(
        "14.8T tok @4096 model    %.3f GB"
        % (result["extrapolation_model_14_8T_seq4096"]["total_bytes"] / 1e9)
    )
    print(json.dumps(result))
    return 0


def _megatron_version():
    try:
        from importlib.metadata import version

        return version("megatron-core")
    except Exception:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
