"""Where a tokenizer keeps its special ids, and the permutation into the canonical layout."""
import json

import numpy as np
import pytest

from clinical_t5x.data import deid
from clinical_t5x.hf import token_layout


def _scratch_like(pieces: int = 40) -> token_layout.TokenLayout:
    """Pieces, then the tags in a shuffled order, no sentinels (as Clinical-T5-Scratch)."""
    order = list(np.random.default_rng(0).permutation(len(deid.TAGS)))
    return token_layout.TokenLayout(size=pieces + 15, num_pieces=pieces, sentinel_ids={},
                                    tag_ids={deid.TAGS[k]: pieces + j for j, k in enumerate(order)},
                                    core_ids=dict(token_layout.T5_CORE_IDS))


def test_canonical_layout_and_description():
    canonical = token_layout.TokenLayout.canonical(300)
    assert canonical.is_canonical() and canonical.sentinel_ids[0] == 399 and canonical.tag_ids[deid.TAGS[0]] == 400
    assert not _scratch_like().is_canonical()
    assert "no sentinels" in _scratch_like().describe() and "not canonical" in _scratch_like().describe()


@pytest.mark.parametrize("rows", [55, 128, 300])
def test_permutation_pairs_every_token_with_its_row(rows):
    layout = _scratch_like()
    perm, fresh = token_layout.canonical_permutation(layout, rows, "x")
    canonical = token_layout.TokenLayout.canonical(40)
    assert len(perm) == max(rows, 256) and list(perm[:40]) == list(range(40))
    for tag, source_id in layout.tag_ids.items():
        assert perm[canonical.tag_ids[tag]] == source_id
    assert fresh == sorted(canonical.sentinel_ids.values())
    used = perm[perm >= 0]
    assert len(set(used.tolist())) == len(used) and set(used.tolist()) == set(range(rows))
    assert (perm < 0).sum() == len(perm) - rows  # new rows only where the source had none left


def test_stray_added_tokens_refuse_canonical():
    layout = _scratch_like()
    layout = token_layout.TokenLayout(layout.size + 1, 40, {}, layout.tag_ids, layout.core_ids)
    with pytest.raises(ValueError, match="neither sentinels nor DEID tags"):
        token_layout.canonical_permutation(layout, 128, "folder")


def test_check_against_model_names_each_disagreement():
    layout = _scratch_like()
    token_layout.check_against_model(layout, 64, {"pad_token_id": 0}, "ok")
    with pytest.raises(ValueError, match="55 ids but the embedding only 50 rows"):
        token_layout.check_against_model(layout, 50, {}, "f")
    with pytest.raises(ValueError, match="eos_token_id is 2"):
        token_layout.check_against_model(layout, 64, {"eos_token_id": 2}, "f")


def test_partial_sentinels_are_an_error():
    from tokenizers import Tokenizer, models

    tokenizer = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "<extra_id_0>": 3}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="1 of the 100"):
        token_layout.layout_of(tokenizer, "f")


def test_permutation_file(tmp_path):
    layout = _scratch_like()
    perm, fresh = token_layout.canonical_permutation(layout, 64, "x")
    token_layout.write_permutation(tmp_path / "p.json", layout, perm, fresh)
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["canonical_row_from_source_row"] == perm.tolist() and saved["canonical_ids_without_source_token"] == fresh
    assert (tmp_path / "p.json").stat().st_mode & 0o077 == 0
