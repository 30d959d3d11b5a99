"""Subprocess driver of the kill tests: train the tiny shapes run and, depending on
``mode``, SIGKILL / SIGTERM itself at a chosen moment.

    python -m tests.faults.kill_driver DATA_ROOT RUN_DIR MODE [resume]

MODE: ``none``; ``kill_in_step:N`` (SIGKILL inside optimiser step N, before its update);
``kill_in_save:N`` (SIGKILL in the N-th checkpoint write, after model.safetensors is
written into the temporary folder); ``kill_between_renames:N`` (SIGKILL in the N-th
checkpoint write, between moving ``last`` aside and moving the new one in);
``sigterm_twice:N`` (two SIGTERMs inside step N: the second must end the process at once).
"""

from __future__ import annotations

import os
import signal
import sys


def compose(data_root: str, resume: bool):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mmret.engine.config import conf_dir, register_configs

    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return hydra_compose("train", overrides=[
            "experiment=shapes_clip", f"data.root={data_root}", "data.train.max_images=4",
            "data.eval.image_text.max_images=8",
            "trainer.batch_size=8", "trainer.max_steps=6", "trainer.warmup_steps=2",
            "trainer.checkpoint_every=1", "trainer.log_every=1", "trainer.num_threads=1",
            "trainer.deterministic=true", "logger.progress_bar=false", "logger.plots=false",
            f"resume={'true' if resume else 'false'}",
        ])


def install(mode: str) -> None:
    from mmret.engine import checkpoint as ckpt
    from mmret.engine.trainer import Trainer

    if mode == "none":
        return
    kind, _, n = mode.partition(":")
    target = int(n)
    calls = {"step": 0, "save": 0}
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731

    if kind in ("kill_in_step", "sigterm_twice"):
        original = Trainer._optimizer_step

        def step(self):
            calls["step"] += 1
            if calls["step"] == target:
                if kind == "kill_in_step":
                    die()
                os.kill(os.getpid(), signal.SIGTERM)
                os.kill(os.getpid(), signal.SIGTERM)
            return original(self)

        Trainer._optimizer_step = step
    elif kind in ("kill_in_save", "kill_between_renames"):
        original_save, original_replace = ckpt.save_checkpoint, os.replace

        def save(*args, **kwargs):
            calls["save"] += 1
            return original_save(*args, **kwargs)

        def save_model(model, filename, *args, **kwargs):
            from safetensors.torch import save_model as real

            real(model, filename, *args, **kwargs)
            if kind == "kill_in_save" and calls["save"] == target:
                die()

        def replace(src, dst, *args, **kwargs):
            original_replace(src, dst, *args, **kwargs)
            if (kind == "kill_between_renames" and calls["save"] == target
                    and os.path.basename(str(dst)).startswith(".prev-")):
                die()

        ckpt.save_checkpoint = save
        ckpt.save_model = save_model
        ckpt.os.replace = replace
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def main() -> None:
    data_root, run_dir, mode = sys.argv[1:4]
    resume = len(sys.argv) > 4 and sys.argv[4] == "resume"
    from mmret.engine.run import run_training

    install(mode)
    run_training(compose(data_root, resume), run_dir)


if __name__ == "__main__":
    main()
