"""The layers of `infra/` (its docstring) as rules a change cannot quietly break: each layer imports only the
layers below it, the domain knows no Telegram, and the shared code, the services and the command line import in
one direction only (command line → services → infra; no service imports another)."""

from __future__ import annotations

import ast
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
    """Every module a file imports, at any depth (imports inside functions count), with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            if node.module in ("infra", *SERVICES):  # `from infra import bus` imports infra.bus
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            found.append((node.lineno, "<import_module>"))  # a module chosen at run time escapes these rules
    return found


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


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The rules above would catch an upward import (so a green run means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from infra.domain.contracts import Transcript\n    import gateway.chats\n")
    assert [module for _, module in imports(bad)] == ["infra.domain.contracts", "gateway.chats"]
    assert project("infra.domain.contracts") not in {"infra.bus", "infra.runtime"}
