"""The MiniFaces recipe (:mod:`~erasekit_worlds.recipes.minifaces.recipe`): the attribute classifier, the world's CLIP
and the StyleGAN2, from one seed."""
