"""DEID tags: the canonical tag tuple and the replacement of MIMIC de-identification placeholders."""

# The Clinical-T5 tag set, in canonical order. Vocabulary ids, the HF export and the tests all
# read it from here: tag i gets id S + 100 + i (after S pieces and 100 sentinels).
TAGS: tuple[str, ...] = (
    "[Name]", "[Reg#]", "[Company]", "[LOC]", "[Age]", "[#]", "[DR]", "[State]",
    "[CI]", "[Country]", "[URL]", "[YR]", "[MO]", "[DAY]", "[MISC]",
)
