"""The networks: hyper layers, the HyperFusion backbones and baselines,
MedFusionNet, their configuration and the devices they run on.

The lowest layer of the package: it knows nothing of records, files or
napari. ``config`` (:class:`ModelConfig`), ``hyper`` (layers whose weights a
hypernetwork generates), ``base`` (the encode/decode split every network
shares), ``networks`` (pre-activation 3D ResNet and brain-age nets, FiLM /
DAFT), ``medfusion`` (MedFusionNet), ``build`` (config -> network),
``devices`` (CPU / CUDA choice).
"""
