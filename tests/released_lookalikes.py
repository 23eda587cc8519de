"""Tiny look-alikes of the four released Clinical-T5 folders, built the way the paper's scripts did.

- ``base`` (Clinical-T5-Base/Sci): a T5-style SentencePiece model with T5's 100 sentinels
  (the t5-base tokenizer), the 15 DEID tags added with ``add_tokens(list(set(tags)))`` (here a
  seeded shuffle stands in for the set's order), embeddings resized to ``len(tokenizer)``;
  the folder ships ``spiece.model`` and ``tokenizer.json``. T5 1.0 (ReLU, tied head).
- ``scratch`` (Clinical-T5-Scratch): a `tokenizers` Unigram with NMT + NFKC normalisation,
  collapsed spaces and lower-casing, Metaspace pre-tokenisation with digits split one by one,
  no sentinels, tags added on top, ``tokenizer.json`` only. T5 1.0.
- ``large`` (Clinical-T5-Large): the same Unigram, cased, with a T5 1.1 network (gated GELU, own head).

Weights are tiny and random (no download); text is the package's synthetic notes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForSeq2SeqLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from clinical_t5x.data import deid, synth
from clinical_t5x.text import tokenizer as hf_tokenizer
from clinical_t5x.text import vocab_build

KINDS = ("base", "scratch", "large")
PIECES = 300
SIZES = dict(d_model=32, d_kv=8, d_ff=48, num_heads=4, num_layers=2, num_decoder_layers=2)


def notes(n: int = 300, seed: int = 0) -> list[str]:
    return deid.replace_list_of_notes(synth.synthetic_notes(n, seed))


def shuffled_tags(seed: int) -> list[str]:
    tags = list(deid.TAGS)
    random.Random(seed).shuffle(tags)
    return tags


def _t5_tokenizer(work: Path, seed: int) -> tuple[PreTrainedTokenizerFast, Path]:
    """t5-base's tokenizer in miniature: SentencePiece pieces, then 100 sentinels."""
    spiece = vocab_build.train_spiece(notes(seed=seed), work, PIECES, lowercase=False, seed=seed,
                                      hard_vocab_limit=False)
    return hf_tokenizer.build_hf_tokenizer(spiece, tags=()), spiece


def _unigram_tokenizer(lowercase: bool, seed: int) -> PreTrainedTokenizerFast:
    """Clinical-T5-Scratch/Large's tokenizer in miniature (tokenizers library, tokenizer.json only)."""
    tokenizer = Tokenizer(models.Unigram())
    steps = [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps + ([normalizers.Lowercase()] if lowercase else []))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(), pre_tokenizers.Digits(individual_digits=True)])
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=PIECES, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>")
    tokenizer.train_from_iterator(vocab_build.training_lines(notes(seed=seed)), trainer)  # tags blanked
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def build(kind: str, folder: Path, seed: int = 0) -> Path:
    """Write the look-alike `kind` into `folder` (tokenizer files, config.json, weights)."""
    folder.mkdir(parents=True)
    if kind == "base":
        tokenizer, spiece = _t5_tokenizer(folder / "_spm", seed)
    else:
        tokenizer, spiece = _unigram_tokenizer(kind == "scratch", seed), None
    base_rows = len(tokenizer)
    tokenizer.add_tokens(shuffled_tags(seed))
    tokenizer.save_pretrained(folder)
    if spiece is not None:
        shutil.copyfile(spiece, folder / "spiece.model")
        shutil.rmtree(folder / "_spm")
    torch.manual_seed(seed)
    gated = kind == "large"
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=base_rows, feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=not gated, decoder_start_token_id=0, **SIZES))
    with torch.no_grad():  # t5x-like scales, so float32 parity checks are well conditioned
        model.shared.weight.normal_(0.0, 1.0)
        if gated:
            model.lm_head.weight.normal_(0.0, SIZES["d_model"] ** -0.5)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.save_pretrained(folder)
    return folder


def tagged_text(seed: int = 4) -> str:
    """A synthetic note with DEID tags and digits, the tokenizers' hard cases."""
    return notes(1, seed)[0][:400] + " [Name] [LOC] 12"


def exported_id(import_dir: Path, rows: int) -> dict[int, int]:
    """Source id (of `rows`) -> the id an `import-hf --out import_dir` checkpoint gives it: the
    same one, or after `--canonical` where its `token_permutation.json` moved the row."""
    from clinical_t5x.hf import convert

    path = import_dir / convert.PERMUTATION_FILE
    if not path.is_file():
        return {i: i for i in range(rows)}
    perm = json.loads(path.read_text())["canonical_row_from_source_row"]
    return {int(j): i for i, j in enumerate(perm) if j >= 0}


def logits(folder: Path, ids: list[int]) -> np.ndarray:
    """The HF model in `folder` on `ids` (the decoder fed its start id and the first 8 ids)."""
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]),
                     decoder_input_ids=torch.tensor([[0] + ids[:8]])).logits[0].numpy()


def assert_same_model(source: Path, import_dir: Path, exported: Path, atol: float = 1e-4) -> None:
    """The exported folder's tokenizer gives each text the ids the import kept or moved, and
    its logits over every source id equal the source model's within `atol`."""
    from transformers import AutoTokenizer

    src_ids = AutoTokenizer.from_pretrained(source)(tagged_text()).input_ids
    out_ids = AutoTokenizer.from_pretrained(exported)(tagged_text()).input_ids
    want, got = logits(source, src_ids), logits(exported, out_ids)
    column = exported_id(import_dir, want.shape[1])
    assert out_ids == [column[i] for i in src_ids]
    np.testing.assert_allclose(got[:, [column[j] for j in range(want.shape[1])]], want, atol=atol, rtol=0)
