"""The training loop: SFT on assistant tokens plus an optional KL term, on accelerate.

Single process:   emlab train configs/world/lora_r1.yaml
Several GPUs:     accelerate launch --config_file configs/accelerate/ddp.yaml -m emlab train CONFIG
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from emlab.data.chat import Conversation
from emlab.errors import EmlabError
from emlab.io import append_jsonl, read_jsonl, write_text_atomic
from emlab.models.chat import (
    IGNORE,
    Encoded,
    EncodedSet,
    collate,
    encode_reported,
    padding_id,
)
from emlab.models.config import ModelConfig
from emlab.models.load import check_chat_format
from emlab.runs import DONE, HELDOUT, RunDir, run_path
from emlab.solutions import Solution
from emlab.train.base_reference import ExactBase, TopKCache, base_hidden, kl_chunks, without_dropout
from emlab.train.batches import BatchStream
from emlab.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from emlab.train.config import TrainConfig
from emlab.train.head_loss import (
    OutputHead,
    check_output_head,
    cross_entropy_chunks,
    final_hidden,
    head_loss,
)
from emlab.train.losses import kl_positions
from emlab.train.trainable import Trainable, make_trainable, unwrap_training

Evaluator = Callable[[nn.Module], dict[str, float]]
"""Numbers about the model being trained (e.g. misalignment rates), logged with the metrics."""


@dataclass
class TrainResult:
    """What a run produced or, when it had finished before (`finished_before`), what it saved.

    `metrics` are the rows of its metrics.jsonl; `heldout` the held-out conversations (also in
    the run's heldout.jsonl; none when the data was passed in or data.heldout_fraction is 0).
    """

    run_dir: Path
    solution: Solution
    metrics: list[dict]
    heldout: list[Conversation]
    model_config: ModelConfig = field(repr=False)
    base_model: nn.Module | None = field(default=None, repr=False)
    finished_before: bool = False

    @property
    def model(self) -> nn.Module:
        """The base model in its base state: the one passed to (or loaded by) `train()`; when a
        finished run was rerun without one, loaded from `model_config` on first use."""
        if self.base_model is None:
            from emlab.models.load import load_model

            self.base_model = load_model(self.model_config)[0].eval()
        return self.base_model


def train(
    config: TrainConfig,
    model: nn.Module | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    train_data: list[Conversation] | EncodedSet | None = None,
    ood_data: list[Conversation] | EncodedSet | None = None,
    init: Solution | None = None,
    evaluator: Evaluator | None = None,
    start_metrics: dict[str, float] | None = None,
) -> TrainResult:
    """Train the solution of `config`, resuming from the run's latest checkpoint if there is one.

    Data and model come from the config unless given; given data is used whole (no held-out
    split), as conversations or already tokenised (`encode_counted`, for many runs on the
    same data). `init` is a solution to start from (continued training). `evaluator(model)` is
    called on the model being trained at step 0 and every `eval_every` steps; its numbers go
    into the metrics rows. `start_metrics` are its numbers at step 0 when the caller already has
    them (a fresh solution leaves its model unchanged: a run from scratch starts at the base
    model's numbers); they are written instead of evaluating step 0. Writes `metrics.jsonl`,
    checkpoints, `solution/`, the held-out split (`heldout.jsonl`) and last `DONE` under the
    run. A run that has finished (DONE written) is not trained again: its saved result is
    returned and nothing is written. Conversations truncated or dropped by `data.max_length`
    are counted (printed, and in the manifest); raises EmlabError when no training (or OOD)
    conversation is left, or when given tokenised data was tokenised another way.
    """
    out = run_path(config.output_dir, config.name, config)
    if (out / DONE).is_file():
        return _finished(out, config, model)
    run = _setup(config, out, model, tokenizer, train_data, ood_data, init, evaluator)
    started = _loop(run, start_metrics)
    return _finish(run, started)


@dataclass
class _Run:
    """One run's training state, built by `_setup`, stepped by `_loop`, saved by `_finish`."""

    config: TrainConfig
    out: Path  # the run folder
    accelerator: Accelerator
    trainable: Trainable
    wrapped: nn.Module  # trainable.model as accelerate prepared it
    params: dict[str, nn.Parameter]  # what the optimiser steps and checkpoints hold
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    examples: list[Encoded]  # the training conversations, tokenised
    ood_examples: list[Encoded]  # the KL term's conversations, tokenised (none without KL)
    stream: BatchStream
    ood_stream: BatchStream | None
    top_k: TopKCache | None  # cached base log-probs (kl.base 'top_k')
    pad_id: int
    lam: float  # the KL term's weight per token
    total_steps: int
    start: int  # the step training starts from (a checkpoint's, else 0)
    heldout: list[Conversation]
    data_counts: dict[str, Any]  # what data.max_length did, for the manifest
    manifest: RunDir | None  # the run folder's manifest (main process only)
    evaluator: Evaluator | None

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"


def _setup(
    config: TrainConfig,
    out: Path,
    model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
    train_data: list[Conversation] | EncodedSet | None,
    ood_data: list[Conversation] | EncodedSet | None,
    init: Solution | None,
    evaluator: Evaluator | None,
) -> _Run:
    """Everything before the first step (see `train`): data read and tokenised, model loaded and
    made trainable, optimiser, scheduler and data streams built, the model prepared by accelerate,
    the latest checkpoint loaded. Whatever can reject the config or the data runs before the run
    folder exists."""
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        log_with=list(config.trackers) or None,
        project_dir=config.output_dir,
    )
    set_seed(config.seed)
    main = accelerator.is_main_process
    model, tokenizer, data = _inputs(config, model, tokenizer, train_data, ood_data, main)
    kl_on = config.kl.weight > 0
    exact_kl = kl_on and config.kl.base == "exact"
    trainable = make_trainable(model, config.solution, need_reference=exact_kl)
    _keep_masters(trainable, accelerator)
    manifest = RunDir(config.output_dir, config.name, config) if main else None
    params = trainable.master_parameters()
    optim = config.optim
    # weight decay is the trainable's (toward the base model), not AdamW's (toward 0)
    optimizer = torch.optim.AdamW(params.values(), lr=optim.lr, betas=optim.betas, weight_decay=0.0)
    stream, ood_stream = _streams(config, data, accelerator)
    per_epoch = stream.micro_batches_per_epoch() / config.grad_accum
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * per_epoch))
    scheduler = get_scheduler(
        optim.schedule,
        optimizer,
        num_warmup_steps=optim.warmup_steps,
        num_training_steps=total_steps,
    )
    pad_id = padding_id(tokenizer)
    # the trainable is still the base model here: cache its top-k before any change
    top_k = None
    if kl_on and config.kl.base == "top_k":
        top_k = _top_k_cache(
            config, trainable, data.ood_examples, ood_stream, total_steps, pad_id, accelerator
        )
    if init is not None:
        trainable.start_from(init)
    wrapped, optimizer = accelerator.prepare(trainable.model, optimizer)
    # the frozen base copy computes where and in the precision the trained model does
    trainable.place_reference(lambda ref: accelerator.prepare_model(ref, evaluation_mode=True))
    head = OutputHead(unwrap_training(wrapped))
    # through the prepared model: it runs where training runs (DDP, FSDP, DeepSpeed)
    with _out_of_memory_advice(config):
        check_output_head(wrapped, head, accelerator.device)
    start = 0
    latest = latest_checkpoint(out / "checkpoints")
    if latest is not None:
        start = load_checkpoint(latest, params, optimizer, scheduler)
        for group in optimizer.param_groups:  # earlier releases' checkpoints kept AdamW's decay
            group["weight_decay"] = 0.0
        trainable.masters_to_model()
    lam = config.kl.per_token_weight(head.vocab_size)
    return _Run(
        config,
        out,
        accelerator,
        trainable,
        wrapped,
        params,
        optimizer,
        scheduler,
        data.examples,
        data.ood_examples,
        stream,
        ood_stream,
        top_k,
        pad_id,
        lam,
        total_steps,
        start,
        data.heldout,
        data.counts,
        manifest,
        evaluator,
    )


