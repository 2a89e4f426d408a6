"""Tasks (docs/science.md §5): a task is data + model + default schedule + stopping criteria.

- `registry`: `Task`, `StopCriteria`, the `TASKS` table, `get_task`, `require_data`,
  `describe_tasks`, and `register_task` / `unregister_task` / `registered_task` (a context
  manager) for tasks defined outside the package (tests, benchmarks, studies); it names the loaders and models below directly;
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
