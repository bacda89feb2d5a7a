"""Where and how a cycle runs: environment snapshot, preflight checks, paths, batching, resources, redaction.

Plain functions with no Prefect tasks and no agents; the stages and flows call them.
"""
