"""Open a report page in headless Chromium at a given window width: the probe's values and a screenshot."""

import re
import shutil
import subprocess

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium: apt-get install chromium)")
    return exe


def render(page, profile_dir, width: int = 1400, height: int = 900, screenshot=None) -> dict:
    """The page's probe (hsi_xai_node.report_page): {"loaded": n, "images": total, "overflow_x": px,
    "min_font_px": smallest text, "min_plot_scale": smallest shown / natural width of a plot}; with `screenshot`
    (a path), also a PNG of the window."""
    exe = chromium()
    common = [exe, *FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
              "--virtual-time-budget=10000"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    overflow = re.search(r'data-overflow-x="(\d+)"', dom)
    font = re.search(r'data-min-font-px="([\d.]+)"', dom)
    plot = re.search(r'data-min-plot-scale="([\d.]+)"', dom)
    assert loaded and overflow and font and plot, dom[:500]
    if screenshot is not None:
        subprocess.run([*common, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120)
    return {"loaded": int(loaded.group(1)), "images": int(loaded.group(2)), "overflow_x": int(overflow.group(1)),
            "min_font_px": float(font.group(1)), "min_plot_scale": float(plot.group(1))}
