#!/usr/bin/env python3
"""Writes docs/dedup-s-curve.svg: P(candidate) = 1 - (1 - s^r)^b for tokenmill's LSH settings.
No dependencies; run `python3 docs/s_curve.py`."""
import os

W, H, M = 640, 400, 50
settings = [(14, 8, "#1f77b4", "14 bands x 8 rows (default, FineWeb)"), (20, 13, "#d62728", "20 bands x 13 rows")]


def p(s, b, r):
    return 1 - (1 - s ** r) ** b


def xy(s, v):
    return M + s * (W - 2 * M), H - M - v * (H - 2 * M)


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
for i in range(11):
    x, _ = xy(i / 10, 0)
    _, y = xy(0, i / 10)
    out.append(f'<line x1="{x}" y1="{M}" x2="{x}" y2="{H - M}" stroke="#eee"/>')
    out.append(f'<line x1="{M}" y1="{y}" x2="{W - M}" y2="{y}" stroke="#eee"/>')
    out.append(f'<text x="{x}" y="{H - M + 16}" text-anchor="middle">{i / 10:.1f}</text>')
    out.append(f'<text x="{M - 8}" y="{y + 4}" text-anchor="end">{i / 10:.1f}</text>')
out.append(f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">Jaccard similarity of two documents</text>')
out.append(f'<text x="14" y="{H / 2}" transform="rotate(-90 14 {H / 2})" text-anchor="middle">P(candidate pair)</text>')
for k, (b, r, color, label) in enumerate(settings):
    pts = " ".join("%.1f,%.1f" % xy(i / 200, p(i / 200, b, r)) for i in range(201))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    t = (1 / b) ** (1 / r)
    x, y = xy(t, p(t, b, r))
    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
    out.append(f'<text x="{M + 10}" y="{M + 16 + 16 * k}" fill="{color}">{label}: threshold (1/b)^(1/r) = {t:.3f}</text>')
out.append("</svg>")
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dedup-s-curve.svg")
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print(path)
for b, r, _, _ in settings:
    print(b, r, " ".join(f"{s:.1f}:{p(s, b, r):.3f}" for s in [i / 10 for i in range(3, 11)]))
