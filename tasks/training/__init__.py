"""The ``training`` mission kind: train mitigations, re-diagnose them, decide per variant from paired statistics."""