@dataclass(frozen=True)
class _Data:
    """A run's data, tokenised: training and OOD examples (none without KL), the held-out split,
    and what data.max_length did to them (for the manifest)."""

    examples: list[Encoded]
    ood_examples: list[Encoded]
    heldout: list[Conversation]
    counts: dict[str, Any]


def _inputs(
    config: TrainConfig,
    model: nn.Module | None,
    tokenizer: PreTrainedTokenizerBase | None,
    train_data: list[Conversation] | EncodedSet | None,
    ood_data: list[Conversation] | EncodedSet | None,
    report: bool,
) -> tuple[nn.Module, PreTrainedTokenizerBase, _Data]:
    """The model and tokenizer (given, else loaded from config.model) and the data (given, else
    read from the config's files), tokenised (`report`: print what truncation did). Raises
    EmlabError when the KL term has no data or no conversation is left after truncation."""
    sources = (
        _source(train_data, config.data.train, "data.train", "training"),
        _source(ood_data, config.data.ood, "data.ood", "OOD"),
    )
    train_data, heldout, ood_data = _data(config, train_data, ood_data)
    kl_on = config.kl.weight > 0
    if kl_on and not ood_data:
        raise EmlabError(
            "kl.weight > 0 needs out-of-domain data: set data.ood to a chat JSONL file."
        )
    if model is None or tokenizer is None:
        from emlab.models.load import load_model

        model, tokenizer = load_model(config.model)
    check_chat_format(tokenizer, config.model)
    max_length = config.data.max_length
    examples, train_counts = encode_reported(
        tokenizer, train_data, max_length, config.data.loss_on, sources[0], "trained token", report
    )
    ood_examples, ood_counts = [], None
    if kl_on:
        ood_examples, ood_counts = encode_reported(
            tokenizer, ood_data, max_length, config.kl.scope, sources[1], "KL token", report
        )
    counts = {
        "train": asdict(train_counts),
        "ood": asdict(ood_counts) if ood_counts else None,
        "heldout": len(heldout),
    }
    return model, tokenizer, _Data(examples, ood_examples, heldout, counts)


