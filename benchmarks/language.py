"""Language benchmark as a script; same as `dymu-eval bench language` (see dymu_eval/bench/language.py)."""
import sys

from dymu_eval.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "language", *sys.argv[1:]]))
