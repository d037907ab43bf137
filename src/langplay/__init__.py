"""langplay: RL post-training of language models when data, verifiers or rewards are missing."""

__version__ = "0.1.0"