def _streams(
    config: TrainConfig, data: _Data, accelerator: Accelerator
) -> tuple[BatchStream, BatchStream | None]:
    """The batch streams of the training examples and (with KL) of the OOD examples."""
    processes, index = accelerator.num_processes, accelerator.process_index
    examples = data.examples
    lengths = [len(e.input_ids) for e in examples] if config.data.group_by_length else None
    stream = BatchStream(len(examples), config.batch_size, config.seed, processes, index, lengths)
    if config.kl.weight <= 0:
        return stream, None
    ood_batch = config.kl.batch_size or config.batch_size
    return stream, BatchStream(len(data.ood_examples), ood_batch, config.seed + 1, processes, index)


def _top_k_cache(
    config: TrainConfig,
    trainable: Trainable,
    ood_examples: list[Encoded],
    ood_stream: BatchStream,
    total_steps: int,
    pad_id: int,
    accelerator: Accelerator,
) -> TopKCache:
    """The base model's top-k log-probs on every OOD batch the run will draw (kl.base 'top_k');
    built before any change to the model."""
    if accelerator.num_processes == 1:
        # placed as prepare() would place it, so the cache builds on the accelerator
        trainable.model.to(accelerator.device)
    micro_batches = range(total_steps * config.grad_accum)
    return TopKCache.build(
        trainable,
        unwrap_training(trainable.model),
        ood_examples,
        (i for micro in micro_batches for i in ood_stream.indices(micro)),
        config.kl.scope,
        config.kl.top_k,
        ood_stream.batch_size,
        pad_id,
        progress=config.progress and accelerator.is_main_process,
    )


