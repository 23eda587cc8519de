"""The README.md model card of an exported folder: what the model is and how it may be shared.

Weights trained on MIMIC notes are derived data under the PhysioNet Credentialed Health Data
License, so the card says plainly that the folder must not be redistributed or uploaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_TEMPLATE = """---
license: other
license_name: physionet-credentialed-health-data-1.5.0
license_link: https://physionet.org/content/mimiciii/view-license/1.4/
library_name: transformers
pipeline_tag: text2text-generation
tags: [t5, clinical, mimic]
---

# Clinical T5 ({flavour})

A T5 encoder-decoder pretrained with span corruption by `clinical_t5x`, exported from the
t5x-layout checkpoint `{checkpoint}` (paths relative to this folder).

| | |
|---|---|
| layers (encoder / decoder) | {num_layers} / {num_decoder_layers} |
| d_model / d_ff / heads x d_kv | {d_model} / {d_ff} / {num_heads} x {d_kv} |
| vocabulary rows | {vocab_size} |
| feed-forward | {feed_forward_proj} |

Sentinels are `<extra_id_i>` tokens and the DEID placeholders (`[Name]`, `[DR]`, `[LOC]`, ...)
are single special tokens at the ids of the vocabulary folder `{vocab}`.

## Licence and sharing: do not redistribute

If this model was trained on MIMIC-III or MIMIC-IV notes, its weights are data derived from
credentialed health records and fall under the **PhysioNet Credentialed Health Data License**.
Share them only with people who hold PhysioNet credentialed access to the same data and have
signed its data use agreement. **Do not upload this folder to the Hugging Face Hub or any
other public place.** Nothing in `clinical_t5x` uploads it anywhere.

## Use

```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("{out_name}")
model = AutoModelForSeq2SeqLM.from_pretrained("{out_name}")
```
"""


def relative_path(path: str | os.PathLike, out_dir: str | os.PathLike) -> str:
    """`path` as seen from the exported folder: the card travels with the folder, and an
    absolute path would tell every reader the exporting machine's user and folder names."""
    return Path(os.path.relpath(Path(path).resolve(), Path(out_dir).resolve())).as_posix()


def render(config: Mapping[str, Any], checkpoint: str | os.PathLike, vocab: str | os.PathLike,
           out_dir: str | os.PathLike) -> str:
    """The card text for the folder `out_dir` exported with HF `config` (a config.json dict)
    from `checkpoint` and `vocab`, both named relative to `out_dir`."""
    flavour = "T5 1.1, gated GELU" if config["feed_forward_proj"].startswith("gated") else "T5 1.0, ReLU"
    fields = {k: config[k] for k in (
        "num_layers", "num_decoder_layers", "d_model", "d_ff", "num_heads", "d_kv", "vocab_size",
        "feed_forward_proj")}
    return _TEMPLATE.format(flavour=flavour, checkpoint=relative_path(checkpoint, out_dir),
                            vocab=relative_path(vocab, out_dir), out_name=Path(out_dir).name, **fields)
