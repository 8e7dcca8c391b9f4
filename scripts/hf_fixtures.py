#!/usr/bin/env python3
"""Fixtures of Hugging Face SwitchTransformers for the Java tests, made with transformers + torch.

    /work/venv/bin/python scripts/hf_fixtures.py                 # tiny models -> src/test/resources/hf/models/
    /work/venv/bin/python scripts/hf_fixtures.py --bench DIR     # a switch-base-8-shaped random model (not committed)
    /work/venv/bin/python scripts/hf_fixtures.py --bench DIR --shape switch-base-32
    /work/venv/bin/python scripts/hf_fixtures.py --check-load DIR [--against FIXTURE_DIR]
                                                                 # transformers loads a Java-saved model: no missing or
                                                                 # unexpected keys, same logits as the fixture

Each tiny model directory holds HF's own files (config.json, model.safetensors from save_pretrained)
and expected.json: for several inputs the logits (model.eval()), greedy and beam generations, the
losses of HF's forward(labels=..., output_router_logits=True), a padded batch's losses, and the
parameters after optimizer steps on that batch (SGD, Adafactor as HF's defaults and with a fixed lr,
AdamW) in *.safetensors. Dropout is off in every reference (eval mode), so the Java side can match
the numbers exactly; jitter and dropout are training noise from a different generator.
Inputs are re-drawn until the logits' top-2 margin and the routers' top-2 probability margins are
clear of fp32 noise, so that identical ids and routes are a fair requirement.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import transformers
from safetensors.torch import save_file
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration
from transformers.optimization import Adafactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "src", "test", "resources", "hf")
TOKENIZER = os.path.join(OUT, "tokenizer")

# Tiny shapes that exercise the rules: sparse steps (incl. HF's num_sparse = 0 "hack" and step 1),
# experts, capacities that drop tokens, tied/untied heads, relu/gelu activations, bucket settings,
# d_kv * heads != d_model, the router bias.
MODELS = {
    "tiny-relu": dict(d_model=16, d_kv=4, num_heads=4, d_ff=24, num_layers=2, num_decoder_layers=2,
                      num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, num_experts=4, expert_capacity=2,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, dense_act_fn="relu",
                      tie_word_embeddings=True, router_bias=False, dropout_rate=0.0, router_jitter_noise=0.0,
                      router_z_loss_coef=0.01, router_aux_loss_coef=0.02),
    "tiny-gelu-untied": dict(d_model=12, d_kv=5, num_heads=3, d_ff=20, num_layers=3, num_decoder_layers=2,
                             num_sparse_encoder_layers=3, num_sparse_decoder_layers=0, num_experts=3, expert_capacity=3,
                             relative_attention_num_buckets=6, relative_attention_max_distance=10, dense_act_fn="gelu_new",
                             tie_word_embeddings=False, router_bias=True, dropout_rate=0.1, router_jitter_noise=0.01,
                             router_z_loss_coef=0.001, router_aux_loss_coef=0.001),
    "tiny-deep": dict(d_model=16, d_kv=4, num_heads=2, d_ff=16, num_layers=4, num_decoder_layers=3,
                      num_sparse_encoder_layers=2, num_sparse_decoder_layers=1, num_experts=8, expert_capacity=64,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128, dense_act_fn="gelu",
                      tie_word_embeddings=True, router_bias=False, dropout_rate=0.1, router_jitter_noise=0.01,
                      router_z_loss_coef=0.001, router_aux_loss_coef=0.001),
}

SHAPES = {  # the released checkpoints' shapes (random weights)
    "switch-base-8": dict(num_experts=8),
    "switch-base-16": dict(num_experts=16),
    "switch-base-32": dict(num_experts=32),
}


def tokenizer_vocab():
    """The fixture tokenizer's size (t5-io's spiece.model + extra ids), if it is there."""
    if not os.path.isdir(TOKENIZER):
        return None
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    return len(tok)


def make_model(name, vocab, seed):
    cfg = SwitchTransformersConfig(vocab_size=vocab, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                                   **MODELS[name])
    torch.manual_seed(seed)
    model = SwitchTransformersForConditionalGeneration(cfg)
    model.eval()
    return model


def router_margin(out):
    """Smallest top-1 minus top-2 router probability over every token of every sparse layer."""
    m = 1.0
    for logits in list(out.encoder_router_logits or ()) + list(out.decoder_router_logits or ()):
        if logits is None or logits.shape[-1] < 2:
            continue
        p = torch.softmax(logits.float(), -1)
        top = torch.topk(p, 2, dim=-1).values
        m = min(m, float((top[..., 0] - top[..., 1]).min()))
    return m


def logit_margin(logits):
    top = torch.topk(logits, 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min() / logits.abs().max())


def draw_case(model, gen, vocab, enc_len, dec_len):
    """Random ids (no pad/eos inside) whose routes and argmaxes are clear of fp32 ties."""
    for _ in range(200):
        inp = torch.randint(2, vocab, (1, enc_len), generator=gen)
        dec = torch.cat([torch.zeros(1, 1, dtype=torch.long), torch.randint(2, vocab, (1, dec_len - 1), generator=gen)], 1)
        with torch.no_grad():
            out = model(input_ids=inp, decoder_input_ids=dec, output_router_logits=True)
        if router_margin(out) > 1e-4 and logit_margin(out.logits) > 1e-4:
            return inp, dec, out
    raise SystemExit("no input with clear margins found")


def losses_of(out):
    f = lambda v: float(v) if v is not None else 0.0
    return {"total": f(out.loss), "encoder_z_loss": f(out.encoder_z_loss), "decoder_z_loss": f(out.decoder_z_loss),
            "encoder_aux_loss": f(out.encoder_aux_loss), "decoder_aux_loss": f(out.decoder_aux_loss)}


def ce_of(logits, labels):
    return float(torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100))


def generation_margin_ok(model, inp, max_new, beams):
    """Greedy steps: every chosen token wins by a clear margin (else the ids could flip on fp32 noise)."""
    with torch.no_grad():
        out = model.generate(input_ids=inp, max_new_tokens=max_new, num_beams=beams, do_sample=False,
                             output_scores=True, return_dict_in_generate=True)
    if beams == 1:
        for s in out.scores:
            top = torch.topk(s, 2, dim=-1).values
            if float(top[0, 0] - top[0, 1]) < 1e-4 * float(s.abs().max()):
                return None
    return out.sequences[0].tolist()


def save_params(model, path):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    # what save_pretrained writes: tied copies dropped (v5 ties nothing in an untied model)
    if model.config.tie_word_embeddings:
        for k in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
            sd.pop(k, None)
    save_file(sd, path, metadata={"format": "pt"})


def batch_of(gen, vocab, lens, label_lens):
    """A right-padded batch (pad 0, attention mask) with labels padded by -100, as DataCollatorForSeq2Seq."""
    n, s, t = len(lens), max(lens), max(label_lens)
    ids = torch.zeros(n, s, dtype=torch.long)
    mask = torch.zeros(n, s, dtype=torch.long)
    labels = torch.full((n, t), -100, dtype=torch.long)
    for b in range(n):
        ids[b, :lens[b] - 1] = torch.randint(2, vocab, (lens[b] - 1,), generator=gen)
        ids[b, lens[b] - 1] = 1  # EOS, as the tokenizer appends
        mask[b, :lens[b]] = 1
        labels[b, :label_lens[b] - 1] = torch.randint(2, vocab, (label_lens[b] - 1,), generator=gen)
        labels[b, label_lens[b] - 1] = 1
    return ids, mask, labels


def step_params(model, ids, mask, labels, make_opt, steps, path):
    m = SwitchTransformersForConditionalGeneration(model.config)
    m.load_state_dict(model.state_dict())
    m.eval()  # no dropout, no jitter: the reference gradient is deterministic
    opt = make_opt(m.parameters())
    for _ in range(steps):
        opt.zero_grad()
        out = m(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
        out.loss.backward()
        opt.step()
    save_params(m, path)


def tiny(name, seed, vocab, with_tokenizer):
    d = os.path.join(OUT, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    model = make_model(name, vocab, seed)
    model.save_pretrained(d)
    gen = torch.Generator().manual_seed(seed + 1)
    cases = []
    for enc_len, dec_len in ((7, 5), (12, 9), (3, 2), (20, 6)):
        inp, dec, out = draw_case(model, gen, vocab, enc_len, dec_len)
        case = {"input_ids": inp[0].tolist(), "decoder_input_ids": dec[0].tolist(), "logits": out.logits[0].tolist()}
        greedy = generation_margin_ok(model, inp, 8, 1)
        if greedy is not None:
            case["greedy"] = greedy
        case["beam3"] = generation_margin_ok(model, inp, 8, 3)
        labels = torch.randint(2, vocab, (1, dec_len), generator=gen)
        labels[0, -1] = 1
        with torch.no_grad():
            lo = model(input_ids=inp, labels=labels, output_router_logits=True)
        case["labels"] = labels[0].tolist()
        case["losses"] = losses_of(lo)
        case["losses"]["ce"] = ce_of(lo.logits, labels)
        cases.append(case)
    # a padded batch: losses, gradients through optimizer steps
    ids, mask, labels = batch_of(gen, vocab, [9, 6, 11], [5, 7, 3])
    with torch.no_grad():
        bo = model(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    batch = {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist(),
             "losses": losses_of(bo)}
    batch["losses"]["ce"] = ce_of(bo.logits, labels)
    batch["logits"] = bo.logits.tolist()
    lr = 0.5
    step_params(model, ids, mask, labels, lambda p: torch.optim.SGD(p, lr=lr), 1, os.path.join(d, "sgd.safetensors"))
    batch["sgd_lr"] = lr
    if name == "tiny-relu":
        step_params(model, ids, mask, labels, lambda p: Adafactor(p), 2, os.path.join(d, "adafactor.safetensors"))
        step_params(model, ids, mask, labels,
                    lambda p: Adafactor(p, lr=1e-2, relative_step=False, scale_parameter=False, warmup_init=False), 2,
                    os.path.join(d, "adafactor-lr.safetensors"))
        step_params(model, ids, mask, labels, lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0), 2,
                    os.path.join(d, "adamw.safetensors"))
        batch["adafactor_lr"] = 1e-2
        batch["adamw_lr"] = 1e-2
        batch["steps"] = 2
    expected = {"transformers": transformers.__version__, "torch": torch.__version__,
                "attn_implementation": model.config._attn_implementation, "cases": cases, "batch": batch}
    if with_tokenizer:
        from transformers import AutoTokenizer
        for f in os.listdir(TOKENIZER):
            if f in ("spiece.model", "tokenizer_config.json"):  # tokenizer.json (400 KB) left out: spiece.model suffices
                shutil.copy(os.path.join(TOKENIZER, f), d)
        tok = AutoTokenizer.from_pretrained(d)
        text = "translate English to German: The house is wonderful."
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            g = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
        expected["text"] = {"prompt": text, "input_ids": ids[0].tolist(), "greedy": g[0].tolist(),
                            "decoded": tok.decode(g[0], skip_special_tokens=True)}
    with open(os.path.join(d, "expected.json"), "w") as fh:
        json.dump(expected, fh)
    print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters -> {d}")


def buckets():
    """T5's relative position buckets as torch computes them (fp32 logs), for several settings."""
    from transformers.models.switch_transformers.modeling_switch_transformers import SwitchTransformersAttention as A
    rel = torch.arange(-600, 601)
    out = []
    for nb, md in ((32, 128), (8, 16), (6, 10), (16, 64), (64, 512), (5, 7)):
        for bidir in (True, False):
            b = A._relative_position_bucket(rel, bidirectional=bidir, num_buckets=nb, max_distance=md)
            out.append({"num_buckets": nb, "max_distance": md, "bidirectional": bidir, "first": -600, "buckets": b.tolist()})
    with open(os.path.join(OUT, "buckets.json"), "w") as fh:
        json.dump(out, fh)


