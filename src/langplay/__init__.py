"""langplay: RL post-training of language models when data, verifiers or rewards are missing.

    from langplay import Trainer, load_config

    Trainer(load_config("grpo_tinyworld", ["train.steps=10"])).train()
"""

__version__ = "0.1.0"
__all__ = ["Trainer", "load_config", "__version__"]


def __getattr__(name: str):
    """`Trainer` and `load_config` on first use: importing langplay (as `langplay --help` does) stays light."""
    if name == "Trainer":
        from langplay.trainer import Trainer

        return Trainer
    if name == "load_config":
        from langplay.config import load_config

        return load_config
    raise AttributeError(f"module 'langplay' has no attribute {name!r}")
