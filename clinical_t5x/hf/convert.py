"""Hugging Face `transformers` T5 folders <-> t5x-layout checkpoints, exact to the tensor.

Export streams one tensor at a time from the checkpoint into `model.safetensors` (written
here, without torch), so peak memory stays near the largest tensor plus the runtime, not the
whole model. Import reads an HF T5 1.0 (t5-base, SciFive) or 1.1 folder into our t5x Orbax
layout for initialising the base and sci variants.

The name map (t5x -> HF): kernels are transposed (flax `[in, out]` vs torch `[out, in]`);
attention q/k/v/o kernels keep heads x head_dim joined in one axis on both sides; each stack's
`relpos_bias/rel_embedding` `[heads, buckets]` becomes block 0's `relative_attention_bias`
`[buckets, heads]`; `token_embedder/embedding` is `shared.weight`; a 1.1 model's
`decoder/logits_dense/kernel` is `lm_head.weight`. t5x folds 1/sqrt(d_kv) into the query
kernel and does not scale in attention; HF T5 does not scale either, so q copies as is.

What transformers 5.24 does with the output head (measured, see tests/test_hf.py):
`T5Config` always sets `tie_word_embeddings=True` and keeps the file's value only as
`scale_decoder_outputs` (multiply by d_model**-0.5 before the head, T5 1.0's tied head). When
the file holds an `lm_head.weight` that differs from `shared.weight`, loading logs "both are
present in the checkpoints with different values, so we will NOT tie them" and keeps the
file's head untied. So a 1.1 export writes `tie_word_embeddings: false` plus its own
`lm_head.weight` and loads with its head and without scaling; that message is expected.
A 1.0 export writes only `shared.weight` (the head is tied and scaled, as in t5x). On
import, 5.24's own saves carry the real flag as `scale_decoder_outputs` and drop an untied
head equal to the embedding; both are read as such.

Also measured in 5.24: `generate()` sizes its KV cache by `num_layers` (the encoder's depth),
so a model whose decoder is deeper than its encoder fails with an IndexError in
`cache_utils` unless called with `use_cache=False` (or a fresh
`EncoderDecoderCache(DynamicCache(), DynamicCache())`); equal depths are unaffected.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from clinical_t5x.train import checkpoint_formats, init_from

from clinical_t5x.hf import model_card

from clinical_t5x import owner_only
from clinical_t5x.data import deid

TOKENIZER_FILES = (
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
SAFETENSORS_FILE = "model.safetensors"
# Keys HF may store that carry no weights of their own (aliases of shared.weight, or a bias
# that T5 never uses and transformers ignores on load).
_HF_ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_HF_IGNORED = re.compile(r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight")


# --------------------------------------------------------------------------- dimensions


@dataclasses.dataclass(frozen=True)
class Dims:
    """The sizes that fix both name maps and the HF config."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_heads: int
    num_layers: int
    num_decoder_layers: int
    num_buckets: int
    gated: bool  # T5 1.1: mlp/wi_0 + wi_1 (gated GELU) instead of mlp/wi (ReLU)
    tied: bool  # T5 1.0: logits via the scaled shared embedding, no logits_dense


