"""A model's answers to a prompt file, for the evaluations of `langplay eval`: loaded rows, a model to answer
with, and answers cached on disk so that an interrupted evaluation continues where it stopped.

The cache is one JSONL file per evaluation folder. Each line holds the answers to one prompt under a key that
names everything they depend on: the model (its path, and for a local folder its weight files' sizes and
times, so a retrained model is never served stale answers), the formatted prompt, and the decoding
(temperature, top-p, length, n, seed). A line is appended and flushed as soon as its batch is done; a torn last
line (a crash mid-write) is cut off when the cache is opened, and that prompt answered again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from langplay.config import ModelConfig, SamplingConfig, evaluation_command, packaged_preset, preset_names
from langplay.errors import LangplayError
from langplay.gguf import names_gguf

GREEDY_TEMPERATURE = 0.01  # near-greedy: the samplers take a temperature > 0 (as the LSP paper's evaluation)


@dataclass(frozen=True)
class Decoding:
    """How answers are drawn: n per prompt at a temperature, each prompt's noise keyed by (seed, prompt index)."""

    temperature: float = GREEDY_TEMPERATURE
    n: int = 1
    max_new_tokens: int = 512
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if not self.temperature > 0:
            raise LangplayError(f"temperature must be > 0 (near-greedy is {GREEDY_TEMPERATURE}), "
                                f"got {self.temperature}")
        if self.n < 1 or self.max_new_tokens < 1:
            raise LangplayError(f"need at least one answer of at least one token, got n={self.n}, "
                                f"max_new_tokens={self.max_new_tokens}")


def load_eval_policy(name_or_path: str, dtype: str = "auto", device: str = "auto"):
    """A model to evaluate: a local folder or a Hub name, without a reference copy."""
    from langplay.policy import Policy

    return Policy.from_config(ModelConfig(name_or_path=str(name_or_path), dtype=dtype, device=device),
                              with_reference=False)


def require_model_source(name: str, what: str) -> None:
    """Fail early, before any answer is generated, on a local model folder that is not there (a Hub name is
    only checked when it is loaded)."""
    path = Path(name).expanduser()
    if path.exists():
        if names_gguf(name):  # a GGUF file is a model too; loading it checks the file
            return
        if not path.is_dir():
            raise LangplayError(f"{what} {name} is a file, not a model folder (or a .gguf file)")
        if not (path / "config.json").is_file():
            raise LangplayError(f"{what} folder {name} has no config.json")
    elif name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise LangplayError(f"{what} folder not found: {name}")


def load_prompt_rows(path: str, columns: list[str], subset: str | None = None, split: str = "test",
                     limit: int | None = None) -> list[dict]:
    """The first `limit` rows of a JSONL / JSON / Parquet / CSV file or Hub dataset, checked to have `columns`."""
    from langplay.data import load_rows, require_columns

    rows = load_rows(path, subset, split, limit)
    if len(rows) == 0:
        raise LangplayError(f"dataset {path!r} has no rows")
    require_columns(rows, columns, f"dataset {path!r}", "name yours with the command's column options, "
                    "e.g. --prompt-column")
    return [dict(row) for row in rows]


