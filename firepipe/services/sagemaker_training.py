"""A SageMaker training job's entry point: `python -m firepipe.services.sagemaker_training`.

It reads the job's layout (script mode's SM_* variables, or the plain container layout under
/opt/ml) and runs the same `firepipe.core.training.job.run_training` that the local backend runs
in-process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from firepipe.core.training.job import run_training


def _argv_hyperparameters(argv: Sequence[str]) -> dict[str, str]:
    """`--name value` pairs, the way SageMaker's script mode also passes hyperparameters."""
    if len(argv) % 2 or not all(a.startswith("--") for a in argv[::2]):
        raise ValueError(f"arguments must be --name value pairs, got {list(argv)}")
    return {name[2:]: value for name, value in zip(argv[::2], argv[1::2], strict=True)}


# The container contract of a SageMaker training job with its own image (no training toolkit,
# so no SM_* variables): hyperparameters, channels and the model folder under /opt/ml, and the
# failure reason the job reports read from output/failure.
SAGEMAKER_ROOT = Path("/opt/ml")


def _container_setup(root: Path) -> tuple[dict[str, str], Path, Path | None, Path]:
    """Hyperparameters, train, validation and model folders: from SM_* variables (script mode,
    SM_HPS values possibly decoded), else from the container layout under `root`."""
    if os.environ.get("SM_CHANNEL_TRAIN") or os.environ.get("SM_HPS"):
        hps_json = json.loads(os.environ.get("SM_HPS", "{}"))
        if not isinstance(hps_json, dict):
            raise ValueError("SM_HPS must be a JSON object")
        missing = [v for v in ("SM_CHANNEL_TRAIN", "SM_MODEL_DIR") if not os.environ.get(v)]
        if missing:
            raise ValueError(f"environment lacks {missing} (set by a SageMaker training job)")
        validation = os.environ.get("SM_CHANNEL_VALIDATION")
        return (
            {k: v if isinstance(v, str) else json.dumps(v) for k, v in hps_json.items()},
            Path(os.environ["SM_CHANNEL_TRAIN"]),
            Path(validation) if validation else None,
            Path(os.environ["SM_MODEL_DIR"]),
        )
    config = root / "input/config/hyperparameters.json"
    if not config.is_file():
        raise ValueError(f"no SM_* variables and no {config}: not inside a SageMaker training job")
    hps = json.loads(config.read_text())
    if not isinstance(hps, dict):
        raise ValueError(f"{config} must hold a JSON object")
    data = root / "input/data"
    validation_dir = data / "validation"
    return (
        {k: str(v) for k, v in hps.items()},
        data / "train",
        validation_dir if validation_dir.is_dir() else None,
        root / "model",
    )


def main(argv: Sequence[str] | None = None, root: Path = SAGEMAKER_ROOT) -> int:
    """A SageMaker training job's entry: script mode (SM_CHANNEL_TRAIN, SM_CHANNEL_VALIDATION,
    SM_MODEL_DIR, SM_HPS) or the plain container layout under `root` (/opt/ml);
    `--name value` arguments override the hyperparameters. A failure is printed and, in a
    container, written where SageMaker reads the job's failure reason."""
    try:
        overrides = _argv_hyperparameters(sys.argv[1:] if argv is None else argv)
        hps, train_dir, validation_dir, model_dir = _container_setup(root)
        run_training(train_dir, validation_dir, model_dir, hps | overrides)
    except Exception as e:  # any failure: SageMaker shows the job's reason from this file
        reason = (
            f"training failed: {e}"
            if isinstance(e, ValueError)
            else (f"training failed: {type(e).__name__}: {e}")
        )
        print(reason, file=sys.stderr)
        if (root / "output").is_dir():
            (root / "output/failure").write_text(reason)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
