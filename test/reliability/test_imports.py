"""The reliability toolkit is runtime code: importing and using it must not pull in torch."""

import subprocess
import sys

from test.conftest import REPO


def test_reliability_imports_no_torch():
    code = ("import sys, numpy as np\n"
            "import hsi_xai_node.reliability as r\n"
            "r.spearman([1, 2, 3], [3, 1, 2]); r.ssim(np.eye(8), np.eye(8)); r.auc([0, 1], [1, 0])\n"
            "print(sorted(k for k in ('torch', 'hsi_xai_node.training') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