def _count_layers(names: Iterable[str], stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layers_(\d+)/")
    found = {int(m.group(1)) for name in names if (m := pattern.match(name))}
    if found != set(range(len(found))):
        raise ValueError(f"{stack} layers are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def dims_from_t5x(shapes: Mapping[str, tuple[tuple[int, ...], Any]]) -> Dims:
    """Read the sizes off a t5x params tree (names -> (shape, dtype))."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"checkpoint lacks parameter target/{name}; not a t5x T5 params tree")
        return shapes[name][0]

    vocab_size, d_model = shape("token_embedder/embedding")
    num_heads, num_buckets = shape("encoder/relpos_bias/rel_embedding")
    gated = "encoder/layers_0/mlp/wi_0/kernel" in shapes
    return Dims(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=shape("encoder/layers_0/attention/query/kernel")[1] // num_heads,
        d_ff=shape("encoder/layers_0/mlp/wo/kernel")[0],
        num_heads=num_heads,
        num_layers=_count_layers(shapes, "encoder"),
        num_decoder_layers=_count_layers(shapes, "decoder"),
        num_buckets=num_buckets,
        gated=gated,
        tied="decoder/logits_dense/kernel" not in shapes,
    )


def network_config(dims: Dims) -> Any:
    """The `network.T5Config` (dropout off, float32 activations) of a checkpoint's sizes: what
    running a checkpoint needs when its gin is not at hand (fill-in checks, `clinical-t5x
    audit`). Every field is given, so that gin bindings left in the process by a training run
    (the demo trains, then compares the export's float32 logits with these) do not apply."""
    from clinical_t5x.model import network  # JAX: only for callers that run the model

    return network.T5Config(
        dtype="float32", float32_attention_logits=False, remat=False,
        vocab_size=dims.vocab_size, emb_dim=dims.d_model, num_heads=dims.num_heads,
        num_encoder_layers=dims.num_layers, num_decoder_layers=dims.num_decoder_layers,
        head_dim=dims.d_kv, mlp_dim=dims.d_ff,
        mlp_activations=("gelu", "linear") if dims.gated else ("relu",),
        dropout_rate=0.0, logits_via_embedding=dims.tied)


def dims_from_hf(config: Mapping[str, Any]) -> Dims:
    """Read the sizes off an HF T5 config.json (absent keys take T5Config's defaults, which is
    how t5-base's old config omits `feed_forward_proj` and `tie_word_embeddings`)."""
    proj = config.get("feed_forward_proj", "relu")
    if proj not in ("relu", "gated-gelu"):
        raise ValueError(f"feed_forward_proj {proj!r} is not T5 1.0 (relu) or 1.1 (gated-gelu)")
    return Dims(
        vocab_size=config["vocab_size"],
        d_model=config["d_model"],
        d_kv=config["d_kv"],
        d_ff=config["d_ff"],
        num_heads=config["num_heads"],
        num_layers=config["num_layers"],
        num_decoder_layers=config.get("num_decoder_layers") or config["num_layers"],
        num_buckets=config.get("relative_attention_num_buckets", 32),
        gated=proj == "gated-gelu",
        tied=_scales_decoder_output(config),
    )


def _scales_decoder_output(config: Mapping[str, Any]) -> bool:
    """Whether the HF model ties and scales its head (t5x's `logits_via_embedding`).
    transformers 5.24 saves `tie_word_embeddings: true` for every T5 and the real flag as
    `scale_decoder_outputs`; older configs carry only `tie_word_embeddings` (absent = True)."""
    if "scale_decoder_outputs" in config:
        return bool(config["scale_decoder_outputs"])
    return config.get("tie_word_embeddings", True) is not False


def hf_config(dims: Dims, dropout_rate: float) -> dict[str, Any]:
    """config.json for `T5ForConditionalGeneration` with t5x's fixed settings."""
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": dims.vocab_size,
        "d_model": dims.d_model,
        "d_kv": dims.d_kv,
        "d_ff": dims.d_ff,
        "num_layers": dims.num_layers,
        "num_decoder_layers": dims.num_decoder_layers,
        "num_heads": dims.num_heads,
        "relative_attention_num_buckets": dims.num_buckets,
        "relative_attention_max_distance": 128,
        "dropout_rate": dropout_rate,
        "layer_norm_epsilon": 1e-6,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu" if dims.gated else "relu",
        "tie_word_embeddings": dims.tied,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
    }


# --------------------------------------------------------------------------- name map


@dataclasses.dataclass(frozen=True)
class Rule:
    """One tensor: t5x name (under `target`), HF name, and whether the axes swap."""

    t5x: str
    hf: str
    transpose: bool


def _attention(t5x: str, hf: str) -> list[Rule]:
    return [Rule(f"{t5x}/{a}/kernel", f"{hf}.{b}.weight", True)
            for a, b in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))]


def _mlp(t5x: str, hf: str, gated: bool) -> list[Rule]:
    wis = ("wi_0", "wi_1") if gated else ("wi",)
    return [Rule(f"{t5x}/{w}/kernel", f"{hf}.{w}.weight", True) for w in (*wis, "wo")]


