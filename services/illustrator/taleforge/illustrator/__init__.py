"""Taleforge illustrator: renders requested images with ComfyUI into the NATS object store."""
