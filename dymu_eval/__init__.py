"""dymu-eval: benchmarking visual-token reduction in vision-language models."""
__version__ = "0.1.0"
