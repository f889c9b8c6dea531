#!/usr/bin/env python3
"""Golden logits, losses and gradients for tokenmill's DeepSeek-V3 model.

    deepseek_v3_golden.py --dir D [--check-from-pretrained] [--quiet]

D holds:
  config.json        a HF DeepseekV3Config (+ `num_nextn_predict_layers`)
  model.safetensors  fp32 tensors under HF checkpoint names, per-expert
                     (`mlp.experts.{j}.gate_proj.weight`, ...); MTP module k
                     (1-based) under `model.layers.{L+k-1}.*`
  batch.json         {"tokens": [[T+1 ids] x B], "mtp_lambda": 0.3}

Writes into D:
  golden.safetensors      logits [B,T,V], loss [1], grad.<name> of `loss`
                          for every trained checkpoint tensor (not MTP ones,
                          not e_score_correction_bias)
  golden_mtp.safetensors  (only when num_nextn_predict_layers >= 1)
                          loss [1], mtp_loss [1], total [1],
                          mtp_logits.<k> [B,T-k,V], grad.<name> of
                          total = loss + mtp_lambda * mtp_loss for every
                          trained tensor, MTP ones included

The main model is transformers' DeepseekV3ForCausalLM (fp32, eager attention,
eager experts loop). transformers has no trainable MTP, so MTP is written here
in plain PyTorch around HF's DeepseekV3DecoderLayer, following transformers'
inference MtpLayer/MtpModel (modeling_layers.py), teacher-forced. h^0 after
model.norm is also what vLLM feeds the released checkpoint's MTP layer; for
depth >= 2 vLLM chains the block output before shared_head.norm instead
(the release has one MTP depth, so it does not pin that down):

  h^0      = last_hidden_state of the main model (after model.norm, the
             input of lm_head)
  n_k      = T - k
  x_i      = eh_proj([enorm(embed(tok[i+k])) ; hnorm(h^{k-1}_i)]), i < n_k
  hs^k     = shared_head.norm(block_k(x)), block over positions 0..n_k-1
             (causal)
  logits_k = lm_head(hs^k), target tok[i+k+1]
  h^k      = hs^k (depth k+1 uses its first n_{k+1} positions)
  mtp_loss = mean_k (mean CE over B*n_k)
"""

import argparse
import json
import os
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import transformers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_ds3

NOT_TRAINED = ("e_score_correction_bias",)


# --------------------------------------------------------------------------
# checkpoint name <-> model tensor bindings
# --------------------------------------------------------------------------

class Binding:
    """A checkpoint tensor seen as a view of a model parameter or buffer."""

    def __init__(self, tensor, index=None):
        self.tensor = tensor  # nn.Parameter or buffer
        self.index = index  # None, or an index tuple into a fused tensor

    def view(self, t):
        return t if self.index is None else t[self.index]

    def trained(self):
        return isinstance(self.tensor, nn.Parameter)

    def grad(self):
        g = self.tensor.grad
        if g is None:  # unused in this step (e.g. an expert no token picked)
            return torch.zeros_like(self.view(self.tensor.detach()))
        return self.view(g)


def bindings(module, prefix, rename=None):
    """{checkpoint name: Binding} for every parameter and persistent buffer of
    `module`. Fused experts (`experts.gate_up_proj` [E, 2I, H] = per expert
    cat(gate, up) along dim 1, `experts.down_proj` [E, H, I]) are split into
    the checkpoint's per-expert names."""
    out = {}
    tensors = list(module.named_parameters())
    tensors += [(n, b) for n, b in module.named_buffers() if n.endswith("e_score_correction_bias")]
    for name, t in tensors:
        if rename is not None:
            name = rename(name)
        full = prefix + name
        m = re.fullmatch(r"(.*\.experts)\.(gate_up_proj|down_proj)", full)
        if m is not None:
            base, kind = m.groups()
            n_exp = t.shape[0]
            if kind == "gate_up_proj":
                inter = t.shape[1] // 2
                for j in range(n_exp):
                    out[f"{base}.{j}.gate_proj.weight"] = Binding(t, (j, slice(0, inter)))
                    out[f"{base}.{j}.up_proj.weight"] = Binding(t, (j, slice(inter, 2 * inter)))
            else:
                for j in range(n_exp):
                    out[f"{base}.{j}.down_proj.weight"] = Binding(t, (j,))
        else:
            out[full] = Binding(t)
    return out


