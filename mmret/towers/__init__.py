"""Tower factory: mmret's own tiny models, open_clip models, timm + Hugging Face pairs and
plugins' towers (:func:`register_tower`).

``create_towers(name, pretrained=None, **kwargs) -> Towers(model, train_transform,
eval_transform, tokenizer)``. Every model follows open_clip's API (see
:class:`~mmret.towers.dual_encoder.DualEncoder`), so open_clip code and mmret code accept
each other's models.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from importlib import resources
from typing import Any, NamedTuple

from torch import nn

from mmret.registry import Registry
from mmret.towers.dual_encoder import DualEncoder, set_trainable
from mmret.towers.tokenizers import HashTokenizer, HFTokenizer

__all__ = [
    "TOWERS",
    "DualEncoder",
    "TowerLoadError",
    "Towers",
    "create_towers",
    "list_tower_configs",
    "list_towers",
    "register_tower",
    "set_trainable",
]


class TowerLoadError(RuntimeError):
    """A model or its pretrained weights could not be created or loaded."""


class Towers(NamedTuple):
    model: nn.Module
    train_transform: Any
    eval_transform: Any
    tokenizer: Any


def list_tower_configs() -> list[str]:
    """Names of mmret's own architectures (JSON files in ``mmret/towers/configs``)."""
    folder = resources.files("mmret.towers") / "configs"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def load_tower_config(name: str) -> dict[str, Any]:
    path = resources.files("mmret.towers") / "configs" / f"{name}.json"
    if not path.is_file():
        raise TowerLoadError(f"no mmret tower config {name!r}; known: {list_tower_configs()}")
    return json.loads(path.read_text())


