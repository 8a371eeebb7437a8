"""What one run of the default demo measured, quoted by `hsi-xai demo --help` and the README (a test checks both
against this and against what a demo writes): change these only from a new run's own output.

    .venv/bin/hsi-xai demo --out demo_out     # prints: input bag (MB), output bag (MB), seconds
"""

DEMO_RUN = {
    "command": "hsi-xai demo --out demo_out",
    "frames": 25,
    "input_bag_mb": 164.9,
    "output_bag_mb": 106.2,
    "copy_raw_mb": 110.0,  # 25 raw mosaics of 2048 x 1088 x 2 bytes = 111.4 MB, added by --copy-raw
    "seconds": 33.9,
    "machine": "the 2-core Intel Xeon (AVX-512) development VM, backend auto (OpenVINO), 2026-12-04",
}


def demo_sizes_text() -> str:
    r = DEMO_RUN
    return (f"input bag {r['input_bag_mb']:.1f} MB, output bag {r['output_bag_mb']:.1f} MB without the raw mosaic "
            f"(--copy-raw adds about {r['copy_raw_mb']:.0f} MB); {r['seconds']:.0f} s on {r['machine']}")
