"""Init from an existing checkpoint: tensors copied, DEID-tag rows from their word pieces."""

import logging

import jax
import numpy as np
import pytest

from clinical_t5x.train import init_from


def _source(vocab_rows: int, width: int = 4) -> dict:
    rng = np.random.default_rng(0)
    return {"token_embedder": {"embedding": rng.standard_normal((vocab_rows, width)).astype(np.float32)},
            "encoder": {"layers_0": {"mlp": {"wi": {"kernel": rng.standard_normal((width, 6)).astype(np.float32)}}}},
            "decoder": {"logits_dense": {"kernel": rng.standard_normal((width, vocab_rows)).astype(np.float32)}}}


def _model(vocab_rows: int, width: int = 4) -> dict:
    shape = lambda *s: jax.ShapeDtypeStruct(s, np.float32)  # noqa: E731
    return {"token_embedder": {"embedding": shape(vocab_rows, width)},
            "encoder": {"layers_0": {"mlp": {"wi": {"kernel": shape(width, 6)}}}},
            "decoder": {"logits_dense": {"kernel": shape(width, vocab_rows)}}}


def test_tag_rows_the_source_lacks_start_at_their_pieces_mean(caplog):
    # Source trained on 10 ids (stored in 13 rows, like T5's 32,100 in 32,128); ours has 16.
    source = _source(13)
    pieces = {10: [3, 5], 11: [7], 13: [2, 4, 6]}
    with caplog.at_level(logging.INFO):
        params = init_from.init_params(_model(16), source, known_rows=10, tag_pieces=pieces)
    emb, src = params["token_embedder"]["embedding"], source["token_embedder"]["embedding"]
    np.testing.assert_array_equal(emb[:10], src[:10])
    np.testing.assert_allclose(emb[10], src[[3, 5]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(emb[11], src[7], rtol=1e-6)
    np.testing.assert_allclose(emb[13], src[[2, 4, 6]].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(emb[12], src[12])  # a padding row the source has: copied
    assert np.all(np.isfinite(emb[14:])) and np.abs(emb[14:]).sum() > 0  # past it: drawn
    head = params["decoder"]["logits_dense"]["kernel"]
    np.testing.assert_allclose(head[:, 13], source["decoder"]["logits_dense"]["kernel"][:, [2, 4, 6]].mean(1), rtol=1e-6)
    np.testing.assert_array_equal(params["encoder"]["layers_0"]["mlp"]["wi"]["kernel"],
                                  source["encoder"]["layers_0"]["mlp"]["wi"]["kernel"])
    assert "[10, 11, 13]" in caplog.text


def test_same_vocabulary_copies_everything():
    source = _source(16)
    params = init_from.init_params(_model(16), source, known_rows=None, tag_pieces={10: [1]})
    np.testing.assert_array_equal(params["token_embedder"]["embedding"],
                                  source["token_embedder"]["embedding"])


def test_missing_or_misshapen_tensors_are_named():
    source = _source(16)
    del source["encoder"]
    with pytest.raises(ValueError, match="encoder/layers_0/mlp/wi/kernel"):
        init_from.init_params(_model(16), source, None, {})
    with pytest.raises(ValueError, match="encoder/layers_0/mlp/wi/kernel"):
        init_from.init_params(_model(16, width=4), {**_source(16), "encoder": {"layers_0": {
            "mlp": {"wi": {"kernel": np.zeros((4, 5), np.float32)}}}}}, None, {})


def test_tag_pieces_use_the_tag_words():
    words = []
    ids = init_from.tag_piece_ids({"[Name]": 40, "[Reg#]": 41},
                                  lambda text: words.append(text) or [len(text)])
    assert words == ["name", "record number"] and ids == {40: [4], 41: [13]}


def test_trained_tag_ids_are_read_beside_the_step_folder(tmp_path):
    assert init_from.trained_tag_ids(str(tmp_path / "checkpoint_0")) == frozenset()  # T5-Base: none
    init_from.write_trained_tag_ids(tmp_path, [32105, 32100])
    assert init_from.trained_tag_ids(str(tmp_path / "checkpoint_0")) == {32100, 32105}
    assert init_from.trained_tag_ids(str(tmp_path)) == {32100, 32105}
    assert (tmp_path / init_from.TRAINED_TAGS_FILE).stat().st_mode & 0o077 == 0  # owner-only