def _image_transform(image_size: int, mean: list[float], std: list[float]) -> Any:
    from torchvision import transforms as T  # imported lazily: torchvision is slow to import

    return T.Compose(
        [
            T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.Lambda(_to_rgb),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


def _to_rgb(image: Any) -> Any:
    return image.convert("RGB") if hasattr(image, "convert") else image


def _create_mmret_towers(name: str, pretrained: str | None, overrides: dict[str, Any]) -> Towers:
    cfg = load_tower_config(name)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    from mmret.towers.tiny import TinyTextTransformer, TinyVisionTransformer

    model = DualEncoder(
        TinyVisionTransformer(cfg["embed_dim"], **cfg["vision"]),
        TinyTextTransformer(cfg["embed_dim"], **cfg["text"]),
        init_temperature=cfg["init_temperature"],
        init_logit_bias=cfg["init_logit_bias"],
    )
    # the resolved architecture: create_towers(name, **kwargs) rebuilds exactly this model
    model.mmret_spec = {"name": name, "kwargs": json.loads(json.dumps(cfg))}
    if pretrained:
        from mmret.checkpoint import load_weights

        load_weights(model, pretrained)
    transform = _image_transform(cfg["vision"]["image_size"], cfg["image_mean"], cfg["image_std"])
    tokenizer = HashTokenizer(cfg["text"]["vocab_size"], cfg["text"]["context_length"])
    # Geometric/colour augmentation would change what captions say (positions, colours):
    # the tiny towers train on the evaluation transform.
    return Towers(model, transform, transform, tokenizer)


def _hub_cache(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub always ships with open_clip
        return os.path.expanduser("~/.cache/huggingface/hub")


def _create_open_clip_towers(
    name: str, pretrained: str | None, cache_dir: str | None, kwargs: dict[str, Any]
) -> Towers:
    import open_clip

    kwargs.setdefault("output_dict", True)  # open_clip's dict output (mmret's contract)
    try:
        model, train_tf, eval_tf = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, cache_dir=cache_dir, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    except Exception as exc:  # network/hub errors come in many types
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TowerLoadError(
            f"could not create open_clip model {name!r} with pretrained tag {pretrained!r} "
            f"(cache: {_hub_cache(cache_dir)}): {reason}. Without network access, put the "
            "weights in that cache, pass a local file as `pretrained`, or use pretrained=None."
        ) from None
    model.mmret_spec = {"name": name, "kwargs": dict(kwargs)}
    return Towers(model, train_tf, eval_tf, tokenizer)


def _create_timm_hf_towers(
    vision_model: str,
    text_model: str,
    embed_dim: int = 512,
    vision_pretrained: bool = False,
    text_pretrained: bool = True,
    context_length: int = 64,
    init_temperature: float = 0.07,
    init_logit_bias: float | None = None,
) -> Towers:
    from mmret.towers.hf_timm import HFTextTower, TimmVisionTower

    try:
        tokenizer = HFTokenizer(text_model, context_length=context_length)
        visual = TimmVisionTower(vision_model, embed_dim, pretrained=vision_pretrained)
        text = HFTextTower(text_model, embed_dim, pretrained=text_pretrained, pad_id=tokenizer.pad_id)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TowerLoadError(
            f"could not create timm vision tower {vision_model!r} (pretrained={vision_pretrained}) "
            f"+ Hugging Face text tower {text_model!r} (pretrained={text_pretrained}) "
            f"(cache: {_hub_cache(None)}): {reason}"
        ) from None
    cfg = visual.data_config
    transform = _image_transform(cfg["input_size"][-1], list(cfg["mean"]), list(cfg["std"]))
    model = DualEncoder(visual, text, init_temperature, init_logit_bias)
    model.mmret_spec = {"name": "timm-hf", "kwargs": {
        "vision_model": vision_model, "text_model": text_model, "embed_dim": embed_dim,
        "vision_pretrained": False, "text_pretrained": False,
        "context_length": context_length, "init_temperature": init_temperature,
        "init_logit_bias": init_logit_bias,
    }}
    return Towers(model, transform, transform, tokenizer)


def create_towers(
    name: str, pretrained: str | None = None, cache_dir: str | None = None, **kwargs: Any
) -> Towers:
    """Build a dual encoder with its image transforms and tokenizer.

    Args:
        name: a registered tower (:func:`list_towers`): ``"mmret-tiny"`` (or another of
            :func:`list_tower_configs`), ``"timm-hf"`` (with ``vision_model=``,
            ``text_model=``, ``embed_dim=`` …), ``"sentence-encoder"`` (text-only,
            ``kind=`` + the keywords of
            :func:`mmret.towers.text_encoders.create_text_encoder`), a plugin's tower
            (:func:`register_tower`); otherwise any open_clip model name (``"ViT-B-32"``,
            ``"xlm-roberta-base-ViT-B-32"``, ``"hf-hub:…"``, ``"local-dir:…"``).
        pretrained: open_clip pretrained tag or weights file; for mmret configs a
            safetensors file or checkpoint folder.
        cache_dir: where hub downloads are cached (open_clip models).
        kwargs: architecture overrides for mmret configs (e.g. ``vision={"depth": 2}``),
            tower options for ``timm-hf`` or a plugin tower, or open_clip
            ``create_model_and_transforms`` keywords.

    Raises:
        TowerLoadError: unknown name (the message lists the registered towers), or
            weights that cannot be downloaded/loaded; the message names the model, the
            tag and the cache path.
    """
    if name in TOWERS:
        return _create_registered(name, pretrained, cache_dir, kwargs)
    import open_clip

    if not name.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise TowerLoadError(TOWERS.unknown_message(
            name, ", or an open_clip model name (see open_clip.list_models(), hf-hub:…, "
            "local-dir:…)"))
    return _create_open_clip_towers(name, pretrained, cache_dir, kwargs)


# --------------------------------------------------------------------------- registry

#: ``factory(**kwargs) -> Towers`` by name; a factory that declares ``pretrained`` /
#: ``cache_dir`` (or ``**kwargs``) receives them too
TowerFactory = Callable[..., Any]
TOWERS: Registry[TowerFactory] = Registry("tower")
_FACTORY_MODULES: dict[str, str] = {}


def register_tower(name: str) -> Callable[[TowerFactory], TowerFactory]:
    """Decorator: register ``factory(**kwargs) -> Towers`` as tower ``name`` (a plugin's
    own towers; see :mod:`mmret.plugins`)::

        @register_tower("my-tower")
        def my_tower(embed_dim: int = 32, pretrained: str | None = None) -> Towers:
            return Towers(DualEncoder(MyVision(embed_dim), MyText(embed_dim)), tf, tf, tok)

    ``create_towers("my-tower", embed_dim=16)`` calls it with the keywords; ``pretrained``
    and ``cache_dir`` are passed when given (an error if the factory declares neither them
    nor ``**kwargs``). The factory may return a 4-tuple instead of :class:`Towers`. Unless
    the model already carries ``mmret_spec``, it gets ``{"name": name, "kwargs": kwargs}``
    (so checkpoints rebuild it), and the factory's module is recorded in ``towers.json``
    (``imports``) for :func:`mmret.load_checkpoint` to import again.
    """

    def decorator(factory: TowerFactory) -> TowerFactory:
        if not callable(factory):
            raise TypeError(f"@register_tower({name!r}) expects a callable returning Towers")
        TOWERS.register(name)(factory)
        _FACTORY_MODULES[name] = getattr(factory, "__module__", "") or ""
        return factory

    return decorator


def list_towers() -> list[str]:
    """Names of the registered towers (mmret's configs, ``timm-hf``,
    ``sentence-encoder``, plugins'); any open_clip model name is accepted besides."""
    return TOWERS.names()


def _accepts(factory: TowerFactory, keyword: str) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return True
    return any(p.name == keyword or p.kind is p.VAR_KEYWORD for p in params)


def _create_registered(
    name: str, pretrained: str | None, cache_dir: str | None, kwargs: dict[str, Any]
) -> Towers:
    factory = TOWERS.get(name)
    call = dict(kwargs)
    for key, value in (("pretrained", pretrained), ("cache_dir", cache_dir)):
        if value is not None:
            if not _accepts(factory, key):
                raise TowerLoadError(
                    f"tower {name!r} ({getattr(factory, '__qualname__', factory)!r}) takes "
                    f"no {key} argument, got {key}={value!r}"
                )
            call[key] = value
    out = factory(**call)
    if isinstance(out, tuple) and not isinstance(out, Towers) and len(out) == 4:
        out = Towers(*out)
    if not isinstance(out, Towers):
        raise TowerLoadError(
            f"tower {name!r}: the factory returned {type(out).__name__}, expected "
            "mmret.towers.Towers(model, train_transform, eval_transform, tokenizer)"
        )
    module = _FACTORY_MODULES.get(name, "")
    if getattr(out.model, "mmret_spec", None) is None:
        try:
            out.model.mmret_spec = {"name": name, "kwargs": json.loads(json.dumps(kwargs))}
        except (TypeError, ValueError):
            pass  # not JSON: a checkpoint of this model says so when it is written
    spec = getattr(out.model, "mmret_spec", None)
    if (isinstance(spec, dict) and spec.get("name") == name and module
            and module != "__main__" and module.split(".")[0] != "mmret"):
        spec.setdefault("imports", [module])  # towers.json: what rebuilding it imports
    return out


def _mmret_config_factory(config: str) -> TowerFactory:
    def factory(pretrained: str | None = None, cache_dir: str | None = None,
                **overrides: Any) -> Towers:
        return _create_mmret_towers(config, pretrained, overrides)

    factory.__doc__ = f"mmret's own {config!r} architecture (mmret/towers/configs/{config}.json)."
    return factory


def _timm_hf_factory(pretrained: str | None = None, cache_dir: str | None = None,
                     **kwargs: Any) -> Towers:
    """timm vision tower + Hugging Face text tower (``pretrained`` and ``cache_dir`` are
    not used: ``vision_pretrained`` / ``text_pretrained`` choose the weights)."""
    return _create_timm_hf_towers(**kwargs)


def _sentence_factory(pretrained: str | None = None, cache_dir: str | None = None,
                      **kwargs: Any) -> Towers:
    """Text-only towers (:mod:`mmret.towers.text_encoders`)."""
    from mmret.towers.text_encoders import create_sentence_towers

    return create_sentence_towers(pretrained=pretrained, **kwargs)


def _decoder_factory(pretrained: str | None = None, cache_dir: str | None = None,
                     **kwargs: Any) -> Towers:
    """Decoder LLMs as text towers (:mod:`mmret.towers.decoder`)."""
    from mmret.towers.decoder import create_decoder_towers

    return create_decoder_towers(pretrained=pretrained, **kwargs)


for _config in list_tower_configs():
    register_tower(_config)(_mmret_config_factory(_config))
register_tower("timm-hf")(_timm_hf_factory)
register_tower("sentence-encoder")(_sentence_factory)
register_tower("decoder-llm")(_decoder_factory)
del _config


from mmret.towers.loading import load_checkpoint  # noqa: E402  (uses create_towers lazily)

__all__ += ["load_checkpoint"]
