"""The evaluation harness (``python -m eval.sweep``)."""
from pathlib import Path

from omegaconf import OmegaConf

# ${repo:} in conf/*.yaml: the repository root, so shipped paths work from any working directory.
OmegaConf.register_new_resolver("repo", lambda: str(Path(__file__).resolve().parent.parent), replace=True)

# Every registered method's dataclass becomes the schema of its conf/method/<name>.yaml (Hydra's ConfigStore).
import eval.config  # noqa: E402,F401
