"""The command line: ``python -m lit_grok fit|validate|test --config CONFIG.yaml`` runs one run,
``python -m lit_grok sweep --config SWEEP.yaml`` a sweep."""

from __future__ import annotations

import sys
from typing import Any, Optional, Union

from lit_grok import sweep
from lit_grok.callbacks import Diverged
from lit_grok.runs import GrokCLI, build, quiet_lightning_warnings


def main(args: Optional[Union[list[str], dict[str, Any]]] = None, run: bool = True) -> GrokCLI:
    """Entry point of ``python -m lit_grok`` and the ``lit-grok`` script; ``args``/``run`` serve tests.

    ``sweep`` as the first argument runs a sweep (``lit_grok.sweep``) instead of a Trainer subcommand.
    """
    quiet_lightning_warnings()
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, list) and argv[:1] == ["sweep"]:
        sweep.main(argv[1:])
        return None  # type: ignore[return-value]
    try:
        return build(args, run)
    except Diverged as error:  # one line and a non-zero exit, not a traceback
        sys.exit(f"error: {error}")
