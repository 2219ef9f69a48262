"""Encoder benchmark as a script; same as `dymu-eval bench encoder` (see dymu_eval/bench/encoder.py)."""
import sys

from dymu_eval.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "encoder", *sys.argv[1:]]))