def load_into(binds, state, what):
    missing = sorted(set(binds) - set(state))
    unexpected = sorted(set(state) - set(binds))
    if missing or unexpected:
        raise SystemExit(
            f"{what}: checkpoint does not match the model\n"
            f"  missing ({len(missing)}): {missing[:20]}\n"
            f"  unexpected ({len(unexpected)}): {unexpected[:20]}"
        )
    with torch.no_grad():
        for name, b in binds.items():
            dst = b.view(b.tensor)
            src = state[name]
            if tuple(dst.shape) != tuple(src.shape):
                raise SystemExit(f"{what}: {name}: checkpoint shape {tuple(src.shape)} != model {tuple(dst.shape)}")
            dst.copy_(src.to(dst.dtype))


# --------------------------------------------------------------------------
# MTP modules
# --------------------------------------------------------------------------

class MtpModule(nn.Module):
    """One MTP depth: enorm, hnorm, eh_proj, a full MoE decoder block and the
    shared head's own norm. Embedding and output head are the main model's."""

    def __init__(self, config, layer_idx):
        super().__init__()
        d, eps = config.hidden_size, config.rms_norm_eps
        self.enorm = hf_ds3.DeepseekV3RMSNorm(d, eps=eps)
        self.hnorm = hf_ds3.DeepseekV3RMSNorm(d, eps=eps)
        self.eh_proj = nn.Linear(2 * d, d, bias=False)
        self.block = hf_ds3.DeepseekV3DecoderLayer(config, layer_idx)
        if not isinstance(self.block.mlp, hf_ds3.DeepseekV3MoE):
            raise SystemExit(f"MTP block {layer_idx} is not MoE (first_k_dense_replace too large?)")
        self.shared_head = nn.Module()
        self.shared_head.norm = hf_ds3.DeepseekV3RMSNorm(d, eps=eps)

    def ckpt_bindings(self, layer_idx):
        return bindings(self, f"model.layers.{layer_idx}.", rename=lambda n: n[len("block."):] if n.startswith("block.") else n)


def ce(logits, target):
    """Mean cross-entropy, in at least fp32 (like transformers' ForCausalLMLoss)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def causal_mask(batch, n, dtype, device):
    """Additive mask for eager attention: 0 on/below the diagonal, dtype-min above
    (what transformers' create_causal_mask gives eager attention)."""
    allowed = torch.ones(n, n, dtype=torch.bool, device=device).tril()
    mask = torch.zeros(n, n, dtype=dtype, device=device)
    mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)
    return mask[None, None].expand(batch, 1, n, n)


def mtp_forward(model, mtps, tokens, h0):
    """Losses and logits of every MTP depth. tokens [B, T+1], h0 [B, T, d] =
    the main model's last_hidden_state (after model.norm)."""
    T = tokens.shape[1] - 1
    embed = model.model.embed_tokens
    rotary = model.model.rotary_emb
    h_prev = h0
    losses, logits_all = [], []
    for k, mod in enumerate(mtps, start=1):
        n = T - k
        if n <= 0:
            raise SystemExit(f"MTP depth {k} needs T > {k}")
        emb = embed(tokens[:, k:k + n])
        x = mod.eh_proj(torch.cat([mod.enorm(emb), mod.hnorm(h_prev[:, :n])], dim=-1))
        pos = torch.arange(n, device=x.device)[None]
        pe = rotary(x, pos)
        h = mod.block(x, attention_mask=causal_mask(x.shape[0], n, x.dtype, x.device),
                      position_ids=pos, position_embeddings=pe)
        hs = mod.shared_head.norm(h)
        logits = model.lm_head(hs)
        target = tokens[:, k + 1:k + 1 + n]
        losses.append(ce(logits, target))
        logits_all.append(logits)
        h_prev = hs  # the next depth chains the normed output (like MtpModel)
    return torch.stack(losses).mean(), losses, logits_all


