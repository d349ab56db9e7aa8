"""Config base class, YAML loading with clear errors, and a stable hash of resolved configs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from emlab.errors import ConfigError

C = TypeVar("C", bound="EmlabConfig")


class EmlabConfig(BaseModel):
    """Base of every emlab config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def hash(self, length: int = 12) -> str:
        """Stable hash of the resolved config (all fields, defaults included)."""
        return config_hash(self.model_dump(mode="json"), length)


def config_hash(data: Any, length: int = 12) -> str:
    """sha256 of canonical JSON (sorted keys), truncated to `length` hex digits."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def load_config(
    path: str | Path | None,
    cls: type[C],
    overrides: dict[str, Any] | None = None,
    merge_defaults: bool = False,
) -> C:
    """Load a YAML file into `cls`; errors name the file, the field and what to do.

    With `merge_defaults` the file (and the dotted `overrides`) only list what differs from
    `cls()`: nested mappings are merged into the defaults instead of replacing them. With no
    path, the config is `cls()` plus the overrides.
    """
    base = cls().model_dump(mode="json") if merge_defaults else {}
    if path is None:
        return validate_config(with_overrides(base, overrides or {}), cls, source="--set")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found. Check the path (cwd: {Path.cwd()}).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(
            f"{where}: not valid YAML ({getattr(e, 'problem', e)}). Fix the syntax."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Save the config as UTF-8.") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}."
        )
    return validate_config(
        with_overrides(deep_merge(base, data), overrides or {}), cls, source=str(path)
    )


def validate_config(data: dict[str, Any], cls: type[C], source: str = "<config>") -> C:
    """Validate a dict into `cls`, turning pydantic errors into one readable ConfigError."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: invalid config ({e.error_count()} problem(s)):"]
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "<top level>"
            lines.append(f"  - {field}: {_advice(err)}")
        raise ConfigError("\n".join(lines)) from None


def _advice(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return (
            "unknown field; remove it or check its spelling (`emlab config-help` lists the fields)"
        )
    if err["type"] == "missing":
        return "required field is missing; add it"
    return f"{err['msg']} (got {err.get('input')!r})"


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `update`, merging nested mappings key by key (in place)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`data` with dotted-key overrides applied in place: {'optim.lr': 1e-4} sets
    data['optim']['lr']."""
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return data


def describe_fields(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per field (dotted name, type, default, description): the config reference."""
    lines = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        sub = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if sub is not None:
            lines.extend(describe_fields(sub, f"{prefix}{name}."))
            continue
        default = (
            "required"
            if field.is_required()
            else repr(field.get_default(call_default_factory=True))
        )
        type_name = getattr(ann, "__name__", str(ann)).replace("typing.", "")
        lines.append(f"{prefix}{name} ({type_name}, default {default}): {field.description or ''}")
    return lines
