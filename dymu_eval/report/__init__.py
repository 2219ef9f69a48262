"""Results aggregation: reads lmms-eval output folders and the plugin's per-sample stats.

Everything here works on files only (JSON, JSONL, CSV), so tables can be built on a machine
without torch or lmms-eval installed. Modules:

- ``benchmarks``: metric names -> table columns in the paper's conventions, and the average rule
- ``runs``: discovering runs, labelling them, pairing them with their stats, duplicates
- ``tables``: one comparison table per model family (measured rows)
- ``reference``: reported rows from ``results/reference/``
- ``render``: Markdown, CSV and LaTeX writers and readers (readers make round trips testable)
- ``plots``: score vs tokens, tokens vs image complexity
- ``threshold_compare``: the tables and plot of ``dymu-eval thresholds compare``

Running things (lmms-eval, calibration, the encoder) lives in ``dymu_eval.runs`` and the commands.
"""
