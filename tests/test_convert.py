"""HF export/import, proved against transformers 5.24 + torch (CPU) and our JAX network.

Tiny random models of both flavours: T5 1.0 (ReLU, tied head scaled by d_model**-0.5, equal
depths) and T5 1.1 (gated GELU, own head, decoder deeper than encoder). No hub downloads.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import gin
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, T5Config, T5ForConditionalGeneration

from clinical_t5x.train import checkpoint_formats as cf, init_from
from clinical_t5x.data import deid, synth
from clinical_t5x.hf import convert as hf
from clinical_t5x.model import network
from clinical_t5x.text import vocab, vocab_build
import released_lookalikes
from test_checkpoint_formats import write_t5x_msgpack, write_t5x_orbax

FLAVOURS = {
    "1.0": dict(num_layers=2, num_decoder_layers=2, gated=False, tied=True),
    "1.1": dict(num_layers=2, num_decoder_layers=3, gated=True, tied=False),
}
LOAD_PROBLEMS = ("missing", "unexpected", "newly initialized", "newly initialised", "mismatch",
                 "not initialized", "not used")


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> Path:
    return vocab_build.build_synthetic_vocab(tmp_path_factory.mktemp("vocab"), vocab_size=500)


@pytest.fixture(scope="module")
def clinical_vocab(vocab_dir):
    return vocab.load(vocab_dir)


def _dims(clinical_vocab, flavour: str) -> hf.Dims:
    return hf.Dims(vocab_size=clinical_vocab.model_vocab_size, d_model=32, d_kv=8, d_ff=48,
                   num_heads=4, num_buckets=32, **FLAVOURS[flavour])


def _jax_model(dims: hf.Dims) -> network.Transformer:
    return network.Transformer(network.T5Config(
        vocab_size=dims.vocab_size, emb_dim=dims.d_model, num_heads=dims.num_heads,
        num_encoder_layers=dims.num_layers, num_decoder_layers=dims.num_decoder_layers,
        head_dim=dims.d_kv, mlp_dim=dims.d_ff,
        mlp_activations=("gelu", "linear") if dims.gated else ("relu",),
        dropout_rate=0.0, logits_via_embedding=dims.tied))


def _span_corruption_batch(clinical_vocab, seed: int = 0) -> dict[str, np.ndarray]:
    """Packing-free span-corruption-shaped examples: pieces with sentinels and DEID tags in the
    inputs, sentinel-led spans in the targets, EOS, then padding of varying length."""
    rng = np.random.default_rng(seed)
    pieces = clinical_vocab.vocab_size - 100 - len(deid.TAGS)
    tags = list(clinical_vocab.tag_ids.values())
    enc = np.zeros((3, 20), np.int32)
    tgt = np.zeros((3, 8), np.int32)
    for row, (n_in, n_out) in enumerate(((20, 8), (14, 6), (9, 4))):
        inputs = rng.integers(3, pieces, n_in - 1)
        inputs[[2, 6]] = clinical_vocab.sentinel_id(0), clinical_vocab.sentinel_id(1)
        inputs[4] = rng.choice(tags)
        targets = rng.integers(3, pieces, n_out - 1)
        targets[0] = clinical_vocab.sentinel_id(0)
        enc[row, :n_in] = np.append(inputs, 1)
        tgt[row, :n_out] = np.append(targets, 1)
    dec = np.pad(tgt, ((0, 0), (1, 0)))[:, :-1]  # shifted right, start token 0
    return {"encoder_input_tokens": enc, "decoder_input_tokens": dec, "decoder_target_tokens": tgt}


def _hf_logits(model, batch) -> np.ndarray:
    enc = torch.tensor(batch["encoder_input_tokens"], dtype=torch.long)
    with torch.no_grad():
        return model(input_ids=enc, attention_mask=enc > 0,
                     decoder_input_ids=torch.tensor(batch["decoder_input_tokens"], dtype=torch.long)).logits.numpy()


def _load_hf(folder: Path):
    """from_pretrained with every transformers log record and Python warning captured."""
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = AutoModelForSeq2SeqLM.from_pretrained(folder, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    return model.eval(), info, records + [str(w.message) for w in caught]


def _assert_clean_load(info, messages, dims: hf.Dims) -> None:
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(),
                    "error_msgs": []}
    for message in messages:
        if "NOT tie" in message:  # the documented 5.24 message for an untied 1.1 head
            assert not dims.tied
            continue
        assert not any(p in message.lower() for p in LOAD_PROBLEMS), message


def _hf_source(folder: Path, dims: hf.Dims, seed: int, own_head: bool = True) -> Path:
    """A tiny HF folder as published T5s are: save_pretrained, and for 1.1 its own lm_head
    (transformers 5.24 ties and drops it on save, so it is added to the file as in
    google/t5-v1_1-*; `own_head=False` keeps 5.24's own 1.1 output)."""
    torch.manual_seed(seed)
    config = T5Config(vocab_size=dims.vocab_size, d_model=dims.d_model, d_kv=dims.d_kv,
                      d_ff=dims.d_ff, num_layers=dims.num_layers,
                      num_decoder_layers=dims.num_decoder_layers, num_heads=dims.num_heads,
                      feed_forward_proj="gated-gelu" if dims.gated else "relu",
                      tie_word_embeddings=dims.tied, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    if not dims.tied and own_head:
        tensors = load_file(folder / "model.safetensors")
        tensors["lm_head.weight"] = np.random.default_rng(seed).standard_normal(
            tensors["shared.weight"].shape).astype(np.float32)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        config_json = json.loads((folder / "config.json").read_text())
        config_json["tie_word_embeddings"] = False
        (folder / "config.json").write_text(json.dumps(config_json))
    return folder


# --------------------------------------------------------------------------- export


@pytest.mark.slow
@pytest.mark.parametrize("flavour,layout", [("1.0", "orbax"), ("1.1", "msgpack")])
def test_export_equals_jax_model(tmp_path, vocab_dir, clinical_vocab, flavour, layout):
    """Logits within 1e-4 and the same greedy tokens, from t5x checkpoints of both formats."""
    dims = _dims(clinical_vocab, flavour)
    params = hf.random_params(dims, seed=3)
    write = write_t5x_orbax if layout == "orbax" else write_t5x_msgpack
    write(params, tmp_path / "model", step=12)
    out = hf.export(tmp_path / "model", vocab_dir, tmp_path / "hf")

    model, info, messages = _load_hf(out)
    _assert_clean_load(info, messages, dims)
    assert model.config.scale_decoder_outputs == dims.tied
    if not dims.tied:  # keeps its own head (see hf.py's docstring on 5.24's forced tying)
        assert model.lm_head.weight is not model.shared.weight
        np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(),
                                      params["decoder"]["logits_dense"]["kernel"].T)
        assert not torch.equal(model.lm_head.weight, model.shared.weight)

    batch = _span_corruption_batch(clinical_vocab)
    jax_model = _jax_model(dims)
    jax_logits = np.asarray(jax_model.apply({"params": params}, **batch, enable_dropout=False))
    hf_logits = _hf_logits(model, batch)
    real = batch["decoder_target_tokens"] > 0
    assert hf_logits.std() > 0.05  # not a degenerate, near-constant model
    np.testing.assert_allclose(hf_logits[real], jax_logits[real], atol=1e-4, rtol=0)

    enc = batch["encoder_input_tokens"]
    jax_tokens = np.asarray(network.greedy_decode(jax_model, params, jnp.asarray(enc), 5))
    # transformers 5.24 sizes generate()'s KV cache by num_layers (the encoder's depth):
    # a deeper decoder needs use_cache=False (measured: IndexError in cache_utils otherwise).
    hf_tokens = model.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                               attention_mask=torch.tensor(enc > 0), max_new_tokens=5,
                               do_sample=False, num_beams=1,
                               use_cache=dims.num_layers == dims.num_decoder_layers).numpy()[:, 1:]
    hf_tokens = np.pad(hf_tokens, ((0, 0), (0, 5 - hf_tokens.shape[1])))
    np.testing.assert_array_equal(hf_tokens, jax_tokens)


