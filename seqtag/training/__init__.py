"""The training system: :class:`~seqtag.training.module.SequenceTagger` (the LightningModule),
building its network, its optimizer and schedule, and validation/test steps.

Imports every lower package (data, models, metrics, checkpoint, runtime, prediction,
calibration); nothing imports it but integrations and the CLI.
"""
