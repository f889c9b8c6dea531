#!/usr/bin/env python3
"""The transformers side of tokenmill's Hugging Face round trip (tests/tests/e2e/hf_roundtrip.rs).

    hf_roundtrip.py loss     --model DIR --batch batch.json [--dtype float32|bfloat16]
    hf_roundtrip.py generate --model DIR --prompt-ids 1,2,3 --max-new N

`loss` loads DIR with `AutoModelForCausalLM.from_pretrained` (eager attention and experts,
weights in --dtype) and prints the mean next-token cross-entropy over a batch — batch.json is
{"tokens": [[...], ...]}, rows of s + 1 tokens: inputs are tokens[:-1], targets tokens[1:] —
computed from the logits in float64, with the loading report (missing keys must be none;
unexpected keys are the MTP layers transformers does not model).

`generate` loads DIR in float32 and runs `generate(do_sample=False, max_new_tokens=N)` from the
prompt ids, with no end-of-sequence token (so exactly N tokens come), and prints the new ids.

stdout: one JSON object.
"""

import argparse
import json
import sys

import torch
from transformers import AutoModelForCausalLM


def load(path, dtype):
    model, info = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        attn_implementation="eager",
        experts_implementation="eager",
        output_loading_info=True,
    )
    model.eval()
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise SystemExit(f"transformers misses tensors: {missing[:5]}")
    return model, info


def loss(args):
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model, info = load(args.model, dtype)
    with open(args.batch) as f:
        rows = json.load(f)["tokens"]
    t = torch.tensor(rows)
    with torch.no_grad():
        logits = model(input_ids=t[:, :-1], use_cache=False).logits
    logp = torch.log_softmax(logits.double(), dim=-1)
    nll = -logp.gather(2, t[:, 1:, None]).squeeze(2)
    unexpected = sorted(info.get("unexpected_keys", []))
    json.dump(
        {
            "loss": nll.mean().item(),
            "class": type(model).__name__,
            "weights_dtype": str(next(model.parameters()).dtype),
            "parameters": sum(p.numel() for p in model.parameters()),
            "unexpected": unexpected,
        },
        sys.stdout,
    )
    print()


def generate(args):
    model, _ = load(args.model, torch.float32)
    ids = [int(x) for x in args.prompt_ids.split(",")]
    gc = model.generation_config
    gc.eos_token_id = None
    gc.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=args.max_new,
            generation_config=gc,
        )
    json.dump({"tokens": out[0, len(ids):].tolist()}, sys.stdout)
    print()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("loss")
    a.add_argument("--model", required=True)
    a.add_argument("--batch", required=True)
    a.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    g = sub.add_parser("generate")
    g.add_argument("--model", required=True)
    g.add_argument("--prompt-ids", required=True)
    g.add_argument("--max-new", type=int, required=True)
    args = p.parse_args()
    {"loss": loss, "generate": generate}[args.cmd](args)


if __name__ == "__main__":
    main()
