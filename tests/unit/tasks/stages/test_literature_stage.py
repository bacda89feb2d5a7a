"""The literature stage on a real SQLite MLflow store: the related-work section written, logged and counted."""
from __future__ import annotations

from tasks import evidence
from tasks.reporting import literature
from tasks.stages._common import PROJECT_ROOT
from tasks.stages.literature import literature_stage


def test_related_work_is_written_and_logged_with_the_library_size(cycle, tmp_path):
    extra = tmp_path / "extra.bib"
    extra.write_text("@article{zz_extra_2026, title={An Extra Work}, author={Doe, Jane}, year={2026}, journal={J}}\n",
                     encoding="utf-8")
    action = cycle.mission.for_stage("literature")
    outcome = literature_stage.fn(cycle, action, (str(extra),))

    assert outcome.status == "Completed"
    run = evidence.read_run(outcome.run_id, with_children=False)
    assert run.tags["fa.kind"] == "action" and run.tags["fa.action_id"] == action.id
    assert run.tags["fa.status"] == "Completed"
    project = literature.load_library([PROJECT_ROOT / "literature" / "references.bib"])
    assert run.m("bib_entries").value == len(project) + 1 and run.m("unresolved_citations").value == 0
    md = (cycle.report_dir / "paper" / "related_work.md").read_text(encoding="utf-8")
    assert md.startswith("<!-- fusionaudit: related work drafted from references.bib, extra.bib. -->")
    logged = {a.path for a in evidence.client().list_artifacts(outcome.run_id, "paper")}
    assert logged == {"paper/related_work.md", "paper/related_work.tex"}
