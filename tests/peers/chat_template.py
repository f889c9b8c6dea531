"""transformers' apply_chat_template over conversations, for tokenmill's SFT peer test.

usage: chat_template.py MODEL_DIR CONVERSATIONS.jsonl

MODEL_DIR holds a tokenizer.json and a tokenizer_config.json with the chat template; each line
of CONVERSATIONS.jsonl has `messages` (OpenAI layout). Prints one JSON object per line:
{"ids": [...], "text": "..."}: `apply_chat_template(messages, tokenize=True)` and its text.
"""

import json
import sys

from transformers import AutoTokenizer


def ids_of(r):
    # transformers 5 returns a BatchEncoding, 4.x a list
    if isinstance(r, list):
        return r
    return list(r["input_ids"])


def main():
    model_dir, conversations = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(model_dir)
    with open(conversations, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            messages = json.loads(line)["messages"]
            text = tok.apply_chat_template(messages, tokenize=False)
            ids = ids_of(tok.apply_chat_template(messages, tokenize=True))
            print(json.dumps({"ids": ids, "text": text}, ensure_ascii=False))


if __name__ == "__main__":
    main()
