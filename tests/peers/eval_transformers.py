#!/usr/bin/env python3
"""The transformers side of `tokenmill eval --tasks`: a random-weight DeepseekV3ForCausalLM and
the per-example log-likelihoods of a task file, computed the way lm-evaluation-harness's HF
model computes them.

    eval_transformers.py make  --out DIR --vocab V [--seed 0]
    eval_transformers.py score --model DIR --tokenizer tokenizer.json --tasks FILE.jsonl
                               [--max-len N]

`make` builds a small DeepseekV3ForCausalLM with transformers (no download), gives it weights
of a scale that makes its predictions far from uniform (norm gains 1 + 0.1·N(0,1), embeddings
N(0,1), linear layers and experts N(0,1)/sqrt(fan_in), routing biases 0.1·N(0,1)), and writes
it with `save_pretrained` (config.json + model.safetensors, fp32). transformers holds no MTP
weights, while config.json keeps its default `num_nextn_predict_layers = 1`.

`score` loads DIR with `from_pretrained` (fp32, eager attention and experts) and, per example of
the task file (tokenmill's format: {"context", "choices", "gold"} or {"context", "answer"}),
per continuation, prints the log-likelihood: lm-eval's `_encode_pair` (trailing whitespace of
the context moves to the continuation; continuation tokens = tokens(context + continuation)
after len(tokens(context)); an empty context is the end-of-text token), the input cut from the
left to max_len + 1 tokens, log_softmax of the logits, the continuation's log-probs summed,
and `is_greedy` (every continuation token the argmax). Zero-shot only.

stdout: one JSON array, per example {"line", "loglik": [...], "greedy": [...], "tokens": [...]}.
"""

import argparse
import json
import math
import sys

import torch
from tokenizers import Tokenizer
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

EOS_CANDIDATES = ["<|endoftext|>", "<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]"]


def make(args):
    config = DeepseekV3Config(
        vocab_size=args.vocab,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=16,
        num_hidden_layers=2,
        first_k_dense_replace=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=4,
        v_head_dim=8,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=2,
        topk_group=1,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        rms_norm_eps=1e-6,
        rope_interleave=True,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        attention_bias=False,
    )
    # transformers' default num_nextn_predict_layers (1) stays in config.json, with no MTP
    # weights saved: tokenmill eval reads such a checkpoint as its main model.
    assert config.num_nextn_predict_layers >= 1, config.num_nextn_predict_layers
    torch.manual_seed(args.seed)
    model = DeepseekV3ForCausalLM._from_config(
        config, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("e_score_correction_bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
            elif t.dim() == 1:
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=gen))
            elif name.endswith("embed_tokens.weight"):
                t.copy_(torch.randn(t.shape, generator=gen))
            elif t.dim() in (2, 3):
                # Linear layers, and experts stacked [E, out, in] (transformers' fused form).
                t.copy_(torch.randn(t.shape, generator=gen) / math.sqrt(t.shape[-1]))
            else:
                raise SystemExit(f"unexpected tensor {name} {tuple(t.shape)}")
    model.save_pretrained(args.out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {n} parameters, vocab {args.vocab}", file=sys.stderr)


def encode_pair(tok, prefix, context, continuation):
    """lm-eval's HFLM._encode_pair (with add_special_tokens=False)."""
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids
    if context == "":
        if prefix is None:
            raise SystemExit("an empty context needs an end-of-text token")
        return [prefix], enc(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = enc(context + continuation)
    ctx = enc(context)
    return ctx, whole[len(ctx):]


def score(args):
    tok = Tokenizer.from_file(args.tokenizer)
    prefix = next((tok.token_to_id(c) for c in EOS_CANDIDATES if tok.token_to_id(c) is not None), None)
    model = DeepseekV3ForCausalLM.from_pretrained(
        args.model, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
    model.eval()
    max_len = args.max_len or model.config.max_position_embeddings
    out = []
    with open(args.tasks) as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            ex = json.loads(raw)
            conts = ex["choices"] if "choices" in ex else [ex["answer"]]
            lls, greedy, ntok = [], [], []
            for cont in conts:
                ctx_enc, cont_enc = encode_pair(tok, prefix, ex["context"], cont)
                ids = (ctx_enc + cont_enc)[-(max_len + 1):][:-1]
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
                logp = torch.log_softmax(logits.double(), dim=-1)
                k = len(cont_enc)
                rows = logp[len(ids) - k:]
                target = torch.tensor(cont_enc)
                lls.append(rows.gather(1, target[:, None]).sum().item())
                greedy.append(bool((logits[len(ids) - k:].argmax(dim=-1) == target).all()))
                ntok.append(k)
            out.append({"line": line_no, "loglik": lls, "greedy": greedy, "tokens": ntok})
    json.dump(out, sys.stdout)
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.add_argument("--vocab", type=int, required=True)
    m.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("--model", required=True)
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--tasks", required=True)
    s.add_argument("--max-len", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    make(args) if args.cmd == "make" else score(args)


if __name__ == "__main__":
    main()
