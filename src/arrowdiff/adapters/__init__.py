"""Adapters that compose around a model without patching it: LoRA (:mod:`lora`) and the per-model router
(:mod:`router`). Importing this package has no side effects."""
