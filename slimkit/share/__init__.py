"""Weight sharing: k-means clustering with codebook storage, cross-layer parameter sharing."""
