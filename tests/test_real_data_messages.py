"""Errors on real data name the setting that fixes them (issue 20, point 7): a renamed
Karpathy annotation file (``data.check_file`` and the annotation paths, not the synthetic
benchmark's ``generate_if_missing``) and a linked image folder (``image_root`` = the real
folder). Each test follows the message's advice and checks that it works."""

from __future__ import annotations

import os
import re

import pytest

from mmret.data.errors import DatasetFormatError
from mmret.data.retrieval import load_karpathy
from mmret.errors import ConfigError
from tests.real_data_utils import ANNOTATION, compose_train, train_losses, write_karpathy_photos


def _advice(message: str) -> list[str]:
    """The ``key=value`` overrides a message tells to set (after the word 'set')."""
    tail = message.split(" set ", 1)[1]
    return re.findall(r"(data\.[\w.<>]+=[^\s()]+)", tail.split(" (")[0])


def test_renamed_annotation_names_check_file_and_the_annotation_paths(tmp_path):
    from mmret.engine.run import run_training

    root = tmp_path / "coco"
    write_karpathy_photos(root)
    os.rename(root / ANNOTATION, root / "coco_karpathy.json")  # the user's own file name
    base = ["data=karpathy", f"data.root={root}"]
    with pytest.raises(ConfigError) as info:
        run_training(compose_train(*base), tmp_path / "run")
    message = str(info.value)
    assert "generate" not in message  # meaningless for real data
    assert f"{root / 'dataset_coco.json'} not found" in message
    assert f"{root} holds coco_karpathy.json" in message
    advice = _advice(message)
    assert advice == ["data.check_file=coco_karpathy.json",
                      "data.train.annotation=coco_karpathy.json",
                      "data.eval.image_text.annotation=coco_karpathy.json"], message
    run_training(compose_train(*base, *advice), tmp_path / "run")  # the advice works
    assert len(train_losses(tmp_path / "run")) == 3


def test_missing_folder_of_real_and_synthetic_data(tmp_path):
    from mmret.engine.run import run_training

    with pytest.raises(ConfigError, match=r"nowhere does not exist\. Point data.root at the "
                                          r"data set's folder, or.*set data.check_file="):
        run_training(compose_train("data=karpathy", f"data.root={tmp_path / 'nowhere'}"),
                     tmp_path / "a")
    # the synthetic benchmark (a data config with a generate block) can be generated
    with pytest.raises(ConfigError, match=r"set data.generate_if_missing=true to generate the "
                                          r"synthetic benchmark there"):
        run_training(compose_train("data=shapes", f"data.root={tmp_path / 'empty'}",
                                   "data.generate_if_missing=false"), tmp_path / "b")


def test_linked_image_folder_says_to_set_image_root_to_the_real_folder(tmp_path):
    """COCO-style ``filepath`` folders linked from another disk: the message names the
    real folder to use as image_root, and using it works (library and trainer)."""
    from mmret.engine.run import run_training

    disk = tmp_path / "disk"  # the real folder: disk/train2014, disk/val2014
    write_karpathy_photos(disk)
    root = tmp_path / "coco"
    root.mkdir()
    os.replace(disk / ANNOTATION, root / ANNOTATION)
    for folder in ("train2014", "val2014"):
        os.symlink(disk / folder, root / folder)
    with pytest.raises(DatasetFormatError, match=re.escape(
            f"set image_root to the real folder {disk} (data.train.image_root")):
        load_karpathy(root / ANNOTATION, root, "train")
    assert load_karpathy(root / ANNOTATION, disk, "train").num_images == 16

    overrides = ["data=karpathy", f"data.root={root}", f"data.check_file={ANNOTATION}",
                 f"data.train.annotation={ANNOTATION}",
                 f"data.eval.image_text.annotation={ANNOTATION}"]
    with pytest.raises(ConfigError, match=r"data.train .*set image_root to the real folder"):
        run_training(compose_train(*overrides), tmp_path / "run")
    run_training(compose_train(*overrides, f"data.train.image_root={disk}",
                               f"data.eval.image_text.image_root={disk}"), tmp_path / "run")
    assert len(train_losses(tmp_path / "run")) == 3


def test_renamed_folder_link_without_a_common_suffix(tmp_path):
    """A link that renames the folder (images -> /mnt/pics): no folder to compute, the
    message still says what to set."""
    pics = tmp_path / "pics"
    write_karpathy_photos(pics, n_train=2, n_test=0)
    root = tmp_path / "coco"
    root.mkdir()
    os.symlink(pics / "train2014", root / "images")
    path = root / "k.json"
    path.write_text((pics / ANNOTATION).read_text().replace('"train2014"', '"images"'))
    with pytest.raises(DatasetFormatError, match=r"set image_root to the real folder that "
                                                 r"holds images/COCO_train2014_"):
        load_karpathy(path, root, "train")
