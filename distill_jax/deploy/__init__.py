"""Deploying the student without JAX: the ONNX graph, its contract, its runtime, sim-to-sim.

Nothing in this folder imports ``jax`` (``tests/test_deploy.py`` checks it), so a robot
computer needs only NumPy, ONNX Runtime and, for sim-to-sim, MuJoCo:

* :mod:`~distill_jax.deploy.contract` — what the exported ``student.onnx`` promises
  (inputs, history layout, noise, latency, control period, action mapping), stored in the
  model's ``metadata_props``;
* :mod:`~distill_jax.deploy.onnx_graph` — builds that graph from NumPy parameters with
  ``onnx.helper`` (the JAX side, :func:`distill_jax.export.export_onnx`, hands them over);
* :mod:`~distill_jax.deploy.runtime` — :class:`~distill_jax.deploy.runtime.OnnxStudent`,
  the exported student behind a guard that names any field it may not read;
* :mod:`~distill_jax.deploy.physics` — the tasks re-implemented on MuJoCo's C engine (the
  cart-pole, and the registry :func:`~distill_jax.deploy.physics.make_sim`);
* :mod:`~distill_jax.deploy.quadruped_sim` — the rough-terrain quadruped on MuJoCo C, on its own
  height-field contact (or training's per-foot tangent planes);
* :mod:`~distill_jax.deploy.observations` — noise, latency and history rebuilt from the contract;
* :mod:`~distill_jax.deploy.sim2sim` — ``python -m distill_jax.sim2sim RUN_DIR``;
* :mod:`~distill_jax.deploy.command` — the ``RUN_DIR [--episodes N]`` parser it shares with the videos.
"""
