"""The built-in methods, one file each: every module here registers its method on import (the
registry imports them all on first use, so a new file is all a new built-in method needs)."""
