"""Streaming synthetic impression-log generator (latent-factor world, canonical tables, manifest).

Entry points: :func:`generate` with a :class:`GeneratorConfig`, or ``aptrank generate``.
"""

from data.synthetic.bad_rows import BAD_KINDS, BadKind
from data.synthetic.config import ConfigError, GeneratorConfig
from data.synthetic.generator import generate
from data.synthetic.tasks import TASKS
from data.synthetic.writer import TRUTH_COLUMNS

__all__ = ["BAD_KINDS", "TASKS", "TRUTH_COLUMNS", "BadKind", "ConfigError", "GeneratorConfig", "generate"]
