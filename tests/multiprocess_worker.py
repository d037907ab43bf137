"""Run under `accelerate launch --cpu --num_processes N`: a short GRPO run from the command line's overrides."""

import sys

from langplay.config import load_config
from langplay.trainer import Trainer

if __name__ == "__main__":
    Trainer(load_config(overrides=sys.argv[1:])).train()
