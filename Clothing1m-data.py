"""Build the Clothing1M index file `<data_root>/Clothing1m-data.npy` from the official annotations.

docs/clothing1m.md, "Build the index" (the format, and where we differ from the official
builder): keys without a label are listed and stop the build (or are dropped together with their
label with --drop_unlabelled); missing image files are reported; --verify_images also decodes
every image in parallel and lists unreadable ones.
The logic lives in data/clothing_index.py; this script only parses flags and reports.

    python Clothing1m-data.py --data_root data/Clothing1M_Official/
"""
from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from utils.run.preemption import stop_at_once_before_the_run

if __name__ == "__main__":  # a stop request during the imports below (torch: seconds) ends in one line
    stop_at_once_before_the_run()

from tqdm import tqdm

from data.clothing import default_num_workers, unreadable_in
from data.clothing_index import (ANNOTATIONS, INDEX_FILE_NAME, NUM_CLASSES, SPLITS, build_index, count_report,
                                 index_to_bytes, missing_images, read_all_splits, shared_images_report,
                                 unlabelled_report)
from utils.run.atomic import atomic_write_bytes, atomic_write_text
from utils.run.config import check_ranges, format_config, option, parse_config, require
from utils.errors import DatasetError, UserError, exit_code_of
from utils.run.files import check_file_target
from utils.run.progress import progress_enabled

SHOWN_PATHS = 5


@dataclass(frozen=True)
class IndexConfig:
    data_root: str = option("data/Clothing1M_Official/", "folder holding annotations/ and images/")
    output: str = option("", "index file to write; default <data_root>/Clothing1m-data.npy")
    num_classes: int = option(NUM_CLASSES, "labels must lie in 0..num_classes-1")
    drop_unlabelled: bool = option(False, "drop keys that have no label (key and label together) instead "
                                          "of stopping; the official builder drops only the label, "
                                          "which misaligns every later label")
    missing_images_list: str = option("", "write the keys of all missing image files to this file")
    no_image_check: bool = option(False, "do not check that the image files exist (faster on slow disks)")
    verify_images: bool = option(False, "also decode every image, in parallel, and list unreadable ones")
    unreadable_list: str = option("", "where --verify_images writes the unreadable images; "
                                      "default <data_root>/unreadable_images.txt")
    num_workers: int = option(-1, "processes for --verify_images; -1: from the CPU count")
    no_progress: bool = option(False, "no progress bar even on a terminal")

    def __post_init__(self) -> None:
        check_ranges(self)
        require(self.num_classes >= 1, f"--num_classes must be at least 1, got {self.num_classes}")
        require(self.num_workers >= -1, f"--num_workers must be -1 (from the CPU count) or more, got {self.num_workers}")

    @property
    def index_path(self) -> Path:
        return Path(self.output) if self.output else Path(self.data_root) / INDEX_FILE_NAME


def report_unlabelled(splits: dict, drop: bool) -> None:
    report = unlabelled_report(splits)
    if not report:
        return
    if not drop:
        raise DatasetError("keys without a label (the official builder prints '<key> dose not exists in "
                           f"kvs...' and drops the label only, misaligning every later label):\n{report}\npass --drop_unlabelled to drop them together with "
                           "their labels, or fix the annotation files")
    dropped = sum(len(split.unlabelled) for split in splits.values())
    print(f"dropped {dropped} key(s) without a label (key and label together):\n{report}")


def report_missing(config: IndexConfig, index: dict) -> list[str]:
    """Print how many listed images are missing (first few paths) and optionally write them all."""
    keys = [key for _, _, data_key, _ in SPLITS.values() for key in index[data_key].tolist()]
    missing = missing_images(config.data_root, keys)
    if missing:
        shown = "\n  ".join(missing[:SHOWN_PATHS])
        print(f"WARNING: {len(missing)} image file(s) listed in the annotations do not exist under "
              f"{config.data_root}, e.g.\n  {shown}\n(train with --skip_bad_images to leave them out)")
    else:
        print(f"all {len(keys)} image files exist")
    if config.missing_images_list:
        atomic_write_text(config.missing_images_list, "".join(f"{key}\n" for key in missing))
        print(f"wrote the {len(missing)} missing image path(s) to {config.missing_images_list}")
    return missing


def verify_images(config: IndexConfig, index: dict, chunk_size: int = 256) -> list[tuple[str, str]]:
    """Decode every image on a process pool; write and return (key, reason) for unreadable ones."""
    keys = [key for _, _, data_key, _ in SPLITS.values() for key in index[data_key].tolist()]
    chunks = [keys[start:start + chunk_size] for start in range(0, len(keys), chunk_size)]
    workers = config.num_workers if config.num_workers >= 0 else max(1, default_num_workers(cap=64))
    bar = tqdm(total=len(keys), desc="decoding", unit="img", disable=not progress_enabled(config.no_progress))
    unreadable: list[tuple[str, str]] = []
    if workers <= 1:
        for chunk in chunks:
            unreadable.extend(unreadable_in(config.data_root, chunk))
            bar.update(len(chunk))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for chunk, found in zip(chunks, pool.map(unreadable_in, [config.data_root] * len(chunks), chunks)):
                unreadable.extend(found)
                bar.update(len(chunk))
    bar.close()
    target = Path(config.unreadable_list or Path(config.data_root) / "unreadable_images.txt")
    atomic_write_text(target, "".join(f"{key}\t{reason}\n" for key, reason in unreadable))
    print(f"{len(unreadable)} of {len(keys)} images are unreadable; list written to {target}")
    return unreadable


def build(config: IndexConfig) -> dict:
    """Read, check, report and write the index; returns it."""
    splits = read_all_splits(config.data_root, config.drop_unlabelled, config.num_classes)
    report_unlabelled(splits, config.drop_unlabelled)
    shared = shared_images_report(splits)
    if shared:
        print(shared)
    index = build_index(splits)
    print(count_report(index, config.num_classes))
    if not config.no_image_check:
        report_missing(config, index)
    if config.verify_images:
        verify_images(config, index)
    atomic_write_bytes(config.index_path, index_to_bytes(index))
    print(f"wrote {config.index_path}")
    return index


def check_outputs(config: IndexConfig) -> None:
    """Every file this run writes can be written, before the (long) reading starts, and none of them
    is one of the files it reads, nor one of the others it writes."""
    targets = {"--output": config.index_path, "--missing_images_list": config.missing_images_list,
               "--unreadable_list": config.unreadable_list}
    inputs = {(Path(config.data_root) / ANNOTATIONS / name).resolve(): name
              for key_file, label_file, _, _ in SPLITS.values() for name in (key_file, label_file)}
    chosen: dict[Path, str] = {}
    for flag, path in targets.items():
        if not path:
            continue
        check_file_target(path, flag)
        resolved = Path(path).resolve()
        if resolved in inputs:
            raise UserError(f"{flag} {path} is the annotation file {inputs[resolved]} this script reads; "
                            f"choose another {flag}")
        if resolved in chosen:
            raise UserError(f"{flag} and {chosen[resolved]} name the same file {path}; choose another {flag}")
        chosen[resolved] = flag


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> int:
        config = parse_config(IndexConfig, argv, description=__doc__.splitlines()[0],
                              prog="Clothing1m-data.py")
        print(f"Clothing1m-data.py\n{format_config(config)}")
        check_outputs(config)
        build(config)
        return 0

    return exit_code_of(body)


if __name__ == "__main__":
    sys.exit(main())
