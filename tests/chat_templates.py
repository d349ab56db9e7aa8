"""In-process imitations of other families' chat templates (on the tiny tokenizer's ChatML
markers)."""

from __future__ import annotations

import copy

from emlab.models.chat import IGNORE, ChatFormat, set_chat_format

GEMMA_LIKE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{%"
    " endif %}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{"
    " raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%"
    " endif %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] | trim + '<|im_end|>\n' }}{%"
    " endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL_LIKE = (
    "{{ '<s>' }}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{"
    " raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%"
    " endif %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{"
    " m['content'] + '<|im_end|>' }}{% endif %}{% endfor %}"
)
# Qwen3's rule: the assistant turn after the last user turn gets a think block (empty when the
# message has none); the generation prompt gets the empty block only with enable_thinking false
QWEN3_LIKE = (
    "{%- set ns = namespace(last_query=0) %}{%- for m in messages %}{% if m['role'] == 'user' %}{%"
    " set ns.last_query = loop.index0 %}{% endif %}{% endfor %}{%- for m in messages %}{%- if"
    " m['role'] == 'assistant' %}{%- set content = m['content'] %}{% set reasoning = '' %}{%- if"
    " '</think>' in content %}{% set reasoning ="
    " content.split('</think>')[0].split('<think>')[-1].strip('\n') %}{% set content ="
    " content.split('</think>')[-1].lstrip('\n') %}{% endif %}{%- if loop.index0 > ns.last_query"
    " and (loop.last or reasoning) %}{{- '<|im_start|>assistant\n<think>\n' + reasoning +"
    " '\n</think>\n\n' + content + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>assistant\n' +"
    " content + '<|im_end|>\n' }}{%- endif %}{%- else %}{{- '<|im_start|>' + m['role'] + '\n' +"
    " m['content'] + '<|im_end|>\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{-"
    " '<|im_start|>assistant\n' }}{%- if enable_thinking is defined and enable_thinking is false"
    " %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}"
)


def with_template(tokenizer, template: str, fmt: ChatFormat | None = None):
    """A copy of `tokenizer` with `template` (and `fmt` attached when given); the fixture stays
    untouched."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return set_chat_format(tok, fmt) if fmt else tok


def trained_segments(tokenizer, enc):
    """Decode each maximal run of labelled tokens."""
    segments, current = [], []
    for tok, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != IGNORE:
            assert label == tok
            current.append(tok)
        elif current:
            segments.append(tokenizer.decode(current))
            current = []
    if current:
        segments.append(tokenizer.decode(current))
    return segments
