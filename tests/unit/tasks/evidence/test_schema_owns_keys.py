"""Every tag name and every key built from parts lives in tasks/evidence/schema.py (docs/architecture.md, "Layers").

The Python check reads flows/, tasks/ and agents/ with ``ast``: an f-string whose
literal text has a "/" right beside a formatted value (``f"gradflow/{pw}/peak"``),
or a "/" string joined to a value with ``+`` or ``%``, builds a key, and a string
that names a tag (``"fa.status"``, ``":tags/fa.status"``) names one by hand. The
template check reads templates/ for ``'fa.`` strings and for ``~ '/...'`` or
``'.../%s' %`` key building. Each finding names file:line; the fix is a builder
or constant in the schema module (the templates call it through the global ``tag``).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
SCHEMA = "tasks/evidence/schema.py"

# f-strings and joins with a "/" beside a value that are not evidence keys: file → a piece of the expression's source.
NOT_KEYS = {
    # URLs, endpoints and database URIs
    "agents/narrative.py": ("/chat/completions",),
    "tasks/adapters/hub.py": ("{hf_constants.ENDPOINT}/{repo_id}", "{page}/tree/main"),
    "tasks/runtime/local_api.py": ("{port}/api", "{url}/health"),
    "tasks/runtime/paths.py": ("sqlite:///",),
    "tasks/runtime/preflight.py": ('+ "/health"',),
    # artifact, template and file paths, and a Prefect flow-run name
    "agents/ops_commander.py": ("{self.run_id}/{self.path}",),
    "tasks/evidence/store.py": ("{artifact_path}/{Path(path).name}", 'f"tables/{name}"'),
    "tasks/training/report.py": ('f"plots/{name}"',),
    "tasks/stages/paper.py": ('f"paper/{section}.{ext}.j2"',),
    "flows/diagnose.py": ('f"diagnose/{e.name}"',),
    # a message naming an open_clip architecture and tag
    "tasks/adapters/openclip_weights.py": ("{arch}/{tag}",),
    # the text hashed into one sample's MM-SHAP seed
    "tasks/diagnostics/mm_shap.py": ('f"{seed}/{sample_id}"',),
    # a citation's params/ and tags/ prefixes (cited.reference), not keys
    "tasks/evidence/cited.py": ('f"params/{key}"', 'f"tags/{key}"'),
}
# template strings with a "/" joined to a value that are not keys
TEMPLATE_NOT_KEYS = {
    "templates/probing/execution_progress_update.md.j2": ('"../results/" ~',),  # a figure's path
}

TAG_TEXT = re.compile(r"(?<![\w.])fa\.\w")
TEMPLATE_TAG = re.compile(r"""['"]fa\.""")
TEMPLATE_JOIN = re.compile(r"""~\s*(['"])[^'"\n]*/[^'"\n]*\1|(['"])[^'"\n]*/\2\s*~|(['"])[^'"\n]*/[^'"\n]*%[sd][^'"\n]*\3\s*%"""
                           r"""|(['"])[^'"\n]*%[sd][^'"\n]*/[^'"\n]*\4\s*%""")


def _docstrings(tree: ast.AST) -> set[int]:
    bodies = (n.body for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))
    return {id(b[0].value) for b in bodies if b and isinstance(b[0], ast.Expr) and isinstance(b[0].value, ast.Constant)}


def _builds_key(node: ast.AST) -> bool:
    """An f-string with "/" beside a value, or a "/" string joined to a value by ``+`` or ``%``."""
    if isinstance(node, ast.JoinedStr):
        parts = node.values
        return any(isinstance(p, ast.Constant) and isinstance(p.value, str)
                   and ((p.value.endswith("/") and i + 1 < len(parts) and isinstance(parts[i + 1], ast.FormattedValue))
                        or (p.value.startswith("/") and i > 0 and isinstance(parts[i - 1], ast.FormattedValue)))
                   for i, p in enumerate(parts))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = node.left, node.right
        text = lambda n: n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None  # noqa: E731
        return ((text(left) is not None and text(left).endswith("/") and text(right) is None)
                or (text(right) is not None and text(right).startswith("/") and text(left) is None))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        fmt = node.left.value if isinstance(node.left, ast.Constant) and isinstance(node.left.value, str) else ""
        return "/" in fmt and "%" in fmt
    return False


