"""Hyperparameter search on Optuna (``hparams_search=optuna``): the job side.

The sweeper (``hydra_plugins/segkit_optuna_sweeper``) owns the study; each job reaches its
trial through the study's storage (a journal file by default, or an RDB URL), named in
``<sweep dir>/optuna_search.json`` (:mod:`segkit.search.study`), and reports its validation
score every epoch to the trial's pruner (:mod:`segkit.search.pruning`). See docs/search.md.
"""
