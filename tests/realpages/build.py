"""Real pages for tests and benchmarks: HTML from Debian's documentation packages, as gzipped WARC files.

    .venv/bin/python tests/realpages/build.py              # both sets (needs apt-get and dpkg-deb)
    .venv/bin/python tests/realpages/build.py --check      # rebuild the fixture, fail if it differs

The pages were written by the PostgreSQL, Git and Debian Handbook authors, not by this project. The
packages are fetched with the package manager (`apt-get download PACKAGE=VERSION`; run `apt-get update`
first on a fresh machine), and each .deb is checked against the sha256 recorded in `packages.json`
before anything is read from it: a mismatch is refused with both checksums.

Two sets, each a WARC (one warcinfo record, then one HTTP 200 `text/html` response per page, with
Common Crawl's `WARC-Identified-Payload-Type`) and a
manifest (`<name>.pages.jsonl`: url, package, language of the page as the package labels it, path):

- `tests/realpages/debian-docs.warc.gz`, the fixture CI uses (checked in, 1.6 MB): a fixed, evenly
  spaced sample -- 90 PostgreSQL pages, 40 Git pages, 40 English Debian Handbook pages and 8 in each
  of nine other languages (242 pages).
- `debian-docs-all.warc.gz` in the cache directory (`--cache`, default `$GPTRECIPE_REALPAGES_DIR` or
  ~/.cache/gptrecipe/realpages), every HTML page of the three packages (about 4,700), for benchmarks.

Each page's URL is where its project publishes it (postgresql.org/docs/15/, git-scm.com/docs/,
debian-handbook.info/browse/<language>/); record ids and dates are derived from the URL, and warcio
writes gzip members with mtime 0, so the same packages always give byte-identical files (`--check`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES_FILE = HERE / "packages.json"
FIXTURE = HERE / "debian-docs.warc.gz"
BENCH_NAME = "debian-docs-all.warc.gz"
WARC_DATE = "2024-06-01T00:00:00Z"
HTTP_DATE = "Sat, 01 Jun 2024 00:00:00 GMT"

# The fixture's sample: pages per package, and per handbook language.
FIXTURE_PAGES = {"postgresql-doc-15": 90, "git-doc": 40}
FIXTURE_HANDBOOK = {"en-US": 40} | {
    tag: 8 for tag in ("de-DE", "fr-FR", "es-ES", "it-IT", "pt-BR", "ru-RU", "ja-JP", "zh-CN", "ar-MA")
}
# The handbook's directory names as lid.176 labels (Norwegian Bokmål is "no" there).
LID_CODE = {"nb": "no"}


class BuildError(Exception):
    """A package could not be fetched, or is not the one recorded in packages.json."""


@dataclass(frozen=True)
class RealPage:
    url: str
    package: str
    language: str
    path: str  # inside the package
    html: bytes


def default_cache() -> Path:
    return Path(os.environ.get("GPTRECIPE_REALPAGES_DIR", Path.home() / ".cache" / "gptrecipe" / "realpages"))


def bench_warc(cache: Path | None = None) -> Path:
    """The full set for benchmarks; a clear error with the command that builds it when it is missing."""
    path = (cache or default_cache()) / BENCH_NAME
    if not path.exists():
        raise SystemExit(f"{path} is missing: build it with `.venv/bin/python tests/realpages/build.py`")
    return path


def manifest_path(warc: Path) -> Path:
    return warc.with_name(warc.name.removesuffix(".warc.gz") + ".pages.jsonl")


def load_manifest(warc: Path) -> dict[str, dict]:
    """url -> {package, language, path} for a WARC this script wrote."""
    rows = (json.loads(line) for line in manifest_path(warc).read_text().splitlines() if line)
    return {row["url"]: row for row in rows}


# --- fetching ------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_deb(spec: dict, debs: Path) -> Path:
    """The package's .deb in `debs` (downloaded with apt-get unless already there), checksum verified."""
    name, version = spec["package"], spec["version"]
    found = sorted(debs.glob(f"{name}_*.deb"))
    if not found:
        if shutil.which("apt-get") is None:
            raise BuildError(f"{name}: apt-get not found; the real pages are built on Debian or Ubuntu")
        done = subprocess.run(
            ["apt-get", "download", f"{name}={version}"], cwd=debs, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BuildError(
                f"{name}={version}: apt-get download failed (run `apt-get update` first; the version must "
                f"be one this Debian offers, see `apt-cache policy {name}`): {done.stderr.strip()[-500:]}"
            )
        found = sorted(debs.glob(f"{name}_*.deb"))
    if len(found) != 1:
        raise BuildError(f"{name}: expected one .deb in {debs}, found {[p.name for p in found]}")
    actual = sha256_of(found[0])
    if actual != spec["sha256"]:
        raise BuildError(
            f"{found[0]}: sha256 {actual} does not match {spec['sha256']} recorded for {name}={version} "
            f"in {PACKAGES_FILE}; refusing to build from it"
        )
    return found[0]


def unpack(deb: Path, into: Path) -> None:
    if shutil.which("dpkg-deb") is None:
        raise BuildError("dpkg-deb not found; the real pages are built on Debian or Ubuntu")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)