def name_map(dims: Dims) -> list[Rule]:
    """Every tensor of a T5 of these sizes, in HF's save order."""
    rules = [Rule("token_embedder/embedding", "shared.weight", False)]
    for i in range(dims.num_layers):
        t, h = f"encoder/layers_{i}", f"encoder.block.{i}.layer"
        rules += _attention(f"{t}/attention", f"{h}.0.SelfAttention")
        rules.append(Rule(f"{t}/pre_attention_layer_norm/scale", f"{h}.0.layer_norm.weight", False))
        rules += _mlp(f"{t}/mlp", f"{h}.1.DenseReluDense", dims.gated)
        rules.append(Rule(f"{t}/pre_mlp_layer_norm/scale", f"{h}.1.layer_norm.weight", False))
    rules.append(Rule("encoder/relpos_bias/rel_embedding",
                      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True))
    rules.append(Rule("encoder/encoder_norm/scale", "encoder.final_layer_norm.weight", False))
    for i in range(dims.num_decoder_layers):
        t, h = f"decoder/layers_{i}", f"decoder.block.{i}.layer"
        rules += _attention(f"{t}/self_attention", f"{h}.0.SelfAttention")
        rules.append(Rule(f"{t}/pre_self_attention_layer_norm/scale", f"{h}.0.layer_norm.weight", False))
        rules += _attention(f"{t}/encoder_decoder_attention", f"{h}.1.EncDecAttention")
        rules.append(Rule(f"{t}/pre_cross_attention_layer_norm/scale", f"{h}.1.layer_norm.weight", False))
        rules += _mlp(f"{t}/mlp", f"{h}.2.DenseReluDense", dims.gated)
        rules.append(Rule(f"{t}/pre_mlp_layer_norm/scale", f"{h}.2.layer_norm.weight", False))
    rules.append(Rule("decoder/relpos_bias/rel_embedding",
                      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", True))
    rules.append(Rule("decoder/decoder_norm/scale", "decoder.final_layer_norm.weight", False))
    if not dims.tied:
        rules.append(Rule("decoder/logits_dense/kernel", "lm_head.weight", True))
    return rules


def t5x_shapes(dims: Dims) -> dict[str, tuple[int, ...]]:
    """The shape t5x gives each parameter (flax kernels are `[in, out]`, heads x head_dim
    joined; `rel_embedding` is `[heads, buckets]`)."""
    inner = dims.num_heads * dims.d_kv
    shapes = {}
    for rule in name_map(dims):
        name = rule.t5x
        if name == "token_embedder/embedding":
            shapes[name] = (dims.vocab_size, dims.d_model)
        elif name == "decoder/logits_dense/kernel":
            shapes[name] = (dims.d_model, dims.vocab_size)
        elif name.endswith("rel_embedding"):
            shapes[name] = (dims.num_heads, dims.num_buckets)
        elif name.endswith("/scale"):
            shapes[name] = (dims.d_model,)
        elif name.endswith("/out/kernel"):
            shapes[name] = (inner, dims.d_model)
        elif name.endswith(("/query/kernel", "/key/kernel", "/value/kernel")):
            shapes[name] = (dims.d_model, inner)
        elif name.endswith("/wo/kernel"):
            shapes[name] = (dims.d_ff, dims.d_model)
        else:  # mlp/wi, wi_0, wi_1
            shapes[name] = (dims.d_model, dims.d_ff)
    return shapes


def random_params(dims: Dims, seed: int = 0) -> dict[str, Any]:
    """A float32 t5x params tree of these sizes with random values at t5x's initial scales
    (tests, benchmarks): embedding N(0, 1), kernels N(0, 1/fan_in), norm scales near 1.

    The scales matter for parity checks: with every tensor at one arbitrary scale (norm scales
    centred on 0) a tiny model is so ill-conditioned that float32 rounding alone moves its
    logits by more than 1e-4, in transformers as in JAX, so two exact implementations differ.
    """
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in t5x_shapes(dims).items():
        if name.endswith("/scale"):
            flat[name] = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif name in ("token_embedder/embedding",) or name.endswith("rel_embedding"):
            flat[name] = rng.standard_normal(shape, dtype=np.float32)
        else:  # kernels are [fan_in, fan_out]
            flat[name] = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[0]))
    return checkpoint_formats.unflatten(flat)


