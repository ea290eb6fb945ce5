"""The Python API's ``build_run``: the engine's :func:`~trainwell.engine.build.build_run` with the live doctor.

The engine never imports the doctor (it calls an observer's hooks by name, ``engine/observer.py``); this module sits
above both and attaches it, as the CLI does::

    from trainwell import Trainer, build_run
    run = build_run(cfg, task)              # every part, made once
    resume(run, "auto")                     # optional: trainwell.engine.resuming
    result = Trainer(run).fit()
"""

from __future__ import annotations

from collections.abc import Sequence

from trainwell.config.schema import ExperimentConfig
from trainwell.doctor.checks import RunContext
from trainwell.doctor.live import TrainingDoctor
from trainwell.engine import build
from trainwell.engine.distributed import DistEnv
from trainwell.engine.observer import ObserverSetup
from trainwell.engine.run import Callback, Run
from trainwell.engine.rundir import REFUSE
from trainwell.engine.task import Task
from trainwell.engine.trackers import Tracker


def build_run(
    cfg: ExperimentConfig,
    task: Task,
    *,
    env: DistEnv | None = None,
    write_outputs: bool = True,
    callbacks: Sequence[Callback] = (),
    trackers: Sequence[Tracker] = (),
    existing_run: str = REFUSE,
) -> Run:
    """Every part of one run, the doctor observing (``diagnostics.enabled: false`` keeps it quiet).

    See :func:`trainwell.engine.build.build_run` for the arguments and the errors.
    """
    return build.build_run(
        cfg,
        task,
        env=env,
        write_outputs=write_outputs,
        callbacks=callbacks,
        trackers=trackers,
        existing_run=existing_run,
        observer=build_doctor,
    )


def build_doctor(setup: ObserverSetup) -> TrainingDoctor:
    """The live doctor of a run (an :data:`~trainwell.engine.observer.ObserverFactory`)."""
    context = RunContext.from_config(
        setup.cfg,
        total_steps=setup.total_steps,
        log_every=setup.log_every_steps,
        device=setup.device_type,
        world_size=setup.env.world_size,
    )
    return TrainingDoctor(
        setup.cfg.diagnostics, context=context, env=setup.env, run_dir=setup.run_dir, log=setup.log, task=setup.task
    )
