"""Typed configs: every default of langplay lives in this file.

A run's config is a YAML file plus `key=value` overrides (`train.lr=1e-5`, `grpo.rewards=[...]`), validated
into `Config`. Unknown keys and bad values fail with one line naming the key and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from langplay.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(Section):
    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch")
    target_modules: str | list[str] = Field("all-linear", description=(
        "modules that get adapters (peft's names; all-linear: every linear layer but the output)"))


PRESETS = Path(__file__).parent / "presets"  # the packaged configs: `--config NAME` finds presets/NAME.yaml


class ModelConfig(Section):
    name_or_path: str = Field("", description=(
        "a Hub name, a local folder, or tinyworld:base; required by every command that trains"))
    tokenizer: str | None = Field(None, description="defaults to name_or_path")
    revision: str | None = Field(None, description="a Hub branch, tag or commit")
    gguf_file: str | None = Field(None, description=(
        "the GGUF file to load from name_or_path, a folder or Hub repo; none when name_or_path is a .gguf file"))
    dtype: Literal["auto", "float32", "float64", "bfloat16", "float16"] = Field("auto", description=(
        "the weights' storage. auto: float32, the master copy that train.precision=bf16 computes from; bfloat16 or "
        "float16 store the weights themselves in half precision (no master copy); float64 for exact comparisons"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description=(
        "auto: CUDA when visible, else CPU; cuda without a visible device is an error"))
    trust_remote_code: bool = Field(False, description=(
        "off unless a user asks: it runs code from the model's repository"))
    chat_template: str | None = Field(None, description=(
        "overrides the tokenizer's; None keeps it (or plain text if it has none)"))
    lora: LoraConfig | None = Field(None, description=(
        "with LoRA the reference model is the adapter-disabled base: no second copy"))
    gradient_checkpointing: bool = Field(False, description=(
        "recompute activations in backward (less memory, about a third more time)"))
    logprob_chunk_tokens: int = Field(2048, gt=0, description=(
        "tokens per chunk when computing log-probs over the vocabulary"))

    @model_validator(mode="after")
    def _tinyworld_base(self) -> ModelConfig:
        if self.name_or_path == "tinyworld:base":  # the shipped checkpoint, wherever the package is installed
            from langplay.tinyworld.base import BASE_PATH

            self.name_or_path = str(BASE_PATH)
        return self


class DataConfig(Section):
    path: str = Field("", description=(
        "Hub dataset name, a local .json/.jsonl/.parquet/.csv file, or tinyworld:train|tune|test (tinyworld's tasks)"))
    subset: str | list[str] | None = Field(None, description=(
        "a list: those subsets, concatenated (e.g. every MATH subject)"))
    split: str = Field("train", description="the dataset split to train on")
    where: dict[str, Any] = Field({}, description=(
        "keep rows whose column equals the value (or is in a list): {question_type: proof}"))
    prompt_column: str = Field("prompt", description="a string, or a list of chat messages")
    completion_column: str = Field("completion", description="SFT target")
    messages_column: str | None = Field(None, description="SFT on chat data: the last assistant turn is the target")
    system_prompt: str | None = Field(None, description="a system turn put before every prompt")
    max_samples: int | None = Field(None, gt=0, description="use only the first N rows")
    shuffle: bool = Field(True, description="reshuffle the rows every epoch (seeded by train.seed)")
    eval_path: str | None = Field(None, description="a dataset for periodic evaluation (default: data.path)")
    eval_split: str | None = Field(None, description="its split (default: data.split)")


class SamplingConfig(Section):
    backend: Literal["hf", "vllm"] = Field("hf", description=(
        "hf: langplay's decoding loop over the KV cache; vllm: vLLM's engine"))
    temperature: float = Field(1.0, gt=0, description="sampling temperature, also used for the training log-probs")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_new_tokens: int = Field(256, gt=0, description=(
        "longest completion; must leave room for a prompt in the model's context"))
    max_prompt_tokens: int = Field(1024, gt=0, description="longer prompts are cut from the left")
    ignore_eos: bool = Field(False, description=(
        "never stop at EOS (benchmarks: every completion has max_new_tokens tokens)"))
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, lt=1, description=(
        "vLLM on CUDA: the share of GPU memory its engine may take"))
    vllm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "vLLM: the engine's weights; auto: the policy's (float32 masters), and for LSP's self-judge its reference's, "
        "which train.precision=bf16 stores in bf16. bfloat16 beside bf16 training is the fast choice "
        "(sampling.correction covers the gap)"))
    correction: Literal["auto", "none", "tis", "ppo"] = Field("auto", description=(
        "every algorithm that samples (GRPO, LSP, JEPO, online IRL), for the gap between the sampler's and the "
        "trainer's probabilities (vLLM's kernels, bf16): tis weighs each sampled token's score-function terms by "
        "min(pi_trainer / pi_sampler, correction_cap), TRL's token_truncate; ppo takes the sampler's log-probs as "
        "the old policy of the policy-gradient term, so the clipped ratio corrects it (GRPO's epsilon; 0.2 "
        "elsewhere), and tis's weights for the other terms; none: neither. auto: tis with sampling.backend=vllm, "
        "else none"))
    correction_cap: float = Field(3.0, ge=1, description="tis: the largest weight (TRL's default 3)")
    vllm_cpu_kv_cache_gb: int = Field(1, gt=0, description=(
        "vLLM on CPU: GiB of memory for its KV cache (VLLM_CPU_KVCACHE_SPACE, which wins when set)"))


class TrainConfig(Section):
    steps: int = Field(100, gt=0, description="optimizer steps")
    prompts_per_step: int = Field(8, gt=0, description="global, over all processes")
    micro_batch_size: int = Field(8, gt=0, description=(
        "sequences per forward/backward on one process: memory, not maths"))
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    schedule: Literal["constant", "cosine"] = Field("constant", description="learning-rate schedule after the warm-up")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    max_grad_norm: float | None = Field(1.0, gt=0, description="clip the global gradient norm; null: no clipping")
    seed: int = Field(0, description=(
        "seeds the data order, the initialisation of anything random and the keyed sampling"))
    max_bad_steps: int = Field(3, gt=0, description="consecutive non-finite losses before the run stops")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description=(
        "mixed precision: bf16 runs the matrix products in bfloat16 (autocast) over float32 weights and optimizer "
        "state; log-probs, advantages and losses stay float32. auto: bf16 where the hardware has fast bf16 (CUDA with"
        " bf16, a CPU with AMX or AVX512-BF16), the weights are float32 and (on a CPU) hidden size >= 256; else fp32"))
    sharding: Literal["none", "fsdp2"] = Field("none", description=(
        "fsdp2: shard the trained weights, gradients and optimizer state over the processes with PyTorch's FSDP2 "
        "(a unit per decoder layer); a full copy of the weights still serves sampling and saving. Launch with "
        "torchrun"))


class RunConfig(Section):
    output_dir: str = Field("runs/{algorithm}", description="the run folder; {algorithm} is replaced")
    overwrite: bool = Field(False, description=(
        "replace a run already in output_dir (without it, such a folder is never touched)"))
    save_every: int = Field(50, ge=0, description="0: only at the end (and on Ctrl-C)")
    keep_checkpoints: int = Field(2, gt=0, description="how many checkpoints to keep (the newest)")
    eval_every: int = Field(0, ge=0, description=(
        "evaluate every N steps (0: never): the rewards (SFT, IRL: the NLL) on data.eval_path or data.eval_split"))
    log_every: int = Field(1, gt=0, description="write metrics every N steps")
    samples_per_step: int = Field(4, ge=0, description="completions written to samples.jsonl each step")
    trackers: list[Literal["tensorboard", "wandb", "trackio"]] = Field([], description="besides metrics.jsonl")
    progress: bool = Field(True, description="a progress bar on the console")


class HttpJudgeConfig(Section):
    """How langplay talks to a judge served over HTTP: an OpenAI-compatible chat-completions endpoint, such as
    `vllm serve` exposes. One section for every such judge of a run (reward kind http_judge, lsp.self_reward_url)."""

    timeout_s: float = Field(60.0, gt=0, description="seconds to wait for one reply before it counts as a failed try")
    retries: int = Field(3, ge=0, description=(
        "tries after the first on a connection error, a timeout, HTTP 429 or 5xx; then the run stops with one line"))
    backoff_s: float = Field(0.5, ge=0, description="wait before the first retry; it doubles at each retry")
    concurrency: int = Field(8, gt=0, description="requests in flight at once (one request per completion)")
    max_tokens: int = Field(256, gt=0, description=(
        "longest judge reply (LSP's R_Q from an endpoint: lsp.judge_max_new_tokens)"))
    temperature: float = Field(0.0, ge=0, description="the judge's sampling temperature (0: greedy)")
    api_key_env: str = Field("OPENAI_API_KEY", description=(
        "environment variable holding the API key, sent as `Authorization: Bearer` (vllm serve --api-key); "
        "unset or empty: no key sent"))


def _check_url(url: str, key: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{key} {url!r} must start with http:// or https:// (e.g. http://localhost:8000/v1)")


class RewardSpec(Section):
    """One reward source. `kind` picks it; `weight` scales it in the sum."""

    kind: Literal["function", "reward_model", "exact_match", "numeric_match", "math", "irl", "http_judge"] = Field(
        description=(
            "function, reward_model, exact_match, numeric_match, math (math-verify), irl (an IRL model's implicit "
            "reward) or http_judge (LSP's Box-3 judge, 0..7, from an OpenAI-compatible endpoint; a reply with no "
            "readable score scores 0, the lowest, since a NaN reward would skip the whole step)"))
    function: str | None = Field(None, description="kind=function: \"package.module:name\" or \"path/to/file.py:name\"")
    model: str | None = Field(None, description=(
        "kind=reward_model: a sequence classifier; kind=irl: an IRL-trained causal LM; kind=http_judge: the served "
        "model's name"))
    url: str | None = Field(None, description=(
        "kind=http_judge: the endpoint's base URL, e.g. http://host:8000/v1 (settings: the http_judge section)"))
    answer_column: str = Field("answer", description="verifiers: the dataset column holding the gold answer")
    weight: float = Field(1.0, description="its weight in the sum of rewards")
    gamma: float | None = Field(None, ge=0, le=1, description=(
        "kind=irl: the discount of the implicit reward r = log pi + V(s) - gamma V(s'), summed over the completion; "
        "None: the irl.gamma the model was trained with (recorded in its langplay.json). At 1 the sum telescopes to "
        "log pi(y|x) + V(s_0), and V(s_0) cancels within a group: the reward is then the model's log-likelihood"))

    @model_validator(mode="after")
    def _needs_its_target(self) -> RewardSpec:
        if self.gamma is not None and self.kind != "irl":
            raise ValueError(f"gamma applies to rewards of kind 'irl' only, not '{self.kind}'")
        if self.kind == "function" and not self.function:
            raise ValueError("a reward of kind 'function' needs function: 'module:name'")
        if self.kind in ("reward_model", "irl") and not self.model:
            raise ValueError(f"a reward of kind '{self.kind}' needs model: NAME_OR_PATH")
        if self.kind == "http_judge":
            if not (self.url and self.model):
                raise ValueError("a reward of kind 'http_judge' needs url: http://HOST:PORT/v1 and model: the served "
                                 "model's name")
            _check_url(self.url, "url")
        return self


class GRPOConfig(Section):
    group_size: int = Field(8, ge=2, description="completions per prompt (TRL's num_generations)")
    beta: float = Field(0.04, ge=0, description="KL to the reference model; 0 skips the reference pass")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description=(
        "Schulman's per-token estimator of KL(pi || pi_ref), as TRL"))
    epsilon: float = Field(0.2, gt=0, description="PPO clip range (lower, and upper unless epsilon_high)")
    epsilon_high: float | None = Field(None, description="DAPO's clip-higher; None: same as epsilon")
    loss_aggregation: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field("dapo", description=(
        "token-level: no length bias"))
    scale_rewards: Literal["group", "batch", "none"] = Field("group", description=(
        "divide advantages by the std of the group, of the batch, or not at all"))
    leave_one_out: bool = Field(False, description=(
        "RLOO: each completion's baseline is the mean of the others in its group"))
    rewards: list[RewardSpec] = Field([], description="the reward sources, summed with their weights")


class SFTConfig(Section):
    completion_only: bool = Field(True, description="loss on completion tokens only")
    entropy_bonus: float = Field(0.0, ge=0, description=(
        "MLE with an entropy bonus: loss = NLL - c * mean token entropy"))
    max_length: int = Field(1024, gt=0, description=(
        "tokens of prompt + target; longer rows are cut (prompt first, from the left)"))


class LSPConfig(Section):
    """Language Self-Play (Kuba et al. 2025, arXiv 2509.07414, Algorithm 1). train.prompts_per_step is N, the
    challenger's queries per step."""

    group_size: int = Field(4, ge=2, description="G answers per query (not reported by the paper)")
    beta: float = Field(0.05, ge=0, description="KL(pi || pi_Ref) of whole sequences, both roles (paper: 0.05)")
    alpha_challenger: float = Field(1.0, ge=0, description="weight of L_Ch in L_Sol + alpha L_Ch (not reported)")
    logprob_reduction: Literal["mean", "sum"] = Field("mean", description=(
        "log pi(seq) in the policy gradient: token mean (TRL's \"grpo\" loss type: length-biased) or the sum of eq. "
        "4-5"))
    kl_penalty: Literal["reward", "loss"] = Field("reward", description=(
        "\"reward\": the KL as a per-token reward penalty (reward-to-go): expected gradient beta grad KL, reduced "
        "like the policy gradient (divided by |a| under mean), so their ratio is eq. 4-5's under either reduction; "
        "\"loss\": beta log(pi/pi_Ref) in the loss as eq. 4-5 write it, whose gradient does not regularise"
        " (see lsp.py)"))
    self_reward: bool = Field(False, description="False: LSP-Zero; True: LSP, adding the quality score R_Q")
    self_reward_function: str | None = Field(None, description=(
        "\"module:name\" scorer for R_Q; None: a judge, the endpoint at self_reward_url or else the reference model "
        "(Box 3)"))
    self_reward_url: str | None = Field(None, description=(
        "R_Q from a judge served over HTTP (an OpenAI-compatible endpoint, e.g. http://host:8000/v1) instead of the "
        "reference model; same Box 3 prompt, NaN (left out) where no score can be read; settings: the http_judge "
        "section"))
    self_reward_model: str | None = Field(None, description="the served model's name at self_reward_url")
    judge: Literal["reply", "digits"] = Field("reply", description=(
        "how the reference judges: \"reply\", it writes Box 3's justification and score, parsed (the paper); "
        "\"digits\", the expected score from its next-token probabilities of 0..7 after \"<Score>\" (one forward "
        "pass, never unreadable, no justification)"))
    self_reward_weight: float = Field(1.0, description="R + w R_Q (the paper adds them unscaled)")
    challenger_prompt: str | None = Field(None, description="None: the paper's Box 1 prompt filled with task/template")
    task: str = Field("", description="Box 1's {task}")
    template: str = Field("", description="Box 1's {template}")
    query_prefix: str = Field("", description=(
        "the challenger's reply starts with this text: it steers the queries to one kind of task"))
    max_query_tokens: int = Field(128, gt=0, description="longest challenger query (longer ones are cut and kept)")
    judge_max_new_tokens: int = Field(256, gt=0, description="longest self-judge reply")
    query_check: str | None = Field(None, description=(
        "optional \"module:name\": f(queries) -> list[bool], logged as the valid fraction"))
    rewards: list[RewardSpec] = Field([], description=(
        "R(q, a); the raw query reaches scorers as the `raw_prompt` column"))

    @model_validator(mode="after")
    def _one_judge(self) -> LSPConfig:
        if self.judge == "digits" and (self.self_reward_url or self.self_reward_function):
            raise ValueError("lsp.judge=digits reads the reference model's probabilities: it does not apply to "
                             "lsp.self_reward_url or lsp.self_reward_function")
        if self.self_reward_url is None:
            return self
        if not self.self_reward_model:
            raise ValueError("lsp.self_reward_url needs lsp.self_reward_model: the served model's name")
        if self.self_reward_function:
            raise ValueError("lsp.self_reward_url and lsp.self_reward_function are both set: R_Q comes from one")
        _check_url(self.self_reward_url, "lsp.self_reward_url")
        return self