def _check_names(have: Iterable[str], want: Iterable[str], where: str) -> None:
    have, want = set(have), set(want)
    if have != want:
        missing, extra = sorted(want - have), sorted(have - want)
        raise ValueError(
            f"{where}: parameter names do not match a T5 of the inferred sizes; "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {extra[:8]}{'...' if len(extra) > 8 else ''}"
        )


# --------------------------------------------------------------------------- safetensors


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}


_BLOCK_BYTES = 8 << 20


def _write_rows(out: Any, array: np.ndarray, dtype: np.dtype) -> None:
    """Write `array` in C order, a block of rows at a time: a transposed view or a dtype
    change then costs one block of memory, not a second copy of the whole tensor."""
    if array.ndim == 0 or (array.flags.c_contiguous and array.dtype == dtype):
        out.write(np.ascontiguousarray(array).data)
        return
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * dtype.itemsize)
    step = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, array.shape[0], step):
        out.write(np.ascontiguousarray(array[start:start + step], dtype=dtype).data)


def write_safetensors(
    path: Path,
    specs: list[tuple[str, tuple[int, ...], np.dtype]],
    produce: Callable[[str], np.ndarray],
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> None:
    """Stream tensors into a safetensors file: the header comes from `specs` (name, shape,
    dtype) before any data, then `produce(name)` supplies each tensor in that order and is
    written and dropped. Written to a temporary name and renamed, so a partial file never
    carries the final name."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, dtype in specs:
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _SAFETENSORS_DTYPES[np.dtype(dtype).name], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data start to 8 bytes
    tmp = path.with_name(path.name + ".tmp")
    with owner_only.open_file(tmp) as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for name, shape, dtype in progress(specs):
            array = produce(name)
            if array.shape != tuple(shape):
                raise ValueError(f"tensor {name}: shape {array.shape}, header says {tuple(shape)}")
            _write_rows(out, array, np.dtype(dtype))
            del array
    os.replace(tmp, path)


# --------------------------------------------------------------------------- export


def _progress(desc: str) -> Callable[[Iterable], Iterable]:
    from tqdm import tqdm

    return lambda it: tqdm(it, desc=desc, unit="tensor", file=sys.stderr, leave=False)


def _make_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} is not empty; choose a new --out")
    owner_only.make_dir(out_dir)


def _write_json(path: Path, obj: Any) -> None:
    with owner_only.open_file(path, "w") as out:
        json.dump(obj, out, indent=2, sort_keys=True)
        out.write("\n")


def _write_tokenizer(vocab_dir: Path, out_dir: Path, model_rows: int) -> None:
    """Copy the vocabulary folder's HF tokenizer files (sentinels and DEID tags as special
    tokens at their ids); build them with `clinical_t5x.text.tokenizer.build_hf_tokenizer` when the folder
    lacks them. Checks the result against the folder's `clinical_vocab.json` (tag ids) and
    the checkpoint (every id needs an embedding row)."""
    if (vocab_dir / "tokenizer.json").is_file() and (vocab_dir / "tokenizer_config.json").is_file():
        for name in TOKENIZER_FILES:  # transformers 5 no longer writes the last two itself
            if (vocab_dir / name).is_file():
                shutil.copyfile(vocab_dir / name, out_dir / name)
    else:
        from clinical_t5x.text import tokenizer as hf_tokenizer

        info = json.loads((vocab_dir / "clinical_vocab.json").read_text())
        hf_tokenizer.build_hf_tokenizer(vocab_dir, info["lowercase"]).save_pretrained(out_dir)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(out_dir)
    _write_legacy_token_files(loaded, out_dir)
    if len(loaded) > model_rows:
        raise ValueError(
            f"vocabulary {vocab_dir} has {len(loaded)} ids but the checkpoint's embedding has only "
            f"{model_rows} rows: wrong --vocab for this checkpoint"
        )
    info_path = vocab_dir / "clinical_vocab.json"
    tag_ids = json.loads(info_path.read_text()).get("tag_ids", {}) if info_path.is_file() else {}
    wrong = [tag for tag, i in tag_ids.items() if loaded.convert_tokens_to_ids(tag) != i]
    if wrong:
        raise ValueError(f"{vocab_dir}: tokenizer files put DEID tags {wrong} at other ids than "
                         "clinical_vocab.json; rebuild the vocabulary folder")


def _write_legacy_token_files(tokenizer: Any, out_dir: Path) -> None:
    """transformers 5 keeps added tokens in tokenizer.json only; older readers (and the
    folder layout users know from t5-base) also want `added_tokens.json` (sentinels and DEID
    tags -> ids) and `special_tokens_map.json`. Written from the loaded tokenizer when the
    vocabulary folder did not provide them."""
    core = {tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token}
    extra = {tok.content: i for i, tok in sorted(tokenizer.added_tokens_decoder.items())
             if tok.special and tok.content not in core}
    if not (out_dir / "added_tokens.json").is_file():
        _write_json(out_dir / "added_tokens.json", extra)
    if not (out_dir / "special_tokens_map.json").is_file():
        _write_json(out_dir / "special_tokens_map.json", {
            "pad_token": tokenizer.pad_token, "eos_token": tokenizer.eos_token,
            "unk_token": tokenizer.unk_token, "additional_special_tokens": list(extra)})


@owner_only.private_umask()
def export(
    checkpoint: str | os.PathLike,
    vocab_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    dropout_rate: float = 0.1,
    show_progress: bool = False,
) -> Path:
    """Write an HF T5 folder (config, safetensors, tokenizer, model card) for a t5x-layout
    checkpoint (a `checkpoint_<step>` folder, or a MODEL_DIR: its newest complete step)."""
    reader = checkpoint_formats.ParamReader(checkpoint)
    dims = dims_from_t5x(reader.shapes)
    rules = name_map(dims)
    _check_names(reader.shapes, (r.t5x for r in rules), str(reader.step_dir))
    for name, shape in t5x_shapes(dims).items():
        if tuple(reader.shapes[name][0]) != shape:
            raise ValueError(f"{reader.step_dir}: target/{name} has shape "
                             f"{reader.shapes[name][0]}, expected {shape} for {dims}")
    out_dir, vocab_dir = Path(out_dir), Path(vocab_dir)
    _make_out_dir(out_dir)

    by_hf = {r.hf: r for r in rules}
    specs = []
    for rule in rules:
        shape = reader.shapes[rule.t5x][0]
        specs.append((rule.hf, shape[::-1] if rule.transpose else shape, np.dtype(np.float32)))

    def produce(hf_name: str) -> np.ndarray:
        rule = by_hf[hf_name]
        array = reader.read(rule.t5x)
        return array.T if rule.transpose else array

    _write_tokenizer(vocab_dir, out_dir, dims.vocab_size)  # first: a wrong --vocab fails fast
    progress = _progress("export") if show_progress else (lambda it: it)
    write_safetensors(out_dir / SAFETENSORS_FILE, specs, produce, progress)
    config = hf_config(dims, dropout_rate)
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", {
        "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0})
    card = model_card.render(config, reader.step_dir, vocab_dir, out_dir)
    with owner_only.open_file(out_dir / "README.md", "w") as out:
        out.write(card)
    return out_dir


# --------------------------------------------------------------------------- import


class _HFTensors:
    """The tensors of an HF folder: `model.safetensors`, a sharded safetensors index, or (with
    torch installed) `pytorch_model.bin` as older uploads such as SciFive ship."""

    def __init__(self, hf_dir: Path):
        self._files: dict[str, Path] = {}
        self._aliases: dict[str, str] = {}
        index = hf_dir / "model.safetensors.index.json"
        if (hf_dir / SAFETENSORS_FILE).is_file():
            self._load_safetensors_names(hf_dir / SAFETENSORS_FILE)
        elif index.is_file():
            for name, filename in json.loads(index.read_text())["weight_map"].items():
                self._files[name] = hf_dir / filename
        elif (hf_dir / "pytorch_model.bin").is_file():
            self._torch = self._load_torch(hf_dir / "pytorch_model.bin")
            self._files = {name: hf_dir / "pytorch_model.bin" for name in self._torch}
        else:
            raise FileNotFoundError(
                f"{hf_dir}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
            )
        if "encoder.embed_tokens.weight" in self._files:
            self.alias("shared.weight", "encoder.embed_tokens.weight")

    def alias(self, name: str, source: str) -> None:
        """Serve `name` from `source` when the folder lacks `name`."""
        if name not in self._files:
            self._files[name] = self._files[source]
            self._aliases[name] = source

    def _load_safetensors_names(self, path: Path) -> None:
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as handle:
            self._files.update({name: path for name in handle.keys()})

    @staticmethod
    def _load_torch(path: Path) -> dict[str, Any]:
        try:
            import torch
        except ImportError as err:
            raise ImportError(f"{path} is a torch pickle: install torch (CPU) to import it") from err
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)

    def names(self) -> set[str]:
        return set(self._files)

    def read(self, name: str) -> np.ndarray:
        name = self._aliases.get(name, name)
        if hasattr(self, "_torch"):
            return self._torch[name].float().numpy()
        from safetensors import safe_open

        with safe_open(self._files[name], framework="numpy") as handle:
            return np.asarray(handle.get_tensor(name), dtype=np.float32)


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, canonical: bool = False) -> Path:
    """Write an HF T5 1.0/1.1 folder's weights as a params-only t5x Orbax checkpoint
    `out_dir/checkpoint_0`. Returns the step folder.

    The folder's tokenizer (if any) is checked against the embedding (`token_layout`) and what
    was found is printed. By default embedding rows keep the folder's ids (pair the checkpoint
    with `vocab --from-hf`); `canonical` moves them to the canonical layout (pair with
    `vocab --from-hf --canonical`) and writes the permutation as `out_dir/token_permutation.json`."""
    from clinical_t5x.hf import token_layout

    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{hf_dir}: no config.json; not a Hugging Face model folder")
    config = json.loads(config_path.read_text())
    dims = dims_from_hf(config)
    layout = token_layout.read_layout(hf_dir)
    if layout is not None:
        token_layout.check_against_model(layout, dims.vocab_size, config, str(hf_dir))
        print(f"{hf_dir}: tokenizer {layout.describe()}; embedding {dims.vocab_size} rows", file=sys.stderr)
    elif canonical:
        raise FileNotFoundError(f"{hf_dir}: no tokenizer.json or spiece.model, so --canonical cannot tell "
                                "where the tokens are")
    tensors = _HFTensors(hf_dir)
    if not dims.tied and "shared.weight" in tensors.names():
        # an untied head equal to the embedding: transformers 5.24 saves only shared.weight
        tensors.alias("lm_head.weight", "shared.weight")
    names = tensors.names()
    rules = name_map(dims)
    ignorable = {n for n in names if n in _HF_ALIASES or _HF_IGNORED.fullmatch(n)}
    if dims.tied and "lm_head.weight" in names:
        ignorable.add("lm_head.weight")
    _check_names(names - ignorable, (r.hf for r in rules), str(hf_dir))

    params: dict[str, np.ndarray] = {}
    for rule in _progress("import")(rules):
        array = tensors.read(rule.hf)
        params[rule.t5x] = np.ascontiguousarray(array.T if rule.transpose else array)
    if dims.tied and "lm_head.weight" in names:
        if not np.array_equal(tensors.read("lm_head.weight"), params["token_embedder/embedding"]):
            raise ValueError(
                f"{hf_dir}: config ties the output head but lm_head.weight differs from "
                "shared.weight; t5x's T5 1.0 cannot represent that"
            )
    if canonical:
        perm, fresh = token_layout.canonical_permutation(layout, dims.vocab_size, str(hf_dir))
        _permute_vocab_rows(params, perm)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        token_layout.write_permutation(Path(out_dir) / PERMUTATION_FILE, layout, perm, fresh)
        print(f"canonical layout: rows permuted ({Path(out_dir) / PERMUTATION_FILE}); ids without a "
              f"source token: {len(fresh)}" + (f" ({fresh[0]}-{fresh[-1]})" if fresh else ""), file=sys.stderr)
    elif layout is not None:
        _grow_for_appended_tokens(params, layout, dims.vocab_size)
    step_dir = checkpoint_formats.write_params_checkpoint(checkpoint_formats.unflatten(params), out_dir)
    if layout is not None and layout.tag_ids:
        ids = token_layout.TokenLayout.canonical(layout.num_pieces).tag_ids if canonical else layout.tag_ids
        init_from.write_trained_tag_ids(Path(out_dir), (ids[tag] for tag in layout.tag_ids))
    return step_dir


def _grow_for_appended_tokens(params: dict[str, np.ndarray], layout: Any, rows: int) -> None:
    """Folder ids: a tokenizer without sentinels (or some tags) gets them appended by `vocab
    --from-hf` at ``layout.size, ...``. Their rows are drawn afresh at the embedding's scale (a
    released model's rows past its tokenizer are padding it never used as tokens), and the
    embedding grows to the vocabulary's rounded size if it is smaller."""
    from clinical_t5x.text.vocab import NUM_SENTINELS, round_up

    missing = (0 if layout.sentinel_ids else NUM_SENTINELS) + len(deid.TAGS) - len(layout.tag_ids)
    if not missing:
        return
    perm = np.arange(max(rows, round_up(layout.size + missing)))
    perm[perm >= rows] = -1
    perm[layout.size:layout.size + missing] = -1
    _permute_vocab_rows(params, perm)
    print(f"rows {layout.size}-{layout.size + missing - 1} drawn afresh for the {missing} tokens the "
          f"vocabulary appends; embedding {rows} -> {len(perm)} rows", file=sys.stderr)