# --------------------------------------------------------------------------
# model construction and forward
# --------------------------------------------------------------------------

def read_config(path):
    with open(path) as f:
        cfg = json.load(f)
    return cfg


def build(cfg_dict, dtype=torch.float32):
    config = DeepseekV3Config(**{k: v for k, v in cfg_dict.items() if k not in ("architectures",)})
    model = DeepseekV3ForCausalLM._from_config(
        config, attn_implementation="eager", experts_implementation="eager", dtype=dtype)
    assert model.config._attn_implementation == "eager", model.config._attn_implementation
    assert model.config._experts_implementation == "eager", model.config._experts_implementation
    L = config.num_hidden_layers
    depth = int(cfg_dict.get("num_nextn_predict_layers", 0) or 0)
    mtps = nn.ModuleList([MtpModule(model.config, L + k - 1) for k in range(1, depth + 1)]).to(dtype)
    model.train()  # dropout is 0; train() only matters for attention_dropout
    mtps.train()
    return model, mtps


def all_bindings(model, mtps):
    main = bindings(model, "")
    if model.config.tie_word_embeddings:
        main.pop("lm_head.weight", None)
    L = model.config.num_hidden_layers
    mtp = {}
    for k, mod in enumerate(mtps, start=1):
        mtp.update(mod.ckpt_bindings(L + k - 1))
    return main, mtp


def load_checkpoint(model, mtps, path):
    state = load_file(path)
    main_b, mtp_b = all_bindings(model, mtps)
    L = model.config.num_hidden_layers
    mtp_re = re.compile(r"model\.layers\.(\d+)\.")

    def is_mtp(name):
        m = mtp_re.match(name)
        return m is not None and int(m.group(1)) >= L

    main_state = {k: v for k, v in state.items() if not is_mtp(k)}
    mtp_state = {k: v for k, v in state.items() if is_mtp(k)}
    load_into(main_b, main_state, "main model")
    if len(mtps):
        load_into(mtp_b, mtp_state, "MTP modules")
    elif mtp_state:
        print(f"note: ignoring {len(mtp_state)} MTP tensors (num_nextn_predict_layers = 0)", file=sys.stderr)
    return main_b, mtp_b


def forward(model, mtps, tokens):
    """Returns (logits, loss, h0). h0 = the main model's last_hidden_state:
    the output of model.norm, i.e. what lm_head is applied to."""
    T = tokens.shape[1] - 1
    captured = {}
    hook = model.model.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("h0", o))
    try:
        logits = model(input_ids=tokens[:, :T], use_cache=False).logits
    finally:
        hook.remove()
    h0 = captured["h0"]
    loss = ce(logits, tokens[:, 1:])
    return logits, loss, h0


def zero_grads(model, mtps):
    for p in list(model.parameters()) + list(mtps.parameters()):
        p.grad = None


def grads_of(binds):
    return {"grad." + n: b.grad().detach().float().contiguous().clone() for n, b in binds.items() if b.trained()}


def summarize(grads):
    groups = {}
    for name, g in grads.items():
        n = name[len("grad."):]
        n = re.sub(r"experts\.\d+\.", "experts.*.", n)
        n = re.sub(r"layers\.\d+\.", "layers.*.", n)
        groups[n] = max(groups.get(n, 0.0), g.abs().max().item())
    return groups


