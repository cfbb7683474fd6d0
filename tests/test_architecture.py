"""The import contracts of .importlinter, checked in-process on this tree's own code."""

from __future__ import annotations

import importlib.util
import textwrap
import uuid
from pathlib import Path

from importlinter import configuration
from importlinter.application import output, use_cases

ROOT = Path(__file__).resolve().parent.parent

configuration.configure()
# create_report checks with the contract types registered; lint_imports registers the built-in ones first too.
use_cases._register_built_in_contract_types()


def broken_contracts(config: Path) -> dict[str, str]:
    """Each contract of ``config`` that is broken or could not run, by name, with its rendered reasons."""
    report = use_cases.create_report(use_cases.read_user_options(str(config)), cache_dir=None)
    broken = {name: str(error) for name, error in report.invalid_contract_options.items()}
    for contract, check in report.get_contracts_and_checks():
        if not check.kept:
            with output.console.capture() as rendered:
                contract.render_broken_contract(check)
            broken[contract.name] = rendered.get()
    return broken


def test_the_tree_keeps_every_contract():
    # grimp finds the root packages on sys.path: make sure that is this tree, not another checkout's install.
    for package in ("tools", "pipeline", "stages", "shm"):
        origin = Path(importlib.util.find_spec(package).origin).resolve()
        assert origin.is_relative_to(ROOT), f"{package} resolves to {origin}, not under {ROOT}: run from the root"
    config = ROOT / ".importlinter"
    declared = {contract["id"] for contract in use_cases.read_user_options(str(config)).contracts_options}
    assert {"floors", "no-cycles"} <= declared  # the two: the floors, and no circles anywhere
    broken = broken_contracts(config)
    assert not broken, "broken import contracts:\n" + "\n".join(f"* {name}\n{why}" for name, why in broken.items())


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_each_contract_type_reports_a_tree_that_breaks_it(tmp_path, monkeypatch):
    # A unique package name: grimp resolves it through importlib, which must not find an earlier test's tree.
    pkg = f"archprobe_{uuid.uuid4().hex[:12]}"
    write_tree(tmp_path, {
        f"{pkg}/__init__.py": "",
        f"{pkg}/low/__init__.py": "",
        f"{pkg}/low/kernel.py": f"import socket\nfrom {pkg}.high import host\n",
        f"{pkg}/high/__init__.py": "",
        f"{pkg}/high/host.py": "",
        f"{pkg}/ring/__init__.py": "",
        f"{pkg}/ring/a.py": f"from {pkg}.ring import b\n",
        f"{pkg}/ring/b.py": f"from {pkg}.ring import a\n",
        f"{pkg}/clean/__init__.py": "",
        f"{pkg}/clean/one.py": f"from {pkg}.clean import two\n",
        f"{pkg}/clean/two.py": "import math\n",
    })
    config = tmp_path / ".importlinter"
    config.write_text(textwrap.dedent(f"""\
        [importlinter]
        root_packages =
            {pkg}
        include_external_packages = True

        [importlinter:contract:layers]
        name = high over low
        type = layers
        containers = {pkg}
        layers =
            high
            low

        [importlinter:contract:cycles]
        name = no cycles in ring
        type = acyclic_siblings
        ancestors = {pkg}.ring

        [importlinter:contract:io]
        name = low does no I/O
        type = forbidden
        source_modules = {pkg}.low
        forbidden_modules = socket

        [importlinter:contract:clean-cycles]
        name = no cycles in clean
        type = acyclic_siblings
        ancestors = {pkg}.clean

        [importlinter:contract:clean-io]
        name = clean does no I/O
        type = forbidden
        source_modules = {pkg}.clean
        forbidden_modules = socket
        """))
    monkeypatch.syspath_prepend(str(tmp_path))

    broken = broken_contracts(config)

    assert set(broken) == {"high over low", "no cycles in ring", "low does no I/O"}
    assert f"{pkg}.low.kernel -> {pkg}.high.host" in broken["high over low"]
    assert ".a -> .b" in broken["no cycles in ring"] or ".b -> .a" in broken["no cycles in ring"]
    assert f"{pkg}.low.kernel -> socket" in broken["low does no I/O"]
