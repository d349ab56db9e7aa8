"""Which fine-tuning run: the one name every stage, result and report row of a run is keyed by."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Condition = Literal["no_kl", "kl", "continued", "continued_kl"]
CONDITIONS: tuple[Condition, ...] = ("no_kl", "kl", "continued")
"""results.json conditions: without KL, with KL, and continued without KL from the KL solution
(the world study adds 'continued_kl': continued with KL from the solution without KL)."""


@dataclass(frozen=True)
class RunKey:
    """One fine-tuning run of a study: its method, KL term on or off, seed, the world it is
    trained in ('world' or 'control'; None in the real-model study), and whether it continues
    the solution of the same run with the KL term switched (`continued`: from the KL run
    without KL when `kl` is False, from the run without KL with KL when it is True)."""

    method: str
    kl: bool
    seed: int
    world: str | None = None
    continued: bool = False

    @classmethod
    def of(cls, method: str, condition: Condition, seed: int, world: str | None = None) -> RunKey:
        """The run of `method`, `seed` and `world` in a results.json condition."""
        kl = condition in ("kl", "continued_kl")
        return cls(method, kl, seed, world, condition.startswith("continued"))

    @property
    def condition(self) -> Condition:
        """'no_kl', 'kl', 'continued' or 'continued_kl'."""
        if self.continued:
            return "continued_kl" if self.kl else "continued"
        return "kl" if self.kl else "no_kl"

    @property
    def label(self) -> str:
        """e.g. 'world/lora_r1/kl/seed0', 'lora_r1/no_kl/seed2/continued' (no world part in the
        real-model study)."""
        parts = [self.world] if self.world else []
        parts += [self.method, "kl" if self.kl else "no_kl", f"seed{self.seed}"]
        return "/".join(parts + (["continued"] if self.continued else []))

    def stage(self, kind: str) -> str:
        """The name of this run's stage of `kind`, e.g. 'train_world_lora_r1_kl_seed0'."""
        return f"{kind}_{self.label.replace('/', '_')}"

    def key(self) -> dict:
        """The run's fields, for stage cache keys."""
        return asdict(self)


def analysis_stage(method: str, seed: int) -> str:
    """The name of the analysis stage of one method and seed's (general, narrow) pair of runs."""
    return f"analysis_{method}_seed{seed}"
