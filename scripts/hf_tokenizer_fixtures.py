#!/usr/bin/env python3
"""Tokenizer fixtures of the Java T5Tokenizer (org.tornadoswitch.hf), made with sentencepiece and
transformers; the Java tests compare against them and need no Python.

    /work/venv/bin/python scripts/hf_tokenizer_fixtures.py [OUT]   # OUT = src/test/resources/hf

Writes
  OUT/tokenizer/            a T5-style SentencePiece unigram model (vocab 1000, nmt_nfkc like T5's,
                            <pad>=0 </s>=1 <unk>=2, no byte fallback) trained on Tiny Shakespeare
                            plus some multilingual text: spiece.model, and what transformers'
                            T5Tokenizer (extra_ids=100: <extra_id_0> = 1099 ... <extra_id_99> = 1000)
                            saves for it (tokenizer.json, tokenizer_config.json, ...). The tiny
                            model fixtures of t5-model ship this same directory.
  OUT/tokenizer_cases.json  per test text: "hf" = T5Tokenizer(text, add_special_tokens=False) ids
                            (loaded back from OUT/tokenizer, so from its tokenizer.json), "hf_spiece"
                            = the same from a directory with spiece.model alone (transformers
                            converts it), "sp" = sentencepiece's own encode of the raw text
                            (sentinels are plain text there), "hf_decoded" = decode(hf,
                            skip_special_tokens=True), "sp_decoded" = sentencepiece's decode of "sp".
  OUT/tokenizer_bytefallback/spiece.model and tokenizer_bytefallback_cases.json: a second model
                            with byte_fallback, identity normalisation and user-defined symbols, its
                            ids from sentencepiece (not a T5 tokenizer: tests the SentencePiece core).
Needs ../shared/data/tinyshakespeare.txt (or TINYSHAKESPEARE=path).
"""
import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
from transformers import T5Tokenizer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "src/test/resources/hf")
CORPUS = os.environ.get("TINYSHAKESPEARE", os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))

# Multilingual training text, so that accents, Greek, Cyrillic, CJK, Hangul and digits get pieces.
UNICODE_TRAIN = """Café, naïve, résumé, über, Straße, façade, coöperate, jalapeño, São Paulo, Ångström, Dvořák.
Ελληνικά: Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.
Русский: Съешь же ещё этих мягких французских булок, да выпей чаю.
日本語: 吾輩は猫である。名前はまだ無い。東京は日本の首都です。
中文: 我能吞下玻璃而不伤身体。今天天气很好。
한국어: 나는 유리를 먹을 수 있어요. 그래도 아프지 않아요.
Polski: Zażółć gęślą jaźń. Čeština: Příliš žluťoučký kůň úpěl ďábelské ódy.
Numbers: 0 1 2 3 4 5 6 7 8 9, 10, 42, 100, 2024, 3.14, 1,000,000; signs < > = + - * / _ # @ % & $ "quoted" (round) [square] {curly}.
"""

# Texts whose ids are recorded: whitespace, normalisation (NFKC: full-width, ligatures, compatibility
# forms, combining marks), unknown characters, CJK, sentinels and special tokens in the text.
EDGE_CASES = [
    "",
    " ",
    "   ",
    "\t\n",
    "a",
    "Hello world",
    "  leading and trailing spaces  ",
    "multiple     spaces   inside",
    "tabs\tand\nnewlines\r\nand\r carriage returns",
    "line one\n\nline three\n",
    "Café naïve résumé über Straße",
    "e\u0301 a\u0300 combining marks (NFC: é à)",
    "Ångström Å Å",
    "ＲＯＭＥＯ： full-width ＡＢＣ１２３ ａｂｃ",
    "ligatures: ﬁne ﬂow ﬀ ﬃ ﬄ ﬅ ﬆ",
    "compatibility: ① ⑵ ™ ½ ¼ ² ³ µ ℃ ㎏ Ⅻ ﹏ ｶﾀｶﾅ",
    "emoji: 😀 👍🏽 👨‍👩‍👧 ❤️ 🇩🇪",
    "😀😀😀",
    "unknown runs: ✈✈ ☃ ♞♞♞ end",
    "日本語のテキストです。東京は日本の首都です。",
    "中文文本，我能吞下玻璃而不伤身体。",
    "한국어 텍스트: 나는 유리를 먹을 수 있어요.",
    "Ελληνικά και Русский текст",
    "Zażółć gęślą jaźń",
    "digits 0123456789 3.14159 1,000,000 2024-01-31",
    "١٢٣ ۴۵۶ ０１２",
    "no\u00a0break\u00a0space, ideographic\u3000space, thin\u2009space, zero\u200bwidth",
    "soft\u00adhyphen and word\u2060joiner and bom\ufeffhere",
    "control \u0001 \u0007 \u001f chars",
    "ogham\u1680space and line\u2028separator and next\u0085line",
    "quotes “double” ‘single’ «guillemets» — dashes – and … ellipsis",
    "The <extra_id_0> walks in <extra_id_1> park",
    "<extra_id_0>",
    "<extra_id_99> and <extra_id_100> (the last is not a sentinel)",
    "x<extra_id_5>y",
    "<extra_id_0><extra_id_1> adjacent",
    " <extra_id_2> spaced ",
    "special tokens in text: </s> <pad> <unk> <s>",
    "a</s>b",
    "ROMEO:\nWhat, shall this speech be spoke for our excuse?\nOr shall we on without apology?",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "punctuation!?.,;:'\"()[]{}<>@#$%^&*_+=~`|\\/",
    "MiXeD CaSe WoRdS and ALL CAPS",
    "spaces before punctuation , . ! ? and it ' s , don 't , I 'm",
]


