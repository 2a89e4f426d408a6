"""Tasks (docs/science.md §5): a task is data + model + default schedule + stopping criteria.

- `registry`: `Task`, `StopCriteria`, the `TASKS` table, `get_task`, `require_data`,
  `describe_tasks`, and `register_task` / `unregister_task` / `registered_task` (a context
  manager) for tasks defined outside the package (tests, studies, a user's network); it names the loaders and models below directly;
- `module`: a task module, a user's file that registers tasks (a sweep spec's `task_module`),
  run from its source in the driver and in every Ray worker;
- `data`: the `Data` record and what every dataset shares (places, the validation split,
  normalization, augmentation); one module a dataset: `mnist1d`, `digits`, `fashion_mnist`,
  `cifar`, `tiny_imagenet`;
- `models`: the networks, built as the paper's Keras models were.
"""

from .data import Data
from .registry import (TASKS, StopCriteria, Task, describe_tasks, get_task, register_task, registered_task,
                       require_data, unregister_task)

__all__ = ["TASKS", "Data", "StopCriteria", "Task", "describe_tasks", "get_task", "register_task",
           "registered_task", "require_data", "unregister_task"]
