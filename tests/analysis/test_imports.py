"""Analysis stands on models/ and solutions/, never on the training loop."""

from __future__ import annotations

import subprocess
import sys


def test_analysis_does_not_import_the_training_loop():
    code = (
        "import importlib, pkgutil, sys\n"
        "import emlab.analysis as a\n"
        "names = [m.name for m in pkgutil.iter_modules(a.__path__, 'emlab.analysis.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names), 'emlab.train.loop' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) >= 10  # every analysis module was imported (cli, directions, loss, ...)
    assert out[1] == "False"
