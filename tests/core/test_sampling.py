"""Sampling: an image depends only on its (prompt, seed)."""

import torch


def test_generate_pairs_matches_the_grid_image_for_image(tiny_handle):
    from erasekit.sampling import generate_grid, generate_pairs

    grid = generate_grid(tiny_handle, ["a cat", "a dog"], [0, 1], steps=2, batch_size=4, progress=False)
    pairs = generate_pairs(tiny_handle, [("a dog", 1), ("a cat", 0)], steps=2, batch_size=2, progress=False)
    # an image depends only on its (prompt, seed), not on its neighbours in the batch
    torch.testing.assert_close(pairs, grid[[3, 0]], rtol=0, atol=1e-5)
