"""A small healthy sweep in the suite (the full one, 32 runs, is ``make doctor-eval``): randomly drawn sane
hyperparameters must raise no error, and at most one warning over all the runs together."""

from __future__ import annotations

from pathlib import Path

from sweep import healthy_runs, run_healthy


def test_randomly_drawn_healthy_runs_raise_no_error_and_at_most_one_warning(tmp_path: Path) -> None:
    # Regression only, to stay fast: the hand-pose base config's silence is tested in test_planted_faults.py.
    runs = healthy_runs({"regression": 3}, seed=15)
    assert len({r.args for r in runs}) == len(runs)  # the draws differ
    errors, warnings = [], []
    for run in runs:
        outcome = run_healthy(run, tmp_path / run.id)
        assert outcome.status == 0, run.args
        for finding in outcome.offline:
            (errors if finding.severity == "error" else warnings).append((run.id, finding.id, finding.evidence))
    assert errors == [] and len(warnings) <= 1, (errors, warnings)
