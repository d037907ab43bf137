"""tinyworld: the built-in world (tokenizer, tasks, judges) in which every algorithm runs on a CPU."""

from .judges import quality, score, surface_score
from .tasks import (
    ANSWER_MARKER, CHALLENGER_PROMPT, FAMILIES, SPLITS, Family, Task, challenger_example, check, draw_task,
    make_task, parse, reference_samples, sample_tasks, split_of, stated_answer,
)
