#!/usr/bin/env python3
"""Training-step throughput of transformers' DeepseekV3ForCausalLM on the CPU or a GPU.

    bench_torch_train.py --dir D --batch B --seq T --steps N --threads K
                         [--experts eager|grouped_mm|batched_mm] [--seed 0]
                         [--device cpu|cuda] [--dtype fp32|bf16] [--autocast bf16]

On `--device cuda` the model, the tokens and the optimizer live on GPU 0 and every timed
step ends with a synchronisation (`loss.item()`); `--dtype bf16` keeps the weights in BF16
(PyTorch eager, no autocast), the anchor for tokenmill's bf16 precision on a GPU.
`--autocast bf16` keeps FP32 weights and runs the forward under
`torch.autocast(device, dtype=torch.bfloat16)` (matmuls in BF16 through oneDNN, AMX
where the CPU has it), the way PyTorch users train in BF16 on a CPU.

Builds the model from D/config.json with random init (fp32, eager attention;
MTP modules are not built: transformers has no trainable MTP), then runs
2 warm-up steps and N timed steps of: forward on random tokens [B, T],
mean cross-entropy against random targets, backward, clip_grad_norm_(1.0),
AdamW(lr 1e-4, betas (0.9, 0.95), weight_decay 0.1) step.

Prints one JSON line:
  {"tokens_per_s", "step_ms", "peak_rss_mb", "torch", "transformers",
   "threads", "batch", "seq", "steps", "params", "experts_implementation"}
step_ms is the mean over the timed steps; tokens_per_s = B*T / step time.
"""

import argparse
import json
import os
import resource
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--experts", default=None,
                    help="transformers experts_implementation (default: its own choice, grouped_mm if usable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--autocast", default=None, choices=["bf16"])
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    import transformers
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    with open(os.path.join(args.dir, "config.json")) as f:
        cfg = json.load(f)
    cfg.pop("architectures", None)
    config = DeepseekV3Config(**cfg)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    kw = {"attn_implementation": "eager", "dtype": dtype}
    if args.experts:
        kw["experts_implementation"] = args.experts
    model = DeepseekV3ForCausalLM._from_config(config, **kw).to(args.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    V = config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)

    def step():
        tokens = torch.randint(0, V, (args.batch, args.seq + 1), generator=gen).to(args.device)
        if args.autocast:
            with torch.autocast(args.device, dtype=torch.bfloat16):
                logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
        else:
            logits = model(input_ids=tokens[:, :-1], use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, V), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    dt = (time.perf_counter() - t0) / max(1, args.steps)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({
        "tokens_per_s": args.batch * args.seq / dt,
        "step_ms": dt * 1e3,
        "peak_rss_mb": rss_kb / 1024.0,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "params": sum(p.numel() for p in params),
        "experts_implementation": model.config._experts_implementation,
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(0),
        "dtype": args.dtype,
        "autocast": args.autocast,
        "last_loss": loss,
    }))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
