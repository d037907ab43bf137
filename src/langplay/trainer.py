"""The one training loop, for every algorithm.

    for step in steps:
        rows   = the step's prompts (this process's share)
        exp    = algorithm.collect(rows, seeds)             # sample, score, advantages
        for mb in micro_batches(exp.batch):                 # memory, not maths: losses use whole-step counts
            backward(algorithm.loss(mb, exp.counts))
        all-reduce gradients; skip the step if non-finite; clip; AdamW; schedule
        log metrics; checkpoint every K steps (and on Ctrl-C); evaluate every E steps

Processes are launched by torchrun (`accelerate launch` works too); each holds whole prompt groups, and gradients are summed across
processes explicitly (no DDP wrapper: the log-prob code calls the decoder and output layer directly, chunked).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate import Accelerator

from langplay.algorithms import Algorithm, algorithm_class, make_algorithm
from langplay.batch import micro_batches
from langplay.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from langplay.config import Config, dump_config
from langplay.data import PromptStream, load_dataset_for, require_columns, require_text
from langplay.distributed import gradient_norm, local_slice, total as distributed_total
from langplay.errors import LangplayError
from langplay.files import atomic_write_text, discard
from langplay.policy import Policy
from langplay.precision import autocast, bf16_parameters, bf16_weight_copies, resolve_device, resolve_precision
from langplay.sampling import make_sampler
from langplay.sampling.keys import key_of
from langplay.sharding import ShardedPolicy


def make_scheduler(optimizer, config) -> torch.optim.lr_scheduler.LambdaLR:
    train = config.train

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / (train.warmup_steps + 1)
        if train.schedule == "cosine":
            progress = (step - train.warmup_steps) / max(1, train.steps - train.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_context(config: Config, policy: Policy, generates: bool) -> None:
    """Generations must fit in the model's context: a max_new_tokens beyond it is an error, not a crash later."""
    context = getattr(policy.model.config, "max_position_embeddings", None)
    if generates and context and config.sampling.max_new_tokens >= context:
        raise LangplayError(f"sampling.max_new_tokens={config.sampling.max_new_tokens} does not fit the model's "
                            f"context of {context} tokens with a prompt: lower it (e.g. {context // 2})")


class Trackers:
    """metrics.jsonl always; tensorboard / wandb / trackio when asked for."""

    def __init__(self, run_dir: Path, names: list[str], config: Config, enabled: bool):
        self.enabled, self.path, self.backends = enabled, run_dir / "metrics.jsonl", []
        if not enabled:
            return
        for name in names:
            try:
                if name == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    writer = SummaryWriter(str(run_dir / "tensorboard"))
                    self.backends.append(lambda m, s, w=writer: [w.add_scalar(k, v, s) for k, v in m.items()])
                elif name in ("wandb", "trackio"):
                    module = __import__(name)
                    module.init(project="langplay", config=config.model_dump(mode="json"))
                    self.backends.append(lambda m, s, mod=module: mod.log(m, step=s))
            except ImportError:
                raise LangplayError(f"tracker {name!r} is not installed: pip install {name}") from None

    def truncate_after(self, step: int) -> None:
        """On resume, forget the metrics and samples logged after the checkpoint (they will be logged again); a
        line cut by a kill is dropped."""
        if not self.enabled:
            return
        for path in (self.path, self.path.with_name("samples.jsonl")):
            if path.exists():
                kept = [line for line in path.read_text(errors="replace").splitlines() if logged_by(line, step)]
                atomic_write_text(path, "".join(line + "\n" for line in kept))

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for backend in self.backends:
            backend(metrics, step)