def model_identity(name_or_path: str) -> str:
    """The model's name, plus the size and time of each weight file when it is a local folder."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return str(name_or_path)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    stamps = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return f"{folder.resolve()}|{'|'.join(stamps)}"


def answer_key(model: str, prompt: str, decoding: Decoding, noise_key: int | None = None) -> str:
    """A prompt's cache key; an explicit noise key (another evaluation's draws) is part of it."""
    parts = [model, prompt, asdict(decoding)] + ([noise_key] if noise_key is not None else [])
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class AnswerCache:
    """Answers on disk, appended one prompt per line; `get` finds what an earlier (interrupted) run wrote, and
    `finished` whether each of those answers ended with EOS (None for a line written without the flags)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries: dict[str, list[str]] = {}
        self.ended: dict[str, list[bool]] = {}
        if self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):  # cut a torn last line, so the next append starts a line
                with open(self.path, "r+") as file:
                    file.truncate(len(text[: text.rfind("\n") + 1].encode()))
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a torn last line: that prompt is answered again
                    continue
                self.entries[entry["key"]] = entry["answers"]
                if "finished" in entry:
                    self.ended[entry["key"]] = entry["finished"]

    def get(self, key: str) -> list[str] | None:
        return self.entries.get(key)

    def finished(self, key: str) -> list[bool] | None:
        return self.ended.get(key)

    def put_many(self, items: dict[str, list[str]], finished: dict[str, list[bool]] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        finished = finished or {}
        with open(self.path, "a") as file:
            for key, answers in items.items():
                flags = {"finished": finished[key]} if key in finished else {}
                file.write(json.dumps({"key": key, "answers": answers, **flags}) + "\n")
            file.flush()
            os.fsync(file.fileno())
        self.entries.update(items)
        self.ended.update(finished)


def default_backend() -> str:
    """vLLM on CUDA when it is installed; the transformers loop elsewhere (on CPU, vLLM only pays off for
    large models, and its attention lacks some head sizes)."""
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "hf"


BACKENDS = ("hf", "vllm")


def check_backend(backend: str | None) -> str | None:
    """None (the default backend) or a known one, checked before a model is loaded."""
    if backend is not None and backend not in BACKENDS:
        raise LangplayError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return backend


def generate_answers(policy, model_name: str | None, prompts: list, decoding: Decoding,
                     cache: AnswerCache | None = None, backend: str | None = None, system_prompt: str | None = None,
                     batch_size: int = 32, progress: bool = True, label: str = "answering",
                     max_prompt_tokens: int = 1024, noise_keys: list[int] | None = None,
                     with_finished: bool = False) -> list[list[str]] | tuple[list[list[str]], list[list[bool]]]:
    """`decoding.n` answers to each prompt (raw prompts: the chat template is applied here), from the cache
    where an earlier run wrote them, else sampled in batches of `batch_size` prompts, in order, and cached batch by
    batch. Prompts longer than `max_prompt_tokens` are cut from the left (a judge's prompts, holding two answers,
    want more room). Prompt i draws its noise from key_of(decoding.seed, i), or from noise_keys[i] when given (to
    reproduce another evaluation's draws, e.g. tinyworld's, which are keyed by task): the noise, not the batching,
    decides the answers. `model_name` names the model in the cache's keys (None: no cache). `with_finished`:
    (answers, finished), finished[i][j] telling whether answer j to prompt i ended with EOS (False: cut at the
    limit); a cached line without these flags is answered again."""
    from tqdm.auto import tqdm

    from langplay.sampling import make_sampler
    from langplay.sampling.keys import key_of

    texts = [policy.format_prompt(p, system_prompt) for p in prompts]
    explicit = noise_keys is not None
    noise = noise_keys if explicit else [key_of(decoding.seed, i) for i in range(len(prompts))]
    answers: list = [None] * len(prompts)
    finished: list = [None] * len(prompts)
    if cache is not None:
        identity = f"{model_identity(model_name)}|prompts cut at {max_prompt_tokens} tokens"  # a cut changes answers
        keys = [answer_key(identity, t, decoding, k if explicit else None) for t, k in zip(texts, noise)]
        for i, key in enumerate(keys):
            if not with_finished or cache.finished(key) is not None:
                answers[i], finished[i] = cache.get(key), cache.finished(key)
    todo = [i for i, found in enumerate(answers) if found is None]
    if todo:
        sampling = SamplingConfig(backend=backend or default_backend(), temperature=decoding.temperature,
                                  top_p=decoding.top_p, max_new_tokens=decoding.max_new_tokens,
                                  max_prompt_tokens=max_prompt_tokens)
        sampler = make_sampler(sampling, policy)
        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=label, disable=not progress,
                   leave=False)
        n = decoding.n
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            samples = sampler.generate([texts[i] for i in batch], n, [noise[i] for i in batch])
            for j, i in enumerate(batch):
                answers[i] = samples.texts[j * n : (j + 1) * n]
                finished[i] = list(samples.finished[j * n : (j + 1) * n])
            if cache is not None:
                cache.put_many({keys[i]: answers[i] for i in batch}, {keys[i]: finished[i] for i in batch})
            bar.update(len(batch))
        bar.close()
        # A prompt's answers are a function of (prompt, decoding, its explicit noise key if any), as the cache keys
        # them: a prompt asked twice gets one set of answers (the last drawn), e.g. a judge's A-vs-A prompt in both orders.
        same = {(texts[i], noise[i] if explicit else None): i for i in todo}
        for i in todo:
            last = same[(texts[i], noise[i] if explicit else None)]
            answers[i], finished[i] = answers[last], finished[last]
    return (answers, finished) if with_finished else answers


def eval_folder(output: str | Path | None, kind: str) -> Path:
    """Where an evaluation writes its report and answer cache: `--output`, or runs/eval-KIND. Running the same
    evaluation into the same folder again continues it (answers are cached by what they depend on)."""
    folder = Path(output) if output is not None else Path("runs") / f"eval-{kind}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def answer_cache(folder: str | Path) -> AnswerCache:
    """An eval folder's cache: the models' answers (and the text judges' replies)."""
    return AnswerCache(Path(folder) / "answers.jsonl")


def eval_preset(name: str | None, command: str, options: dict) -> dict:
    """The options of an evaluation: a packaged preset's (presets/NAME.yaml, holding `command:` and option
    values named as on the command line, dashes as underscores), then those given on the command line (not
    None), which win."""
    import yaml

    given = {key: value for key, value in options.items() if value is not None}
    if name is None:
        return given
    path = packaged_preset(name)
    if path is None or evaluation_command(path) is None:
        known = ", ".join(preset_names(evaluations=True))
        raise LangplayError(f"unknown evaluation preset {name!r}: choose one of {known or 'none'}")
    preset = yaml.safe_load(path.read_text())
    if preset.get("command") != command:
        raise LangplayError(f"preset {name!r} is for `langplay eval {preset.get('command')}`, not `langplay eval {command}`")
    del preset["command"]
    unknown = sorted(set(preset) - set(options))
    if unknown:
        raise LangplayError(f"preset {name!r} sets unknown options {unknown}: known are {sorted(options)}")
    return {**preset, **given}
