"""The step-runner: the single code path that executes step bodies, wherever they run."""

from kstep.runner._execute import execute_step, load_artifact
from kstep.runner._request import RunInfo, StepOutcome, StepRequest

__all__ = ["RunInfo", "StepOutcome", "StepRequest", "execute_step", "load_artifact"]
