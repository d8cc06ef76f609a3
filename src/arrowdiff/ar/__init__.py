"""The autoregressive path (R12.1, R17): a LLaMA-architecture model (:mod:`llama`), the GGUF converter
(:mod:`gguf_convert`), the model-directory loader (:mod:`load`) and InferenceCore (:mod:`inference`).
Importing this package has no side effects."""
