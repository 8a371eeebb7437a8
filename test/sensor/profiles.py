"""Small synthetic profiles for tests: any pattern size and a scrambled band layout."""

import dataclasses

import numpy as np

from hsi_xai_node.sensor.calibration import Peak, SensorProfile


def small_profile(ph=3, pw=4, sensor=(40, 50), offset=(2, 1), area=(36, 47), seed=0, bit_depth=12):
    n = ph * pw
    layout = np.random.default_rng(seed).permutation(n).reshape(ph, pw)
    return SensorProfile(
        name=f"test-{ph}x{pw}", source="test",
        sensor_width=sensor[1], sensor_height=sensor[0], offset_x=offset[1], offset_y=offset[0],
        area_width=area[1], area_height=area[0], pattern_width=pw, pattern_height=ph,
        bit_depth=bit_depth, layout=layout,
        peaks=tuple((Peak(600.0 + 10 * b, 10.0),) for b in range(n)),
    )


def profile_for_test(name: str):
    """"small" (3x4 pattern, scrambled layout), "<profile>+flip" (read out upside down) or a profile name."""
    from hsi_xai_node.sensor.calibration import load_profile

    if name == "small":
        return small_profile()
    if name.endswith("+flip"):
        return load_profile(name[:-5], flip_vertical=True)
    return load_profile(name)


def with_geometry(profile, **changes):
    return dataclasses.replace(profile, **changes)
