#!/usr/bin/env python3
"""PEFT interoperability fixtures for sqlora's LoRA adapters (issue 7).

  python3 scripts/peft-interop.py make  DIR   # tiny random Qwen2 + two PEFT adapters + logits
  python3 scripts/peft-interop.py check DIR   # loads DIR/sqlora-written (written by sqlora) in PEFT

`make` writes, under DIR:
  base/model.safetensors, base/config.json   the tiny random Qwen2 (f32), Hugging Face layout
  plain/                                     a PEFT adapter (r=4, alpha=8, all 7 projections)
  rslora/                                    a PEFT adapter (r=8, alpha=16, rsLoRA, q/v/down only)
  expected.json                              token ids, and the logits of every position for the
                                             base and for each adapter, as PEFT computes them
`check` loads DIR/sqlora-written/ (an adapter sqlora saved for the same base, with the logits
sqlora computed in expected.json) through `PeftModel.from_pretrained`, compares the logits and
exits non-zero when they differ by more than 1e-4.

Needs torch, transformers and peft (CPU is enough; `pip install torch transformers peft`).
"""

import json
import os
import sys

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM
from peft import LoraConfig, PeftModel, get_peft_model

IDS = [3, 17, 42, 99, 5, 64, 127, 8, 77, 23, 1, 110]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_config():
    return Qwen2Config(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        attn_implementation="eager",
    )


def logits(model):
    with torch.no_grad():
        out = model(torch.tensor([IDS])).logits[0]
    return out.float().tolist()


def make(d):
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(tiny_config()).float().eval()
    # Random init gives tiny biases and unit norms; make every weight matter.
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p) if "norm" in name else 0.1 * torch.randn_like(p))
    base.save_pretrained(os.path.join(d, "base"), safe_serialization=True)
    expected = {"ids": IDS, "base": logits(base)}

    for name, cfg in [
        ("plain", LoraConfig(r=4, lora_alpha=8, target_modules=ALL, lora_dropout=0.0, bias="none",
                             init_lora_weights=False)),
        ("rslora", LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                              lora_dropout=0.0, bias="none", use_rslora=True,
                              init_lora_weights=False)),
    ]:
        torch.manual_seed(1 if name == "plain" else 2)
        fresh = Qwen2ForCausalLM.from_pretrained(os.path.join(d, "base"), dtype=torch.float32)
        peft = get_peft_model(fresh, cfg).eval()
        with torch.no_grad():
            for pname, p in peft.named_parameters():
                if "lora_" in pname:
                    p.copy_(0.05 * torch.randn_like(p))
        peft.save_pretrained(os.path.join(d, name), safe_serialization=True)
        expected[name] = logits(peft)
        # The adapter PEFT saved, loaded back by PEFT, gives the same logits.
        again = PeftModel.from_pretrained(
            Qwen2ForCausalLM.from_pretrained(os.path.join(d, "base"), dtype=torch.float32),
            os.path.join(d, name)).eval()
        diff = max_abs(logits(again), expected[name])
        assert diff < 1e-6, f"PEFT does not reload its own adapter ({diff})"
        print(f"{name}: max |logit| change over the base {max_abs(expected[name], expected['base']):.4f}")
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"wrote {d}")


def max_abs(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def check(d):
    sub = os.path.join(d, "sqlora-written")
    with open(os.path.join(sub, "expected.json")) as f:
        want = json.load(f)
    model = PeftModel.from_pretrained(
        Qwen2ForCausalLM.from_pretrained(os.path.join(d, "base"), dtype=torch.float32),
        sub).eval()
    n = sum(1 for name, _ in model.named_parameters() if "lora_" in name)
    assert want["ids"] == IDS
    got = logits(model)
    diff = max_abs(got, want["logits"])
    print(f"PEFT loaded sqlora's adapter ({n} LoRA tensors); max |logit difference| = {diff:.2e}")
    if diff > 1e-4:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("make", "check"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    (make if sys.argv[1] == "make" else check)(sys.argv[2])
