"""Training code: losses, data, loops. Imports the inference package; the inference package never imports it."""
