"""Training code: losses, data, loops.

It imports the inference package; the inference package never imports it.
"""
