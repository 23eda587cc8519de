"""The demo's last word: an exported model filling the sentinels of a synthetic note.

Loads the exported folder the way a user would (`AutoModelForSeq2SeqLM` / `AutoTokenizer`),
masks a few word spans of ONE synthetic note with `<extra_id_N>` as span corruption does, and
shows the model's greedy fill-ins beside the true spans. The same example's logits from the
JAX network on the checkpoint's params are compared with the HF model's, as a one-line proof
that the export is exact. Notes are printed here only because they are synthetic: never point
this at real (prepared) notes, nor show the fill-ins of a model trained on real notes (a model
can reproduce text it was trained on); the demo trains on synthetic notes only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

EXCERPT_WORDS = 40
NUM_SPANS = 3
MAX_SPAN_WORDS = 3
MAX_NEW_TOKENS = 20
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


@dataclasses.dataclass(frozen=True)
class MaskedNote:
    """Span-corruption text pair: `inputs` with each span replaced by its sentinel."""

    inputs: str
    spans: tuple[str, ...]

    @property
    def targets(self) -> str:
        return " ".join(f"<extra_id_{i}> {span}" for i, span in enumerate(self.spans))


@dataclasses.dataclass(frozen=True)
class FillIn:
    note: MaskedNote
    predicted: dict[int, str]  # sentinel index -> the model's text (absent: not generated)
    max_logit_difference: float  # max |HF - JAX| over the example's target logits
    missing_weights: int  # missing + unexpected + mismatched keys when loading the folder


def synthetic_excerpt(seed: int, words: int = EXCERPT_WORDS) -> str:
    """The first `words` words of one DEID-normalised synthetic MIMIC-III note."""
    from clinical_t5x.data import deid, synth

    note = synth.synthetic_notes(1, seed=seed)[0]
    return " ".join(deid.replace_mimic3(note).split()[:words])


def mask_spans(text: str, num_spans: int = NUM_SPANS, seed: int = 0) -> MaskedNote:
    """Mask one run of 1..MAX_SPAN_WORDS words in each of `num_spans` equal parts of `text`,
    never at a part's first word, so spans stay apart (deterministic by seed)."""
    words = text.split()
    part = len(words) // num_spans
    if part < MAX_SPAN_WORDS + 2:
        raise ValueError(f"{len(words)} words are too few for {num_spans} masked spans")
    rng = random.Random(seed)
    starts: dict[int, int] = {}
    for p in range(num_spans):
        length = rng.randint(1, MAX_SPAN_WORDS)
        starts[rng.randint(p * part + 1, (p + 1) * part - length)] = length
    pieces, spans, i = [], [], 0
    while i < len(words):
        if i in starts:
            pieces.append(f"<extra_id_{len(spans)}>")
            spans.append(" ".join(words[i:i + starts[i]]))
            i += starts[i]
        else:
            pieces.append(words[i])
            i += 1
    return MaskedNote(" ".join(pieces), tuple(spans))


def split_at_sentinels(ids: list[int], tokenizer: Any) -> dict[int, str]:
    """Generated ids -> {sentinel index: decoded text after it}; stops at EOS."""
    groups: dict[int, list[int]] = {}
    current = None
    for token_id in ids:
        if token_id == tokenizer.eos_token_id:
            break
        if token_id == tokenizer.pad_token_id:
            continue
        match = _SENTINEL.fullmatch(tokenizer.convert_ids_to_tokens(token_id))
        if match:
            current = int(match.group(1))
            groups.setdefault(current, [])
        elif current is not None:
            groups[current].append(token_id)
    return {k: tokenizer.decode(v, skip_special_tokens=False).strip() for k, v in groups.items()}


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' loading chatter off: for a T5 1.1 head it always says it will "NOT tie"
    it, which is right (hf.py's docstring) but alarming in a demo, and its weight-loading bar
    adds nothing for a tiny model. Both settings are restored."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_hf(hf_dir: str | os.PathLike) -> tuple[Any, Any, int]:
    """(model, tokenizer, number of missing/unexpected/mismatched weights), loaded as a user
    would; the load info stands in for the quietened log."""
    import transformers

    with _quiet_transformers():
        model, info = transformers.AutoModelForSeq2SeqLM.from_pretrained(
            hf_dir, output_loading_info=True)
        tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    problems = sum(len(info[k]) for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    return model.eval(), tokenizer, problems


def jax_logits(checkpoint: str | os.PathLike, encoder_input_tokens: np.ndarray,
               decoder_target_tokens: np.ndarray) -> np.ndarray:
    """Teacher-forced logits of our `network.Transformer` on the checkpoint's params, sized
    from the params themselves (no gin)."""
    from clinical_t5x.train import checkpoint_formats
    from clinical_t5x.hf import convert as hf
    from clinical_t5x.model import network

    reader = checkpoint_formats.ParamReader(checkpoint)
    config = hf.network_config(hf.dims_from_t5x(reader.shapes))
    params = checkpoint_formats.unflatten(dict(reader))
    logits = network.Transformer(config).apply(
        {"params": params}, encoder_input_tokens, _shift_right(decoder_target_tokens),
        decoder_target_tokens, enable_dropout=False)
    return np.asarray(logits)


def _shift_right(targets: np.ndarray) -> np.ndarray:
    return np.pad(targets, ((0, 0), (1, 0)))[:, :-1]  # decoder start token id 0


def fill_in(hf_dir: str | os.PathLike, checkpoint: str | os.PathLike, seed: int = 0) -> FillIn:
    """Greedy fill-in of a masked synthetic note by the exported model, and its logit
    agreement with the JAX model on `checkpoint` (needs torch)."""
    import torch

    model, tokenizer, problems = load_hf(hf_dir)
    note = mask_spans(synthetic_excerpt(seed), NUM_SPANS, seed)
    inputs = tokenizer(note.inputs, return_tensors="pt")
    config = model.config
    with torch.no_grad():
        generated = model.generate(
            **inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, num_beams=1,
            # transformers 5.24 sizes the KV cache by the encoder's depth (see hf.py)
            use_cache=config.num_decoder_layers <= config.num_layers)
        labels = tokenizer(note.targets, return_tensors="pt").input_ids
        outputs = model(**inputs,
                        decoder_input_ids=torch.from_numpy(_shift_right(labels.numpy())))
    difference = np.abs(outputs.logits.numpy() - jax_logits(
        checkpoint, inputs.input_ids.numpy(), labels.numpy())).max()
    predicted = split_at_sentinels(generated[0, 1:].tolist(), tokenizer)
    return FillIn(note, predicted, float(difference), problems)


def report(result: FillIn, hf_dir: Path) -> str:
    """The fill-in as a few readable lines."""
    lines = [f"loaded {hf_dir} with AutoModelForSeq2SeqLM + AutoTokenizer "
             f"({result.missing_weights} missing or unexpected weights)",
             "a SYNTHETIC note (generated by clinical_t5x.data.synth, no patient data), "
             "spans masked:",
             textwrap.fill(result.note.inputs, width=96, initial_indent="  ",
                           subsequent_indent="  "),
             f"  {'sentinel':14}{'model fill-in':33}true span"]
    for i, span in enumerate(result.note.spans):
        guess = repr(result.predicted[i]) if i in result.predicted else "(not generated)"
        lines.append(f"  {f'<extra_id_{i}>':14}{guess:33}{span!r}")
    lines.append("(a tiny model trained for minutes on a CPU: rough guesses are expected)")
    lines.append(f"HF vs JAX logits on this example: max |difference| = "
                 f"{result.max_logit_difference:.1e} (float32)")
    return "\n".join(lines)
