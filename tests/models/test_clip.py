"""The pixel spec read from a CLIP processor (transformers or open_clip)."""

from types import SimpleNamespace

from erasekit.models.clip import pixel_spec


def test_pixel_spec_of_transformers_and_open_clip_processors(tiny_clip_dir):
    from torchvision import transforms
    from transformers import CLIPProcessor

    size, mean, _ = pixel_spec(CLIPProcessor.from_pretrained(tiny_clip_dir))
    assert size == 32 and len(mean) == 3
    preprocess = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.1] * 3, [0.2] * 3),
        ]
    )
    assert pixel_spec(SimpleNamespace(preprocess=preprocess)) == (224, [0.1] * 3, [0.2] * 3)
