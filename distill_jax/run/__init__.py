"""The run shell: everything that turns the pure core into a command and a run directory.

``pipeline`` (phases over a run directory), ``checkpoint`` (Orbax with identity checks),
``report`` (``eval.json`` / ``eval.md``), ``plots``, ``progress``, ``console`` (steps,
compilations, heartbeats), ``noise`` (third-party output kept out), ``wall_clock``,
``compile_cache``, ``presets``, ``render`` (videos, ``python -m distill_jax.render``) and ``cli``
(``python -m distill_jax.train``). The core
(``distill_jax.*`` outside this folder) never imports from here; ``tests/test_layout.py``
enforces it.
"""
