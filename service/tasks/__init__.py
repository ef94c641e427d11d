"""The tasks this service serves, by the name a model's metadata gives as its `task`.

Adding a task is one module beside these (a `ServedModel` subclass that owns its input rules, tensor
signature and inference) and one line here.
"""

from __future__ import annotations

from typing import Any

from service.tasks.base import ServedModel
from service.tasks.digits import DigitClassifier
from service.tasks.forecasts import Forecaster

Task = type[ServedModel[Any, Any]]

TASKS: dict[str, Task] = {task.task: task for task in (DigitClassifier, Forecaster)}
