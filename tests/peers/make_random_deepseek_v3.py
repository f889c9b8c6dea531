#!/usr/bin/env python3
"""Write a tiny, seeded, random DeepSeek-V3 checkpoint for deepseek_v3_golden.py.

    make_random_deepseek_v3.py --out DIR [--seed 0] [--batch 2] [--seq 16]
                               [--mtp-depth 1] [--mtp-lambda 0.3]
                               [--q-lora-rank 16 | --no-q-lora]
                               [--no-rope-interleave] [--rms-norm-eps 1e-6]

Writes DIR/config.json (a HF DeepseekV3Config plus `num_nextn_predict_layers`),
DIR/model.safetensors (fp32, HF per-expert tensor names, MTP modules as
model.layers.{L+k-1}.*) and DIR/batch.json ({"tokens": B rows of T+1 ids,
"mtp_lambda": ...}).

The tensor list is built here from the architecture description, not from
transformers, so the golden script's strict loader cross-checks the naming.
"""

import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file


def tiny_config(args):
    return {
        "architectures": ["DeepseekV3ForCausalLM"],
        "model_type": "deepseek_v3",
        "vocab_size": 128,
        "hidden_size": 32,
        "intermediate_size": 48,
        "moe_intermediate_size": 16,
        "num_hidden_layers": 2,
        "first_k_dense_replace": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "q_lora_rank": None if args.no_q_lora else args.q_lora_rank,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4,
        "v_head_dim": 8,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "routed_scaling_factor": 2.5,
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "topk_method": "noaux_tc",
        "hidden_act": "silu",
        "rms_norm_eps": args.rms_norm_eps,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rope_interleave": not args.no_rope_interleave,
        "max_position_embeddings": 64,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "num_nextn_predict_layers": args.mtp_depth,
        "torch_dtype": "float32",
    }


def tensor_shapes(cfg):
    """Ordered {name: shape} for every tensor of a DeepSeek-V3 checkpoint."""
    d = cfg["hidden_size"]
    V = cfg["vocab_size"]
    H = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    qk = nope + rope
    kvr = cfg["kv_lora_rank"]
    qr = cfg["q_lora_rank"]
    E = cfg["n_routed_experts"]
    mi = cfg["moe_intermediate_size"]
    L = cfg["num_hidden_layers"]
    shapes = {"model.embed_tokens.weight": (V, d)}

    def block(p, moe):
        shapes[p + "input_layernorm.weight"] = (d,)
        if qr is None:
            shapes[p + "self_attn.q_proj.weight"] = (H * qk, d)
        else:
            shapes[p + "self_attn.q_a_proj.weight"] = (qr, d)
            shapes[p + "self_attn.q_a_layernorm.weight"] = (qr,)
            shapes[p + "self_attn.q_b_proj.weight"] = (H * qk, qr)
        shapes[p + "self_attn.kv_a_proj_with_mqa.weight"] = (kvr + rope, d)
        shapes[p + "self_attn.kv_a_layernorm.weight"] = (kvr,)
        shapes[p + "self_attn.kv_b_proj.weight"] = (H * (nope + vd), kvr)
        shapes[p + "self_attn.o_proj.weight"] = (d, H * vd)
        shapes[p + "post_attention_layernorm.weight"] = (d,)
        if moe:
            shapes[p + "mlp.gate.weight"] = (E, d)
            shapes[p + "mlp.gate.e_score_correction_bias"] = (E,)
            for j in range(E):
                shapes[p + f"mlp.experts.{j}.gate_proj.weight"] = (mi, d)
                shapes[p + f"mlp.experts.{j}.up_proj.weight"] = (mi, d)
                shapes[p + f"mlp.experts.{j}.down_proj.weight"] = (d, mi)
            si = mi * cfg["n_shared_experts"]
            shapes[p + "mlp.shared_experts.gate_proj.weight"] = (si, d)
            shapes[p + "mlp.shared_experts.up_proj.weight"] = (si, d)
            shapes[p + "mlp.shared_experts.down_proj.weight"] = (d, si)
        else:
            i = cfg["intermediate_size"]
            shapes[p + "mlp.gate_proj.weight"] = (i, d)
            shapes[p + "mlp.up_proj.weight"] = (i, d)
            shapes[p + "mlp.down_proj.weight"] = (d, i)

    for layer in range(L):
        block(f"model.layers.{layer}.", layer >= cfg["first_k_dense_replace"])
    shapes["model.norm.weight"] = (d,)
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (V, d)
    for k in range(1, cfg.get("num_nextn_predict_layers", 0) + 1):
        p = f"model.layers.{L + k - 1}."
        shapes[p + "enorm.weight"] = (d,)
        shapes[p + "hnorm.weight"] = (d,)
        shapes[p + "eh_proj.weight"] = (d, 2 * d)
        block(p, True)
        shapes[p + "shared_head.norm.weight"] = (d,)
    return shapes


def random_tensor(name, shape, gen):
    if len(shape) == 1:
        if name.endswith("e_score_correction_bias"):
            return 0.1 * torch.randn(shape, generator=gen)
        # RMSNorm gains: around 1, not exactly 1, so their gradients matter.
        return 1.0 + 0.1 * torch.randn(shape, generator=gen)
    if name.endswith("embed_tokens.weight"):
        return torch.randn(shape, generator=gen)
    fan_in = shape[1]
    return torch.randn(shape, generator=gen) / np.sqrt(fan_in)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=16, help="T: rows hold T+1 tokens")
    ap.add_argument("--mtp-depth", type=int, default=1)
    ap.add_argument("--mtp-lambda", type=float, default=0.3)
    ap.add_argument("--q-lora-rank", type=int, default=16)
    ap.add_argument("--no-q-lora", action="store_true", help="q_lora_rank = null (plain q_proj)")
    ap.add_argument("--no-rope-interleave", action="store_true", help="rope_interleave = false")
    ap.add_argument("--rms-norm-eps", type=float, default=1e-6)
    args = ap.parse_args()

    cfg = tiny_config(args)
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    tensors = {}
    for name, shape in tensor_shapes(cfg).items():
        tensors[name] = random_tensor(name, shape, gen).float().contiguous()
    save_file(tensors, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tokens = torch.randint(0, cfg["vocab_size"], (args.batch, args.seq + 1), generator=gen)
    with open(os.path.join(args.out, "batch.json"), "w") as f:
        json.dump({"tokens": tokens.tolist(), "mtp_lambda": args.mtp_lambda}, f)
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {args.out}: {len(tensors)} tensors, {n} parameters, tokens {tuple(tokens.shape)}")


if __name__ == "__main__":
    main()
