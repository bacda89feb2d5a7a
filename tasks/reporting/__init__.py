"""Reports from evidence: the views (evidence → template context), the one Jinja environment and its filters,
Markdown escaping, the handoff's headline, the paper drafts and the BibTeX library.

Pure: no Prefect, no agents. Import the module you need (``from tasks.reporting import views``).
"""