class JEPOConfig(Section):
    """JEPO (Tang et al. 2025, arXiv 2503.19618): the likelihood of the reference answer after a sampled chain of
    thought is the reward."""

    group_size: int = Field(4, ge=2, description="n chains of thought per prompt (paper: 4)")
    estimator: Literal["multi", "single"] = Field("multi", description=(
        "multi-sample bound L_n (most of the paper) or Jensen's L_1"))
    answer_column: str = Field("answer", description="the reference answer a*, the text that follows the marker")
    answer_format: Literal["plain", "gsm8k", "boxed"] = Field("plain", description=(
        "a* is the column, its \"#### x\", or its last \\\\boxed{x}"))
    answer_marker: str = Field("The final answer is", description=(
        "locates the answer in a generation (case-insensitive, last one)"))
    answer_suffix_eos: bool = Field(False, description=(
        "True: a* ends with EOS, so S includes stopping after it (not the paper's S)"))
    normalize: Literal["group", "batch", "none"] = Field("batch", description=(
        "A / std(A) over the group or the step; none: unbiased"))
    advantage_clip: float | None = Field(1.0, gt=0, description="clip(A / std(A), -c, c); None: no clip")
    format_penalty: float = Field(10.0, ge=0, description="reward -p for generations without the marker (paper: 10)")
    policy_gradient: Literal["chain", "generation"] = Field("chain", description=(
        "tokens under the score function: c_i, or all of y_i"))
    beta_sup: float = Field(0.01, ge=0, description=(
        "weight of the supervised term (paper: 0-0.01 short answers, 1 proofs)"))
    beta: float = Field(1e-3, ge=0, description="KL to the reference of each generation (paper: 1e-3)")
    kl_estimator: Literal["sequence", "k1", "k2", "k3"] = Field("sequence", description=(
        "sequence: KL(pi || pi_ref) of whole generations as a reward penalty with its reward-to-go, whose expected "
        "gradient is exactly beta grad KL (as LSP's); k1/k2/k3: Schulman's per-token estimator summed over the "
        "generation in the loss (k3's expected gradient is grad KL(pi_ref || pi) per state, not grad KL(pi || "
        "pi_ref))"))
    rewards: list[RewardSpec] = Field([], description=(
        "a verifier: prompts where a sample passes use the RL loss (JEPO + RL)"))
    pass_threshold: float = Field(1.0, description="a sample passes the verifier when its reward reaches this")


