"""Models: the backbone registry, pretrained weights, preprocessing and the transfer model.

:mod:`core.models.weights` is the only owner of the weights cache (downloaded, converted and
uploaded weight files). Keras is imported lazily, inside the functions that need it.
"""
