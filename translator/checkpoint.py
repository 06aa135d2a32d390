"""Self-describing checkpoints: one file with weights, config, tokenizer and training state.

Written atomically (temp file, fsync, rename) so a crash never leaves a half-written model, and read
with ``torch.load(weights_only=True)`` so a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import torch

from translator.io import atomic_write

log = logging.getLogger(__name__)

FORMAT = "koen-translator-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A file is missing, truncated, corrupt or not a checkpoint of this toolkit."""


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, torch.Tensor],
    config: dict[str, Any],
    tokenizer_proto: bytes,
    training_state: Optional[dict[str, Any]] = None,
    metrics: Optional[dict[str, Any]] = None,
) -> None:
    """Atomically write a checkpoint. `training_state` (optimizer, scheduler, RNG states, data
    position, step) is what `--resume` needs; inference-only checkpoints may leave it out."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "torch_version": str(torch.__version__),
        "config": config,
        "tokenizer": tokenizer_proto,
        "model": model_state,
        "training": training_state,
        "metrics": metrics or {},
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint; any problem becomes one readable `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, struct.error, pickle.UnpicklingError,
            zipfile.BadZipFile, OSError) as err:  # non-zip garbage reaches the legacy unpickler: IndexError, struct.error
        reason = _first_reason(err)
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt or not a torch file: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (was it written by another toolkit?)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is not supported (this toolkit reads {FORMAT_VERSION})")
    for key, kind in (("config", dict), ("tokenizer", bytes), ("model", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: checkpoint is missing its {key}")
    return payload


def _check_archive(path: Path) -> None:
    """Verify the CRC-32 of every member: torch.load does not, so flipped bytes inside the weights
    would otherwise load silently as different numbers."""
    if not zipfile.is_zipfile(path):
        return  # not a zip at all: torch.load below says what is wrong
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt archive: {_first_reason(err)})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (checksum mismatch in {bad}); re-copy or re-export it")


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load a checkpoint's weights into the model its config describes, whatever floating dtype they
    were stored in (exports may be fp16; the model computes in float32). A mismatch (edited config,
    foreign or damaged weights) is a `CheckpointError`, not torch's multi-line RuntimeError."""
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(err).__name__)  # lines[0] is generic
        raise CheckpointError(f"{source}: the weights do not fit the model its config describes ({detail[:160]})") from None


def _first_reason(err: BaseException) -> str:
    """The informative line of a torch.load error (its first line is often generic advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            detail = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            if detail:
                return detail[:160]
    generic = ("Weights only load failed", "Please file an issue", "Check the documentation of torch.load", "(1)", "(2)")
    for line in lines:
        if not line.startswith(generic):
            return line[:160]
    return lines[0][:160] if lines else type(err).__name__


def _per_storage(weights: dict[str, torch.Tensor], convert) -> dict[str, torch.Tensor]:
    """Apply `convert(name, tensor)` once per storage: tied weights (shared embeddings, output layer)
    share one, and the file written from the result should store them once too."""
    converted: dict[tuple, torch.Tensor] = {}
    result = {}
    for name, tensor in weights.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()))
        if key not in converted:
            converted[key] = convert(name, tensor)
        result[name] = converted[key]
    return result


def weights_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes: equal exactly when the weights are."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def average_checkpoints(sources: list[str | Path], target: str | Path) -> dict[str, Any]:
    """Write the element-wise mean of several checkpoints' weights (as in OpenNMT's average_models):
    they must share model config and tokenizer, e.g. come from one run and its --resume continuations,
    or from fine-tuning runs of one initial model ("model soups")."""
    payloads, steps, kept, seen = [], [], [], set()
    for path in sources:
        payload = load_checkpoint(path)
        step = (payload.get("metrics") or {}).get("step")
        checksum = weights_checksum(payload["model"])
        if checksum in seen:
            # best.pt and last.pt are copies of a step-*.pt: counting them twice would weight that step double.
            log.warning("average: %s has the same weights as an earlier checkpoint (step %s); counted once", path, step)
            continue
        seen.add(checksum)
        payloads.append(payload)
        steps.append(step)
        kept.append(path)
    if len(payloads) < 2:
        raise ValueError("average needs at least two different checkpoints")
    sources, first = kept, payloads[0]
    for path, payload in zip(sources[1:], payloads[1:]):
        if payload["config"].get("model") != first["config"].get("model") or payload["tokenizer"] != first["tokenizer"]:
            raise CheckpointError(f"{path}: a different model or vocabulary than {sources[0]}; average checkpoints of one run")
        if payload["model"].keys() != first["model"].keys():
            raise CheckpointError(f"{path}: its weights do not match {sources[0]}")

    def mean(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not tensor.is_floating_point():
            return tensor
        total = sum(payload["model"][name].double() for payload in payloads)
        return (total / len(payloads)).to(tensor.dtype)

    weights = _per_storage(first["model"], mean)
    known = [step for step in steps if step is not None]
    # The step identifies the model (`Translator.model_id`): the latest one averaged in.
    metrics = {"step": max(known) if known else 0, "averaged_steps": steps,
               "averaged_from": [Path(path).name for path in sources]}
    save_checkpoint(target, weights, first["config"], first["tokenizer"], None, metrics)
    return metrics


def export_checkpoint(source: str | Path, target: str | Path, dtype: str = "float16") -> dict[str, Any]:
    """Write an inference-only copy of a checkpoint: no optimizer or training state, floating weights
    stored as `dtype` (float16 halves the size; `Translator.load` computes in float32 either way)."""
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {', '.join(dtypes)}, got {dtype!r}")
    payload = load_checkpoint(source)
    weights = _per_storage(payload["model"], lambda _, t: t.to(dtypes[dtype]) if t.is_floating_point() else t)
    metrics = {**payload.get("metrics", {}), "exported_from": Path(source).name, "dtype": dtype}
    save_checkpoint(target, weights, payload["config"], payload["tokenizer"], None, metrics)
    return metrics
