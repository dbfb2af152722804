"""The MiniCanvas recipe (:mod:`~erasekit_worlds.recipes.minicanvas.recipe`): CLIP, autoencoder, UNet and the
style/object classifiers, from one seed."""
