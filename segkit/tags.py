"""Every MLflow tag name segkit writes or searches by, and MLflow's size limits: one place,
so a run, a sweep, a resume and a lookup always agree on the spelling."""

from __future__ import annotations

# MLflow's own
PARENT = "mlflow.parentRunId"  # the UI nests child runs by it
EXPERIMENT_KIND = "mlflow.experimentKind"  # custom_model_development: the model-training view
NOTE = "mlflow.note.content"  # the run's description, shown on its page

# a run
RUN_DIR = "segkit.run_dir"  # its local folder: checkpoints, evaluation, TensorBoard
CONFIG_HASH = "segkit.config_hash"  # sha256 of the resolved config (segkit.tracking)
MODEL_URI = "segkit.model_uri"
SERVING_URI = "segkit.serving_uri"  # the pyfunc for `mlflow models serve` (segkit.serving)
SPLIT = "segkit.split"
TEST_SPLIT = "segkit.test_split"
ERROR = "segkit.error"  # why a run FAILED
GIT_COMMIT = "segkit.git_commit"
GIT_DIRTY = "segkit.git_dirty"
RESUMED_AFTER_EPOCH = "segkit.resumed_after_epoch"
EFFECTIVE_LR = "segkit.effective_lr"
TASK = "segkit.task"
SOURCE_MODEL_URI = "segkit.source_model_uri"
SOURCE_RUN_ID = "segkit.source_run_id"
ENSEMBLE = "segkit.ensemble"  # task=evaluate of several models: their URIs, a JSON list
DATASET = "segkit.dataset"  # the external test set a run scored (eval.external)
STRATEGY = "segkit.strategy"
REPLICAS = "segkit.replicas"
WORKERS = "segkit.workers"
TF_CONFIG_TASK = "segkit.tf_config_task"

# a job of a sweep
JOB = "segkit.sweep.job"  # Hydra's job number within the sweep
JOB_ID = "segkit.job_id"  # unique per job: finds the job's run after a failure
OVERRIDES = "segkit.overrides"  # the job's command-line overrides, a JSON list
SKIPPED_FROM = "segkit.skipped_from"
FAILED_BEFORE_RUN = "segkit.failed_before_run"

# a sweep's parent run
SWEEP = "segkit.sweep"  # "parent"
SWEEP_DIR = "segkit.sweep.dir"
SWEEP_OVERRIDES = "segkit.sweep.overrides"
SWEEP_SWEPT = "segkit.sweep.swept"
SWEEP_SWEEPER = "segkit.sweep.sweeper"
SWEEP_LAUNCHER = "segkit.sweep.launcher"
SWEEP_OBJECTIVE = "segkit.sweep.objective"
SWEEP_DIRECTION = "segkit.sweep.direction"
BEST_RUN_ID = "segkit.best_run_id"
BEST_CHILD_RUN_ID = "segkit.best_child_run_id"
BEST_OVERRIDES = "segkit.best_overrides"

# MLflow's limits
MAX_TAG = 5000  # characters of a tag value kept (MLflow allows 8000; room for the UI)
MAX_PARAM = 6000  # characters of a param value