class IRLConfig(Section):
    """IRL as TD-regularised MLE (Wulfmeier et al. 2024, arXiv 2409.01369): IQ-Learn's chi-squared objective on
    token transitions."""

    gamma: float = Field(0.99, ge=0, le=1, description=(
        "discount, not in the paper; IQ-Learn's 0.99. gamma = 1 makes the value term telescope to V(s_0): online IRL "
        "then learns nothing from the visited states unless online_td puts the chi-squared term on them, so "
        "gamma = 1 with online_fraction > 0 needs online_td"))
    td_weight: float = Field(0.5, ge=0, description="lambda = 1/(4 alpha), IQ-Learn's alpha 0.5; 0 is exactly MLE")
    online_fraction: float = Field(0.0, ge=0, lt=1, description="share of each batch that is the model's own samples")
    online_td: bool = Field(False, description=(
        "online: the TD (chi-squared) term covers the samples too (IQ-Learn's regularize)"))

    @model_validator(mode="after")
    def _online_needs_a_discount(self) -> IRLConfig:
        if self.online_fraction > 0 and self.gamma >= 1 and not self.online_td:
            raise ValueError("irl.gamma=1 with irl.online_fraction > 0: the value term telescopes to V(s_0) and "
                             "online IRL learns nothing from the states it visits; use irl.gamma < 1 (e.g. 0.99) "
                             "or irl.online_td=true (the chi-squared term then covers them)")
        return self


