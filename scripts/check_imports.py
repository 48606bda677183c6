"""Fail on an import loop between modules and on an import that points up the layers.

    .venv/bin/python scripts/check_imports.py [ROOT]

Every module of the project is parsed (not imported), and every import in it counts, also one
inside a function or under `if TYPE_CHECKING:`: a loop dodged with a function-local import is
still a loop. The layers, lowest first (a module imports only its own layer and those below):

    core <- infrastructure <- rag_system <- services <- uplift_socket <- uplift_tts
        <- livekit_layer <- agent
    core <- infrastructure <- rag_system <- services <- ops <- manage

services may import rag_system, never the reverse; uplift_tts uses uplift_socket (its
connection to Uplift AI); livekit_layer may use uplift_tts (the TTS it builds sessions with),
never the reverse; ops (the operator commands behind manage.py) use the services and
infrastructure, and of livekit only livekit.api (tokens). Nothing under core/,
infrastructure/, rag_system/ or services/ imports livekit, and no product module imports
tests/, bench/ or scripts/, which may import the product freely (their own loops are reported
too).

Prints one line per finding, `path:line: message`, and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("core", "infrastructure", "rag_system", "services", "uplift_socket", "uplift_tts",
           "livekit_layer", "agent", "ops", "manage")
OUTSIDE = ("tests", "bench", "scripts")
# What each top-level part may import from the project (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "infrastructure": frozenset({"core"}),
    "rag_system": frozenset({"core", "infrastructure"}),
    "services": frozenset({"core", "infrastructure", "rag_system"}),
    "uplift_socket": frozenset({"core", "infrastructure", "rag_system", "services"}),
    "uplift_tts": frozenset({"core", "infrastructure", "rag_system", "services",
                             "uplift_socket"}),
    "livekit_layer": frozenset({"core", "infrastructure", "rag_system", "services",
                                "uplift_socket", "uplift_tts"}),
    "agent": frozenset(PRODUCT) - {"ops", "manage"},
    "ops": frozenset({"core", "infrastructure", "rag_system", "services"}),
    "manage": frozenset({"core", "ops"}),
    **{part: frozenset(PRODUCT + OUTSIDE) for part in OUTSIDE},
}
NO_LIVEKIT = frozenset({"core", "infrastructure", "rag_system", "services"})
# Parts that may import only these of livekit.
LIVEKIT_ONLY: dict[str, str] = {"ops": "livekit.api", "manage": "livekit.api"}
SKIPPED_DIRS = {".venv", ".git", ".data", "__pycache__", "node_modules"}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: `source` imports `target` at `path:line`."""

    source: str
    target: str
    path: Path
    line: int
    # A package whose __init__ runs on the way to the module named (`a` for `import a.b`).
    on_the_way: bool = False


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the project by dotted name."""
    modules: dict[str, Path] = {}
    for part in PRODUCT + OUTSIDE:
        single = root / f"{part}.py"
        if single.is_file():
            modules[part] = single
        folder = root / part
        if folder.is_dir():
            for path in sorted(folder.rglob("*.py")):
                if not SKIPPED_DIRS & set(path.relative_to(root).parts):
                    modules[module_name(path, root)] = path
    return modules


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of everything `tree` imports; `from a import b` yields `a.b`, which
    the caller resolves to the module `a.b` or, when that is no module, to `a`."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield (f"{base}.{alias.name}" if base else alias.name), node.lineno


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` refers to (its longest known prefix), or None if external."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def collect(root: Path) -> tuple[dict[str, Path], list[Import], list[str]]:
    """The project's modules, the imports between them, and the findings about imports of
    other packages (livekit below the LiveKit layer)."""
    modules = project_modules(root)
    edges: list[Import] = []
    findings: list[str] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        part = module.split(".")[0]
        is_package = path.name == "__init__.py"
        for name, line in imported_names(tree, module, is_package):
            target = resolve(name, modules)
            if target is None:
                top = name.split(".")[0]
                if top == "livekit" and part in NO_LIVEKIT:
                    findings.append(
                        f"{shown(path, root)}:{line}: {module} imports livekit: only "
                        "livekit_layer/, agent.py, uplift_tts.py and uplift_socket.py may "
                        "import livekit"
                    )
                allowed = LIVEKIT_ONLY.get(part)
                if top == "livekit" and allowed is not None and not (
                    name == allowed or name.startswith(allowed + ".")
                ):
                    findings.append(
                        f"{shown(path, root)}:{line}: {module} imports {name}: the operator "
                        f"commands may import only {allowed} of livekit"
                    )
                continue
            # Importing a.b.c runs a/__init__.py and a/b/__init__.py first: a package that
            # imports its own modules closes a loop with every module importing through it.
            parts = target.split(".")
            for end in range(1, len(parts) + 1):
                reached = ".".join(parts[:end])
                if reached in modules and reached != module:
                    edges.append(Import(module, reached, path, line, reached != target))
    unique_edges = list(dict.fromkeys(edges))
    return modules, unique_edges, list(dict.fromkeys(findings))


def layer_findings(edges: list[Import], root: Path) -> list[str]:
    findings = []
    for edge in edges:
        source, target = edge.source.split(".")[0], edge.target.split(".")[0]
        if edge.on_the_way or source == target or target in ALLOWED.get(source, frozenset()):
            continue
        findings.append(
            f"{shown(edge.path, root)}:{edge.line}: {edge.source} imports {edge.target}: "
            f"{source} may import only {layer_list(source)}"
        )
    return findings


def layer_list(part: str) -> str:
    allowed = sorted(ALLOWED.get(part, frozenset()))
    return ", ".join([*allowed, f"itself ({part})"]) if allowed else f"itself ({part})"


def strongly_connected(nodes: list[str], graph: dict[str, list[Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, next_edge = work.pop()
            if next_edge == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            out = graph.get(node, [])
            if next_edge < len(out):
                work.append((node, next_edge + 1))
                target = out[next_edge].target
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def shortest_loop(start: str, members: set[str], graph: dict[str, list[Import]]) -> list[Import]:
    """The shortest chain of imports from `start` back to itself inside one component."""
    previous: dict[str, Import] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following = []
        for node in frontier:
            for edge in graph.get(node, []):
                if edge.target == start:
                    chain = [edge]
                    while chain[0].source != start:
                        chain.insert(0, previous[chain[0].source])
                    return chain
                if edge.target in members and edge.target not in seen:
                    seen.add(edge.target)
                    previous[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    return []


def loop_findings(modules: dict[str, Path], edges: list[Import], root: Path) -> list[str]:
    graph: dict[str, list[Import]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
    findings = []
    for component in strongly_connected(sorted(modules), graph):
        if len(component) < 2:
            continue
        chain = shortest_loop(component[0], set(component), graph)
        names = " -> ".join([chain[0].source, *(edge.target for edge in chain)])
        first = chain[0]
        where = "; ".join(
            f"{shown(edge.path, root)}:{edge.line} ({edge.source} -> {edge.target})"
            for edge in chain
        )
        findings.append(
            f"{shown(first.path, root)}:{first.line}: import loop between "
            f"{len(component)} modules: {names}; at {where}"
        )
    return findings


def shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def check(root: Path) -> list[str]:
    """Every finding about the project under `root`, one line each."""
    modules, edges, findings = collect(root)
    return findings + layer_findings(edges, root) + loop_findings(modules, edges, root)


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else ROOT
    findings = check(root)
    for finding in findings:
        print(finding)
    modules = len(project_modules(root))
    if findings:
        print(f"check_imports: {len(findings)} finding(s) in {modules} modules", file=sys.stderr)
        return 1
    print(f"check_imports: {modules} modules, no import loops, imports point down the layers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
