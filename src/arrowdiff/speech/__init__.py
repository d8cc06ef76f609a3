"""Speech, beside the shared score network.

- Representation: ``mel`` (the one log-mel definition) and ``phones`` (the phone set, text to phones).
- Data: ``engines``, ``sentences``, ``speakers``, ``utterance``, ``build_data``, read back by ``dataset``.
- Vocoder: ``vocoder``, ``vocoder_loss``, ``discriminator``, ``vocoder_data``, ``train_vocoder``,
  ``vocoder_io``, with ``griffin_lim`` as the baseline.
- Judges: ``evaluate`` (Whisper WER, GE2E similarity).

The audio head and the voice model live in ``arrowdiff.network``; the sampling pipeline is
``arrowdiff.speech_core``.
"""