AlgorithmName = Literal["sft", "grpo", "lsp", "jepo", "irl"]  # each is class NAME in langplay/algorithms/name.py
ALGORITHMS: tuple[str, ...] = get_args(AlgorithmName)


class Config(Section):
    algorithm: AlgorithmName = Field("grpo", description=(
        "what to train; `langplay train A` sets it, and a file that names another is an error"))
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    train: TrainConfig = TrainConfig()
    run: RunConfig = RunConfig()
    grpo: GRPOConfig = GRPOConfig()
    sft: SFTConfig = SFTConfig()
    lsp: LSPConfig = LSPConfig()
    jepo: JEPOConfig = JEPOConfig()
    irl: IRLConfig = IRLConfig()
    http_judge: HttpJudgeConfig = HttpJudgeConfig()


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """`["train.lr=1e-5", "grpo.beta=0"]` -> nested dict; values are parsed as YAML (numbers, lists, null)."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.lr=1e-5)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key.strip(), value)
    return tree


def merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


MOVED_KEYS = {  # keys that moved, so that an older config is told where they went
    "grpo.sampler_correction": "sampling.correction",
    "grpo.sampler_correction_cap": "sampling.correction_cap",
}


def _describe(error: dict, model: type[BaseModel]) -> str:
    location = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden" and location in MOVED_KEYS:
        return f"'{location}' is now '{MOVED_KEYS[location]}' (every algorithm that samples uses it)"
    if error["type"] == "extra_forbidden":
        parent = model
        for part in error["loc"][:-1]:
            field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
            annotation = field.annotation if field else None
            parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        allowed = ", ".join(parent.model_fields) if parent else "see langplay/config.py"
        return f"unknown key '{location}' (allowed here: {allowed})"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{location}: {error['msg']}{shown}"


def build_config(tree: dict) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError("config error: " + _describe(exc.errors()[0], Config)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, **defaults: Any) -> Config:
    """YAML file (optional) <- keyword defaults <- key=value overrides, validated."""
    tree: dict = {}
    for key, value in defaults.items():
        _set_dotted(tree, key, value)
    if path is not None:
        path = resolve_config_path(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not UTF-8 text: give a YAML file") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
        tree = merge(tree, loaded)
    tree = merge(tree, parse_overrides(overrides or []))
    return build_config(tree)


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file, or the name of a packaged preset (`grpo_tinyworld` -> presets/grpo_tinyworld.yaml)."""
    path = Path(path)
    if path.is_file():
        return path
    preset = packaged_preset(str(path))
    if preset is not None:
        command = evaluation_command(preset)
        if command is not None:
            raise ConfigError(f"preset {preset.stem!r} is an evaluation: "
                              f"`langplay eval {command} --preset {preset.stem}`")
        return preset
    raise ConfigError(f"config file not found: {path} (or name a preset: {', '.join(preset_names(evaluations=False))})")


def packaged_preset(name: str) -> Path | None:
    """presets/NAME.yaml for a bare NAME (with or without .yaml); None where no packaged preset has that name.
    The one lookup of presets: training configs (`--config NAME`) and evaluations (`--preset NAME`) alike."""
    preset = PRESETS / f"{name.removesuffix('.yaml')}.yaml"
    return preset if len(Path(name).parts) == 1 and preset.is_file() else None


def preset_names(evaluations: bool) -> list[str]:
    """The packaged presets of one kind, sorted: evaluations (a `command:` key) or training configs."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml") if (evaluation_command(p) is not None) == evaluations)


def evaluation_command(preset: Path) -> str | None:
    """The `langplay eval` command an evaluation preset is for (its `command:` key); None for a training config."""
    tree = yaml.safe_load(preset.read_text())
    return tree.get("command") if isinstance(tree, dict) else None


def describe_config(config: Config) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, default, value in `config`, description) of every field, sections in order."""
    rows = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, BaseModel) and name != "lora":
                walk(value, f"{prefix}{name}.")
                continue
            shown = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            rows.append((prefix + name, default, shown, field.description or ""))

    walk(config, "")
    return rows


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
