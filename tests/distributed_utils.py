"""Run a function on W CPU processes with a gloo process group (for parity tests)."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (for MASTER_PORT / --master_port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn: Callable, args: tuple, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # The result is on disk and the group is down. Leave without interpreter teardown, where
    # gloo's threads occasionally abort the process ("terminate called without an active
    # exception", SIGABRT, in about one run in twenty) after everything has succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_distributed(fn: Callable[..., Any], world_size: int = 2, *args: Any) -> list[Any]:
    """Spawn ``world_size`` processes running ``fn(rank, world_size, *args)``.

    ``fn`` must be a module-level function (picklable); its return value (tensors,
    dicts of tensors) is saved per rank and returned as a list indexed by rank.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_worker, args=(world_size, free_port(), fn, args, out_dir), nprocs=world_size)
        return [
            torch.load(os.path.join(out_dir, f"rank{r}.pt"), weights_only=True)
            for r in range(world_size)
        ]


def torchrun_train(run_dir, overrides: list[str], cwd, nproc: int = 2, timeout: int = 300) -> None:
    """``torchrun --nproc_per_node=nproc -m mmret.train <overrides>`` into ``run_dir``
    (1 OpenMP thread per process); fails the test with the stderr tail on a non-zero exit."""
    import subprocess
    from pathlib import Path

    cmd = [str(Path(sys.executable).parent / "torchrun"), f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", "-m", "mmret.train", *overrides,
           f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
