"""`langplay world build-base`: train tinyworld's base model from scratch with langplay's own SFT.

The recipe, its rows and its untrained model are tinyworld's (`langplay/tinyworld/base.py`); training them is the
trainer's, a layer above the world, so this entry point lives here, beside the command that calls it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import datasets

from langplay.config import load_config
from langplay.policy import Policy
from langplay.tinyworld.base import BASE_RECIPE, init_model, training_rows, weights_sha256
from langplay.trainer import Trainer


def build_base(output: str | Path, recipe: dict = BASE_RECIPE, steps: int | None = None, progress: bool = True) -> Path:
    """Train the base model from scratch and save it (HF folder, safetensors) with its recipe."""
    recipe = {**recipe, "steps": steps or recipe["steps"]}
    output = Path(output)
    model, tokenizer = init_model(recipe)
    rows = datasets.Dataset.from_list(training_rows(recipe["steps"] * recipe["batch_size"], recipe["seed"], recipe))
    work = output.parent / f".{output.name}.run"
    config = load_config(overrides=[
        "algorithm=sft", "model.name_or_path=tinyworld-base", f"train.seed={recipe['seed']}",
        f"train.steps={recipe['steps']}", f"train.prompts_per_step={recipe['batch_size']}",
        f"train.micro_batch_size={recipe['micro_batch_size']}", f"train.lr={recipe['lr']}", "train.schedule=cosine",
        f"train.warmup_steps={recipe['warmup_steps']}", f"train.adam_betas={recipe['adam_betas']}",
        f"train.weight_decay={recipe['weight_decay']}",
        "data.shuffle=false", f"run.output_dir={work}", "run.save_every=250", "run.keep_checkpoints=1",
        f"train.precision={recipe['precision']}",
        f"run.progress={str(progress).lower()}",
    ])
    started = time.time()
    if work.is_dir() and not (work / "checkpoints").is_dir():  # an earlier build stopped before its first save
        shutil.rmtree(work)
    trainer = Trainer(config, policy=Policy(model, tokenizer), dataset=rows)
    history = trainer.train(resume=(work / "checkpoints").is_dir())
    if output.exists():
        shutil.rmtree(output)
    shutil.copytree(work / "final", output)
    minutes = (time.time() - started) / 60
    (output / "recipe.json").write_text(json.dumps({
        "recipe": recipe, "command": f"langplay world build-base --output {output}",
        "train_minutes_this_machine": round(minutes, 1),
        "final_nll_per_token": history[-1]["loss"] if history else None,
        "weights_sha256": weights_sha256(output),  # a rebuild from the same recipe reproduces it bit for bit
    }, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return output
