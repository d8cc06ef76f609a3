"""The score network: shared backbone, per-modality heads, and the denoiser interface."""
