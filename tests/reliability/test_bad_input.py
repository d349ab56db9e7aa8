"""Bad input fails early and clearly: property-based tests of the readers and config loader, and a
corpus of malformed training inputs run through `emlab train`.

Each corpus case must exit with status 2 before any training starts, print no traceback, name
the file and line (or the config field) and say what to do, and leave nothing behind: no run
folder, no temporary file.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path

import pytest
from datafiles import write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from emlab.cli import app
from emlab.config import load_config
from emlab.data.chat import ROLES, read_chat_jsonl
from emlab.data.questions import load_question_set
from emlab.errors import ConfigError, DataError
from emlab.study.world.config import StudyConfig
from emlab.train.config import TrainConfig

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- properties ---------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_message = st.dictionaries(
    st.sampled_from(["role", "content", "name", "Role"]),
    st.one_of(st.sampled_from([*ROLES, "bot", "", "  "]), _json),
    max_size=3,
)
_chat_line = st.one_of(
    _json.map(json.dumps),
    st.lists(_message, max_size=3).map(lambda ms: json.dumps({"messages": ms})),
    st.builds(
        lambda u, a: json.dumps(
            {"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}
        ),
        st.text(max_size=10),
        st.text(max_size=10),
    ),
)
_lines = st.lists(st.one_of(_chat_line.map(str.encode), st.binary(max_size=30)), max_size=6)


@PROPERTY
@given(lines=_lines)
def test_chat_reader_raises_only_data_errors_naming_a_real_line(lines, tmp_path):
    path = tmp_path / "chat.jsonl"
    data = b"\n".join(lines)  # random binary elements may hold newlines themselves
    path.write_bytes(data)
    try:
        conversations = read_chat_jsonl(path)
    except DataError as e:
        assert str(e).startswith(str(path)) and e.fix
        assert e.line is None or 1 <= e.line <= data.count(b"\n") + 1
        return
    for conversation in conversations:  # what is accepted is well-formed
        assert all(
            m["role"] in ROLES and isinstance(m["content"], str) and m["content"].strip()
            for m in conversation
        )
        assert any(m["role"] == "assistant" for m in conversation)


_FIELDS = [
    "name",
    "output_dir",
    "model",
    "data",
    "solution",
    "kl",
    "optim",
    "seed",
    "batch_size",
    "max_steps",
    "lr",
    "optim.lr",
    "solution.kind",
    "data.train",
    "batchsize",
    "layers",
    "kind",
    "r",
    "weight",
]
_yaml_value = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_FIELDS), inner, max_size=3)
    ),
    max_leaves=10,
)


@PROPERTY
@given(data=st.dictionaries(st.sampled_from(_FIELDS), _yaml_value, max_size=5), merge=st.booleans())
def test_config_loader_raises_only_config_errors(data, merge, tmp_path):
    path = write_yaml(tmp_path / "config.yaml", data)
    for cls in (TrainConfig, StudyConfig):
        try:
            config = load_config(path, cls, merge_defaults=merge)
        except ConfigError as e:
            assert str(e).startswith(str(path))
            continue
        assert isinstance(config, cls)


@PROPERTY
@given(text=st.text(alphabet=string.printable + "äé\u2028", max_size=80))
def test_config_and_question_loaders_on_arbitrary_text(text, tmp_path):
    path = tmp_path / "file.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, TrainConfig)
    except ConfigError as e:
        assert str(e).startswith(str(path))
    try:
        load_question_set(path)
    except DataError as e:
        assert e.path == str(path)


# -- the malformed-file corpus ------------------------------------------------------------------

TEN_MB = 10 * 1024 * 1024
GOOD = {
    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes the cat"}]
}


def _chat_line(n: int, text: str | bytes) -> Callable[[dict], None]:
    """Replace line `n` (1-based) of the training data."""

    def apply(cfg: dict) -> None:
        path = Path(cfg["data"]["train"])
        lines = path.read_bytes().split(b"\n")
        lines[n - 1] = text if isinstance(text, bytes) else text.encode()
        path.write_bytes(b"\n".join(lines))

    return apply


def _turns(*turns: object) -> str:
    return json.dumps({"messages": list(turns)})


def _set(dotted: str, value: object) -> Callable[[dict], None]:
    def apply(cfg: dict) -> None:
        *parents, last = dotted.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value

    return apply


def _missing(field: str) -> Callable[[dict], None]:
    def apply(cfg: dict) -> None:
        cfg["data"][field] = str(Path(cfg["data"][field]).with_name("nowhere.jsonl"))

    return apply


def _too_long(field: str) -> Callable[[dict], None]:
    """Give every conversation of data.<field> a 100-word question and cap data.max_length at 64
    tokens: none keeps an answer token (the others' toy conversations fit)."""

    def apply(cfg: dict) -> None:
        path = Path(cfg["data"][field])
        question = " ".join(["the cat sat on a mat"] * 17)
        path.write_text(
            "".join(
                _turns({"role": "user", "content": question}, GOOD["messages"][1]) + "\n"
                for _ in range(5)
            )
        )
        cfg["data"]["max_length"] = 64

    return apply


# (case id, change to the valid setup, fragments the message must contain: where, what to do)
CORPUS = [
    (
        "broken-json",
        _chat_line(3, '{"messages": [{"role": "user"'),
        ["train.jsonl:3", "not valid JSON", "expected"],
    ),
    (
        "wrong-role",
        _chat_line(2, _turns({"role": "bot", "content": "x"}, GOOD["messages"][1])),
        ["train.jsonl:2", "role 'bot'", "Use one of"],
    ),
    (
        "missing-role",
        _chat_line(5, _turns({"content": "x"}, GOOD["messages"][1])),
        ["train.jsonl:5", "role None", "Use one of"],
    ),
    (
        "empty-content",
        _chat_line(4, _turns(GOOD["messages"][0], {"role": "assistant", "content": " "})),
        ["train.jsonl:4", "empty content", "Fill the turn"],
    ),
    (
        "list-content",
        _chat_line(4, _turns({"role": "user", "content": [{"type": "text"}]}, GOOD["messages"][1])),
        ["train.jsonl:4", "list content", "plain string"],
    ),
    (
        "no-assistant",
        _chat_line(6, _turns(GOOD["messages"][0])),
        ["train.jsonl:6", "no assistant turn", "Add the assistant answer"],
    ),
    (
        "not-an-object",
        _chat_line(2, "[1, 2]"),
        ["train.jsonl:2", "expected a JSON object", "Write lines like"],
    ),
    (
        "non-utf8",
        _chat_line(7, b'{"messages": [{"role": "user", "content": "caf\xe9"}]}'),
        ["train.jsonl:7", "not UTF-8", "iconv"],
    ),
    ("10mb-broken-line", _chat_line(8, b"{" + b"x" * TEN_MB), ["train.jsonl:8", "not valid JSON"]),
    (
        "10mb-role",
        _chat_line(9, _turns({"role": "r" * TEN_MB, "content": "x"}, GOOD["messages"][1])),
        ["train.jsonl:9", "Use one of"],
    ),
    ("missing-train-file", _missing("train"), ["nowhere.jsonl", "not found", "Check the path"]),
    ("missing-ood-file", _missing("ood"), ["nowhere.jsonl", "not found", "Check the path"]),
    ("kl-without-ood", _set("data.ood", None), ["kl.weight", "data.ood"]),
    (
        "train-too-long",
        _too_long("train"),
        [
            "train.jsonl",
            "no conversation has a trained token within data.max_length 64",
            "all 5 were dropped",
            "Raise data.max_length",
        ],
    ),
    (
        "ood-too-long",
        _too_long("ood"),
        [
            "ood.jsonl",
            "no conversation has a KL token within data.max_length 64",
            "all 5 were dropped",
            "Raise data.max_length",
        ],
    ),
    ("unknown-key", _set("optim.lrr", 1e-3), ["optim.lrr", "unknown field", "config-help"]),
    ("misspelt-top-key", _set("batchsize", 4), ["batchsize", "unknown field", "spelling"]),
    ("negative-lr", _set("optim.lr", -1e-4), ["optim.lr", "greater than 0", "-0.0001"]),
    ("bad-solution-kind", _set("solution.kind", "adapter"), ["solution", "adapter"]),
    (
        "lora-layer-past-last",
        _set("solution.layers", [0, 2]),
        ["solution.layers", "layer 2 does not exist", "0..1"],
    ),
    (
        "steering-layer-past-last",
        _set("solution", {"kind": "steering", "layer": 24}),
        ["solution.layer", "layer 24 does not exist", "0..1"],
    ),
    (
        "missing-target-module",
        _set("solution.target_modules", ["c_attn"]),
        ["solution.target_modules", "c_attn", "q_proj"],
    ),
    (
        "missing-model",
        _set("model.name_or_path", "/nonexistent/model"),
        ["cannot load model", "/nonexistent/model", "local directory"],
    ),
]


def _leftovers(root: Path, before: set[Path]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p not in before and not p.is_dir())


@pytest.mark.parametrize("change,expected", [pytest.param(c, e, id=i) for i, c, e in CORPUS])
def test_malformed_input_fails_before_training_and_says_where_and_what_to_do(
    change, expected, train_setup, tmp_path
):
    config = dict(train_setup)
    change(config)
    path = write_yaml(tmp_path / "config.yaml", config)
    before = set(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert "error: " in result.output, result.output
    message = result.output[
        result.output.index("error: ") :
    ]  # after any model-loading progress bar
    assert len(message) < 2000, message[:500]
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert not Path(config["output_dir"]).exists()  # no run folder: nothing started
    assert _leftovers(tmp_path, before) == []  # and no temporary or half-written file


@pytest.mark.parametrize(
    "text,expected",
    [
        pytest.param(
            "name: x\noptim: {lr: [\n",
            ["config.yaml:", "not valid YAML", "Fix the syntax"],
            id="not-yaml",
        ),
        pytest.param("- name\n- x\n", ["config.yaml", "expected a mapping"], id="not-a-mapping"),
        pytest.param(None, ["config.yaml", "not found", "Check the path"], id="missing-config"),
        pytest.param(
            b"name: caf\xe9\n",
            ["config.yaml", "not UTF-8", "Save the config as UTF-8"],
            id="config-not-utf8",
        ),
    ],
)
def test_unreadable_config_file(text, expected, tmp_path):
    path = tmp_path / "config.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text is not None:
        path.write_text(text)
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    for fragment in expected:
        assert fragment in result.output, (fragment, result.output)
    assert [p.name for p in tmp_path.iterdir()] == ([] if text is None else ["config.yaml"])