class Trainer:
    def __init__(
        self,
        config: Config,
        policy: Policy | None = None,
        dataset=None,
        rewards: list[Callable] | None = None,
        evaluate: Callable[[Policy, int], dict] | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.config = config
        resolve_device(config.model.device)  # model.device=cuda without CUDA is an error, never a silent CPU run
        self.accelerator = accelerator or Accelerator(cpu=config.model.device == "cpu")
        acc = self.accelerator
        if config.train.prompts_per_step % acc.num_processes:
            raise LangplayError(
                f"train.prompts_per_step={config.train.prompts_per_step} does not split over "
                f"{acc.num_processes} processes: use a multiple of {acc.num_processes}"
            )
        self.seed_everything(config.train.seed)
        columns = algorithm_class(config.algorithm).data_columns(config)  # None: no dataset (self-play)
        self.dataset = dataset if dataset is not None else (
            load_dataset_for(config.data, columns.required) if columns else [{}])
        if columns:  # a dataset handed in is checked as a loaded one is
            require_columns(self.dataset, columns.required)
            require_text(self.dataset, columns.text, "dataset")
        self.policy = policy or Policy.from_config(config.model, with_reference=False, device=acc.device)
        if config.train.sharding == "fsdp2":  # before anything holds the policy: they all get the sharded one
            self.policy = ShardedPolicy.of(self.policy)
        self.sampler = make_sampler(config.sampling, self.policy)
        self.algorithm: Algorithm = make_algorithm(config, self.policy, self.sampler, acc, rewards)
        check_context(config, self.policy, self.algorithm.generates)
        if self.algorithm.needs_reference:
            self.policy.add_reference()
        if evaluate is None and config.run.eval_every:  # the config's own: rewards (or NLL) on held-out data
            from langplay.evaluation import periodic_evaluation

            evaluate = periodic_evaluation(config, rewards)
        self.evaluate = evaluate
        weights = next(self.policy.model.parameters()).dtype
        hidden = getattr(self.policy.model.config, "hidden_size", None)
        self.precision = resolve_precision(config.train.precision, acc.device, weights, hidden)
        # bf16: passes run on one bf16 copy of the weights (bf16_weight_copies) rather than autocast's cast at every
        # use, where the policy allows it (not FSDP2's shards: ShardedPolicy.bf16_copies).
        self.bf16_copies = self.precision == "bf16" and self.policy.bf16_copies
        if self.bf16_copies and self.policy.reference is not None:
            # Frozen, so no float32 master is needed: half the memory, no cast at every use, and its passes run on
            # the same bf16 weights as the policy's, so at step 0 the KL is exactly 0.
            bf16_parameters(self.policy.reference)
        params = self.policy.trainable_parameters()
        self.optimizer = torch.optim.AdamW(
            params, lr=config.train.lr, betas=config.train.adam_betas, weight_decay=config.train.weight_decay
        )
        self.scheduler = make_scheduler(self.optimizer, config)
        self.stream = PromptStream(self.dataset, config.train.seed, config.data.shuffle)
        self.run_dir = Path(config.run.output_dir.format(algorithm=config.algorithm))
        self.step = 0
        self.bad_steps = 0
        self.trackers: Trackers | None = None

    @staticmethod
    def seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # -- state ---------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        path = None
        optimizer_state = self.policy.optimizer_state(self.optimizer)  # every process: gathered under sharding
        if self.is_main:
            extra = {"position": self.stream.position, "bad_steps": self.bad_steps}
            path = save_checkpoint(
                self.run_dir / "checkpoints", self.step, self.policy, optimizer_state, self.scheduler, extra,
                keep=self.config.run.keep_checkpoints,
            )
        self.accelerator.wait_for_everyone()
        return path

    def resume(self, path: Path | None = None) -> None:
        path = path or latest_checkpoint(self.run_dir / "checkpoints")
        if path is None:
            raise LangplayError(f"nothing to resume: no checkpoint in {self.run_dir / 'checkpoints'}")
        state = load_checkpoint(path, self.policy, self.optimizer, self.scheduler)
        self.step, self.stream.position, self.bad_steps = state["step"], state["position"], state["bad_steps"]
        self.sampler.sync_weights()  # an engine (vLLM) holds the weights it was built with, not the checkpoint's

    # -- one step ------------------------------------------------------------------------------------------
    def step_rows(self) -> tuple[list[dict], list[int]]:
        """This process's share of the step's prompts, and one sampling seed per prompt.

        A prompt's seed depends on (run seed, step, its slot in the global batch) only, so one process and
        several sample the same completions.
        """
        acc, total = self.accelerator, self.config.train.prompts_per_step
        rows = self.stream.take(total)
        mine = local_slice(acc, total // acc.num_processes)
        return rows[mine], [key_of(self.config.train.seed, self.step, i) for i in range(total)[mine]]

    def train_step(self) -> dict:
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        rows, seeds = self.step_rows()
        # Sampling, scoring and reference passes at the training precision, on the weights the training pass uses.
        copies = self.bf16_copies and self.algorithm.generates
        with bf16_weight_copies(self.policy.model, copies), autocast(self.precision, acc.device):
            experience = self.algorithm.collect(rows, seeds)
        sampled = time.perf_counter()
        self.policy.trained_module.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_total, parts = 0.0, {}
        micros = list(micro_batches(experience.batch, cfg.train.micro_batch_size))
        # A sharded policy's forward is a collective: rounds past this process's micro-batches (the busiest
        # process's count) repeat the last with weight 0.
        rounds = self.policy.micro_batch_rounds(acc, len(micros))
        for index in range(rounds):  # a bf16 copy of the weights per micro-batch
            with bf16_weight_copies(self.policy.trained_module, self.bf16_copies):
                with autocast(self.precision, acc.device):
                    loss, metrics = self.algorithm.loss(micros[min(index, len(micros) - 1)], experience.counts)
                (loss if index < len(micros) else loss * 0.0).backward()
            if index >= len(micros):
                continue
            loss_total += loss.item()
            for key, value in metrics.items():  # additive contributions, normalised like the loss
                parts[key] = parts.get(key, 0.0) + value
        backward_done = time.perf_counter()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.policy.reduce_gradients(acc, params)  # summed over the processes
        loss_total = distributed_total(acc, loss_total)
        parts = {key: distributed_total(acc, value) for key, value in parts.items()}
        grad_norm = gradient_norm(params, cfg.train.max_grad_norm or float("inf"))
        finite = math.isfinite(loss_total) and bool(torch.isfinite(grad_norm))
        if finite:
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            if self.bad_steps > self.step:  # no step of this run has trained: stop before anything is written
                raise LangplayError(untrained_cause(self.step + 1, experience.metrics))
            warnings.warn(f"step {self.step + 1}: non-finite loss or gradient, step skipped ({self.bad_steps} in a row)")
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped step still moves the schedule on
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.scheduler.step()
        self.policy.after_optimizer_step()
        self.sampler.sync_weights()
        self.step += 1
        metrics = {
            "loss": loss_total,
            **parts,
            **experience.metrics,
            "grad_norm": float(grad_norm),
            "lr": self.scheduler.get_last_lr()[0],
            "skipped": float(not finite),
            "time/collect": sampled - started,
            "time/loss_backward": backward_done - sampled,
            "time/step": time.perf_counter() - started,
        }
        trained_tokens = distributed_total(acc, float(experience.batch["attention_mask"].sum()))
        metrics["tokens_per_second"] = trained_tokens / metrics["time/step"]  # the trained rows, prompts included
        if self.is_main and experience.samples and self.trackers and self.trackers.enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with (self.run_dir / "samples.jsonl").open("a") as f:
                for sample in experience.samples:
                    f.write(json.dumps({"step": self.step, **sample}) + "\n")
        if self.bad_steps >= cfg.train.max_bad_steps:
            raise LangplayError(
                f"{self.bad_steps} steps in a row had a non-finite loss or gradient (last at step {self.step}): "
                "check the rewards for NaN/inf and lower train.lr"
            )
        return metrics

    # -- the run folder ------------------------------------------------------------------------------------
    def claim_run_dir(self, resume: bool) -> None:
        """Make sure this run may write its folder: a folder that holds another run is never touched unless the
        run resumes it or run.overwrite says to replace it; the files of a run that trained no step are replaced.
        Nothing is written here."""
        run_dir = self.run_dir
        if run_dir.exists() and not run_dir.is_dir():
            raise LangplayError(f"run.output_dir {run_dir} is a file: choose a folder")
        if resume or not has_run_files(run_dir):
            return
        if holds_a_run(run_dir):
            if not self.config.run.overwrite:
                raise LangplayError(f"run folder {run_dir} already holds a run: --resume continues it, --overwrite "
                                    "(run.overwrite=true) replaces it, or choose another run.output_dir")
        elif self.is_main:
            warnings.warn(f"run folder {run_dir} holds the files of a run that trained no step: replacing them")
        self.accelerator.wait_for_everyone()  # every process has read the folder before its files go
        if self.is_main:
            for name in RUN_FILES:
                path = run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()

    def write_config(self) -> None:
        """config.yaml (the resolved config) and run.json (what `auto` settings resolved to on this machine)."""
        if self.is_main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.run_dir / "config.yaml", dump_config(self.config))
            except OSError as exc:  # a read-only or full disk, a path through a file: name the folder
                raise LangplayError(f"cannot write the run folder {self.run_dir}: {exc.strerror or exc}") from None
            facts = {"precision": self.precision, "processes": self.accelerator.num_processes,
                     "device": str(self.accelerator.device), "torch": torch.__version__,
                     "weights_dtype": str(next(self.policy.model.parameters()).dtype)}
            atomic_write_text(self.run_dir / "run.json", json.dumps(facts, indent=2))

    # -- the loop ------------------------------------------------------------------------------------------
    def train(self, resume: bool | str | Path = False) -> list[dict]:
        """Train to train.steps. A fresh run writes nothing until its first step has trained (the columns,
        the rewards on a real batch and the answers' format are all checked by then, and a skipped first step is
        an error), so a run that fails early leaves no trace; resuming continues exactly where the run stopped."""
        cfg = self.config
        self.claim_run_dir(bool(resume))
        self.trackers = Trackers(self.run_dir, cfg.run.trackers, cfg, enabled=self.is_main)
        if resume:
            self.resume(None if resume is True else Path(resume))
            self.trackers.truncate_after(self.step)
            self.write_config()
        history: list[dict] = []
        progress = Progress(cfg.train.steps, self.step, enabled=self.is_main and cfg.run.progress)
        try:
            with progress:
                while self.step < cfg.train.steps:
                    snapshot = (self.stream.position, torch.get_rng_state(), random.getstate(), np.random.get_state())
                    metrics = self.train_step()
                    snapshot = None
                    if not (self.run_dir / "config.yaml").is_file():  # the first step of a fresh run trained
                        self.write_config()
                    if self.evaluate and cfg.run.eval_every and self.step % cfg.run.eval_every == 0:
                        metrics.update({f"eval/{k}": v for k, v in self.evaluate(self.policy, self.step).items()})
                    history.append({"step": self.step, **metrics})
                    if self.step % cfg.run.log_every == 0 or self.step == cfg.train.steps:
                        self.trackers.log(metrics, self.step)
                    progress.update(self.step, metrics)
                    if cfg.run.save_every and self.step % cfg.run.save_every == 0:
                        self.save()
        except KeyboardInterrupt:
            if snapshot is not None:  # interrupted inside a step: save the state from before it
                self.stream.position = snapshot[0]
                torch.set_rng_state(snapshot[1])
                random.setstate(snapshot[2])
                np.random.set_state(snapshot[3])
            path = self.save()
            if self.is_main:
                print(f"\ninterrupted: checkpoint of step {self.step} written to {path}")
            raise
        if not (cfg.run.save_every and self.step % cfg.run.save_every == 0):
            self.save()
        if self.is_main:
            self.save_final()
        return history

    def save_final(self) -> None:
        """final/ is written to a temporary folder and renamed: a Ctrl-C during the save leaves the old final/
        (or none) and the step's checkpoint, never a final/ without weights."""
        tmp = self.run_dir / f".final.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.policy.save(tmp)
        except KeyboardInterrupt:
            shutil.rmtree(tmp, ignore_errors=True)
            print(f"\ninterrupted while writing final/: the checkpoint of step {self.step} is in {self.run_dir / 'checkpoints'}")
            raise
        discard(self.run_dir / "final")
        os.replace(tmp, self.run_dir / "final")


def logged_by(line: str, step: int) -> bool:
    """Whether a JSONL line of metrics or samples was logged at or before `step` (a broken line is not)."""
    try:
        return json.loads(line)["step"] <= step
    except (ValueError, KeyError, TypeError):
        return False


def untrained_cause(step: int, metrics: dict) -> str:
    """Why a step was skipped before any step of the run trained, and the fix: most often a reward that is not a
    number (a skipped step trains nothing, so every step would be skipped alike)."""
    bad = {key: value for key, value in metrics.items()
           if key.split("/")[0] == "reward" and isinstance(value, float) and not math.isfinite(value)}
    if bad:
        listed = ", ".join(f"{key}={value:g}" for key, value in bad.items())
        return (f"the rewards of step {step} are not numbers ({listed}): a reward function returned None, NaN or "
                "inf, so the step trained nothing; make it return a finite number for every completion")
    return (f"step {step} had a non-finite loss or gradient before any step of this run trained: check the model's "
            "weights (model.dtype) and train.precision")


RUN_FILES = ("config.yaml", "metrics.jsonl", "samples.jsonl", "checkpoints", "final", "tensorboard")


def has_run_files(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in RUN_FILES[:5])


def holds_a_run(folder: Path) -> bool:
    """Whether a folder holds a run to keep: one with run files, unless they prove it trained no step."""
    return has_run_files(folder) and not never_trained(folder)


def never_trained(folder: Path) -> bool:
    """Proof from a folder's files that its run trained no step (in doubt, it did): no final/, every checkpoint
    reached by skipped steps only (a checkpoint counts the skipped steps in a row), and every step up to the
    last one recorded either under such a checkpoint or logged as skipped. samples.jsonl records what was
    sampled, not whether the step trained."""
    if (folder / "final").exists():
        return False
    try:
        states = [json.loads((p / "state.json").read_text()) for p in list_checkpoints(folder / "checkpoints")]
        metrics = folder / "metrics.jsonl"
        logged = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        if any(s["step"] > s["bad_steps"] for s in states) or any(m.get("skipped") != 1 for m in logged):
            return False
        saved = max((s["step"] for s in states), default=0)
        reached = max([saved] + [m["step"] for m in logged])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # a file that cannot be read proves nothing
        return False
    if reached == 0 and (folder / "config.yaml").exists():
        return False  # a config but no step recorded: its steps may have trained unlogged (log_every)
    skipped = {m["step"] for m in logged}
    return all(step <= saved or step in skipped for step in range(1, reached + 1))


class Progress:
    """A rich progress bar with the key numbers of the last step."""

    KEYS = ("loss", "reward", "nll", "kl", "eval/reward", "time/step")

    def __init__(self, total: int, done: int, enabled: bool):
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.bar.add_task("train", total=total, completed=done, info="")

    def __enter__(self):
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()

    def update(self, step: int, metrics: dict) -> None:
        if self.enabled:
            info = "  ".join(f"{k.split('/')[-1]} {metrics[k]:.4g}" for k in self.KEYS if k in metrics)
            self.bar.update(self.task, completed=step, info=info)