def train(work, name, text, **kw):
    """Trains WORK/NAME.model; relative paths, so that the model (which records them) is reproducible."""
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with open(name + ".txt", "w", encoding="utf-8") as f:
            f.write(text)
        spm.SentencePieceTrainer.train(input=name + ".txt", model_prefix=name, model_type="unigram",
                                       input_sentence_size=0, shuffle_input_sentence=False, num_threads=1,
                                       minloglevel=2, **kw)
    finally:
        os.chdir(cwd)


def shakespeare_lines(text, n=160):
    lines = [l for l in text.split("\n") if l.strip()]
    step = max(1, len(lines) // n)
    picked = lines[::step][:n]
    # and a few multi-line passages, newlines kept
    passages = [text[i:i + 400] for i in (0, 100_000, 500_000, 1_000_000)]
    return picked + passages


def main():
    shakespeare = open(CORPUS, encoding="utf-8").read()
    os.makedirs(OUT, exist_ok=True)
    work = tempfile.mkdtemp()
    try:
        # --- the T5-style model
        train(work, "sp", shakespeare + "\n" + UNICODE_TRAIN * 30, vocab_size=1000,
              normalization_rule_name="nmt_nfkc", character_coverage=1.0,
              pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
        tok_dir = os.path.join(OUT, "tokenizer")
        if os.path.isdir(tok_dir):
            shutil.rmtree(tok_dir)
        spiece_only = os.path.join(work, "spiece_only")
        os.makedirs(spiece_only)
        shutil.copy(os.path.join(work, "sp.model"), os.path.join(spiece_only, "spiece.model"))
        hf_from_spiece = T5Tokenizer.from_pretrained(spiece_only, extra_ids=100)
        hf_from_spiece.save_pretrained(tok_dir)
        shutil.copy(os.path.join(work, "sp.model"), os.path.join(tok_dir, "spiece.model"))
        hf = T5Tokenizer.from_pretrained(tok_dir)
        assert len(hf) == 1100 and hf.convert_tokens_to_ids("<extra_id_0>") == 1099, len(hf)
        sp = spm.SentencePieceProcessor(model_file=os.path.join(tok_dir, "spiece.model"))

        cases = []
        for text in EDGE_CASES + shakespeare_lines(shakespeare):
            ids = hf(text, add_special_tokens=False)["input_ids"]
            ids2 = hf_from_spiece(text, add_special_tokens=False)["input_ids"]
            sp_ids = sp.encode(text)
            cases.append({"text": text, "hf": ids, "hf_spiece": ids2, "sp": sp_ids,
                          "hf_decoded": hf.decode(ids, skip_special_tokens=True),
                          "sp_decoded": sp.decode(sp_ids)})
        meta = {"vocab_size": len(hf), "spiece_size": sp.get_piece_size(), "pad_id": hf.pad_token_id,
                "eos_id": hf.eos_token_id, "unk_id": hf.unk_token_id,
                "eos_example": {"text": "Hello world", "ids": hf("Hello world")["input_ids"]}}
        with open(os.path.join(OUT, "tokenizer_cases.json"), "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "cases": cases}, f, ensure_ascii=False, indent=0)
        differ = sum(c["hf"] != c["sp"] for c in cases)
        differ_conv = sum(c["hf"] != c["hf_spiece"] for c in cases)
        print(f"{len(cases)} texts; HF and sentencepiece differ on {differ} (sentinels/special tokens are text "
              f"to sentencepiece); HF from tokenizer.json vs from spiece.model differ on {differ_conv}")

        # --- the byte-fallback model (SentencePiece core only)
        train(work, "bf", shakespeare[:300_000] + "\n" + UNICODE_TRAIN * 5, vocab_size=700,
              normalization_rule_name="identity", byte_fallback=True, character_coverage=0.995,
              user_defined_symbols=["<sep>", "ROMEO:", "[["], control_symbols=["<ctl>"],
              unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
        bf_dir = os.path.join(OUT, "tokenizer_bytefallback")
        os.makedirs(bf_dir, exist_ok=True)
        shutil.copy(os.path.join(work, "bf.model"), os.path.join(bf_dir, "spiece.model"))
        bf = spm.SentencePieceProcessor(model_file=os.path.join(bf_dir, "spiece.model"))
        bf_texts = EDGE_CASES + ["ROMEO:<sep>JULIET: [[x]] <ctl> ROMEO:ROMEO:", "  ROMEO:  ", "Ω≈ç√∫"] \
            + shakespeare_lines(shakespeare, 40)
        bf_cases = [{"text": t, "sp": bf.encode(t), "sp_decoded": bf.decode(bf.encode(t))} for t in bf_texts]
        with open(os.path.join(OUT, "tokenizer_bytefallback_cases.json"), "w", encoding="utf-8") as f:
            json.dump({"cases": bf_cases}, f, ensure_ascii=False, indent=0)
    finally:
        shutil.rmtree(work)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs
                if "tokenizer" in dp or f.startswith("tokenizer"))
    print(f"wrote {OUT}/tokenizer*, {total} bytes")


if __name__ == "__main__":
    main()
