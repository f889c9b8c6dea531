#!/usr/bin/env python3
"""lm-evaluation-harness's scores of tokenmill task files, for `tokenmill eval --tasks`.

    eval_lm_harness.py --model DIR --tokenizer tokenizer.json --tasks A.jsonl [B.jsonl …]
                       --work DIR

Runs EleutherAI's lm-evaluation-harness (`pip install lm-eval`) with `--model hf` on a
Hugging Face-layout model (fp32, CPU, batch size 1, zero-shot). The tokenizer.json is wrapped as
a `PreTrainedTokenizerFast` (end-of-text token: the first of tokenmill's EOS candidates the
vocabulary has) and saved under WORK/tokenizer. Each task file becomes a task YAML under
WORK/tasks that reads the JSONL with the `json` dataset builder (no download):

* a file of multiple-choice examples: `output_type: multiple_choice`, `doc_to_text: context`,
  `doc_to_choice: choices`, `doc_to_target: gold`, `target_delimiter: ""` (tokenmill appends
  choices as written), metrics `acc`, `acc_norm`, `acc_bytes`;
* a file of exact-answer examples: `output_type: loglikelihood`, `doc_to_target: answer`,
  metrics `acc` (is_greedy) and `perplexity`.

stdout: one JSON object {task file: {"metrics": {...}, "examples": [{"doc_id", "loglik": [...],
"greedy": [...], metric: value …}]}} with the per-example log-likelihoods lm-eval computed.
"""

import argparse
import contextlib
import json
import logging
import os
import sys

EOS_CANDIDATES = ["<|endoftext|>", "<｜end▁of▁sentence｜>", "<|end_of_text|>", "</s>", "<eos>", "[SEP]"]


def task_yaml(name, path, kind):
    head = (
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(os.path.abspath(path))}\n"
        "test_split: test\n"
        'doc_to_text: "{{context}}"\n'
        'target_delimiter: ""\n'
    )
    if kind == "choice":
        return head + (
            "output_type: multiple_choice\n"
            'doc_to_choice: "{{choices}}"\n'
            'doc_to_target: "{{gold}}"\n'
            "metric_list:\n"
            "  - metric: acc\n  - metric: acc_norm\n  - metric: acc_bytes\n"
        )
    return head + (
        "output_type: loglikelihood\n"
        'doc_to_target: "{{answer}}"\n'
        "metric_list:\n  - metric: acc\n  - metric: perplexity\n"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--tasks", nargs="+", required=True)
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)

    import lm_eval
    from lm_eval.tasks import TaskManager
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(args.tokenizer)
    eos = next((c for c in EOS_CANDIDATES if raw.token_to_id(c) is not None), None)
    tok = PreTrainedTokenizerFast(tokenizer_file=args.tokenizer, eos_token=eos)
    tok_dir = os.path.join(args.work, "tokenizer")
    tok.save_pretrained(tok_dir)

    task_dir = os.path.join(args.work, "tasks")
    os.makedirs(task_dir, exist_ok=True)
    names = {}
    for i, path in enumerate(args.tasks):
        with open(path) as f:
            first = json.loads(next(l for l in f if l.strip()))
        kind = "choice" if "choices" in first else "answer"
        name = f"tokenmill_task_{i}"
        with open(os.path.join(task_dir, name + ".yaml"), "w") as f:
            f.write(task_yaml(name, path, kind))
        names[name] = (path, kind)

    # lm-eval prints to stdout: the JSON below is to be stdout's only line.
    with contextlib.redirect_stdout(sys.stderr):
        res = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={args.model},tokenizer={tok_dir},dtype=float32",
            tasks=list(names),
            num_fewshot=0,
            batch_size=1,
            device="cpu",
            log_samples=True,
            task_manager=TaskManager(include_path=task_dir),
        )
    out = {}
    for name, (path, kind) in names.items():
        metrics = {k.split(",")[0]: v for k, v in res["results"][name].items() if "," in k}
        examples = []
        for s in sorted(res["samples"][name], key=lambda s: s["doc_id"]):
            # resps: per request [[loglikelihood, is_greedy]]
            lls = [float(r[0][0]) for r in s["resps"]]
            greedy = [bool(r[0][1]) for r in s["resps"]]
            ex = {"doc_id": s["doc_id"], "loglik": lls, "greedy": greedy}
            for m in ("acc", "acc_norm", "acc_bytes"):
                if m in s:
                    ex[m] = float(s[m])
            examples.append(ex)
        out[path] = {"kind": kind, "metrics": metrics, "examples": examples}
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
