"""The worlds' training recipes: the seeded training that rebuilds every model of a world from scratch
(``erasekit world train``), imported only when a world is trained, never when one is loaded.

- :mod:`~erasekit_worlds.recipes.framework`: stages, reuse of an earlier world's stages, resumable work folders, the
  world folder written atomically with its manifest;
- :mod:`~erasekit_worlds.recipes.training`: devices, seeded generators, optimisers, schedules, EMA, augmentation,
  the shared optimisation loop;
- :mod:`~erasekit_worlds.recipes.classifier` and :mod:`~erasekit_worlds.recipes.clip`: the judge classifiers' and
  the CLIPs' training, shared by both worlds;
- :mod:`~erasekit_worlds.recipes.minicanvas` and :mod:`~erasekit_worlds.recipes.minifaces`: each world's stages
  (MiniCanvas's autoencoder and UNet, MiniFaces' StyleGAN2) and its ``recipe.py``.
"""
