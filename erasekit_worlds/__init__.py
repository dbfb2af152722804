"""erasekit's two shipped worlds, as a plugin: MiniCanvas (an UnlearnCanvas in miniature for Stable Diffusion) and
MiniFaces (procedural faces for StyleGAN2).

The package has two halves, as open_clip has ``open_clip`` and ``open_clip_train``:

- the runtime, :mod:`erasekit_worlds.minicanvas` and :mod:`erasekit_worlds.minifaces`: renderers, datasets,
  classifiers, the evaluation suites, the erasure plans and the shipped weights; loading a world imports nothing else;
- the recipes, :mod:`erasekit_worlds.recipes`: the seeded training that rebuilds every model of a world from scratch
  (``erasekit world train``), imported only when a world is trained.

erasekit itself never imports this package: :func:`erasekit_worlds.plugin.register` is published under the
``erasekit.plugins`` entry point and registers the worlds' model specs, suites and the ``erasekit world`` command.
"""
