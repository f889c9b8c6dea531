#!/usr/bin/env python3
"""Self-checks for deepseek_v3_golden.py on a checkpoint directory.

    deepseek_v3_selfcheck.py --dir D [--samples 3] [--eps 1e-5] [--seed 0]

0. An independent float64 forward written from the DeepSeek-V3 report and
   straight from the checkpoint tensors (per-expert names, no transformers)
   gives the same main and MTP logits as the golden script (fp32).
1. Router: an independent re-implementation of the noaux_tc sigmoid router
   (written from the DeepSeek-V3 report) agrees with transformers'
   DeepseekV3TopkRouter on every MoE layer's real inputs (fp32).
2. MTP: every depth of the golden script's MTP agrees with transformers'
   inference `MtpModel` (modeling_layers.py), loaded by its own
   `MtpModel.from_pretrained` from D's checkpoint names, fed h^0 =
   `hidden_states[-1]` of a `from_pretrained` main model and run one
   `forward_layer` per depth with the true tokens' embeddings (teacher
   forcing), chaining each layer's post-normed output as MtpModel does.
3. Finite differences in float64: d(total)/d(theta) from autograd against a
   central difference on `--samples` random entries of every tensor group,
   where total = loss + mtp_lambda * mtp_loss (loss alone without MTP).
   The router is swapped for the re-implementation from (1) so that it runs
   in float64 too (transformers' router always casts to fp32). A sample whose
   perturbation changes any routing decision is redrawn (router ties).
   If D holds golden_mtp.safetensors (or golden.safetensors without MTP),
   its fp32 gradients are compared with the float64 ones first.

Exit 1 if any check fails.
"""

import argparse
import json
import os
import random
import re
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3_golden as golden  # noqa: E402
from transformers import DeepseekV3ForCausalLM  # noqa: E402
from transformers.modeling_layers import MtpModel  # noqa: E402
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_ds3  # noqa: E402


def my_route(x, weight, bias, n_group, topk_group, top_k, norm_topk_prob, scale):
    """sigmoid scores; bias only for choosing; groups ranked by the sum of
    their two best biased scores; experts of the topk_group best groups kept;
    top_k of those by biased score; weights are the unbiased scores,
    normalized to sum 1, times scale."""
    logits = x.reshape(-1, weight.shape[1]) @ weight.t()
    s = torch.sigmoid(logits)
    choice = s + bias.to(s.dtype)
    n_tok, n_exp = s.shape
    per = n_exp // n_group
    gscore = choice.reshape(n_tok, n_group, per).topk(2, dim=-1).values.sum(-1)
    keep = torch.zeros(n_tok, n_group, dtype=torch.bool, device=s.device)
    keep.scatter_(1, gscore.topk(topk_group, dim=-1).indices, True)
    keep = keep.repeat_interleave(per, dim=1)
    idx = choice.masked_fill(~keep, float("-inf")).topk(top_k, dim=-1).indices
    w = s.gather(1, idx)
    if norm_topk_prob:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    # tie margins, for the report
    gs_sorted = gscore.sort(-1, descending=True).values
    gmargin = (gs_sorted[:, topk_group - 1] - gs_sorted[:, topk_group]).min() if topk_group < n_group else torch.tensor(float("inf"))
    ch = choice.masked_fill(~keep, float("-inf")).sort(-1, descending=True).values
    emargin = (ch[:, top_k - 1] - ch[:, top_k]).min()
    return logits, w * scale, idx, (gmargin.item(), emargin.item())

# --------------------------------------------------------------------------
# 0. an independent forward straight from the checkpoint tensors
# --------------------------------------------------------------------------

def ref_rmsnorm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def ref_rope(x, theta):
    """x [B, H, n, r], rotary pairs (x[2i], x[2i+1]) at frequency theta^(-2i/r);
    the result keeps the pairs interleaved (transformers de-interleaves q and k
    alike, which leaves q.k unchanged)."""
    n, r = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, r, 2, dtype=torch.float64) / r)
    ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None]
    c, s = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    ev, od = x[..., 0::2], x[..., 1::2]
    out = torch.stack([ev * c - od * s, od * c + ev * s], dim=-1)
    return out.flatten(-2)


