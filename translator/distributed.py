"""Data-parallel training over several processes (torch DistributedDataParallel), started by torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE in each worker's environment; without
them `session()` yields the single-process `Context` whose collective helpers return their inputs
unchanged, so the training loop has one code path and a plain run behaves exactly as before.

How a step is shared (see `Trainer.train_step`): every rank builds the same seeded, length-bucketed
batch order for the epoch and takes every world-th batch (`shard_batches`), so one optimizer step
trains on the union of `world_size` consecutive batches. Each rank normalises its summed token loss by
the *global* token count and multiplies by the world size before DDP averages the gradients, so N
ranks with batches B_1..B_N give the gradient of one process training on B_1 ∪ ... ∪ B_N.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from translator.config import ConfigError

log = logging.getLogger("translator.distributed")

T = TypeVar("T")

# How long a rank waits for the others in a collective (TRANSLATOR_DIST_TIMEOUT_MINUTES). Rank 0
# validates (greedy decoding of the whole dev set) while the others wait, so this must cover the slowest
# validation, not just a step.
DEFAULT_TIMEOUT_MINUTES = 60.0


class ReplicaMismatch(RuntimeError):
    """The ranks' weights differ: gradients were not averaged as they must be (a bug, not user error)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job. The default is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, logs and writes files; the others only train."""
        return self.rank == 0

    # --- collectives: no-ops in a single process ---------------------------------------------------
    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so token counts stay exact)."""
        if not self.enabled:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def any_of(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag is true on every rank if it is true on any: stop decisions (time budget, Ctrl-C)
        are local, but all ranks must leave the loop at the same step or the others wait forever."""
        if not self.enabled:
            return tuple(bool(f) for f in flags)
        return tuple(total > 0 for total in self.all_sum([float(bool(f)) for f in flags]))

    def broadcast(self, obj: T) -> T:
        """Rank 0's object on every rank (e.g. a validation result, the tokenizer it trained)."""
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0, device=self._object_device)
        return holder[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's object, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    @property
    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


SINGLE = Context()


def env_context(environ: Mapping[str, str] = os.environ) -> Context:
    """The job layout torchrun describes in the environment (a single process when it is absent)."""
    if "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        values = {name: int(environ.get(name, default)) for name, default in
                  (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0"), ("LOCAL_WORLD_SIZE", "1"))}
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers "
                          "(start distributed training with torchrun)") from None
    world, rank = values["WORLD_SIZE"], values["RANK"]
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} and WORLD_SIZE {world} do not describe a job (start it with torchrun)")
    if world == 1:
        return SINGLE
    return Context(rank, world, values["LOCAL_RANK"], max(values["LOCAL_WORLD_SIZE"], 1))


@contextlib.contextmanager
def session(environ: Mapping[str, str] = os.environ) -> Iterator[Context]:
    """Join the process group torchrun set up (gloo on CPU, nccl with CUDA) and leave it at the end."""
    context = env_context(environ)
    if not context.enabled:
        yield context
        return
    if torch.cuda.is_available():
        backend, device = "nccl", torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
    dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size, timeout=timeout(environ))
    context = Context(context.rank, context.world_size, context.local_rank, context.local_world_size, device)
    if not context.is_main:  # one log, from rank 0; the others speak only about problems
        logging.getLogger("translator").setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s), this is rank %d", context.world_size, backend, context.rank)
    try:
        yield context
    finally:
        dist.destroy_process_group()


def timeout(environ: Mapping[str, str] = os.environ) -> timedelta:
    text = environ.get("TRANSLATOR_DIST_TIMEOUT_MINUTES", "")
    try:
        minutes = float(text) if text else DEFAULT_TIMEOUT_MINUTES
    except ValueError:
        minutes = -1.0
    if not minutes > 0:
        raise ConfigError(f"TRANSLATOR_DIST_TIMEOUT_MINUTES must be a number of minutes > 0, got {text!r}")
    return timedelta(minutes=minutes)


def threads_per_rank(requested: int, context: Context, cores: int | None = None) -> int:
    """torch threads for this process: `requested`, or the machine's cores shared by the ranks on it
    (ranks × threads ≤ cores: oversubscribed cores make every rank slower than one process alone)."""
    if requested > 0:
        return requested
    cores = cores or os.cpu_count() or 1
    return max(1, cores // context.local_world_size)


def shard_batches(batches: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of one epoch's batches: batch i goes to rank i mod world_size.

    The list is first padded by wrapping around to a multiple of world_size (as torch's
    DistributedSampler pads), so every rank runs the same number of steps and none waits forever
    for a partner. Step k therefore trains on batches k·N … k·N + N − 1 of the epoch's order.
    """
    if world_size == 1:
        return list(batches)
    if not batches:
        return []
    total = -(-len(batches) // world_size) * world_size
    padded = [batches[i % len(batches)] for i in range(total)]
    return padded[rank::world_size]


def wrap_model(model: nn.Module, context: Context) -> nn.Module:
    """The module to train: DDP (which averages gradients during backward) or the model itself."""
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def check_replicas(checksums: Sequence[str]) -> None:
    """Fail loudly (on every rank, which all hold the gathered list) if the replicas diverged."""
    if len(set(checksums)) > 1:
        raise ReplicaMismatch("the ranks' weights differ after the same steps: " +
                              ", ".join(f"rank {r}: {c[:12]}" for r, c in enumerate(checksums)))
