"""Train with open_clip_train and any mmret objective (docs/open_clip.md).

``python -m mmret.integrations.open_clip --mmret-objective one_to_k
--mmret-objective-kwargs '{"num_langs": 1}' -- <open_clip_train flags>`` runs
open_clip_train's own ``main``; :func:`run` is the same from Python and
:func:`export_open_clip_checkpoint` turns a run's checkpoint into weights that
``open_clip.create_model_and_transforms(..., pretrained=...)`` loads.

:data:`MODEL_CONFIGS` is the folder of the open_clip model configs shipped with mmret
(``mmret-oc-tiny``: the tiny CPU model of docs/open_clip.md), for ``--mmret-model-config``
or ``open_clip.add_model_config``.
"""

from pathlib import Path

from mmret.integrations.open_clip.data import (
    BatchExtras,
    ExtrasLoader,
    csv_with_image_ids,
    split_extras,
)
from mmret.integrations.open_clip.export import export_open_clip_checkpoint, model_state_dict
from mmret.integrations.open_clip.launch import OpenClipRun, has_task_api, run
from mmret.integrations.open_clip.module import (
    MODEL_OUTPUTS,
    MMRetTrainingModule,
    freeze_unused_model_scalars,
)
from mmret.integrations.open_clip.objective import ObjectiveLoss, build_objective, model_embed_dim

#: open_clip model configs shipped with mmret (``mmret-oc-tiny.json``)
MODEL_CONFIGS = Path(__file__).parent / "model_configs"

#: open_clip versions this integration is tested with (docs/open_clip.md)
SUPPORTED_OPEN_CLIP = ("3.3.0 (installed API)", "main with open_clip.create_task (task layer)")

__all__ = [
    "MODEL_CONFIGS",
    "MODEL_OUTPUTS",
    "SUPPORTED_OPEN_CLIP",
    "BatchExtras",
    "ExtrasLoader",
    "MMRetTrainingModule",
    "ObjectiveLoss",
    "OpenClipRun",
    "build_objective",
    "csv_with_image_ids",
    "export_open_clip_checkpoint",
    "freeze_unused_model_scalars",
    "has_task_api",
    "model_embed_dim",
    "model_state_dict",
    "run",
    "split_extras",
]
