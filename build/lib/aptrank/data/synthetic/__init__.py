"""Streaming synthetic impression-log generator (latent-factor world, canonical tables, manifest).

Entry points: :func:`generate` with a :class:`GeneratorConfig`, or ``aptrank generate``.
"""

from aptrank.data.synthetic.bad_rows import BAD_KINDS, BadKind
from aptrank.data.synthetic.config import ConfigError, GeneratorConfig
from aptrank.data.synthetic.generator import generate
from aptrank.data.synthetic.tasks import TASKS
from aptrank.data.synthetic.writer import TRUTH_COLUMNS

__all__ = ["BAD_KINDS", "TASKS", "TRUTH_COLUMNS", "BadKind", "ConfigError", "GeneratorConfig", "generate"]
