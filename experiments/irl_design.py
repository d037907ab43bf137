"""The design of experiments/irl_tinyworld.py: the methods and their overrides, the family kinds, seeds, the
sampling limit, the small-data model. The experiment runs it and its report (irl_report.py) states it; both
import it from here."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "langplay" / "presets" / "irl_tinyworld.yaml"
KINDS = ("exact", "open")
K_OPEN = 4  # valid answers per open-ended training prompt; also the size of a batching unit (see `demonstrations`)
EVAL_SEED = 123
PROBE_SEED = 456
SELF_BLEU_N = 2  # Self-BLEU's max n-gram order, on characters (tinyworld's answers are a few characters long)
ANSWER_TOKENS = 40  # sampling limit (evaluation and online samples): the longest reference here has 18 characters
SCRATCH_LR = 1e-3  # from scratch a higher learning rate is needed (the base model was built with 1.5e-3)
SCRATCH_WARMUP = 20
# the small-data model from scratch: tinyworld's base recipe, smaller
SMALL_RECIPE = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4}
METHODS = {  # slug: (label, overrides of presets/irl_tinyworld.yaml)
    "mle": ("MLE", ["algorithm=sft"]),
    "mle-entropy": ("MLE + entropy 0.05", ["algorithm=sft", "sft.entropy_bonus=0.05"]),
    # From the base model the TD term starts large (the base's soft values V are about 11, its squared TD error
    # about 90 against an NLL of 0.5), so the sweep reaches down to lambda 1e-3, where the two are comparable.
    "irl-0.001": ("IRL λ 0.001", ["algorithm=irl", "irl.td_weight=0.001"]),
    "irl-0.01": ("IRL λ 0.01", ["algorithm=irl", "irl.td_weight=0.01"]),
    "irl-0.05": ("IRL λ 0.05", ["algorithm=irl", "irl.td_weight=0.05"]),
    "irl-0.2": ("IRL λ 0.2", ["algorithm=irl", "irl.td_weight=0.2"]),
    "irl-online": ("IRL online λ 0.01", ["algorithm=irl", "irl.td_weight=0.01", "irl.online_fraction=0.25"]),
}
SMALL_METHODS = ("mle", "irl-0.2")  # the small-data regime: MLE against the strongest TD term