def bench(d, shape):
    cfg = SwitchTransformersConfig(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                                   num_heads=12, num_sparse_encoder_layers=6, num_sparse_decoder_layers=6,
                                   expert_capacity=64, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
                                   **SHAPES[shape])
    torch.manual_seed(0)
    with torch.no_grad():
        model = SwitchTransformersForConditionalGeneration(cfg)
    model.save_pretrained(d)
    # the fixture tokenizer (1100 ids, all below the model's 32128), so that --prompt works on it too
    for f in ("spiece.model", "tokenizer_config.json"):
        if os.path.isfile(os.path.join(TOKENIZER, f)):
            shutil.copy(os.path.join(TOKENIZER, f), d)
    print(f"{shape}: {sum(p.numel() for p in model.parameters()):,} parameters -> {d}")


def check_load(d, against):
    """transformers loads a Java-saved directory: no missing/unexpected/mismatched keys, no warnings, and its
    logits equal those the Java model computes from the same directory (scripts/run t5 logits)."""
    import subprocess
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, info = SwitchTransformersForConditionalGeneration.from_pretrained(d, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"loading {d}: {bad}")
    print(f"{d}: loaded with no missing, unexpected or mismatched keys")
    model.eval()
    ids, dec = [5, 9, 3, 7, 1], [0, 4, 8]
    with torch.no_grad():
        a = model(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([dec])).logits[0]
    out = subprocess.run([os.path.join(ROOT, "scripts", "run"), "t5", "logits", "--model", d, "--input-ids",
                          ",".join(map(str, ids)), "--decoder-input-ids", ",".join(map(str, dec))],
                         capture_output=True, text=True, check=True).stdout
    j = torch.tensor(json.loads(out)["logits"])
    rel = float((a - j).abs().max() / a.abs().max())
    print(f"HF's logits of the Java-saved model vs the Java model's: max |diff| / max |logit| = {rel:.2e}")
    if rel > 1e-4:
        raise SystemExit("the round trip changed the model")
    if against:
        ref = SwitchTransformersForConditionalGeneration.from_pretrained(against).eval()
        with torch.no_grad():
            b = ref(input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([dec])).logits[0]
        print(f"max |logits - {against}'s| = {float((a - b).abs().max()):.3g} (0 for a model saved without training)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", metavar="DIR")
    ap.add_argument("--shape", default="switch-base-8", choices=sorted(SHAPES))
    ap.add_argument("--check-load", metavar="DIR")
    ap.add_argument("--against", metavar="DIR")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.bench:
        bench(a.bench, a.shape)
        return
    if a.check_load:
        check_load(a.check_load, a.against)
        return
    tv = tokenizer_vocab()
    vocab = tv if tv is not None else 96
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; vocab {vocab}"
          + ("" if tv else " (no tokenizer fixture yet: models without one)"))
    for i, name in enumerate(MODELS):
        tiny(name, 1000 + i, vocab if i == 0 else 64 + 16 * i, tv is not None and i == 0)
    buckets()


if __name__ == "__main__":
    main()
