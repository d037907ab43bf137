"""Checkpoints: everything a run needs to continue exactly, written atomically, with safetensors (no pickle).

checkpoints/step-000010/
    model/                      HF folder (full model) or peft adapter folder (LoRA): loadable on its own
    optimizer.safetensors       optimizer tensors (AdamW moments, step counts)
    rng.safetensors             torch (and CUDA) generator states
    state.json                  step, data position, scheduler, optimizer hyper-parameters, Python/NumPy RNG
A checkpoint is written to a temporary folder and renamed into place, and an old one is renamed out of the
listing before it is deleted: a kill at any moment leaves only whole checkpoints under their step-N names
(leftover temporary folders are cleared by the next save). A damaged checkpoint is a one-line error on resume.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from langplay.errors import LangplayError, first_line
from langplay.files import discard, replaced
from langplay.models import write_model_facts

PREFIX = "step-"


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def list_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


# -- optimizer state <-> flat tensors + JSON -------------------------------------------------------------
def _optimizer_to_flat(state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_from_flat(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


# -- RNG --------------------------------------------------------------------------------------------------
def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# -- model weights -----------------------------------------------------------------------------------------
def save_model_weights(policy, path: Path) -> None:
    if policy.uses_lora:
        policy.model.save_pretrained(path)  # the adapter alone
        policy.tokenizer.save_pretrained(path)
        write_model_facts(policy.facts, path)
    else:
        policy.save(path)


def load_model_weights(policy, path: Path) -> None:
    if policy.uses_lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(policy.model, load_file(path / "adapter_model.safetensors"))
        policy.weights_loaded()
        return
    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(file))
    if not state:
        raise LangplayError(f"checkpoint {path} holds no safetensors weights")
    missing, unexpected = policy.model.load_state_dict(state, strict=False)
    tied = {name for name in missing if "lm_head" in name or "embed" in name}
    if unexpected or set(missing) - tied:
        raise LangplayError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    policy.model.to(policy.device)
    policy.weights_loaded()


# -- save / load -------------------------------------------------------------------------------------------
def clear_leftovers(directory: Path) -> None:
    """Temporary and half-deleted folders left by a kill during an earlier save."""
    for leftover in directory.glob(".*"):
        if leftover.is_dir() and (".tmp-" in leftover.name or leftover.name.startswith(".trash-")):
            shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(directory: Path, step: int, policy, optimizer_state: dict, scheduler, extra: dict,
                    keep: int = 2) -> Path:
    """`optimizer_state`: `policy.optimizer_state(optimizer)` (whole, under sharding too)."""
    directory.mkdir(parents=True, exist_ok=True)
    clear_leftovers(directory)
    final = directory / checkpoint_name(step)
    with replaced(final) as tmp:  # re-saving the same step (e.g. Ctrl-C right after a periodic save) replaces it
        tmp.mkdir()
        save_model_weights(policy, tmp / "model")
        opt_tensors, opt_meta = _optimizer_to_flat(optimizer_state)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        rng_tensors, rng_meta = _rng_state()
        save_file(rng_tensors, tmp / "rng.safetensors")
        state = {"step": step, "scheduler": scheduler.state_dict(), "optimizer": opt_meta, "rng": rng_meta, **extra}
        (tmp / "state.json").write_text(json.dumps(state))  # last: a folder with state.json is complete
    for old in list_checkpoints(directory)[:-keep]:
        discard(old)
    return final


def load_checkpoint(path: Path, policy, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place; returns state.json (step, data position ...).
    A damaged or mismatched checkpoint (truncated files, bad JSON, a missing file, another architecture) is one
    LangplayError naming the checkpoint."""
    try:
        state = json.loads((path / "state.json").read_text())
        load_model_weights(policy, path / "model")
        policy.load_optimizer_state(optimizer, _optimizer_from_flat(load_file(path / "optimizer.safetensors"),
                                                                    state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(load_file(path / "rng.safetensors"), state["rng"])
    except LangplayError:
        raise
    except Exception as exc:  # safetensors, json, torch and OS errors all mean the same to the user
        raise LangplayError(f"cannot resume from checkpoint {path}: {type(exc).__name__}: {first_line(exc)} "
                            "(resume from another one with --resume PATH, or start afresh with --overwrite)") from None
    return state
