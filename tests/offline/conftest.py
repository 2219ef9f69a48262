"""Real-weight tests skip with the install command when the wheels are missing."""
import pytest

from dymu_eval.errors import AssetUnavailable


@pytest.fixture(scope="session")
def dinov2_224():
    from dymu_eval.offline.assets import dinov2_small

    try:
        return dinov2_small(224)
    except AssetUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smol():
    from dymu_eval.offline.assets import smollm2

    try:
        return smollm2()
    except AssetUnavailable as exc:
        pytest.skip(str(exc))
