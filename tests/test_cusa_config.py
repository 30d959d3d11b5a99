"""CUSA's grouped options (heads, contrastive, csa, usa, temperatures) and the flat keys of
earlier versions: the same objective either way, a warning that names the new key, and
errors that name the group and its fields."""

from __future__ import annotations

import warnings

import pytest
import torch
import yaml

from mmret.objectives import create_objective
from mmret.objectives.cusa import (
    FLAT_KEYS,
    CusaCSA,
    CusaObjective,
    CusaTemperatures,
    TemperatureSpec,
)

#: mmret/conf/objective/cusa.yaml as it was before the grouping (flat keys)
FLAT_YAML = {
    "weight": 1.0, "embed_dim": 128, "alpha": 0.1, "beta": 0.5, "contrastive_weight": 1.0,
    "mode": "each", "contrastive_loss_mode": "mean", "heads": True, "use_contrastive": True,
    "use_csa": True, "use_usa": True, "use_image_ids": True, "num_langs": 1,
    "contrastive_temperature": 0.05, "contrastive_temperature_range": [0.01, 0.10],
    "learn_contrastive_temperature": True, "csa_temperature": 0.45,
    "csa_temperature_range": [0.10, 0.99], "learn_csa_temperature": True,
    "usa_image_temperature": 0.45, "usa_text_temperature": 0.45,
    "usa_temperature_range": [0.10, 1.00], "learn_usa_temperature": True,
    "teacher_temperature": 1.0, "teacher_temperature_range": [0.10, 1.00],
    "learn_teacher_temperature": False, "temperature_parametrization": "tau",
    "gather": False, "gather_with_grad": True,
}
#: the flat overrides of the itr_* experiments before the grouping, and their grouped form
EXPERIMENTS = {
    "itr_csa": ({"contrastive_loss_mode": "sum", "use_csa": True, "use_usa": False},
                {"contrastive": {"loss_mode": "sum"}, "csa": {"enabled": True},
                 "usa": {"enabled": False}}),
    "itr_usa": ({"contrastive_loss_mode": "sum", "use_csa": False, "use_usa": True},
                {"contrastive": {"loss_mode": "sum"}, "csa": {"enabled": False},
                 "usa": {"enabled": True}}),
}


def _grouped_yaml() -> dict:
    from mmret.engine.config import conf_dir as engine_conf_dir

    path = engine_conf_dir() / "objective" / "cusa.yaml"
    return yaml.safe_load(path.read_text())["cusa"]


def _batch(p: int = 6, d: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image_features": torch.randn(p, d, generator=g),
            "text_features": torch.randn(p, d, generator=g),
            "teacher_image_features": torch.randn(p, 5, generator=g),
            "teacher_text_features": torch.randn(p, 3, generator=g),
            "image_ids": torch.tensor([0, 0, 1, 2, 3, 3])}


def _build(options: dict) -> CusaObjective:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return create_objective({"cusa": options})


def _same(a: CusaObjective, b: CusaObjective) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    la, lb = a(**_batch()), b(**_batch())
    assert set(la) == set(lb) and all(torch.equal(la[k], lb[k]) for k in la)


def test_shipped_grouped_yaml_equals_the_old_flat_yaml() -> None:
    grouped = _grouped_yaml()
    assert not set(grouped) & set(FLAT_KEYS), "cusa.yaml should use the grouped keys"
    _same(_build(FLAT_YAML), _build(grouped))
    assert _build(grouped).config.temperatures == CusaTemperatures()


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_old_flat_experiment_overrides_still_work(experiment: str) -> None:
    flat, grouped = EXPERIMENTS[experiment]
    old = _build({**FLAT_YAML, **flat})
    # flat keys layered over the new grouped defaults (an old experiment file on the new
    # cusa.yaml) and the grouped form of the override give the same objective
    on_new = _build({**_grouped_yaml(), **flat})
    merged = _grouped_yaml()
    for group, values in grouped.items():
        merged[group] = {**merged[group], **values}
    _same(old, on_new)
    _same(old, _build(merged))
    assert old.with_csa == flat["use_csa"] and old.with_usa == flat["use_usa"]
    assert old.contrastive_loss_mode == "sum"


def test_every_flat_key_warns_with_its_grouped_key() -> None:
    values = {k: v for k, v in FLAT_YAML.items() if k in FLAT_KEYS}
    for key, value in values.items():
        with pytest.warns(DeprecationWarning) as record:
            CusaObjective(embed_dim=4, **{key: value})
        message = str(record[0].message)
        assert key in message and all(target in message for target in FLAT_KEYS[key])


def test_flat_keys_set_what_they_name() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        objective = CusaObjective(
            embed_dim=4, alpha=0.3, beta=0.0, mode="dot", usa_temperature_range=(0.2, 0.9),
            csa_temperature=0.3, learn_teacher_temperature=True, head_init_std=0.5,
            csa={"weight": 0.9},  # the flat key wins over the grouped one it maps to
        )
    cfg = objective.config
    assert cfg.csa == CusaCSA(weight=0.3, enabled=True, mode="dot")
    assert cfg.usa.weight == 0.0 and not objective.with_usa
    assert cfg.temperatures.usa_image.range == cfg.temperatures.usa_text.range == (0.2, 0.9)
    assert cfg.temperatures.csa == TemperatureSpec(0.3, (0.10, 0.99), True)
    assert cfg.temperatures.teacher.learnable and objective.teacher_temperature.learnable
    assert cfg.heads.init_std == 0.5
    assert objective.cross_image_head.proj.weight.std() > 0.3  # N(0, 0.5²), not 0.02


def test_partial_groups_keep_the_other_defaults() -> None:
    objective = CusaObjective(embed_dim=4, temperatures={"csa": {"init": 0.3},
                                                         "usa_text": 0.2})
    t = objective.config.temperatures
    assert t.csa == TemperatureSpec(0.3, (0.10, 0.99), True)
    assert t.usa_text == TemperatureSpec(0.2, (0.10, 1.00), True)
    assert t.contrastive == CusaTemperatures().contrastive
    assert objective.csa_temperature.temperature == pytest.approx(0.3)
    assert objective.csa_temperature.max_temperature == 0.99
    assert CusaObjective(heads=False).heads is False
    assert CusaObjective(heads={"enabled": False}).heads is False


@pytest.mark.parametrize(
    ("options", "match"),
    [({"csa": {"alpha": 0.1}}, r"unknown key\(s\) \['alpha'\] in csa; expected some of "
                               r"\['enabled', 'mode', 'weight'\]; 'alpha' is a flat option: "
                               r"use csa.weight"),
     ({"temperatures": {"csa": {"start": 0.1}}}, r"temperatures.csa.*init.*learnable.*range"),
     ({"usa": 0.5}, "usa must be a mapping"),
     ({"csa": {"mode": "mul"}}, "mode must be one of"),
     ({"temperatures": {"parametrization": "exp"}}, r"temperatures.parametrization"),
     ({"temperatures": {"csa": {"range": [0.5, 0.1]}}}, "csa_temperature_range must satisfy")],
)
def test_bad_grouped_options_are_named(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CusaObjective(heads=False, **options)


def test_unknown_option_is_a_type_error_listing_the_groups() -> None:
    with pytest.raises(TypeError, match=r"unexpected option\(s\) \['alhpa'\].*groups"):
        CusaObjective(heads=False, alhpa=0.1)
