"""The eight downstream benchmarks of the BERT-wwm report: registry, readers, heads, MRC windows, metrics."""

from bertwwm.tasks.registry import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