def check_from_pretrained(model, ckpt_dir):
    """Load D with DeepseekV3ForCausalLM.from_pretrained (transformers' own key
    conversion) and check it matches our loader tensor for tensor."""
    import logging
    logging.getLogger("transformers").setLevel(logging.ERROR)
    ref = DeepseekV3ForCausalLM.from_pretrained(
        ckpt_dir, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
    ours = model.state_dict()
    theirs = ref.state_dict()
    assert set(ours) == set(theirs), (set(ours) ^ set(theirs))
    worst = 0.0
    for k in ours:
        worst = max(worst, (ours[k] - theirs[k]).abs().max().item())
    print(f"from_pretrained check: {len(ours)} model tensors, max |diff| = {worst:g}")
    if worst != 0.0:
        raise SystemExit("from_pretrained loads different weights than this script")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--check-from-pretrained", action="store_true",
                    help="also load D with from_pretrained and compare weights")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    cfg = read_config(os.path.join(args.dir, "config.json"))
    with open(os.path.join(args.dir, "batch.json")) as f:
        batch = json.load(f)
    tokens = torch.tensor(batch["tokens"], dtype=torch.long)
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise SystemExit("batch.json tokens must be B rows of T+1 >= 2 ids")
    mtp_lambda = float(batch.get("mtp_lambda", 0.3))

    model, mtps = build(cfg)
    main_b, mtp_b = load_checkpoint(model, mtps, os.path.join(args.dir, "model.safetensors"))
    if args.check_from_pretrained:
        check_from_pretrained(model, args.dir)

    # Cross-check our loss against transformers' own ForCausalLM loss.
    with torch.no_grad():
        hf_loss = model(input_ids=tokens, labels=tokens, use_cache=False).loss

    # --- main loss alone ---
    zero_grads(model, mtps)
    logits, loss, _ = forward(model, mtps, tokens)
    loss.backward()
    if abs(hf_loss.item() - loss.item()) > 1e-5 * max(1.0, abs(loss.item())):
        raise SystemExit(f"loss {loss.item()} disagrees with transformers' labels= loss {hf_loss.item()}")
    out = {"logits": logits.detach().float().contiguous(), "loss": loss.detach().float().reshape(1)}
    g_main = grads_of(main_b)
    out.update(g_main)
    save_file(out, os.path.join(args.dir, "golden.safetensors"))
    summary = {"loss": loss.item(), "hf_labels_loss": hf_loss.item(), "B": tokens.shape[0],
               "T": tokens.shape[1] - 1, "tensors": len(g_main)}

    # --- loss + lambda * mtp_loss ---
    if len(mtps):
        zero_grads(model, mtps)
        logits2, loss2, h0 = forward(model, mtps, tokens)
        mtp_loss, per_depth, mtp_logits = mtp_forward(model, mtps, tokens, h0)
        total = loss2 + mtp_lambda * mtp_loss
        total.backward()
        out2 = {"loss": loss2.detach().float().reshape(1), "mtp_loss": mtp_loss.detach().float().reshape(1),
                "total": total.detach().float().reshape(1)}
        for k, lg in enumerate(mtp_logits, start=1):
            out2[f"mtp_logits.{k}"] = lg.detach().float().contiguous()
        g_all = grads_of(main_b)
        g_all.update(grads_of(mtp_b))
        out2.update(g_all)
        save_file(out2, os.path.join(args.dir, "golden_mtp.safetensors"))
        summary.update({"mtp_loss": mtp_loss.item(), "mtp_losses": [l.item() for l in per_depth],
                        "mtp_lambda": mtp_lambda, "total": total.item(), "mtp_tensors": len(g_all)})

    print(json.dumps(summary))
    if not args.quiet:
        print("max |grad| of loss, per tensor group:")
        for n, v in summarize(g_main).items():
            print(f"  {n:60s} {v:.4e}")
        if len(mtps):
            print("max |grad| of total, MTP tensor groups:")
            for n, v in summarize(grads_of(mtp_b)).items():
                print(f"  {n:60s} {v:.4e}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
