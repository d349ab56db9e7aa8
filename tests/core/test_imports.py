"""What importing emlab does, checked in a fresh interpreter: analysis stands on models/ and
solutions/, never on the training loop; and no emlab module switches matplotlib's backend,
imports pyplot, sets a logging level or installs a warnings filter when imported (third-party
imports may). `emlab.generate.vllm_backend` is left out (vLLM is an optional extra)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import importlib, json, logging, pkgutil, sys, warnings
import matplotlib

calls = []
helpers = ('logging', 'warnings', 'transformers.utils.logging', 'matplotlib')

def spy(owner, name):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        frame = sys._getframe(1)  # the caller, past the helpers that wrap these calls
        while frame.f_globals.get('__name__', '').startswith(helpers):
            frame = frame.f_back
        if frame.f_globals.get('__name__', '').startswith('emlab'):
            calls.append(f"{name} from {frame.f_globals['__name__']}")
        return real(*args, **kwargs)
    setattr(owner, name, wrapper)

for owner, name in [(warnings, 'filterwarnings'), (warnings, 'simplefilter'),
                    (logging.Logger, 'setLevel'),
                    (logging, 'disable'), (matplotlib, 'use')]:
    spy(owner, name)
import emlab
skip = ('emlab.generate.vllm', 'emlab.__main__')
modules = pkgutil.walk_packages(emlab.__path__, 'emlab.')
names = [m.name for m in modules if not m.name.startswith(skip)]
analysis = [n for n in names if n.startswith('emlab.analysis')]
for name in analysis:
    importlib.import_module(name)
loop_after_analysis = 'emlab.train.loop' in sys.modules
for name in names:
    importlib.import_module(name)
print(json.dumps({"names": names, "analysis": analysis, "loop_after_analysis": loop_after_analysis,
                  "pyplot": 'matplotlib.pyplot' in sys.modules, "calls": calls}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.splitlines()[-1])


def test_analysis_does_not_import_the_training_loop(probe):
    assert {
        "emlab.analysis.cli",
        "emlab.analysis.directions",
        "emlab.analysis.loss",
        "emlab.analysis.figures",
    } <= set(probe["analysis"])
    assert probe["loop_after_analysis"] is False


def test_importing_emlab_changes_no_global_state(probe):
    assert {
        "emlab.report.figures",
        "emlab.analysis.figures",
        "emlab.report.eval_figures",
        "emlab.train.loop",
    } <= set(probe["names"])
    assert probe["pyplot"] is False
    assert probe["calls"] == []
