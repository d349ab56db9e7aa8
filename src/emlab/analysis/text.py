"""Pre-training text: local files, a streamed HF dataset, or an offline fallback; fixed-length
chunks.

Sources (`load_texts`): a .txt file (one document), .jsonl (a "text" field per line),
.parquet (a "text" column), a folder of such files, "pydoc" (the standard library's
`pydoc_data.topics`, ~465k characters of English documentation, no download), or any other
string as a Hugging Face dataset id streamed with `datasets` (needs network).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from emlab.errors import DataError, EmlabError
from emlab.models.chat import pad_sequences, padding_id

OFFLINE = "pydoc"
SUFFIXES = (".txt", ".jsonl", ".parquet")


def pydoc_texts() -> list[str]:
    """The standard library's help topics as documents (offline, ~465k characters)."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def read_texts(path: str | Path, field: str = "text") -> list[str]:
    """Documents of a .txt / .jsonl / .parquet file, or of every such file in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES)
        if not files:
            raise DataError(
                path, None, "folder has no .txt, .jsonl or .parquet file", "Put text files in it"
            )
        return [t for f in files for t in read_texts(f, field)]
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row.get(field), str):
                raise DataError(
                    path,
                    n,
                    f"no string field {field!r}",
                    f'Write one {{"{field}": "..."}} object per line',
                )
            texts.append(row[field])
        return texts
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        if field not in frame.columns:
            raise DataError(
                path,
                None,
                f"no column {field!r} (columns: {list(frame.columns)})",
                f"Name the text column {field!r}",
            )
        return frame[field].astype(str).tolist()
    raise DataError(
        path, None, f"unknown text file type {path.suffix!r}", f"Use one of {', '.join(SUFFIXES)}"
    )


def stream_hf_texts(
    name: str, n_docs: int, split: str = "train", config: str | None = None, field: str = "text"
) -> list[str]:
    """The first `n_docs` documents of a Hugging Face dataset, streamed (no full download)."""
    try:
        import datasets
    except ImportError:
        raise EmlabError(
            f"reading the HF dataset {name!r} needs the `datasets` package: `pip install datasets`;"
            f" or use local files, or '{OFFLINE}' for offline text."
        ) from None
    stream = datasets.load_dataset(name, config, split=split, streaming=True)
    texts = []
    for row in stream:
        texts.append(row[field])
        if len(texts) == n_docs:
            break
    return texts


def load_texts(source: str | Path, n_docs: int = 1000, field: str = "text") -> list[str]:
    """Documents from `source`: 'pydoc', a local file or folder, or a HF dataset id."""
    if str(source) == OFFLINE:
        return pydoc_texts()[:n_docs]
    if Path(source).exists():
        return read_texts(source, field)[:n_docs]
    return stream_hf_texts(str(source), n_docs, field=field)


def chunk_texts(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], seq_len: int, max_chunks: int
) -> list[list[int]]:
    """Token chunks of at most `seq_len` (each document cut separately; chunks under 2 tokens
    dropped)."""
    chunks: list[list[int]] = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), seq_len):
            piece = ids[start : start + seq_len]
            if len(piece) >= 2:
                chunks.append(piece)
            if len(chunks) == max_chunks:
                return chunks
    return chunks


def pad_chunks(
    chunks: list[list[int]], pad_id: int, batch_size: int
) -> list[dict[str, torch.Tensor]]:
    """Right-padded batches: input_ids and attention_mask # (B, T), mask 0 on padding."""
    batches = []
    for i in range(0, len(chunks), batch_size):
        ids, mask = pad_sequences(chunks[i : i + batch_size], pad_id)
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def text_batches(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    seq_len: int = 128,
    batch_size: int = 8,
    max_chunks: int = 64,
) -> list[dict[str, torch.Tensor]]:
    """Tokenise documents into fixed-length chunks and pad them into batches with attention
    masks."""
    chunks = chunk_texts(tokenizer, texts, seq_len, max_chunks)
    if not chunks:
        raise EmlabError("the texts give no chunk of 2 or more tokens: give more text.")
    pad = padding_id(tokenizer)
    return pad_chunks(chunks, pad, batch_size)
