"""Check a config's dataset paths before ppdet sees them (it would try to download COCO)."""

from pathlib import Path

from picosparse.errors import DataError


def check_dataset(cfg, key):
    """Raise DataError naming `key` (TrainDataset / EvalDataset) when its files are missing."""
    ds = cfg.get(key)
    if not isinstance(ds, dict):
        raise DataError(f"{cfg.path}: no {key} section")
    root = Path(ds.get("dataset_dir") or ".")
    if not root.is_dir():
        raise DataError(f"{key}.dataset_dir {root}: folder does not exist")
    anno = root / str(ds.get("anno_path") or "")
    if not anno.is_file():
        raise DataError(f"{key}.anno_path {anno}: file does not exist")
    images = root / str(ds.get("image_dir") or "")
    if not images.is_dir():
        raise DataError(f"{key}.image_dir {images}: folder does not exist")
    return anno
