"""The model: patient splits, datasets, the image and patch networks, training
(`train`, with its callbacks) and the second look, export to ONNX (fp32 and int8),
offline ImageNet weights, Grad-CAM and the model store (versions, cards, `current`).
Training needs the `train` extra (torch, fastai); `splits` and `modelstore` don't."""
