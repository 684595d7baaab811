"""The one trainer, its losses, presets and checkpoints."""
