"""The project's imports run one way and never in a circle (docs/architecture.md, "Layers").

    flows            Prefect flows and the CLI
    stages           the Prefect tasks (tasks.stages, tasks.actions): thin wrappers that log evidence
    agents           planner, quality officer, ops commander, narrative: read evidence, never open a model
    pure modules     adapters, data, diagnostics, stats, reporting, literature, paper, ...: no agents, no flows
    foundation       evidence (store, schema, citations, cycles, recovery), mission schema, progress, runtime

A module may import its own layer or any layer below it. grimp (the import graph behind
import-linter) reads every import statement, those inside functions included, so a lazy
import does not hide an upward edge.
"""
from __future__ import annotations

import copy

import grimp
import pytest

PACKAGES = ("flows", "tasks", "agents")
STAGES = ("tasks.stages", "tasks.actions")  # the @task wrappers of every mission kind, one module per DAG node
FOUNDATION = ("tasks.evidence", "tasks.mission", "tasks.progress", "tasks.runtime")  # tasks.evidence: a package


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # an import under TYPE_CHECKING never runs, so it cannot form a circle at import time
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)


def layers(graph: grimp.ImportGraph) -> list[grimp.Layer]:
    """Top to bottom; the pure layer is every other child of ``tasks``, so a new module lands there by default."""
    stages = {m for m in STAGES if m in graph.modules}
    foundation = {m for m in FOUNDATION if m in graph.modules}
    pure = graph.find_children("tasks") - stages - foundation
    return [grimp.Layer(*group, independent=False) for group in ({"flows"}, stages, {"agents"}, pure, foundation)]


def upward_imports(graph: grimp.ImportGraph) -> list[str]:
    return sorted(" -> ".join(("|".join(sorted(r.heads)), *r.middle, "|".join(sorted(r.tails))))
                  for dep in graph.find_illegal_dependencies_for_layers(layers(graph)) for r in dep.routes)


def circles(graph: grimp.ImportGraph) -> list[str]:
    found = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                found.add(" -> ".join((module, *back)))
    return sorted(found)


def test_no_layer_imports_a_layer_above_it(graph):
    found = upward_imports(graph)
    assert not found, "upward imports (move the shared piece down, or let the caller pass it in):\n" + "\n".join(found)


def test_agents_never_open_a_model(graph):
    """Agents read evidence; adapters belong to the stages that open models."""
    chain = graph.find_shortest_chain(importer="agents", imported="tasks.adapters", as_packages=True)
    assert chain is None, "an agent reaches an adapter: " + " -> ".join(chain)


def test_no_import_circles(graph):
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(found)


def test_the_checks_find_a_planted_upward_import_and_circle(graph):
    """The walk is real: an upward import and a circle planted in a copy of the graph are both reported."""
    planted = copy.deepcopy(graph)
    planted.add_import(importer="tasks.stats.gates", imported="agents.planner")
    assert any(f.startswith("tasks.stats.gates -> agents.planner") for f in upward_imports(planted))
    assert any("tasks.stats.gates" in c and "agents.planner" in c for c in circles(planted))  # the planner imports the gates
