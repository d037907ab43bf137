"""What langplay's commands and scripts print: the libraries' own logs and progress bars quieted, a warning as one
line (like the errors, `errors.LangplayError`)."""

from __future__ import annotations


def warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning on the console as one line, like the errors: no file, line number or source line."""
    return f"warning: {message}\n"


def quiet_libraries() -> None:
    """Warnings as one line; transformers' and datasets' progress bars and info logs off; vLLM's dump before an
    engine error (its whole config and scheduler state, ~100 KB) off."""
    import logging
    import warnings

    import datasets
    import transformers

    warnings.formatwarning = warning_line

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    # vLLM dumps its whole config and scheduler state (~100 KB) before an engine error that langplay reports in one line
    logging.getLogger("vllm.logging_utils.dump_input").setLevel(logging.CRITICAL)