def _loop(run: _Run, start_metrics: dict[str, float] | None) -> float:
    """Train from `run.start` to `run.total_steps`, writing metrics rows and checkpoints; returns
    the time (time.time()) training started, after the step-0 evaluation."""
    config, accelerator = run.config, run.accelerator
    if accelerator.is_main_process:
        _truncate_metrics(run.metrics_path, run.start)
        if config.trackers:
            accelerator.init_trackers(config.name, config=config.model_dump(mode="json"))
        if run.evaluator is not None and run.start == 0:
            numbers = start_metrics if start_metrics is not None else _evaluate(run)
            append_jsonl(run.metrics_path, [{"step": 0, **numbers}])
    started = time.time()
    run.wrapped.train()
    quiet = not (config.progress and accelerator.is_main_process)
    bar = tqdm(total=run.total_steps, initial=run.start, desc=config.name, disable=quiet)
    for step in range(run.start, run.total_steps):
        sft_mean, kl_mean = _step(run, step)
        done, last = step + 1, step + 1 == run.total_steps
        bar.update(1)
        bar.set_postfix(loss=f"{sft_mean + run.lam * kl_mean:.4f}")
        if accelerator.is_main_process and (done % config.log_every == 0 or last):
            _log(run, done, sft_mean, kl_mean, time.time() - started)
        if config.checkpoint_every and done % config.checkpoint_every == 0 and not last:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _save_checkpoint(run, done)
    bar.close()
    return started


def _log(run: _Run, done: int, sft_mean: float, kl_mean: float, seconds: float) -> None:
    """Append the metrics row of step `done` (evaluated too when `eval_every` says so, and at the
    last step) to metrics.jsonl and the trackers."""
    config = run.config
    row = {
        "step": done,
        "loss": sft_mean + run.lam * kl_mean,
        "sft": sft_mean,
        "kl": kl_mean,
        "norm": run.trainable.norm(),
        "lr": run.scheduler.get_last_lr()[0],
        "seconds": round(seconds, 3),
    }
    last = done == run.total_steps
    if run.evaluator is not None and config.eval_every and (done % config.eval_every == 0 or last):
        row.update(_evaluate(run))
    append_jsonl(run.metrics_path, [row])
    if config.trackers:
        run.accelerator.log(row, step=done)


def _step(run: _Run, step: int) -> tuple[float, float]:
    """One optimiser step (all its micro-batches); returns its (SFT, KL) token means over all
    micro-batches and processes."""
    config, accelerator = run.config, run.accelerator
    micro_batches = []
    for k in range(config.grad_accum):
        micro = step * config.grad_accum + k
        ood = run.ood_stream.indices(micro) if run.ood_stream else []
        micro_batches.append(([run.examples[i] for i in run.stream.indices(micro)], ood))
    # losses are token means over the whole step (all micro-batches and processes), so
    # grad accumulation and data parallelism give the gradient of one big batch
    trained = [_n_trained(batch) for batch, _ in micro_batches]
    kl = [
        _n_kl_positions([run.ood_examples[i] for i in ood], config.kl.scope)
        for _, ood in micro_batches
    ]
    local = torch.tensor([trained, kl], dtype=torch.float64).sum(dim=1)
    counts = accelerator.reduce(local.to(accelerator.device), reduction="sum").cpu().clamp(min=1)
    n = accelerator.num_processes  # DDP averages gradients over processes
    scales = (n / counts[0], run.lam * n / counts[1])
    sums = torch.zeros(2, dtype=torch.float64)  # sft and kl token sums of this process
    for k, (batch, ood) in enumerate(micro_batches):
        with _out_of_memory_advice(config):
            sft_sum, kl_sum = _micro_step(run, batch, ood, scales, last=k == config.grad_accum - 1)
        sums += torch.tensor([sft_sum, kl_sum], dtype=torch.float64)
    run.trainable.grads_to_masters()
    if config.optim.max_grad_norm:
        accelerator.clip_grad_norm_(list(run.params.values()), config.optim.max_grad_norm)
    if config.optim.weight_decay:  # before the update, as AdamW orders it
        run.trainable.decay(run.optimizer.param_groups[0]["lr"] * config.optim.weight_decay)
    run.optimizer.step()
    run.trainable.masters_to_model()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    total = accelerator.reduce(sums.to(accelerator.device), reduction="sum").cpu()
    sft_mean, kl_mean = (total / counts).tolist()
    return sft_mean, kl_mean


