#!/usr/bin/env python3
"""Throughput anchor for `sqlora train` (issue 9): the same token sequences trained with Hugging
Face transformers + PEFT (LoRA on bf16 weights) on the GPU, with the same hyperparameters.

  sqlora train --data FILE --out x --max-len 512 --dump-examples ex.jsonl   # the sequences
  python3 scripts/hf-train-anchor.py MODEL.gguf ex.jsonl [STEPS] [BATCH]

MODEL.gguf is read by transformers (needs the `gguf` package). LoRA r=16, alpha=32, dropout 0.05
on all 7 projections; batches of BATCH (default 16) examples of similar length, padded at the
end; loss on the answer tokens only; AdamW lr 2e-4. Prints one JSON line: non-padding tokens
per second and ms per step (after 3 warm-up steps), peak GPU memory, first and last loss.
"""

import json
import os
import random
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    gguf, examples_path = sys.argv[1], sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    examples = [json.loads(l) for l in open(examples_path) if l.strip()]
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf)),
        gguf_file=os.path.basename(gguf),
        torch_dtype=torch.bfloat16,
    ).cuda()
    load_s = time.time() - t0
    model.config.use_cache = False
    cfg = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    rng = random.Random(0)
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["ids"]))
    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    rng.shuffle(batches)
    torch.cuda.reset_peak_memory_stats()
    warm, timed_tokens, timed_s, losses = 3, 0, 0.0, []
    for step in range(steps):
        idx = batches[step % len(batches)]
        n = max(len(examples[i]["ids"]) for i in idx)
        ids = torch.zeros((len(idx), n), dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        labels = torch.full((len(idx), n), -100, dtype=torch.long)
        tokens = 0
        for r, i in enumerate(idx):
            e = examples[i]
            k = len(e["ids"])
            ids[r, :k] = torch.tensor(e["ids"])
            mask[r, :k] = 1
            labels[r, e["answer_start"] : k] = ids[r, e["answer_start"] : k]
            tokens += k
        torch.cuda.synchronize()
        t = time.time()
        out = model(input_ids=ids.cuda(), attention_mask=mask.cuda(), labels=labels.cuda())
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        torch.cuda.synchronize()
        if step >= warm:
            timed_s += time.time() - t
            timed_tokens += tokens
    print(
        json.dumps(
            {
                "engine": "transformers+peft bf16",
                "load_s": round(load_s, 1),
                "steps_timed": steps - warm,
                "batch": batch,
                "tokens_per_sec": round(timed_tokens / timed_s),
                "ms_per_step": round(1000 * timed_s / (steps - warm), 1),
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "loss_first": round(losses[0], 3),
                "loss_last": round(losses[-1], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
