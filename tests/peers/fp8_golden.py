#!/usr/bin/env python3
"""Golden vectors for tokenmill's FP8 and BF16 codecs, from ml_dtypes (the reference JAX and PyTorch use).

Usage: python fp8_golden.py OUT.json   (tests/fixtures/fp8/golden.json is committed)

For E4M3FN and E5M2: the f32 value of every code, and for a sweep of f32 inputs — every code's
value, every midpoint between neighbouring values (the ties) and the f32 numbers just either side
of it, overflow, f32 subnormals, ±0, ±inf, NaN with both signs, and log-uniform random values —
the code of a plain cast and of a saturating cast (clip to ±max first; NaN stays NaN).
"""
import json
import sys

import ml_dtypes
import numpy as np


def sweep(dtype):
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
    finite = np.unique(codes[np.isfinite(codes)])
    xs = [finite]
    mids = ((finite[:-1].astype(np.float64) + finite[1:].astype(np.float64)) / 2).astype(np.float32)
    xs += [mids, np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))]
    mx = float(np.max(finite))
    xs.append(np.array([mx * 1.01, mx * 1.5, mx * 2, 1e30, 3.4e38, 1e-40, -1e-40, 1e-45, 0.0, -0.0,
                        np.inf, -np.inf], dtype=np.float32))
    rng = np.random.default_rng(20261128)
    r = (2.0 ** rng.uniform(-14, 17, 3000)).astype(np.float32) * rng.choice([-1, 1], 3000).astype(np.float32)
    xs.append(r)
    x = np.concatenate(xs).astype(np.float32)
    x = np.concatenate([x, np.array([np.nan, -np.nan], dtype=np.float32)])
    plain = x.astype(dtype).view(np.uint8)
    clipped = np.where(np.isnan(x), x, np.clip(x, -mx, mx)).astype(np.float32)
    sat = clipped.astype(dtype).view(np.uint8)
    return {
        "decode_f32_bits": [int(b) for b in codes.view(np.uint32)],
        "encode": [[int(b), int(p), int(s)] for b, p, s in zip(x.view(np.uint32), plain, sat)],
    }


def bf16_sweep():
    rng = np.random.default_rng(7)
    x = (2.0 ** rng.uniform(-130, 127, 4000)).astype(np.float32) * rng.choice([-1, 1], 4000).astype(np.float32)
    # Exact ties: the low 16 bits are 0x8000 (halfway), with even and odd kept parts.
    ties = (rng.integers(0x00800000, 0x7F000000, 1000, dtype=np.uint32) & 0xFFFF0000) | 0x8000
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-45, -1e-40], dtype=np.float32)
    x = np.concatenate([x, ties.view(np.float32), specials])
    b = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    return [[int(i), int(o)] for i, o in zip(x.view(np.uint32), b)]


def main():
    out = {
        "bf16": bf16_sweep(),
        "ml_dtypes": ml_dtypes.__version__,
        "e4m3": sweep(ml_dtypes.float8_e4m3fn),
        "e5m2": sweep(ml_dtypes.float8_e5m2),
    }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print({k: len(v["encode"]) for k, v in out.items() if isinstance(v, dict)}, "bf16", len(out["bf16"]))


if __name__ == "__main__":
    main()