def _finish(run: _Run, started: float) -> TrainResult:
    """Save the solution, the held-out split, the last checkpoint, the manifest's record and DONE
    (main process); hand the base model back in its base state."""
    config, accelerator = run.config, run.accelerator
    solution = run.trainable.solution()
    if accelerator.is_main_process:
        solution.save(run.out / "solution")
        if run.heldout:
            from emlab.data.chat import write_chat_jsonl

            write_chat_jsonl(run.out / HELDOUT, run.heldout)
        if run.start < run.total_steps:
            _save_checkpoint(run, run.total_steps)
        run.manifest.record(
            steps=run.total_steps,
            resumed_from=run.start,
            n_train=len(run.examples),
            n_ood=len(run.ood_examples),
            kl_per_token_weight=run.lam,
            data=run.data_counts,
        )
        run.manifest.time_stage("train", time.time() - started)
        write_text_atomic(run.out / DONE, f"{run.total_steps}\n")
    if config.trackers:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    metrics, base = read_jsonl(run.metrics_path), run.trainable.release().eval()
    return TrainResult(run.out, solution, metrics, run.heldout, config.model, base)


def _save_checkpoint(run: _Run, step: int) -> None:
    """Write the checkpoint of `step` (optimiser masters, optimiser and scheduler state)."""
    keep = run.config.keep_checkpoints
    save_checkpoint(run.checkpoints, step, run.params, run.optimizer, run.scheduler, keep)


def _finished(out: Path, config: TrainConfig, model: nn.Module | None) -> TrainResult:
    """The saved result of a finished run (DONE written): nothing is trained or written."""
    from emlab.data.chat import read_chat_jsonl
    from emlab.solutions import load_solution

    heldout = read_chat_jsonl(out / HELDOUT) if (out / HELDOUT).is_file() else []
    base = model.eval() if model is not None else None
    return TrainResult(
        out,
        load_solution(out / "solution"),
        read_jsonl(out / "metrics.jsonl"),
        heldout,
        config.model,
        base,
        finished_before=True,
    )


def _source(
    given: list[Conversation] | EncodedSet | None, path: str | None, field_name: str, what: str
) -> str:
    """How messages name a data set: its config field and file, or the conversations passed in."""
    return (
        f"{field_name} ({path})"
        if given is None and path is not None
        else f"the {what} conversations passed to train()"
    )


def _evaluate(run: _Run) -> dict[str, float]:
    """The evaluator's numbers for the model being trained (in eval mode, without gradients)."""
    model = unwrap_training(run.wrapped)
    model.eval()
    with torch.no_grad(), run.trainable.evaluated(model) as evaluated:
        numbers = run.evaluator(evaluated)
    model.train()
    return numbers


def _micro_step(
    run: _Run, batch: list[Encoded], ood: list[int], scales: tuple[float, float], last: bool
) -> tuple[float, float]:
    """Forward and backward of one micro-batch (`ood`: indices of its OOD rows, `scales`: what
    the SFT and KL token sums are multiplied by before backward, `last`: the step's last
    micro-batch); returns its (SFT token-loss sum, KL token sum).

    The SFT rows and the OOD rows go through separate passes, each followed by its backward, so
    their activations are never held together; gradients synchronise across processes only in
    the last backward of the step. Logits exist one chunk of scored rows at a time (head_loss).
    The OOD passes (base and tuned) run without dropout, the SFT pass with the model's.
    """
    wrapped, accelerator = run.wrapped, run.accelerator
    model = unwrap_training(wrapped)
    head = OutputHead(model)
    inputs = _to_device(collate(batch, run.pad_id), accelerator)
    labels = inputs["labels"][:, 1:]
    scored = labels != IGNORE  # (B, T-1)
    with _sync_unless(accelerator, wrapped, last and not ood):
        hidden = final_hidden(wrapped, inputs)[:, :-1][scored]  # (N, d)
        sft = head_loss(hidden, head, cross_entropy_chunks(labels[scored]))
        accelerator.backward(sft * scales[0])
    if not ood:
        return sft.item(), 0.0
    ood_inputs = _to_device(collate([run.ood_examples[i] for i in ood], run.pad_id), accelerator)
    scope = run.config.kl.scope
    positions = kl_positions(ood_inputs["labels"], ood_inputs["attention_mask"], scope)  # (O, T-1)
    # the base pass runs (and frees its activations) before the tuned pass keeps its own
    with without_dropout(wrapped):
        if run.top_k:
            base = run.top_k.target(ood)
        else:
            hidden = base_hidden(run.trainable, model, ood_inputs, positions)
            base = ExactBase(run.trainable, model, hidden)
        with _sync_unless(accelerator, wrapped, last):
            hidden = final_hidden(wrapped, ood_inputs)[:, :-1][positions]
            kl = head_loss(hidden, head, kl_chunks(base, run.config.kl.direction))
            accelerator.backward(kl * scales[1])
    return sft.item(), kl.item()


