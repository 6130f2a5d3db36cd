"""Convert an official KA_Net checkpoint to our safetensors weights.

    python -m kanet.convert IN.pk OUT.safetensors [--trust] [--seed N] [--dtype fp32|fp16|bf16] [--no-strict]

Bad input: one ``error: ...`` line on stderr and exit status 2 (usage: an input that is not there, an output that
cannot be written) or 1 (a file that cannot be read as a checkpoint). The output is written under a temporary name and
renamed on success.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from .official import CheckpointError, brief_error, input_problem, load_official, output_problem
from .weights import save_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kanet.convert",
                                description="Convert an official KA_Net checkpoint (.pk/.pth) to our safetensors.")
    p.add_argument("input", help="official checkpoint (torch.save of {'model': state_dict})")
    p.add_argument("output", help="output .safetensors")
    p.add_argument("--trust", action="store_true",
                   help="allow full unpickling (only for files from a source you trust: it can run code)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fixed random-Fourier-feature draw (default 0)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32", help="stored dtype (default fp32)")
    p.add_argument("--no-strict", action="store_true", help="convert even with missing/unexpected keys")
    args = p.parse_args(argv)
    out = Path(args.output)
    problem = input_problem(args.input) or output_problem(out, args.input)
    if not problem and Path(args.input).suffix.lower() == ".safetensors":  # (converted already, or ours)
        problem = f"{args.input} is a .safetensors weights file already: give it to --weights as it is"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_official(args.input, trust=args.trust, seed=args.seed, strict=not args.no_strict)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
        save_weights(model, out, dtype=dtype)
    except (CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # anything else (e.g. the safetensors writer): still one line, no traceback
        print(f"error: {args.input} -> {out}: {brief_error(e)}", file=sys.stderr)
        return 1
    print(f"{args.input} -> {out} ({model.config_name}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
