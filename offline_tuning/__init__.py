"""``./run.sh tune``: offline tuning on a small subsample that mirrors the judge, with Optuna as the search
engine and timebox owning the wall clock. Offline only: nothing here ships in the submission zip."""
