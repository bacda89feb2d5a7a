"""Models whose modality use is known by construction, the ground truth the metrics are checked against.

- ``calibration``: the calibration zoo, tiny fusion transformers trained on the synthetic shapes (adapter "zoo");
- ``spatial``: two tiny VLMs that keep or destroy where things are (adapter "zoo-spatial", the probing mission);
- ``planted``: scores in closed form, each sample's modality share known exactly (adapter "planted").
"""
