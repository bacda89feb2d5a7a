"""Footnote citations: written, read back, excerpted and shown where a viewer has no footnotes."""
from __future__ import annotations

from tasks.evidence.cited import footnotes_as_references, from_footnotes, to_footnotes, used_footnotes

RUN = "0123456789abcdef0123456789abcdef"
INLINE = f"# T\n\n- share 0.993 [{RUN}:verdict/m/mean]\n- GO [{RUN}:tags/fa.decision] and `0.5 [x:y]`\n\n## Detail\n\np 0.01 [{RUN}:verdict/m/p]\n"


def test_footnotes_round_trip_to_the_inline_citations():
    notes = to_footnotes(INLINE)
    assert "0.993[^e1]" in notes and "GO[^e2]" in notes and "`0.5 [x:y]`" in notes  # code spans stay code
    assert notes.endswith(f"[^e3]: run {RUN}, key verdict/m/p\n")
    back, problems = from_footnotes(notes)
    assert not problems and f"0.993 [{RUN}:verdict/m/mean]" in back


def test_an_excerpt_keeps_exactly_the_footnotes_it_uses():
    notes = to_footnotes(INLINE)
    head = notes.split("\n## ", 1)[0]
    excerpt = used_footnotes(head + "\n\n" + "\n".join(l for l in notes.split("\n") if l.startswith("[^")))
    assert "[^e1]: run" in excerpt and "[^e2]: run" in excerpt and "[^e3]" not in excerpt
    assert not from_footnotes(excerpt)[1]  # every reference defined, every definition used


def test_references_replace_footnotes_for_viewers_without_them():
    shown = footnotes_as_references(to_footnotes(INLINE))
    assert "[^" not in shown
    assert "0.993 \\[e1\\]" in shown and "GO \\[e2\\]" in shown
    assert f"- **e1**: run `{RUN}`, key `verdict/m/mean`" in shown
    assert "`0.5 [x:y]`" in shown
    assert footnotes_as_references("no citations\n") == "no citations\n"
