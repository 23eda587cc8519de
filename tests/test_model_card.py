"""The exported folder's model card: licence terms, the model's shape, no absolute paths."""
from clinical_t5x.hf import model_card

CONFIG = {"num_layers": 2, "num_decoder_layers": 3, "d_model": 64, "d_ff": 128, "num_heads": 4,
          "d_kv": 16, "vocab_size": 2176, "feed_forward_proj": "gated-gelu"}


def test_card_states_the_licence_and_the_shape(tmp_path):
    card = model_card.render(CONFIG, tmp_path / "run" / "checkpoint_9", tmp_path / "vocab",
                             tmp_path / "exports" / "hf")
    assert "license_name: physionet-credentialed-health-data-1.5.0" in card
    assert "Do not upload this folder" in card
    assert "T5 1.1, gated GELU" in card
    assert "| layers (encoder / decoder) | 2 / 3 |" in card and "| vocabulary rows | 2176 |" in card
    assert 'from_pretrained("hf")' in card
    relu = model_card.render({**CONFIG, "feed_forward_proj": "relu"}, tmp_path / "c",
                             tmp_path / "v", tmp_path / "hf")
    assert "T5 1.0, ReLU" in relu


def test_paths_are_relative_to_the_export_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    card = model_card.render(CONFIG, "run/checkpoint_9", tmp_path / "vocab", "exports/hf")
    assert str(tmp_path) not in card  # the exporting machine's folders stay private
    assert "`../../run/checkpoint_9`" in card and "`../../vocab`" in card
