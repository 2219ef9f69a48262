"""Real photographs that scikit-image, scikit-learn and matplotlib ship inside their wheels.

Paths come from ``importlib.metadata`` so nothing is downloaded and the (slow) packages are
not imported. Credits follow each package's own documentation.
"""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from dymu_eval.errors import AssetUnavailable

# name -> (distribution, file inside it)
_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("scikit-image", "skimage/data/astronaut.png"),
    "chelsea": ("scikit-image", "skimage/data/chelsea.png"),
    "coffee": ("scikit-image", "skimage/data/coffee.png"),
    "rocket": ("scikit-image", "skimage/data/rocket.jpg"),
    "motorcycle_left": ("scikit-image", "skimage/data/motorcycle_left.png"),
    "motorcycle_right": ("scikit-image", "skimage/data/motorcycle_right.png"),
    "hubble_deep_field": ("scikit-image", "skimage/data/hubble_deep_field.jpg"),
    "retina": ("scikit-image", "skimage/data/retina.jpg"),
    "immunohistochemistry": ("scikit-image", "skimage/data/ihc.png"),
    "camera": ("scikit-image", "skimage/data/camera.png"),
    "coins": ("scikit-image", "skimage/data/coins.png"),
    "moon": ("scikit-image", "skimage/data/moon.png"),
    "page": ("scikit-image", "skimage/data/page.png"),
    "brick": ("scikit-image", "skimage/data/brick.png"),
    "grass": ("scikit-image", "skimage/data/grass.png"),
    "gravel": ("scikit-image", "skimage/data/gravel.png"),
    "china": ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    "flower": ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
}

PHOTO_CREDITS: dict[str, str] = {
    "astronaut": "Eileen Collins, NASA (public domain)",
    "chelsea": "Stefan van der Walt (CC0)",
    "coffee": "Rachel Michetti (CC0)",
    "rocket": "SpaceX Falcon 9 launch (public domain)",
    "motorcycle_left": "Middlebury 2014 stereo dataset",
    "motorcycle_right": "Middlebury 2014 stereo dataset",
    "hubble_deep_field": "NASA (public domain)",
    "retina": "Wikimedia Commons (CC0)",
    "immunohistochemistry": "no known copyright restrictions (scikit-image)",
    "camera": "Lav Varshney (CC0)",
    "coins": "Brooklyn Museum via scikit-image (no known copyright restrictions)",
    "moon": "scikit-image (public domain)",
    "page": "scikit-image (public domain)",
    "brick": "cc0textures (CC0)",
    "grass": "cc0textures (CC0)",
    "gravel": "cc0textures (CC0)",
    "china": "danielbuechele on Flickr (CC BY 2.0), via scikit-learn",
    "flower": "vultilion on Flickr (CC BY 2.0), via scikit-learn",
    "grace_hopper": "US Navy portrait of Grace Hopper (public domain), via matplotlib",
}

# The colour photographs, for code that wants natural RGB scenes only.
COLOUR_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
    "hubble_deep_field", "retina", "immunohistochemistry", "china", "flower", "grace_hopper",
)


def sample_photos(names: list[str] | tuple[str, ...] | None = None) -> dict[str, Path]:
    """Paths of the bundled photos by name (all of them, or ``names`` in that order)."""
    wanted = list(_PHOTOS) if names is None else list(names)
    unknown = [n for n in wanted if n not in _PHOTOS]
    if unknown:
        from dymu_eval.errors import ConfigError

        raise ConfigError(f"unknown photo name(s) {unknown}; known: {sorted(_PHOTOS)}")
    out: dict[str, Path] = {}
    for name in wanted:
        dist, relative = _PHOTOS[name]
        try:
            path = Path(str(md.distribution(dist).locate_file(relative)))
        except md.PackageNotFoundError as exc:
            raise AssetUnavailable(
                f"photo '{name}' comes with the '{dist}' wheel, which is not installed: pip install {dist}"
            ) from exc
        if not path.is_file():
            raise AssetUnavailable(f"photo '{name}' should be at {path}; reinstall with: pip install {dist}")
        out[name] = path
    return out