PERMUTATION_FILE = "token_permutation.json"


def _permute_vocab_rows(params: dict[str, np.ndarray], perm: np.ndarray) -> None:
    """Reorder the embedding rows (and a 1.1 head's columns) so row i is source row perm[i];
    rows with no source (perm -1) are drawn at the embedding's scale, seeded."""
    rng = np.random.default_rng(0)
    for name, axis in (("token_embedder/embedding", 0), ("decoder/logits_dense/kernel", 1)):
        if name not in params:
            continue
        rows = np.moveaxis(params[name], axis, 0)
        out = rng.normal(0.0, float(rows.std()), (len(perm),) + rows.shape[1:]).astype(rows.dtype)
        out[perm >= 0] = rows[perm[perm >= 0]]
        params[name] = np.ascontiguousarray(np.moveaxis(out, 0, axis))


# --------------------------------------------------------------------------- commands


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clinical-t5x export", description="t5x-layout checkpoint -> Hugging Face T5 folder")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint_<step> folder, or a MODEL_DIR (newest complete step)")
    parser.add_argument("--vocab", required=True, help="vocabulary folder (clinical-t5x vocab)")
    parser.add_argument("--out", required=True, help="new output folder (owner-only)")
    parser.add_argument("--dropout_rate", type=float, default=0.1,
                        help="dropout written to config.json for fine-tuning (default 0.1)")
    args = parser.parse_args(argv)
    out = export(args.checkpoint, args.vocab, args.out, args.dropout_rate, show_progress=True)
    print(f"exported {out} (do not redistribute: PhysioNet credentialed licence)")
    return 0


def import_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clinical-t5x import-hf", description="Hugging Face T5 folder -> t5x Orbax checkpoint")
    parser.add_argument("--hf", required=True, help="HF T5 1.0/1.1 folder (config.json + weights)")
    parser.add_argument("--out", required=True, help="output folder; writes OUT/checkpoint_0")
    parser.add_argument("--canonical", action="store_true",
                        help="move sentinel and DEID-tag rows to the canonical ids (writes "
                             f"OUT/{PERMUTATION_FILE}; use a `vocab --from-hf --canonical` vocabulary)")
    args = parser.parse_args(argv)
    try:
        step_dir = import_hf(args.hf, args.out, args.canonical)
    except (OSError, ValueError) as e:
        print(f"clinical-t5x import-hf: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {step_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m clinical_t5x.hf.convert export|import-hf ...` (the console script dispatches to
    `export_main` / `import_main` directly)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = {"export": export_main, "import-hf": import_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m clinical_t5x.hf.convert {export,import-hf} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
