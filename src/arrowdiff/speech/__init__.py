"""Speech: log-mels, the phone set, and the multi-speaker synthetic speech data set."""
