"""Images: the caption-image data set, the KL autoencoder (VAE) and image metrics."""
