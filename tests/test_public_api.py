"""What an HF user types first: `from langplay import Trainer, load_config`, without making `import langplay` (and
so `langplay --help`) load torch."""

import subprocess
import sys


def test_trainer_and_load_config_come_from_the_package():
    import langplay
    from langplay import Trainer, load_config
    from langplay.config import load_config as config_load_config
    from langplay.trainer import Trainer as TrainerClass

    assert Trainer is TrainerClass and load_config is config_load_config
    assert {"Trainer", "load_config"} <= set(langplay.__all__)
    assert load_config("grpo_tinyworld", ["train.steps=3"]).train.steps == 3


def test_importing_langplay_loads_neither_torch_nor_the_trainer():
    code = "import sys, langplay; print('torch' in sys.modules, 'langplay.trainer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_an_unknown_name_is_an_attribute_error():
    import langplay

    try:
        langplay.Trainr  # noqa: B018
    except AttributeError as exc:
        assert "Trainr" in str(exc)
    else:
        raise AssertionError("langplay.Trainr resolved")
