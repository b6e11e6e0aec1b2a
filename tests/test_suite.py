"""The suite itself: without the shared SSV2 sample its tests skip, saying why, and error nowhere."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_without_the_shared_sample_its_tests_skip_with_the_reason(tmp_path):
    missing = tmp_path / "no-sample"
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "sample", "-p", "no:randomly", "tests"],
        cwd=REPO,
        env=dict(os.environ, VISUAL_CUES_SAMPLE=str(missing)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and "error" not in summary and "failed" not in summary and "passed" not in summary, (
        r.stdout[-3000:]
    )
    assert int(summary.split(" skipped")[0].split()[-1]) >= 15 and f"{missing} is missing" in r.stdout
