"""Model directories: how a GPT is written to and read from disk, without pickle.

A model directory holds

    config.json          {"format": "gptrecipe-gpt", "version": 1, "model": {GPTConfig...}, ...extra}
    model.safetensors    the weights; a tied matrix is stored once, under its first name
    tokenizer.json       optional, copied from the tokenizer stage's output

Weights are read with safetensors only, never ``torch.load``: a model directory may come from anyone
(a shared artifact store, a download) and unpickling runs arbitrary code.

Local paths only; the artifact store copies directories to and from object storage.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from components.core.config import validate
from components.model.gpt import GPT, GPTConfig

FORMAT = "gptrecipe-gpt"
VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


class CheckpointError(ValueError):
    """A model directory or state dict that cannot be used, described so the user can tell why."""


# --- state dicts ------------------------------------------------------------------------------------


def _storage_key(t: Tensor) -> tuple[Any, ...]:
    return (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))


def aliased_names(state_dict: Mapping[str, Tensor]) -> set[str]:
    """Names whose tensor is the same tensor as an earlier name's (tied weights, e.g. lm_head.weight)."""
    seen: set[tuple[Any, ...]] = set()
    aliases = set()
    for name, tensor in state_dict.items():
        key = _storage_key(tensor)
        if key in seen:
            aliases.add(name)
        seen.add(key)
    return aliases


def state_for_saving(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict with each tied tensor once, on CPU and contiguous: safetensors refuses
    tensors that share memory. Loading re-ties them because the model's constructor does."""
    state = module.state_dict()
    aliases = aliased_names(state)
    return {name: t.detach().cpu().contiguous() for name, t in state.items() if name not in aliases}


def load_state_compatible(
    module: nn.Module, state_dict: Mapping[str, Tensor], *, source: str = "state dict"
) -> None:
    """Load ``state_dict`` into ``module`` only if it fits exactly: same names and same shapes, except
    that a tied alias (lm_head.weight of a tied model) may be absent. Otherwise raise a CheckpointError
    that names every differing tensor with both shapes, so a resume with the wrong config is caught
    before it trains on garbage. Values are cast to the module's dtypes."""
    expected = module.state_dict()
    optional = aliased_names(expected)
    problems = []
    for name, tensor in state_dict.items():
        if name not in expected:
            problems.append(f"  {name}: in the {source} but not in the model")
        elif tuple(tensor.shape) != tuple(expected[name].shape):
            shapes = (
                f"shape {tuple(tensor.shape)} in the {source}, {tuple(expected[name].shape)} in the model"
            )
            problems.append(f"  {name}: {shapes}")
    for name in expected:
        if name not in state_dict and name not in optional:
            problems.append(f"  {name}: in the model but missing from the {source}")
    if problems:
        raise CheckpointError(f"the {source} does not fit the model:\n" + "\n".join(problems))
    module.load_state_dict(dict(state_dict), strict=False)


# --- model directories ------------------------------------------------------------------------------


def save_model_dir(
    model: GPT,
    path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (and a copy of ``tokenizer_path``) as a model directory at ``path``.

    ``extra`` adds JSON-serialisable top-level keys to config.json (stage, step, tokenizer info...).
    Everything is written into a temporary directory beside ``path`` and renamed into place, so a
    reader never sees a half-written directory and a killed writer leaves only a ``.tmp-`` directory.
    An existing non-empty ``path`` is refused unless ``overwrite``. Returns ``path``."""
    header = {"format": FORMAT, "version": VERSION}
    return write_model_dir(
        model, path, header, tokenizer_path=tokenizer_path, extra=extra, overwrite=overwrite
    )


def write_model_dir(
    model: nn.Module,
    path: str | Path,
    header: Mapping[str, Any],
    *,
    tokenizer_path: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model directory of any format: config.json is ``header`` (format, version...), then
    ``"model"`` (``model.config``, a GPTConfig), then ``extra``, which may not set a key of the first two.
    Atomic and refusing a non-empty ``path`` unless ``overwrite``, as `save_model_dir` describes."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot write a model directory at {path}: a file is there")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path} already holds files; pass overwrite=True to replace it")
    extra = dict(extra or {})
    if clash := sorted((header.keys() | {"model"}) & extra.keys()):
        raise ValueError(f"extra metadata may not set the reserved config.json keys {clash}")
    config = {**header, "model": model.config.model_dump(mode="json"), **extra}
    try:
        config_text = json.dumps(config, indent=2) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"extra metadata for {path} is not JSON-serialisable: {e}") from None
    if tokenizer_path is not None and not Path(tokenizer_path).is_file():
        raise FileNotFoundError(f"tokenizer file {tokenizer_path} does not exist")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        (tmp / CONFIG_FILE).write_text(config_text)
        save_file(state_for_saving(model), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        if tokenizer_path is not None:
            shutil.copyfile(tokenizer_path, tmp / TOKENIZER_FILE)
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _move_into_place(tmp: Path, path: Path) -> None:
    if not path.exists():
        tmp.rename(path)
        return
    # A directory cannot be atomically swapped for another on POSIX: move the old one aside first,
    # and put it back if the new one cannot take its place.
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
    path.rename(old)
    try:
        tmp.rename(path)
    except BaseException:
        old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_model_config(path: str | Path) -> dict[str, Any]:
    """The config.json of a model directory, checked to be ours and of a version we can read."""
    return read_dir_config(path, FORMAT, VERSION)


def read_dir_config(
    path: str | Path, format: str, version: int, hints: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The config.json of a model directory of ``format``, checked to be one, of ``version`` or older,
    and to hold a 'model' section. ``hints`` add a word to the error for a directory of another format."""
    file = Path(path) / CONFIG_FILE
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model directory {path} does not exist")
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: {path} is not a model directory")
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: cannot read it as JSON: {e}") from None
    found = config.get("format") if isinstance(config, dict) else type(config).__name__
    if found != format:
        hint = (hints or {}).get(found, "") if isinstance(found, str) else ""
        raise CheckpointError(f"{file}: format is {found!r}, expected {format!r}{hint}")
    found_version = config.get("version")
    if not isinstance(found_version, int) or found_version > version:
        raise CheckpointError(
            f"{file}: format version {found_version!r}; this gptrecipe reads version {version} or older"
        )
    if not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{file}: the 'model' section with the GPT config is missing")
    return config


def read_weights(
    path: str | Path, device: str | torch.device, dtype: torch.dtype | None
) -> tuple[dict[str, Tensor], torch.dtype]:
    """(state dict, dtype) from a model directory's safetensors file, without pickle; ``dtype`` None
    means the dtype the weights were saved in."""
    weights_file = Path(path) / WEIGHTS_FILE
    if not weights_file.is_file():
        raise FileNotFoundError(f"{weights_file} is missing")
    try:
        state = load_file(str(weights_file), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{weights_file}: not a readable safetensors file: {e}") from None
    if dtype is None:
        dtype = next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)
    return state, dtype


def load_model_dir(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[GPT, dict[str, Any]]:
    """(model, config.json as a dict) from a model directory. The model is in eval mode, on ``device``,
    in ``dtype`` (None = the dtype its weights were saved in)."""
    path = Path(path)
    config = read_model_config(path)
    gpt_config = validate(GPTConfig, config["model"], f"{path / CONFIG_FILE} (section 'model')")
    state, dtype = read_weights(path, device, dtype)
    with torch.device(device):
        model = GPT(gpt_config)
    model.to(dtype=dtype)
    source = f"weights file {path / WEIGHTS_FILE} (config from {CONFIG_FILE})"
    load_state_compatible(model, state, source=source)
    return model.eval(), config
