"""segkit's Hydra sweeper on Optuna 5 (``hparams_search=optuna``): persistent, resumable
studies (journal file or RDB URL), pruning, parallel launchers on one study, and the study as
the sweep's MLflow parent run. See docs/search.md."""
