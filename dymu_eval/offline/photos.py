"""Real photographs that scikit-image, scikit-learn and matplotlib ship inside their wheels.

Paths come from ``importlib.metadata`` so nothing is downloaded and the (slow) packages are
not imported. Credits follow each package's own documentation.
"""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from PIL import Image

from dymu_eval.errors import AssetUnavailable
from dymu_eval.images import ImageSource, load_image

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


def _distribution(name: str) -> md.Distribution:
    return md.distribution(name)


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
            path = Path(str(_distribution(dist).locate_file(relative)))
        except md.PackageNotFoundError as exc:
            raise AssetUnavailable(
                f"photo '{name}' comes with the '{dist}' wheel, which is not installed: pip install {dist}"
            ) from exc
        if not path.is_file():
            raise AssetUnavailable(f"photo '{name}' should be at {path}; reinstall with: pip install {dist}")
        out[name] = path
    return out


# What each photo shows, written by looking at it: (caption, objects present, objects absent).
# Used to teach the micro LLaVA to name real things; absent objects give "No" questions.
PHOTO_FACTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "astronaut": ("A smiling woman in an orange spacesuit next to an American flag and a model space shuttle.",
                  ("person", "woman", "flag", "spacesuit", "helmet"), ("cat", "motorcycle", "car", "dog", "tree")),
    "chelsea": ("A close-up of a tabby cat with green eyes.", ("cat", "animal"),
                ("person", "car", "cup", "flag", "dog")),
    "coffee": ("A cup of coffee on a red saucer with a spoon, on a wooden table.",
               ("cup", "coffee", "spoon", "saucer", "table"), ("cat", "person", "car", "flower", "rocket")),
    "rocket": ("A rocket on a launch pad at night, between tall towers.", ("rocket", "tower", "sky"),
               ("cat", "cup", "person", "flower", "dog")),
    "motorcycle_left": ("A red motorcycle parked in a garage with shelves and boxes.", ("motorcycle", "shelf", "box"),
                        ("cat", "person", "flower", "rocket", "dog")),
    "motorcycle_right": ("A red motorcycle parked in a garage with shelves and boxes.", ("motorcycle", "shelf", "box"),
                         ("cat", "person", "flower", "cup", "tree")),
    "hubble_deep_field": ("Many small galaxies and stars on a black sky.", ("galaxy", "star"),
                          ("person", "car", "cat", "building", "tree")),
    "retina": ("A photo of the back of an eye, orange with red blood vessels.", ("eye", "blood vessel"),
               ("person", "car", "cat", "flower", "building")),
    "immunohistochemistry": ("A microscope image of stained tissue in brown and blue.", ("tissue", "cell"),
                             ("person", "car", "cat", "flower", "rocket")),
    "camera": ("A black and white photo of a man with a camera on a tripod in a field.",
               ("person", "man", "camera", "tripod", "grass"), ("cat", "car", "flower", "motorcycle", "cup")),
    "coins": ("A black and white photo of many old coins in rows.", ("coin",),
              ("person", "cat", "car", "flower", "cup")),
    "moon": ("A gray close-up of the surface of the moon with craters.", ("moon", "crater"),
             ("person", "cat", "car", "flower", "building")),
    "page": ("A page of printed text with a heading.", ("text", "page"), ("person", "cat", "car", "flower", "cup")),
    "brick": ("A gray brick wall.", ("brick", "wall"), ("person", "cat", "car", "flower", "cup")),
    "grass": ("A close-up of grass, in black and white.", ("grass",), ("person", "cat", "car", "cup", "building")),
    "gravel": ("A close-up of gray gravel stones.", ("gravel", "stone"), ("person", "cat", "car", "flower", "cup")),
    "china": ("A tall Chinese pagoda with a red and green roof, surrounded by trees, next to a lake.",
              ("building", "pagoda", "tree", "tower", "water"), ("cat", "motorcycle", "person", "car", "cup")),
    "flower": ("An orange dahlia flower in front of green leaves.", ("flower", "leaf", "plant"),
               ("person", "car", "cat", "cup", "building")),
    "grace_hopper": ("A portrait of an older woman in a navy uniform and cap, in front of an American flag.",
                     ("person", "woman", "flag", "uniform", "hat"), ("cat", "motorcycle", "car", "cup", "rocket")),
}


class OfflineImages(ImageSource):
    """The photos bundled with installed wheels (:func:`sample_photos`), sorted by name: a small
    calibration set that needs no download."""

    kind = "offline"

    def __init__(self, name: str = "offline_photos"):
        self.paths = dict(sorted(sample_photos().items()))
        super().__init__(name, "dymu_eval.offline.photos.sample_photos()", list(self.paths))

    def label(self, index: int) -> str:
        return str(self.paths[self.keys[index]])

    def load(self, index: int) -> Image.Image:
        return load_image(self.paths[self.keys[index]])
