"""segkit's benchmark scripts (one per measurement) and their shared helpers
(``benchmarks.common``). Run the scripts as files: ``python benchmarks/pipeline.py --help``."""
