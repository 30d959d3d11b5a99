"""``mmret-search``: retrieval pipelines over a retrieval set, measured like IR research.

Examples::

    mmret-search experiment=search_manuals_en           # bm25, dense, hybrid_rrf, easyrag
    mmret-search data=stsb +retrieval@pipelines.dense=dense
    mmret-search data=beir data.loader.folder=/datasets/scifact max_queries=100

Composes ``conf/search/search.yaml`` (data group ``conf/search/data/``, experiments
``conf/search/experiment/``) with pipelines from ``conf/retrieval/<name>.yaml``; builds the
routes, searches, fuses, reranks and evaluates (:func:`mmret.retrieval.search.run_search`);
writes ``runs/<pipeline>.{trec,json}``, ``metrics.json``, ``results.md`` and ``search.png``
into the Hydra run directory and prints the table. Any error prints one line
``mmret-search: error: <message>`` and exits with status 1 (``HYDRA_FULL_ERROR=1``: the
traceback).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import mmret.conf
from mmret.extras import require

PROG = "mmret-search"
SEARCH_CONF = Path(mmret.conf.__file__).resolve().parent / "search"

hydra = require("hydra", "train")


def run_from_config(cfg: Any, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Load the data, run every pipeline of ``cfg.pipelines`` and write the outputs;
    returns ``{"result": SearchResult, "paths": {...}}``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mmret.retrieval.datasets.base import RetrievalSet
    from mmret.retrieval.search import run_search, write_search_outputs

    for module in cfg.get("imports") or []:
        importlib.import_module(str(module))
    if int(cfg.get("num_threads") or 0) > 0:
        import torch

        torch.set_num_threads(int(cfg.num_threads))
    data = instantiate(cfg.data.loader)
    if not isinstance(data, RetrievalSet):
        raise TypeError(f"data.loader must return a RetrievalSet, got {type(data).__name__}")
    if cfg.get("max_queries"):
        data = data.head(int(cfg.max_queries))
    def plain(key: str) -> dict[str, Any]:
        node = cfg.get(key)
        return OmegaConf.to_container(node, resolve=True) if node is not None else {}

    pipelines = plain("pipelines")
    result = run_search(data, pipelines, k=int(cfg.k), metrics=list(cfg.metrics),
                        recall_depths=[int(d) for d in cfg.recall_depths], ties=str(cfg.ties),
                        rerankers=plain("rerankers"),
                        log=lambda line: print(line, flush=True))
    paths = write_search_outputs(result, out_dir, write_runs=bool(cfg.write_runs),
                                 plots=bool(cfg.plots))
    return {"result": result, "paths": paths}


def error_line(exc: BaseException) -> str:
    """``mmret-search: error: <message>`` on one line; Hydra's instantiation wrapper is
    looked through to the loader's own error (which names file, line and id)."""
    while type(exc).__name__ == "InstantiationException" and exc.__cause__ is not None:
        exc = exc.__cause__
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(message).split()) or type(exc).__name__
    return f"{PROG}: error: {text}"


@hydra.main(config_path=str(SEARCH_CONF), config_name="search", version_base="1.3")
def _main(cfg: Any) -> float:
    from hydra.core.hydra_config import HydraConfig

    try:
        out = run_from_config(cfg, HydraConfig.get().runtime.output_dir)
    except Exception as exc:  # one line for people, the traceback on request
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(error_line(exc), file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    result = out["result"]
    print(result.table())
    for name, path in out["paths"].items():
        if not name.startswith("run:"):
            print(f"{name}: {path}")
    return float(next(iter(result.pipelines.values())).metrics[result.headline])


def main() -> None:
    """Console entry point (``mmret-search``)."""
    _main()


if __name__ == "__main__":
    main()
