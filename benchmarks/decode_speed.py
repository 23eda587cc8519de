"""Greedy decoding speed: cached (`decoding.greedy_decode`) against the uncached reference.

    python benchmarks/decode_speed.py                       # tiny model (gin/builtin/tiny.gin)
    python benchmarks/decode_speed.py --batch_size 64 --decode_length 64

Random-initialised tiny model (2+2 layers, emb 256, vocab 2,176), a batch of random encoder
inputs, EOS disabled so both paths generate every one of `--decode_length` tokens. Prints the
best wall time of `--repeats` calls of each (compile excluded; the best, not the mean,
is the least disturbed by other processes) and the speed-up, after
checking that both produced the same tokens. Wall times depend on what else the machine runs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tiny_model():
    """The model of gin/builtin/tiny.gin, configured through that file."""
    import gin

    from clinical_t5x.model import network

    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings(["gin/variants/tiny.gin"],
                                        ["network.T5Config.vocab_size = 2176"],
                                        skip_unknown=True)
    return network.Transformer(network.T5Config())


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--inputs_length", type=int, default=128)
    parser.add_argument("--decode_length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from clinical_t5x.model import decoding, network

    model = tiny_model()
    params = network.init_params(model, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    inputs = rng.integers(2, model.config.vocab_size, (args.batch_size, args.inputs_length),
                          dtype=np.int32)
    runs = {
        "uncached (network.greedy_decode)": lambda: network.greedy_decode(
            model, params, inputs, args.decode_length, eos_id=-1),
        "cached (decoding.greedy_decode)": lambda: decoding.greedy_decode(
            model, params, inputs, args.decode_length, eos_id=-1).tokens,
    }
    outputs = {name: np.asarray(fn()) for name, fn in runs.items()}  # compile + warm up
    first, second = outputs.values()
    if not np.array_equal(first, second):
        print("the two paths generated different tokens", file=sys.stderr)
        return 1
    print(f"batch {args.batch_size}, inputs {args.inputs_length}, {args.decode_length} tokens, "
          f"{jax.devices()[0].platform}")
    seconds = {}
    for name, fn in runs.items():
        seconds[name] = best_seconds(lambda fn=fn: jax.block_until_ready(fn()), args.repeats)
        print(f"  {name:34s} {seconds[name] * 1000:9.1f} ms")
    uncached, cached = seconds.values()
    print(f"  speed-up {uncached / cached:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
