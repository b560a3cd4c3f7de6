"""The layers of `infra/` (its docstring) as rules a change cannot quietly break: each layer imports only the
layers below it, the domain knows no Telegram, and the shared code, the services and the command line import in
one direction only (command line → services → infra; no service imports another)."""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("gateway", "transcriber", "analyzers", "formatter")
MAY_IMPORT = {
    "runtime": {"runtime"},
    "bus": {"bus", "runtime"},
    "domain": {"domain", "bus", "runtime"},
    "voice": {"voice", "domain", "runtime"},
    "service": {"service", "bus", "runtime"},
    "ops": {"ops", "service", "voice", "domain", "bus", "runtime"},
}
"""What each layer of `infra` may import of the project, itself included."""
TELEGRAM = ("aiogram",)


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (inside functions and `TYPE_CHECKING` blocks too), relative
    imports resolved against the file's own package, with its line."""
    package = path.resolve().parent.relative_to(REPO).parts
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join((*package[: len(package) - node.level + 1], *[node.module or ""])).strip(".")
            module = base if node.level else (node.module or "")
            found.append((node.lineno, module))
            # `from infra import bus` and `from . import x` import a module each
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and _dynamic(node.func):
            found.append((node.lineno, "<import_module>"))  # a module chosen at run time escapes these rules
    return found


def _dynamic(function: ast.expr) -> bool:
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
    return name in ("import_module", "__import__")


def files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def violations(package: str, allowed: Callable[[str], bool]) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in files(package)
        for line, module in imports(path)
        if not allowed(module)
    ]


def project(module: str) -> str | None:
    """The project's package a module belongs to (`infra.<layer>`, a service, the command line), or None."""
    head, _, rest = module.partition(".")
    if head == "infra":
        return f"infra.{rest.partition('.')[0]}" if rest else "infra"
    if head in (*SERVICES, "voice_insight", "tests", "bench"):
        return head
    if module == "<import_module>":
        return module
    return None


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_a_layer_imports_only_the_layers_below_it(layer: str) -> None:
    allowed = {f"infra.{name}" for name in MAY_IMPORT[layer]}

    def ok(module: str) -> bool:
        owner = project(module)
        return owner is None or owner in allowed

    assert (REPO / "infra" / layer / "__init__.py").is_file(), f"infra/{layer} is not a package"
    assert not violations(f"infra/{layer}", ok)


def test_every_module_of_infra_is_in_a_layer() -> None:
    loose = [p.name for p in (REPO / "infra").glob("*.py") if p.name != "__init__.py"]
    layers = {p.name for p in (REPO / "infra").iterdir() if (p / "__init__.py").is_file()}
    assert not loose, f"modules outside the layers: {loose}"
    assert layers == set(MAY_IMPORT), layers


def test_the_domain_and_the_bus_know_no_telegram() -> None:
    for package in ("infra/domain", "infra/bus", "infra/runtime", "infra/service"):
        assert not violations(package, lambda module: module.partition(".")[0] not in TELEGRAM), package


def test_the_bus_knows_no_domain() -> None:
    assert not violations("infra/bus", lambda module: project(module) in (None, "infra.bus", "infra.runtime"))


def test_shared_code_imports_no_service_and_no_command_line() -> None:
    assert not violations("infra", lambda module: project(module) is None or project(module).startswith("infra"))


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_only_itself_and_infra(service: str) -> None:
    def ok(module: str) -> bool:
        owner = project(module)
        return owner is None or owner == service or owner.startswith("infra.")

    assert not violations(service, ok)


def test_the_checks_see_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each kind of upward import these rules exist for is caught (so a green run means something)."""
    bus = tmp_path / "infra" / "bus"
    bus.mkdir(parents=True)
    (bus / "__init__.py").write_text("")
    (bus / "codec.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from infra.domain.contracts import Transcript\n"
        "def f():\n    import gateway.chats\n"
        "from ..domain import notes\n"
        "from importlib import import_module\n"
        "import_module('formatter.service')\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = violations("infra/bus", lambda module: project(module) in (None, "infra.bus", "infra.runtime"))
    assert sorted(line.split(" imports ")[1] for line in found) == [
        "<import_module>",
        "gateway.chats",
        "infra.domain",
        "infra.domain.contracts",
        "infra.domain.contracts.Transcript",
        "infra.domain.notes",
    ], found