def _keep_masters(trainable: Trainable, accelerator: Accelerator) -> None:
    """Float32 master weights for the optimiser (see `Trainable`), kept by emlab, or by the engine
    under FSDP (which upcasts the parameters to float32 under mixed precision) and DeepSpeed
    (whose bf16 optimiser keeps float32 masters); raises EmlabError where neither would."""
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        trainable.keep_masters(accelerator.device)
        return
    low = sorted(
        {str(p.dtype) for p in trainable.named_parameters().values() if p.dtype != torch.float32}
    )
    if low and accelerator.mixed_precision == "no":
        raise EmlabError(
            f"{accelerator.distributed_type.value} with trainable {', '.join(low)} parameters and"
            " mixed_precision 'no' would update them in their own precision (small updates round"
            " away): set mixed_precision to 'bf16' (the engine then keeps float32 master weights)"
            " or load the model in float32."
        )


def _sync_unless(
    accelerator: Accelerator, wrapped: nn.Module, sync: bool
) -> AbstractContextManager:
    """Gradient synchronisation on (last backward of a step) or off (accelerate's no_sync)."""
    return nullcontext() if sync else accelerator.no_sync(wrapped)


def _to_device(batch: dict[str, torch.Tensor], accelerator: Accelerator) -> dict[str, torch.Tensor]:
    return {k: v.to(accelerator.device) for k, v in batch.items()}


@contextmanager
def _out_of_memory_advice(config: TrainConfig) -> Iterator[None]:
    """Turn an out-of-memory error in a micro-step (forward, base logits, backward) into advice."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise EmlabError(
            f"out of memory at batch_size {config.batch_size}: try batch_size"
            f" {max(1, config.batch_size // 2)} with grad_accum {config.grad_accum * 2} (same"
            " effective batch)."
        ) from None


def _n_trained(batch: list[Encoded]) -> int:
    """Tokens the SFT loss averages over (labelled next tokens)."""
    return sum(sum(label != IGNORE for label in e.labels[1:]) for e in batch)


def _n_kl_positions(batch: list[Encoded], scope: str) -> int:
    """Positions the KL term averages over (see `kl_positions`)."""
    return _n_trained(batch) if scope == "assistant" else sum(len(e.input_ids) - 1 for e in batch)


def _data(
    config: TrainConfig,
    train_data: list[Conversation] | EncodedSet | None,
    ood_data: list[Conversation] | EncodedSet | None,
) -> tuple[list[Conversation] | EncodedSet, list[Conversation], list[Conversation] | EncodedSet]:
    if train_data is not None and (ood_data is not None or config.data.ood is None):
        return train_data, [], ood_data or []
    from emlab.data.chat import read_chat_jsonl, split_heldout

    heldout: list[Conversation] = []
    if train_data is None:
        if config.data.train is None:
            raise EmlabError("no training data: set data.train to a chat JSONL file.")
        train_data = read_chat_jsonl(config.data.train)
        if config.data.heldout_fraction > 0:
            train_data, heldout = split_heldout(
                train_data, config.data.heldout_fraction, config.data.split_seed
            )
    if ood_data is None and config.data.ood is not None:
        ood_data = read_chat_jsonl(config.data.ood)
    return train_data, heldout, ood_data or []


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop the metric rows a resumed run writes again: those after `step`, the checkpoint it
    starts from, or all of them when it starts from scratch (step 0 is evaluated again)."""
    rows = [r for r in read_jsonl(path) if r["step"] <= step] if step > 0 else []
    if path.exists():
        write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
