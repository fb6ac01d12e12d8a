"""sweep.tune_fixes: what each fix changes in Ray Tune (the retry fix is exercised end to end in
test_reliability_e2e.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = textwrap.dedent(
    """
    import sys
    from ray import tune
    from ray.air._internal import usage
    from sweep import tune_fixes
    if sys.argv[1] == "fixed":
        tune_fixes.apply()
        tune_fixes.apply()  # idempotent

    class Progress(tune.Callback):
        pass

    usage.tag_callbacks([Progress()])  # what tune.run calls before its first trial
    print("mlflow" in sys.modules)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow not installed")
@pytest.mark.parametrize("fixed", [False, True])
def test_tunes_callback_usage_tag_imports_mlflow_only_unfixed(fixed):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": REPO}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, "fixed" if fixed else "unfixed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    # Unfixed, the tag imports mlflow (about a second before the first trial); fixed, it does not.
    assert child.stdout.split()[-1] == str(not fixed)
