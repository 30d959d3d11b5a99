"""Imported first by :mod:`mmret.engine` (so by every engine module): the trainer needs the
``[train]`` extra. Without it, importing the engine raises
:class:`~mmret.extras.MissingExtraError` naming the extra, not a bare ``No module named
'omegaconf'`` from whichever engine module happened to import it first."""

from mmret.extras import require

require("hydra", "train")
require("omegaconf", "train")
