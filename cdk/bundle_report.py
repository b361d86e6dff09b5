"""Per-function Lambda bundle figures for docs/benchmarks.md: `python -m cdk.bundle_report`.

For each function of the wiring module: the zipped size of the bundle it is deployed with (the
manylinux aarch64 dependencies pip installs for it plus the `lambdas` source, zipped at level 9 as
CDK does), and the cold import time of its handler module: a fresh interpreter per run, the median of
`--runs` runs. The import is timed with this machine's interpreter and this virtualenv's copies of
the same pinned packages, because the bundle's aarch64 binaries do not load on another CPU: every
top-level module the bundle does not hold is blocked (the standard library aside), so what a package
imports only when it finds another installed here (redis imports OpenTelemetry's SDK, which this
virtualenv has for other tools) is not counted. It measures what the handler imports, not Lambda's
disk. Wall time swings with the machine's load; CPU time (process_time) much less, so both are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from cdk.app import ROOT, quiet_node_warnings

quiet_node_warnings()  # before aws_cdk (imported by cdk.bundling) starts jsii

from cdk.bundling import BundleSpec, blocked_modules, dependency_key, excluded_for  # noqa: E402
from lambdas import wiring  # noqa: E402

BLOCK_AND_TIME = """
import importlib, importlib.abc, sys, time
blocked = set(sys.argv[2].split(",")) - {""}
held = set(sys.argv[3].split(",")) - {""} if len(sys.argv) > 3 else set()
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        stdlib = top in sys.stdlib_module_names or top.startswith("_sysconfigdata")
        if top in blocked or (held and top not in held and not stdlib):
            raise ImportError(name)
        return None
sys.meta_path.insert(0, Block())
wall, cpu = time.perf_counter(), time.process_time()
importlib.import_module(sys.argv[1])
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def zipped_size(spec: BundleSpec) -> tuple[int, int, frozenset[str]]:
    """(zipped bytes, unzipped bytes, its top-level module names) of the bundle `spec` builds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        spec.bundle_into(out)
        files = [p for p in out.rglob("*") if p.is_file()]
        archive = Path(tmp) / "bundle.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for path in files:
                zf.write(path, path.relative_to(out))
        return archive.stat().st_size, sum(p.stat().st_size for p in files), top_level_modules(out)


def top_level_modules(directory: Path) -> frozenset[str]:
    """What `import X` finds in a bundle's root: packages (namespace ones too) and modules."""
    names = set()
    for entry in directory.iterdir():
        if entry.is_dir() and not entry.name.endswith((".dist-info", ".data")) and entry.name != "bin":
            names.add(entry.name)
        elif entry.suffix in (".py", ".so"):
            names.add(entry.name.split(".")[0])
    return frozenset(names)


def import_blocked(
    module: str, blocked: str, *, check: bool, held: frozenset[str] = frozenset()
) -> subprocess.CompletedProcess[str]:
    """Import `module` in a fresh interpreter with the `blocked` packages (comma-separated) made
    unimportable, as its bundle leaves them out, and, given the bundle's `held` top-level modules,
    everything else outside the standard library; prints the import's wall and CPU seconds."""
    return subprocess.run(
        [sys.executable, "-c", BLOCK_AND_TIME, module, blocked, ",".join(sorted(held))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=check,
        env={**os.environ, "CHATSTACK_ENVIRONMENT": "test"},
    )


def import_seconds(
    function: wiring.Function, blocked: str, runs: int, held: frozenset[str]
) -> tuple[float, float, bool]:
    """Median (wall, CPU) seconds of a cold import of the handler module, and whether it could be
    held to the bundle's modules: where this virtualenv's copy of a package needs a module that the
    bundle's copy (resolved for Lambda) does not, only the left-out packages are blocked."""
    strict = import_blocked(function.module, blocked, check=False, held=held).returncode == 0
    walls, cpus = [], []
    for _ in range(runs):
        result = import_blocked(function.module, blocked, check=True, held=held if strict else frozenset())
        wall, cpu = result.stdout.strip().splitlines()[-1].split()
        walls.append(float(wall))
        cpus.append(float(cpu))
    return statistics.median(walls), statistics.median(cpus), strict


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector-store", choices=["opensearch", "pgvector"], default="opensearch")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    base = BundleSpec(
        root=ROOT,
        install_dependencies=True,
        cache_dir=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "chatstack"
        / "lambda-deps",
    )
    sizes: dict[str, tuple[int, int, frozenset[str]]] = {}
    header = f"{'function':<16} {'bundle':<18} {'zipped MB':>9} {'unzipped MB':>11}"
    print(f"{header} {'import wall ms':>14} {'CPU ms':>7}")
    for function in wiring.FUNCTIONS:
        exclude = excluded_for(function, opensearch=args.vector_store == "opensearch")
        spec = base.without(exclude)
        key = dependency_key(spec.dependencies)
        if key not in sizes:
            sizes[key] = zipped_size(spec)
        zipped, unzipped, held = sizes[key]
        blocked = blocked_modules(exclude)
        label = "full" if not exclude else "-" + ",".join(sorted(exclude))[:16]
        wall, cpu, strict = import_seconds(function, blocked, args.runs, held)
        mb = f"{zipped / 1e6:>9.1f} {unzipped / 1e6:>11.1f}"
        note = "" if strict else "  (this virtualenv's packages, left-out ones blocked)"
        print(f"{function.name:<16} {label:<18} {mb} {wall * 1000:>14.0f} {cpu * 1000:>7.0f}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
