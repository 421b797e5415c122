"""Tests of data/clothing_index.py and Clothing1m-data.py on a tiny Clothing1M in the real layout."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from data.clothing_index import (INDEX_FILE_NAME, build_index, check_index_labels, check_labels_fit,
                                 check_splits_not_empty, class_counts, index_to_bytes, load_index,
                                 parse_key_list, parse_label_kv, read_all_splits)
from tests.clothing_fixture import NUM_CLASSES, make_tiny_clothing1m
from tests.data.permissions import deny_reading
from utils.errors import DatasetError, UserError

ROOT = Path(__file__).resolve().parents[2]


def load_script():
    spec = importlib.util.spec_from_file_location("clothing1m_data_script", ROOT / "Clothing1m-data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny_clothing1m(tmp_path / "Clothing1M")


def test_parse_key_list_skips_blank_lines_and_names_malformed_ones():
    assert parse_key_list(["images/0/1/2.jpg", "", "  images/3/4/5.jpg \n"], "keys.txt") == [
        "images/0/1/2.jpg", "images/3/4/5.jpg"]
    with pytest.raises(DatasetError, match=r"keys\.txt, line 2: expected one image path"):
        parse_key_list(["images/0/1/2.jpg", "images/a.jpg 3"], "keys.txt")


@pytest.mark.parametrize("line, problem", [
    ("images/a.jpg", "expected 'IMAGE_PATH LABEL'"),
    ("images/a.jpg 1 2", "expected 'IMAGE_PATH LABEL'"),
    ("images/a.jpg x", "is not a whole number"),
    ("images/a.jpg 14", r"outside 0\.\.13"),
    ("images/b.jpg 5", "labelled 4 earlier"),
])
def test_parse_label_kv_reports_file_and_line(line, problem):
    lines = ["images/b.jpg 4", "", line]
    with pytest.raises(DatasetError, match=rf"labels\.txt, line 3: .*{problem}"):
        parse_label_kv(lines, "labels.txt")


def test_parse_label_kv_reads_pairs():
    assert parse_label_kv(["images/a.jpg 0", "images/b.jpg 13", "images/a.jpg 0"], "kv") == {
        "images/a.jpg": 0, "images/b.jpg": 13}


def test_unlabelled_key_is_reported_not_dropped(tiny):
    splits = read_all_splits(tiny.root, drop_unlabelled=False)
    assert splits["train"].unlabelled == [tiny.unlabelled_key]
    with pytest.raises(DatasetError, match=tiny.unlabelled_key.replace(".", r"\.")):
        build_index(splits)


def test_drop_unlabelled_keeps_keys_and_labels_aligned(tiny):
    index = build_index(read_all_splits(tiny.root, drop_unlabelled=True))
    assert index["train_data"].tolist() == tiny.train_keys
    assert index["train_labels"].tolist() == tiny.train_labels
    assert index["clean_val_data"].tolist() == tiny.val_keys
    assert index["clean_val_labels"].tolist() == tiny.val_labels
    assert index["test_data"].tolist() == tiny.test_keys
    assert index["test_labels"].tolist() == tiny.test_labels
    assert index["train_labels"].dtype == np.int64


def test_class_counts():
    assert class_counts(np.array([0, 2, 2, 13]), NUM_CLASSES).tolist() == [1, 0, 2] + [0] * 10 + [1]


def test_script_stops_on_unlabelled_key_by_default(script, tiny, capsys):
    assert script.main(["--data_root", str(tiny.root), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert tiny.unlabelled_key in err and "--drop_unlabelled" in err
    assert not (tiny.root / "Clothing1m-data.npy").exists()


def test_script_writes_index_loadable_the_official_way(script, tiny, capsys, tmp_path):
    missing_list = tmp_path / "missing.txt"
    code = script.main(["--data_root", str(tiny.root), "--drop_unlabelled", "--no_progress",
                        "--missing_images_list", str(missing_list)])
    assert code == 0
    out = capsys.readouterr().out
    assert "dropped 1 key(s) without a label" in out and tiny.unlabelled_key in out
    assert "1 image file(s) listed in the annotations do not exist" in out and tiny.missing_image_key in out
    assert missing_list.read_text() == f"{tiny.missing_image_key}\n"
    assert " 0 T-Shirt" in out and "13 Underwear" in out and "total" in out  # per-class count table
    index = np.load(str(tiny.root) + "/" + "Clothing1m-data.npy", allow_pickle=True).item()
    assert sorted(index) == sorted(["train_data", "train_labels", "clean_val_data", "clean_val_labels",
                                    "test_data", "test_labels"])
    assert index["train_data"].tolist() == tiny.train_keys
    assert index["train_labels"].tolist() == tiny.train_labels
    assert load_index(tiny.root / "Clothing1m-data.npy")["test_labels"].tolist() == tiny.test_labels
    assert not list(tiny.root.glob(".Clothing1m-data.npy.*"))  # atomic write left no temporary file


def test_verify_images_lists_unreadable_files(script, tiny, capsys, tmp_path):
    corrupt = tiny.root / tiny.val_keys[0]
    corrupt.write_bytes(b"not a jpeg at all")
    unreadable = tmp_path / "unreadable.txt"
    code = script.main(["--data_root", str(tiny.root), "--drop_unlabelled", "--no_progress", "--verify_images",
                        "--num_workers", "0", "--unreadable_list", str(unreadable)])
    assert code == 0
    rows = dict(line.split("\t") for line in unreadable.read_text().splitlines())
    assert sorted(rows) == sorted([tiny.val_keys[0], tiny.missing_image_key])
    assert rows[tiny.missing_image_key] == "the file does not exist"
    assert rows[tiny.val_keys[0]].startswith("cannot decode it")
    assert "2 of" in capsys.readouterr().out


def test_load_index_rejects_misaligned_file(tmp_path):
    index = {"train_data": np.array(["a", "b"]), "train_labels": np.array([0]),
             "clean_val_data": np.array([]), "clean_val_labels": np.array([]),
             "test_data": np.array([]), "test_labels": np.array([])}
    (tmp_path / "Clothing1m-data.npy").write_bytes(index_to_bytes(index))
    with pytest.raises(DatasetError, match="train_data has 2 entries but train_labels has 1"):
        load_index(tmp_path / "Clothing1m-data.npy")
    with pytest.raises(DatasetError, match="Clothing1m-data.py"):
        load_index(tmp_path / "nowhere" / "Clothing1m-data.npy")


# --------------------------------------------------------------------------- refusals of bad input


def small_index(**overrides) -> dict[str, np.ndarray]:
    index = {"train_data": np.array(["images/0/a.jpg", "images/0/b.jpg"]), "train_labels": np.array([0, 13]),
             "clean_val_data": np.array(["images/1/c.jpg"]), "clean_val_labels": np.array([5]),
             "test_data": np.array(["images/2/d.jpg"]), "test_labels": np.array([12])}
    index.update(overrides)
    return index


def write_index(folder: Path, index: dict[str, np.ndarray]) -> Path:
    path = folder / INDEX_FILE_NAME
    path.write_bytes(index_to_bytes(index))
    return path


def test_check_labels_fit_names_the_largest_label_the_file_and_the_flag():
    check_labels_fit(np.array([0, 3, 13]), 14, "somewhere.npy")
    check_labels_fit(np.array([], dtype=np.int64), 2, "somewhere.npy")
    with pytest.raises(UserError, match=r"labels up to 13 found in somewhere\.npy, but --num_classes is 10") as info:
        check_labels_fit(np.array([0, 13, 4]), 10, "somewhere.npy")
    assert "--num_classes 14" in str(info.value)
    with pytest.raises(DatasetError, match=r"negative label -1 found in somewhere\.npy"):
        check_labels_fit(np.array([0, -1]), 10, "somewhere.npy")


def test_load_index_with_fewer_classes_than_its_labels(tmp_path):
    path = write_index(tmp_path, small_index())
    assert load_index(path, num_classes=14)["train_labels"].tolist() == [0, 13]
    with pytest.raises(UserError, match="labels up to 13 found in .*but --num_classes is 10") as info:
        load_index(path, num_classes=10)
    assert str(path) in str(info.value) and "train_labels" in str(info.value)
    check_index_labels(small_index(), 14, "index")
    with pytest.raises(UserError, match=r"labels up to 12 found in index \(test_labels\)"):
        check_index_labels(small_index(train_labels=np.array([0, 1])), 6, "index")


@pytest.mark.parametrize("split, data_key, labels_key", [("val", "clean_val_data", "clean_val_labels"),
                                                         ("test", "test_data", "test_labels"),
                                                         ("train", "train_data", "train_labels")])
def test_an_empty_list_is_refused_with_a_reason(tmp_path, split, data_key, labels_key):
    empty = small_index(**{data_key: np.array([], dtype=str), labels_key: np.array([], dtype=np.int64)})
    path = write_index(tmp_path, empty)
    with pytest.raises(DatasetError, match=rf"the {split} list \({data_key}\) is empty, but it is needed") as info:
        load_index(path)
    assert str(path) in str(info.value)
    with pytest.raises(DatasetError, match=rf"the {split} list \({data_key}\) is empty"):
        check_splits_not_empty(empty, "the index")
    from data.clothing import build_splits  # imports torch: only here

    with pytest.raises(DatasetError, match=rf"the {split} list \({data_key}\) is empty"):
        build_splits(empty, tmp_path, 16, seed=1)


def test_build_index_refuses_an_empty_test_key_list(tiny):
    (tiny.root / "annotations" / "clean_test_key_list.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"the test split is empty: annotations/clean_test_key_list\.txt"):
        build_index(read_all_splits(tiny.root, drop_unlabelled=True))


@pytest.mark.parametrize("name", ["clean_test_key_list.txt", "noisy_label_kv.txt"])
def test_directory_in_place_of_an_annotation_file(tiny, name):
    target = tiny.root / "annotations" / name
    target.unlink()
    target.mkdir()
    with pytest.raises(DatasetError, match="is a directory, expected a file") as info:
        read_all_splits(tiny.root, drop_unlabelled=True)
    assert str(target) in str(info.value)


def test_unreadable_annotation_file(tiny, monkeypatch):
    target = tiny.root / "annotations" / "clean_label_kv.txt"
    deny_reading(monkeypatch, target)
    with pytest.raises(DatasetError, match="permission denied") as info:
        read_all_splits(tiny.root, drop_unlabelled=True)
    assert str(target) in str(info.value)


def test_directory_or_unreadable_file_in_place_of_the_index(tmp_path, monkeypatch):
    target = tmp_path / INDEX_FILE_NAME
    target.mkdir()
    with pytest.raises(DatasetError, match="is a directory, expected a file") as info:
        load_index(target)
    assert str(target) in str(info.value) and "Clothing1m-data.py" in str(info.value)
    target.rmdir()
    write_index(tmp_path, small_index())
    deny_reading(monkeypatch, target)
    with pytest.raises(DatasetError, match="permission denied") as info:
        load_index(target)
    assert str(target) in str(info.value)