def test_network_config_ignores_gin_bindings_left_by_training():
    """The demo trains (gin binds bf16 activations where the CPU has a bf16 unit), then runs
    the checkpoint through `network_config` to compare its logits with the float32 export:
    those bindings must not apply (they made the demo report a 4.5e-2 logit difference)."""
    dims = hf.Dims(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_heads=2, num_layers=1,
                   num_decoder_layers=1, num_buckets=32, gated=True, tied=False)
    want = hf.network_config(dims)
    gin.parse_config(["network.T5Config.dtype = 'bfloat16'", "network.T5Config.remat = True",
                      "network.T5Config.float32_attention_logits = True"])
    try:
        got = hf.network_config(dims)
    finally:
        gin.clear_config()
    assert got == want and got.dtype == "float32" and not got.remat


def test_export_folder_contents(tmp_path, vocab_dir, clinical_vocab):
    dims = _dims(clinical_vocab, "1.1")
    cf.write_params_checkpoint(hf.random_params(dims), tmp_path / "ckpt")
    out = hf.export_main(["--checkpoint", str(tmp_path / "ckpt" / "checkpoint_0"),
                          "--vocab", str(vocab_dir), "--out", str(tmp_path / "hf")])
    assert out == 0
    folder = tmp_path / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["feed_forward_proj"] == "gated-gelu" and config["tie_word_embeddings"] is False
    assert (config["vocab_size"], config["num_layers"], config["num_decoder_layers"]) == (
        clinical_vocab.model_vocab_size, 2, 3)
    assert (config["decoder_start_token_id"], config["pad_token_id"], config["eos_token_id"]) == (0, 0, 1)
    assert (config["relative_attention_num_buckets"], config["relative_attention_max_distance"]) == (32, 128)
    for name in hf.TOKENIZER_FILES + ("config.json", "model.safetensors", "README.md"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    card = (folder / "README.md").read_text()
    assert "PhysioNet Credentialed Health Data License" in card and "Do not upload" in card
    with pytest.raises(FileExistsError, match="not empty"):
        hf.export(tmp_path / "ckpt", vocab_dir, folder)


def test_tokenizer_parity(tmp_path, vocab_dir, clinical_vocab):
    """The exported tokenizer gives the vocabulary's ids; tags and sentinels are one id each."""
    dims = _dims(clinical_vocab, "1.0")
    cf.write_params_checkpoint(hf.random_params(dims), tmp_path / "ckpt")
    tokenizer = AutoTokenizer.from_pretrained(hf.export(tmp_path / "ckpt", vocab_dir, tmp_path / "hf"))
    for tag, tag_id in clinical_vocab.tag_ids.items():
        assert tokenizer(tag, add_special_tokens=False).input_ids == [tag_id], tag
    for i in (0, 1, 99):
        assert tokenizer.convert_tokens_to_ids(f"<extra_id_{i}>") == clinical_vocab.sentinel_id(i)
    corpus = deid.replace_list_of_notes(synth.synthetic_notes(20, seed=7))
    for row, text in enumerate(corpus):
        want = list(clinical_vocab.encode(text))
        assert tokenizer(text, add_special_tokens=False).input_ids == want, f"parity row {row}"
        assert tokenizer(text).input_ids == want + [1], f"parity row {row} (eos)"
    added = json.loads((tmp_path / "hf" / "added_tokens.json").read_text())
    assert added["[Name]"] == clinical_vocab.tag_ids["[Name]"]


def test_wrong_vocabulary_is_refused(tmp_path, vocab_dir, clinical_vocab):
    dims = hf.Dims(**{**_dims(clinical_vocab, "1.0").__dict__, "vocab_size": 256})
    cf.write_params_checkpoint(hf.random_params(dims), tmp_path / "ckpt")
    with pytest.raises(ValueError, match="rows"):
        hf.export(tmp_path / "ckpt", vocab_dir, tmp_path / "hf")


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("flavour", ["1.0", "1.1"])
def test_import_round_trip(tmp_path, vocab_dir, clinical_vocab, flavour):
    """import then export reproduces the HF folder's tensors exactly; the imported params
    give the source model's logits in JAX."""
    dims = _dims(clinical_vocab, flavour)
    source = _hf_source(tmp_path / "src", dims, seed=5)
    assert hf.import_main(["--hf", str(source), "--out", str(tmp_path / "ckpt")]) == 0
    params = cf.read_params(tmp_path / "ckpt")
    out = hf.export(tmp_path / "ckpt", vocab_dir, tmp_path / "hf")
    want, got = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    batch = _span_corruption_batch(clinical_vocab, seed=1)
    source_model, _, _ = _load_hf(source)
    jax_logits = np.asarray(_jax_model(dims).apply({"params": params}, **batch, enable_dropout=False))
    real = batch["decoder_target_tokens"] > 0
    np.testing.assert_allclose(_hf_logits(source_model, batch)[real], jax_logits[real], atol=1e-4, rtol=0)


def test_import_transformers5_saved_t5_11(tmp_path, clinical_vocab):
    """A 1.1 folder saved by transformers 5.24 (head tied, unscaled, no lm_head in the file:
    config says tie_word_embeddings true, scale_decoder_outputs false) imports as a 1.1 model
    whose logits_dense is the embedding."""
    dims = _dims(clinical_vocab, "1.1")
    source = _hf_source(tmp_path / "src", dims, seed=8, own_head=False)
    assert "lm_head.weight" not in load_file(source / "model.safetensors")
    params = cf.read_params(hf.import_hf(source, tmp_path / "ckpt"))
    np.testing.assert_array_equal(params["decoder"]["logits_dense"]["kernel"],
                                  params["token_embedder"]["embedding"].T)
    batch = _span_corruption_batch(clinical_vocab, seed=2)
    source_model, _, _ = _load_hf(source)
    jax_logits = np.asarray(_jax_model(dims).apply({"params": params}, **batch, enable_dropout=False))
    real = batch["decoder_target_tokens"] > 0
    np.testing.assert_allclose(_hf_logits(source_model, batch)[real], jax_logits[real], atol=1e-4, rtol=0)


def test_import_accepts_old_t5_base_aliases(tmp_path, clinical_vocab):
    """t5-base's files also store encoder/decoder.embed_tokens and a tied lm_head copy."""
    dims = _dims(clinical_vocab, "1.0")
    source = _hf_source(tmp_path / "src", dims, seed=6)
    tensors = load_file(source / "model.safetensors")
    for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"):
        tensors[alias] = tensors["shared.weight"]
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    for key in ("tie_word_embeddings", "feed_forward_proj"):  # absent from t5-base's config
        config.pop(key, None)
    (source / "config.json").write_text(json.dumps(config))
    params = cf.read_params(hf.import_hf(source, tmp_path / "ckpt"))
    np.testing.assert_array_equal(params["token_embedder"]["embedding"], tensors["shared.weight"])
    assert "logits_dense" not in params["decoder"]

    tensors["lm_head.weight"] = tensors["shared.weight"] + 1.0
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lm_head.weight differs"):
        hf.import_hf(source, tmp_path / "ckpt2")


def test_safetensors_writer_streams_valid_file(tmp_path):
    arrays = {"b": np.arange(6, dtype=np.float32).reshape(2, 3), "a": np.ones((5,), np.float32)}
    specs = [(name, a.shape, a.dtype) for name, a in arrays.items()]
    hf.write_safetensors(tmp_path / "x.safetensors", specs, arrays.__getitem__)
    loaded = load_file(tmp_path / "x.safetensors")
    assert loaded.keys() == arrays.keys()
    for name in arrays:
        np.testing.assert_array_equal(loaded[name], arrays[name])
    assert int.from_bytes((tmp_path / "x.safetensors").read_bytes()[:8], "little") % 8 == 0


# --------------------------------------------------------------------------- released folders


@pytest.fixture(scope="module", params=released_lookalikes.KINDS)
def released(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return released_lookalikes.build(request.param, root / request.param)


def _tag_rows(folder: Path) -> dict[str, np.ndarray]:
    """Each DEID tag's embedding row, looked up through the folder's own tokenizer."""
    ids = AutoTokenizer.from_pretrained(folder).get_vocab()
    weights = load_file(folder / "model.safetensors")["shared.weight"]
    return {tag: weights[ids[tag]] for tag in deid.TAGS}


@pytest.mark.parametrize("canonical", [False, True], ids=["folder-ids", "canonical"])
def test_released_import_export_keeps_tag_rows_and_logits(tmp_path, released, canonical, capsys):
    """vocab --from-hf, import-hf, export: each tag's row follows the tag, the exported tokenizer
    maps the source's ids as the layout says, and logits equal the source model's (1e-4)."""
    vocab_dir = vocab_build.from_hf(released, tmp_path / "vocab", canonical=canonical)
    args = ["--hf", str(released), "--out", str(tmp_path / "ckpt")] + (["--canonical"] if canonical else [])
    assert hf.import_main(args) == 0
    assert "tokenizer" in capsys.readouterr().err  # says what it found
    assert init_from.trained_tag_ids(str(tmp_path / "ckpt" / "checkpoint_0")) == set(
        vocab.load(vocab_dir).tag_ids.values())  # the trainer keeps these rows
    out = hf.export(tmp_path / "ckpt", vocab_dir, tmp_path / "hf")
    source_rows, out_rows = _tag_rows(released), _tag_rows(out)
    for tag in deid.TAGS:
        np.testing.assert_array_equal(out_rows[tag], source_rows[tag], err_msg=tag)

    released_lookalikes.assert_same_model(released, tmp_path / "ckpt", out)
    sentinels = {vocab.load(vocab_dir).sentinel_id(i) for i in range(100)}
    assert not sentinels & set(vocab.load(vocab_dir).tag_ids.values())


def test_import_refuses_a_tokenizer_the_embedding_cannot_hold(tmp_path, released, capsys):
    """A tokenizer with more ids than embedding rows (or other special ids) is a one-line error."""
    config = json.loads((released / "config.json").read_text())
    broken = tmp_path / "broken"
    shutil.copytree(released, broken)
    tensors = load_file(broken / "model.safetensors")
    tensors = {k: (v[:-3] if v.shape[0] == config["vocab_size"] else v) for k, v in tensors.items()}
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    (broken / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] - 3}))
    assert hf.import_main(["--hf", str(broken), "--out", str(tmp_path / "ckpt")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "tokenizer and model disagree" in err and f"{config['vocab_size'] - 3} rows" in err
    assert "Traceback" not in err