def ref_block(W, p, cfg, x, moe):
    B, n, d = x.shape
    H = cfg["num_attention_heads"]
    nope, rope, vd = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    eps = cfg["rms_norm_eps"]
    a = ref_rmsnorm(x, W[p + "input_layernorm.weight"], eps)
    if cfg.get("q_lora_rank") is None:
        q = a @ W[p + "self_attn.q_proj.weight"].t()
    else:
        # transformers builds q_a_layernorm / kv_a_layernorm with eps 1e-6, not rms_norm_eps
        q = ref_rmsnorm(a @ W[p + "self_attn.q_a_proj.weight"].t(), W[p + "self_attn.q_a_layernorm.weight"], 1e-6)
        q = q @ W[p + "self_attn.q_b_proj.weight"].t()
    q = q.view(B, n, H, nope + rope).transpose(1, 2)
    ckv = a @ W[p + "self_attn.kv_a_proj_with_mqa.weight"].t()
    c, k_rope = ckv[..., :cfg["kv_lora_rank"]], ckv[..., cfg["kv_lora_rank"]:]
    c = ref_rmsnorm(c, W[p + "self_attn.kv_a_layernorm.weight"], 1e-6)
    kv = (c @ W[p + "self_attn.kv_b_proj.weight"].t()).view(B, n, H, nope + vd).transpose(1, 2)
    k_nope, v = kv[..., :nope], kv[..., nope:]
    theta = cfg.get("rope_theta", 10000.0)
    if cfg.get("rope_interleave", True):
        q_r = ref_rope(q[..., nope:], theta)
        k_r = ref_rope(k_rope[:, None], theta)
    else:  # rotate_half layout: pairs (x[i], x[i + r/2])
        half = rope // 2
        perm = torch.stack([torch.arange(half), torch.arange(half) + half], -1).flatten()
        q_r = ref_rope(q[..., nope:][..., perm], theta)
        k_r = ref_rope(k_rope[:, None][..., perm], theta)
    qf = torch.cat([q[..., :nope], q_r], -1)
    kf = torch.cat([k_nope, k_r.expand(B, H, n, rope)], -1)
    scores = qf @ kf.transpose(-1, -2) * (nope + rope) ** -0.5
    scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    o = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(B, n, H * vd)
    x = x + o @ W[p + "self_attn.o_proj.weight"].t()
    m = ref_rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)

    def mlp(q_, y):
        return (F.silu(y @ W[q_ + "gate_proj.weight"].t()) * (y @ W[q_ + "up_proj.weight"].t())) @ W[q_ + "down_proj.weight"].t()

    if not moe:
        return x + mlp(p + "mlp.", m)
    flat = m.reshape(-1, d)
    _, w, idx, _ = my_route(flat, W[p + "mlp.gate.weight"], W[p + "mlp.gate.e_score_correction_bias"],
                            cfg["n_group"], cfg["topk_group"], cfg["num_experts_per_tok"],
                            cfg["norm_topk_prob"], cfg["routed_scaling_factor"])
    routed = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for slot in range(idx.shape[1]):
            j = idx[t, slot].item()
            routed[t] += w[t, slot] * mlp(p + f"mlp.experts.{j}.", flat[t])
    return x + routed.view(B, n, d) + mlp(p + "mlp.shared_experts.", m)


