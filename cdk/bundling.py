"""The Lambda code assets: the `lambdas` package plus its pinned dependencies, built without Docker.

Dependencies are the `[project].dependencies` of pyproject.toml (the Lambda bundle's list), installed
by pip as manylinux wheels for the functions' platform (Python 3.12 on arm64) into a cache directory
keyed by a hash of that list, then copied into the asset next to the source. With dependencies off
(tests, `-c bundling=false`) the asset is just the source, so synth needs neither pip nor a network.

Functions get the bundle they need, not one for all (`excluded_for`): only the REST function serves
FastAPI, parses uploads and PDFs, and only it and the worker reach OpenSearch, whose client pulls
grpcio and protobuf (~20 MB) through opensearch-protobufs. The others (authorizers, connect, ping,
disconnect, default, ...) carry the base list without those, which is smaller to load on a cold
start; with pgvector no bundle carries the OpenSearch client. An infra test imports every handler
with its excluded packages blocked, so an exclusion cannot break a function.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from lambdas import wiring

PYTHON_VERSION = "3.12"
# Lambda's python3.12 runtime is Amazon Linux 2023 (glibc 2.34): wheels built for glibc up to 2.34
# run there. Some pinned packages (psycopg-binary) publish only manylinux_2_28 wheels for aarch64.
PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
PLATFORM = PLATFORMS[-1]
RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
SOURCE_PACKAGE = "lambdas"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "tests", ".pytest_cache")


# Requirements only the REST function imports (web framework, uploads, PDF parsing) and the OpenSearch
# client, which only the REST function (ingestion) and the worker (retrieval) use.
REST_ONLY = frozenset({"fastapi", "mangum", "pypdf", "python-multipart"})
OPENSEARCH = frozenset({"opensearch-py"})


# The top-level modules each left-out requirement (with what only it pulls in) installs.
LEFT_OUT_MODULES = {
    "fastapi": ("fastapi",),
    "mangum": ("mangum",),
    "pypdf": ("pypdf",),
    "python-multipart": ("multipart", "python_multipart"),
    "opensearch-py": ("opensearchpy", "opensearch_protobufs", "grpc"),
}


def blocked_modules(exclude: frozenset[str]) -> str:
    """Comma-separated top-level modules a bundle without `exclude` lacks (for import checks)."""
    return ",".join(module for name in sorted(exclude) for module in LEFT_OUT_MODULES[name])


def requirement_name(requirement: str) -> str:
    """`psycopg[binary]==3.3.9` -> `psycopg`."""
    return re.split(r"[\[<>=!~; ]", requirement.strip(), maxsplit=1)[0].lower()


def excluded_for(function: wiring.Function, *, opensearch: bool) -> frozenset[str]:
    """The requirement names `function`'s bundle leaves out."""
    without_opensearch = frozenset() if opensearch else OPENSEARCH
    if function == wiring.REST_API:
        return without_opensearch
    if function == wiring.WORKER:
        return REST_ONLY | without_opensearch
    return REST_ONLY | OPENSEARCH


class BundlingError(RuntimeError):
    """pip could not build the Lambda dependencies; the message says what to do."""


def lambda_dependencies(pyproject: Path) -> list[str]:
    """The base dependency list: exactly what the Lambda bundle carries."""
    with pyproject.open("rb") as handle:
        project = tomllib.load(handle)["project"]
    return [str(dep) for dep in project["dependencies"]]


def pip_command(dependencies: list[str], target: Path, wheelhouse: Path | None) -> list[str]:
    """pip install for the Lambda platform: binary wheels only, so nothing compiles for the wrong CPU."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        "--target",
        str(target),
    ]
    if wheelhouse is not None:
        command += ["--no-index", "--find-links", str(wheelhouse)]
    return command + dependencies


def dependency_key(dependencies: list[str]) -> str:
    body = "\n".join([*PLATFORMS, PYTHON_VERSION, *sorted(dependencies)])
    return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class BundleSpec:
    """Where the source lives and how (or whether) to install its dependencies."""

    root: Path
    install_dependencies: bool
    cache_dir: Path
    wheelhouse: Path | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)

    @property
    def dependencies(self) -> list[str]:
        return [
            dep
            for dep in lambda_dependencies(self.root / "pyproject.toml")
            if requirement_name(dep) not in self.exclude
        ]

    def without(self, exclude: frozenset[str]) -> BundleSpec:
        return replace(self, exclude=exclude)

    def installed_dependencies(self) -> Path:
        """The cached site-packages for this dependency list, built once per list."""
        deps = self.dependencies
        target = self.cache_dir / dependency_key(deps)
        if (target / ".complete").exists():
            return target
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        result = subprocess.run(
            pip_command(deps, partial, self.wheelhouse), capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BundlingError(
                f"pip could not install the Lambda dependencies for {PLATFORM} ({tail[0]}); "
                "check network access to PyPI, pass -c wheelhouse=DIR, or synth with -c bundling=false."
            )
        (partial / ".complete").write_text("\n".join(deps), encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return target

    def bundle_into(self, output_dir: Path) -> None:
        if self.install_dependencies:
            shutil.copytree(
                self.installed_dependencies(),
                output_dir,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(".complete", "__pycache__", "bin"),
            )
        shutil.copytree(
            self.root / SOURCE_PACKAGE, output_dir / SOURCE_PACKAGE, ignore=_IGNORED, dirs_exist_ok=True
        )


@jsii.implements(ILocalBundling)
class _LocalBundler:
    """CDK calls this instead of Docker; returning True means the output directory is complete."""

    def __init__(self, spec: BundleSpec) -> None:
        self._spec = spec

    def try_bundle(self, output_dir: str, options: Any) -> bool:
        self._spec.bundle_into(Path(output_dir))
        return True


def lambda_code(spec: BundleSpec) -> lambda_.Code:
    """One asset per dependency list (CDK stages each once per app; each region uploads each once)."""
    source = spec.root / SOURCE_PACKAGE
    fingerprint = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            fingerprint.update(str(path.relative_to(source)).encode())
            fingerprint.update(path.read_bytes())
    fingerprint.update(dependency_key(spec.dependencies).encode())
    fingerprint.update(b"deps" if spec.install_dependencies else b"src")
    return lambda_.Code.from_asset(
        str(source),
        asset_hash_type=AssetHashType.CUSTOM,
        asset_hash=fingerprint.hexdigest(),
        bundling=BundlingOptions(
            # Never pulled: the local bundler always succeeds or raises.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
            # jsii calls try_bundle(output_dir, options) positionally; the typed stub spells options out.
            local=cast(ILocalBundling, _LocalBundler(spec)),
        ),
    )
