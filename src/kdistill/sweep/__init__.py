"""``kdistill sweep``: tune a recipe's distillation settings with Optuna and compare the best
distilled student with an equally tuned scratch twin on test (:mod:`.job`). The search space
(:mod:`.space`), what a trial trains (:mod:`.objective`), the studies and their storage
(:mod:`.study`) and the report (:mod:`.report`) are one module each. Optuna is imported only
when a sweep runs (``pip install 'kdistill[sweep]'``)."""