def ref_forward(W, cfg, tokens):
    """Main logits and MTP logits (list) in float64, from checkpoint tensors."""
    L = cfg["num_hidden_layers"]
    T = tokens.shape[1] - 1
    eps = cfg["rms_norm_eps"]
    emb = W["model.embed_tokens.weight"]
    head = W["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else W["lm_head.weight"]
    h = emb[tokens[:, :T]]
    for i in range(L):
        h = ref_block(W, f"model.layers.{i}.", cfg, h, i >= cfg["first_k_dense_replace"])
    h = ref_rmsnorm(h, W["model.norm.weight"], eps)  # h^0: after the final norm
    logits = h @ head.t()
    mtp = []
    for k in range(1, int(cfg.get("num_nextn_predict_layers", 0) or 0) + 1):
        p = f"model.layers.{L + k - 1}."
        n = T - k
        x = torch.cat([ref_rmsnorm(emb[tokens[:, k:k + n]], W[p + "enorm.weight"], eps),
                       ref_rmsnorm(h[:, :n], W[p + "hnorm.weight"], eps)], -1) @ W[p + "eh_proj.weight"].t()
        h = ref_rmsnorm(ref_block(W, p, cfg, x, True), W[p + "shared_head.norm.weight"], eps)  # h^k, normed
        mtp.append(h @ head.t())
    return logits, mtp


def check_reference(cfg, ckpt, model, mtps, tokens):
    W = {k: v.double() for k, v in load_file(ckpt).items()}
    with torch.no_grad():
        ref_logits, ref_mtp = ref_forward(W, cfg, tokens)
        logits, _, h0 = golden.forward(model, mtps, tokens)
        mtp_logits = golden.mtp_forward(model, mtps, tokens, h0)[2] if len(mtps) else []
    diffs = [(logits.double() - ref_logits).abs().max().item()]
    diffs += [(a.double() - b).abs().max().item() for a, b in zip(mtp_logits, ref_mtp)]
    ok = max(diffs) < 1e-4
    print(f"independent float64 forward vs transformers fp32: max |logit diff| main {diffs[0]:.2e}"
          + "".join(f", mtp{k} {d:.2e}" for k, d in enumerate(diffs[1:], 1)) + f" -> {'ok' if ok else 'FAILED'}")
    return ok


class MyRouter(torch.nn.Module):
    """Drop-in for DeepseekV3TopkRouter that keeps the input dtype."""

    def __init__(self, hf_router, log):
        super().__init__()
        self.hf = hf_router
        self.log = log
        # _keep_in_fp32_modules_strict keeps gate.weight fp32 even in a
        # float64 model; same Parameter object, so bindings still hold.
        hf_router.weight.data = hf_router.weight.data.double()
        hf_router.e_score_correction_bias.data = hf_router.e_score_correction_bias.data.double()

    def forward(self, hidden_states):
        r = self.hf
        logits, w, idx, margins = my_route(hidden_states, r.weight, r.e_score_correction_bias, r.num_group,
                                           r.topk_group, r.top_k, r.norm_topk_prob, r.routed_scaling_factor)
        self.log.append((idx.sort(-1).values.clone(), margins))
        return logits, w, idx


def all_routers(model, mtps):
    mods = list(model.modules()) + list(mtps.modules())
    return [m for m in mods if isinstance(m, hf_ds3.DeepseekV3MoE)]


def check_router(model, mtps, tokens):
    captured = []
    hooks = [moe.gate.register_forward_hook(lambda m, i, o: captured.append((m, i[0].detach(), o)))
             for moe in all_routers(model, mtps)]
    with torch.no_grad():
        _, _, h0 = golden.forward(model, mtps, tokens)
        if len(mtps):
            golden.mtp_forward(model, mtps, tokens, h0)
    for h in hooks:
        h.remove()
    worst_w = 0.0
    for m, x, (hf_logits, hf_w, hf_idx) in captured:
        _, w, idx, _ = my_route(x.float(), m.weight.float(), m.e_score_correction_bias, m.num_group, m.topk_group,
                                m.top_k, m.norm_topk_prob, m.routed_scaling_factor)
        a_idx, a_ord = hf_idx.sort(-1)
        b_idx, b_ord = idx.sort(-1)
        if not torch.equal(a_idx, b_idx):
            print("router check FAILED: expert choice differs")
            return False
        worst_w = max(worst_w, (hf_w.gather(1, a_ord) - w.gather(1, b_ord)).abs().max().item())
    ok = worst_w < 1e-6
    print(f"router check: {len(captured)} router calls, same experts, max |weight diff| = {worst_w:.2e} -> {'ok' if ok else 'FAILED'}")
    return ok


def check_mtp_vs_hf(ckpt_dir, model, mtps, tokens):
    if not len(mtps):
        print("MTP check: skipped (no MTP modules)")
        return True
    import logging
    from transformers.utils import logging as hf_logging
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    main = DeepseekV3ForCausalLM.from_pretrained(
        ckpt_dir, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32)
    L = main.config.num_hidden_layers
    depth = main.config.num_mtp_layers
    # MtpModel.from_pretrained picks the MTP tensors by the main model's
    # _keys_to_ignore_on_load_unexpected, which DeepseekV3ForCausalLM fixes
    # to the 61-layer release (`model\.layers\.61.*`); point it at L..L+depth-1.
    main._keys_to_ignore_on_load_unexpected = [rf"model\.layers\.{L + k}\." for k in range(depth)]
    hf = MtpModel.from_pretrained(main)
    hf.eval()
    T = tokens.shape[1] - 1
    with torch.no_grad():
        _, _, h0 = golden.forward(model, mtps, tokens)
        _, _, ours = golden.mtp_forward(model, mtps, tokens, h0)
        h = main(input_ids=tokens[:, :T], use_cache=False, output_hidden_states=True).hidden_states[-1]
        diffs = []
        for k in range(1, depth + 1):
            n = T - k
            pos = torch.arange(n)[None].expand(tokens.shape[0], n)
            h = hf.forward_layer(k - 1, h[:, :n], pos, None, inputs_embeds=hf.embed_tokens(tokens[:, k:k + n]))
            diffs.append((ours[k - 1] - hf._project_to_logits(h)).abs().max().item())
    ok = max(diffs) < 1e-5
    print(f"MTP check vs transformers MtpModel.from_pretrained ({depth} depth(s), teacher-forced): max |logit diff| "
          + ", ".join(f"mtp{k} {d:.2e}" for k, d in enumerate(diffs, 1)) + f" -> {'ok' if ok else 'FAILED'}")
    return ok


def rmsnorm_keep_dtype(self, x):
    """DeepseekV3RMSNorm without its fp32 round trip."""
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def eager_attention_keep_dtype(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention without the fp32 softmax (MLA here has as many kv heads as heads)."""
    assert module.num_key_value_groups == 1
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def finite_differences(cfg, ckpt, tokens, mtp_lambda, samples, eps, seed):
    # transformers rounds through fp32 in RMSNorm, the eager softmax and the
    # router; in float64 those would swamp a central difference.
    hf_ds3.DeepseekV3RMSNorm.forward = rmsnorm_keep_dtype
    hf_ds3.eager_attention_forward = eager_attention_keep_dtype
    model, mtps = golden.build(cfg, dtype=torch.float64)
    main_b, mtp_b = golden.load_checkpoint(model, mtps, ckpt)
    log = []
    for moe in all_routers(model, mtps):
        moe.gate = MyRouter(moe.gate, log)

    def total():
        log.clear()
        _, loss, h0 = golden.forward(model, mtps, tokens)
        if len(mtps):
            mtp_loss, _, _ = golden.mtp_forward(model, mtps, tokens, h0)
            return loss + mtp_lambda * mtp_loss
        return loss

    golden.zero_grads(model, mtps)
    t = total()
    t.backward()
    base_routes = [r for r, _ in log]
    gmin = min(m[0] for _, m in log)
    emin = min(m[1] for _, m in log)
    print(f"float64 total = {t.item():.10f}; router margins: min group-score gap {gmin:.3e}, "
          f"min expert-score gap {emin:.3e}")

    binds = dict(main_b)
    binds.update(mtp_b)
    golden_path = os.path.join(os.path.dirname(ckpt), "golden_mtp.safetensors" if len(mtps) else "golden.safetensors")
    if os.path.exists(golden_path):
        gold = load_file(golden_path)
        key = "total" if len(mtps) else "loss"
        worst_g = max(((gold["grad." + n].double() - b.grad().double()).abs().max()
                       / b.grad().double().abs().max().clamp_min(1e-12)).item()
                      for n, b in binds.items() if b.trained())
        ok_g = worst_g < 1e-3 and abs(gold[key].item() - t.item()) < 1e-5 * abs(t.item())
        print(f"{os.path.basename(golden_path)} (fp32) vs float64 autograd: {key} {gold[key].item():.7f} vs "
              f"{t.item():.7f}; worst per-tensor max|diff|/max|grad| {worst_g:.2e} -> {'ok' if ok_g else 'FAILED'}")
        if not ok_g:
            return False
    groups = {}
    for name, b in binds.items():
        if not b.trained():
            continue
        key = re.sub(r"experts\.\d+\.", "experts.*.", name)
        L = model.config.num_hidden_layers
        key = re.sub(r"layers\.(\d+)\.", lambda m: "mtp." if int(m.group(1)) >= L else f"layers.{m.group(1)}.", key)
        groups.setdefault(key, []).append(name)

    rng = random.Random(seed)
    atol, rtol = 1e-9, 1e-6
    seen = set()
    worst = 0.0
    n_checked = n_skipped = 0
    rows = []
    with torch.no_grad():
        for key in sorted(groups):
            done = tries = 0
            while done < samples and tries < 20 * samples:
                tries += 1
                name = rng.choice(groups[key])
                b = binds[name]
                view = b.view(b.tensor)
                flat = rng.randrange(view.numel())
                if (name, flat) in seen:
                    continue
                seen.add((name, flat))
                idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), view.shape))
                g_auto = b.view(b.tensor.grad)[idx].item() if b.tensor.grad is not None else 0.0
                orig = view[idx].item()
                vals, routes_ok = [], True
                for sign in (+1, -1):
                    view[idx] = orig + sign * eps
                    vals.append(total().item())
                    routes_ok &= all(torch.equal(a, r) for a, (r, _) in zip(base_routes, log))
                view[idx] = orig
                if not routes_ok:
                    n_skipped += 1
                    continue
                g_fd = (vals[0] - vals[1]) / (2 * eps)
                # pass if |fd - autograd| <= atol + rtol * |autograd|
                err = abs(g_fd - g_auto) / (atol + rtol * abs(g_auto))
                worst = max(worst, err)
                rows.append((name, idx, g_auto, g_fd, abs(g_fd - g_auto)))
                done += 1
                n_checked += 1
    for name, idx, ga, gf, diff in rows:
        print(f"  {name}{list(idx)}: autograd {ga:+.10e}  fd {gf:+.10e}  |diff| {diff:.1e}")
    ok = worst <= 1.0
    print(f"finite differences (float64, eps {eps:g}): {n_checked} entries in {len(groups)} groups, "
          f"{n_skipped} redrawn for routing changes; max |fd - autograd| / ({atol:g} + {rtol:g}*|autograd|) "
          f"= {worst:.3f} -> {'ok' if ok else 'FAILED'}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--samples", type=int, default=3, help="entries per tensor group")
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    cfg = golden.read_config(os.path.join(args.dir, "config.json"))
    with open(os.path.join(args.dir, "batch.json")) as f:
        batch = json.load(f)
    tokens = torch.tensor(batch["tokens"], dtype=torch.long)
    ckpt = os.path.join(args.dir, "model.safetensors")

    model, mtps = golden.build(cfg)
    golden.load_checkpoint(model, mtps, ckpt)
    ok = check_reference(cfg, ckpt, model, mtps, tokens)
    ok &= check_router(model, mtps, tokens)
    ok &= check_mtp_vs_hf(args.dir, model, mtps, tokens)
    ok &= finite_differences(cfg, ckpt, tokens, float(batch.get("mtp_lambda", 0.3)), args.samples, args.eps,
                             args.seed)
    print("selfcheck:", "ok" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