def key_findings(source: str, name: str = "<source>") -> list[str]:
    """``name:line: source`` for every key built by hand and every tag named by hand in one Python source."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if _builds_key(node):
            found.append((node.lineno, ast.get_source_segment(source, node) or ast.unparse(node)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and TAG_TEXT.search(node.value)):
            found.append((node.lineno, repr(node.value)))
    return [f"{name}:{line}: {text}" for line, text in sorted(set(found))]


def template_findings(text: str, name: str = "<template>", allowed: tuple[str, ...] = ()) -> list[str]:
    """``name:line: text`` for every ``'fa.`` string and every key joined from a "/" string in one template."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for match in [*TEMPLATE_TAG.finditer(line), *TEMPLATE_JOIN.finditer(line)]:
            around = line[max(0, match.start() - 40):match.end() + 40]
            if not any(a in around for a in allowed):
                found.append(f"{name}:{number}: {match.group(0)}")
    return found


def _python_files() -> list[Path]:
    return sorted(p for d in ("flows", "tasks", "agents") for p in (ROOT / d).rglob("*.py"))


def test_no_key_is_built_and_no_tag_named_outside_the_schema():
    found = []
    for path in _python_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel == SCHEMA:
            continue
        allowed = NOT_KEYS.get(rel, ())
        found += [f for f in key_findings(path.read_text(encoding="utf-8"), rel) if not any(a in f for a in allowed)]
    assert not found, ("keys built or tags named outside tasks/evidence/schema.py (add a builder there, or a "
                       "commented entry to NOT_KEYS if it is no key):\n" + "\n".join(found))


def test_templates_name_tags_and_build_keys_through_the_schema():
    found = []
    for path in sorted((ROOT / "templates").rglob("*.j2")):
        rel = path.relative_to(ROOT).as_posix()
        found += template_findings(path.read_text(encoding="utf-8"), rel, TEMPLATE_NOT_KEYS.get(rel, ()))
    assert not found, "templates that name a tag or join a key by hand (use tag.NAME / tag.<builder>(...)):\n" + "\n".join(found)


def test_every_allowed_exception_is_still_there():
    """An allow-list entry that no longer matches anything is stale: remove it, so it cannot hide a new key."""
    stale = []
    for rel, pieces in NOT_KEYS.items():
        hits = key_findings((ROOT / rel).read_text(encoding="utf-8"), rel)
        stale += [f"{rel}: {p}" for p in pieces if not any(p in h for h in hits)]
    for rel, pieces in TEMPLATE_NOT_KEYS.items():
        text = (ROOT / rel).read_text(encoding="utf-8")
        stale += [f"{rel}: {p}" for p in pieces if p not in text]
    assert not stale, "stale allow-list entries:\n" + "\n".join(stale)


def test_the_scanners_find_planted_violations():
    planted = '''"""A docstring may say fa.status."""
key = f"gradflow/{pathway}/peak"
other = f"{metric}/ci_low"
joined = "stats/" + rest
formatted = "layer/%d/%s" % (i, k)
tag = "fa.status"
ref = f"{run_id}:tags/fa.decision"
fine = f"{a}_vs_{b}" + schema.pair_key(a, b) + "plain/text"
'''
    found = key_findings(planted, "planted.py")
    assert [f.split(":")[1] for f in found] == ["2", "3", "4", "5", "6", "7"], found
    assert found[0] == 'planted.py:2: f"gradflow/{pathway}/peak"'
    template = ("{{ c.m(m ~ '/mean') }}\n{{ check.m('checklist/' ~ r.item.id) }}\n{{ c.tags.get('fa.blocker') }}\n"
                "{{ r.m('mc/%s/p%d/spread' % (v, p)) }}\n{{ tag.model_key(m, 'ci_low') }} {{ 'seed ' ~ s }}\n")
    assert [f.split(":")[1] for f in template_findings(template, "t.j2")] == ["1", "2", "3", "4"]
    assert template_findings('{{ "../results/" ~ m.heatmap }}', "t.j2", ('"../results/" ~',)) == []