def package_pages(spec: dict, root: Path) -> list[RealPage]:
    """Every regular .html file of the unpacked package, sorted by path."""
    base = root / spec["html_root"]
    if not base.is_dir():
        raise BuildError(f"{spec['package']}: no {spec['html_root']} in the package")
    pages = []
    for path in sorted(p for p in base.rglob("*.html") if p.is_file() and not p.is_symlink()):
        rel = path.relative_to(base).as_posix()
        if spec["package"] == "debian-handbook":
            tag, _, page = rel.partition("/")
            short = tag.split("-")[0]
            language, url = LID_CODE.get(short, short), f"{spec['url_prefix']}{tag}/stable/{page}"
        else:
            language, url = (
                "en",
                spec["url_prefix"] + (rel.removesuffix(".html") if "git" in spec["package"] else rel),
            )
        pages.append(RealPage(url, spec["package"], language, rel, path.read_bytes()))
    return pages


def evenly_spaced(items: list, k: int) -> list:
    """k items spread over the list (all of them when there are fewer)."""
    if k >= len(items):
        return list(items)
    return [items[i * len(items) // k] for i in range(k)]


def fixture_sample(pages: list[RealPage]) -> list[RealPage]:
    picked: list[RealPage] = []
    for package, k in FIXTURE_PAGES.items():
        picked += evenly_spaced([p for p in pages if p.package == package], k)
    handbook = [p for p in pages if p.package == "debian-handbook"]
    for tag, k in FIXTURE_HANDBOOK.items():
        picked += evenly_spaced([p for p in handbook if p.path.startswith(tag + "/")], k)
    return picked


# --- writing -------------------------------------------------------------------------------------


def write_warc(path: Path, pages: list[RealPage], packages: list[dict]) -> None:
    """One warcinfo record, then a response per page; deterministic ids and dates; atomic."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    def headers(record_id: str) -> dict[str, str]:
        return {"WARC-Type": "", "WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": WARC_DATE}

    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        sources = ", ".join(f"{p['package']}={p['version']}" for p in packages)
        info = (
            f"software: gptrecipe tests/realpages/build.py\r\nisPartOf: Debian documentation: {sources}\r\n"
        )
        payload = info.encode()
        writer.write_record(
            writer.create_warc_record(
                "",
                "warcinfo",
                payload=io.BytesIO(payload),
                length=len(payload),
                warc_headers_dict=headers(str(uuid.uuid5(uuid.NAMESPACE_URL, path.name)))
                | {"WARC-Filename": path.name, "Content-Type": "application/warc-fields"},
            )
        )
        for page in pages:
            http = StatusAndHeaders(
                "200 OK",
                [
                    ("Date", HTTP_DATE),
                    ("Content-Type", "text/html; charset=UTF-8"),
                    ("Content-Length", str(len(page.html))),
                ],
                protocol="HTTP/1.1",
            )
            writer.write_record(
                writer.create_warc_record(
                    page.url,
                    "response",
                    payload=io.BytesIO(page.html),
                    length=len(page.html),
                    http_headers=http,
                    # As Common Crawl's: readers that sniff the type (datatrove's, with libmagic)
                    # would take these XHTML pages, which start with <?xml, for text/xml.
                    warc_headers_dict=headers(str(uuid.uuid5(uuid.NAMESPACE_URL, page.url)))
                    | {"WARC-Identified-Payload-Type": "text/html"},
                )
            )
    os.replace(tmp, path)
    rows = [{"url": p.url, "package": p.package, "language": p.language, "path": p.path} for p in pages]
    manifest_path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def all_pages(cache: Path) -> tuple[list[RealPage], list[dict]]:
    packages = json.loads(PACKAGES_FILE.read_text())["packages"]
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(debs, 0o777)  # apt-get run as root downloads as the unprivileged _apt user
    pages: list[RealPage] = []
    with tempfile.TemporaryDirectory(prefix="realpages-") as tmp:
        for spec in packages:
            deb = fetch_deb(spec, debs)
            root = Path(tmp, spec["package"])
            unpack(deb, root)
            pages += package_pages(spec, root)
    return pages, packages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=None, help="where the .debs and the full set go")
    parser.add_argument("--check", action="store_true", help="fail if the checked-in fixture differs")
    args = parser.parse_args()
    cache = args.cache or default_cache()
    try:
        pages, packages = all_pages(cache)
    except BuildError as e:
        sys.exit(f"build.py: {e}")
    fixture = fixture_sample(pages)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            rebuilt = Path(tmp, FIXTURE.name)
            write_warc(rebuilt, fixture, packages)
            same = sha256_of(rebuilt) == sha256_of(FIXTURE)
            print(f"{FIXTURE}: {'identical to' if same else 'DIFFERS from'} a rebuild")
            sys.exit(0 if same else 1)
    write_warc(FIXTURE, fixture, packages)
    bench = cache / BENCH_NAME
    write_warc(bench, pages, packages)
    for path, n in ((FIXTURE, len(fixture)), (bench, len(pages))):
        print(f"{path}: {n} pages, {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
