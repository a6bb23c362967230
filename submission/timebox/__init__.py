"""timebox: time-boxed image classification for contest judges."""

__version__ = "0.1.0"
