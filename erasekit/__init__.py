"""erasekit: erase concepts from pretrained image generators and prove they are gone."""

__version__ = "0.1.0"
