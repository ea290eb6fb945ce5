"""The training engine: everything between a typed config plus a task and a finished run directory.

Read in this order: ``build.py`` (``build_run``: the parts of a run, assembled once) → ``run.py`` (``Run``: those
parts as plain fields, the run's outcome and status) → ``loop.py`` (``Trainer``: the loop and nothing else) →
``step.py`` (one optimizer step) → ``evaluation.py`` (exactly-once evaluation) → ``checkpoint/`` (durable files,
resume). ``task.py`` is the contract a task implements; ``observer.py`` the hooks the doctor attaches through. The
engine imports only ``trainwell.config`` and ``trainwell.records`` (checked by tests/test_architecture.py).
"""
