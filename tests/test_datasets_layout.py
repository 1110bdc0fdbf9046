"""`python` started in the clone root must import refssm.datasets and refssm.kernels too.

There the source folder refssm/ shadows the installed package, and kernels/ and datasets/ sit beside it,
not in it (pyproject.toml's package-dir maps them into the installed package). An editable install hides
the problem (its import hook maps the two names), a regular `pip install .` (as .ci/run and the README
do) shows it. So the check runs twice in a subprocess started in the clone root: as the user runs
`python`, and with -S and the site-packages on PYTHONPATH, which skips an editable install's hook and so
shows the regular install's behaviour in any venv.
"""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ("import refssm.datasets, refssm.kernels, refssm.datasets.lm; "
        "print(refssm.datasets.__file__); print(refssm.kernels.__file__)")


def _run(flags, env):
    return subprocess.run([sys.executable, *flags, "-c", CODE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(not (ROOT / "refssm" / "__init__.py").is_file() or not (ROOT / "datasets").is_dir(),
                    reason="needs the source tree (refssm/ beside datasets/ and kernels/)")
def test_python_in_the_clone_root_imports_datasets_and_kernels():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    as_user = _run([], env)
    no_hook = _run(["-S"], dict(env, PYTHONPATH=os.pathsep.join(site.getsitepackages())))
    for run in (as_user, no_hook):
        assert run.returncode == 0, run.stderr
    datasets, kernels = no_hook.stdout.split()
    assert Path(datasets) == ROOT / "datasets" / "__init__.py"  # the clone's own files
    assert Path(kernels) == ROOT / "kernels" / "__init__.py"
