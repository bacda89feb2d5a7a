"""Example fusionaudit adapter plugin: the team's in-house single-stream V2 model."""
from fusionaudit_example_plugin.adapter import InHouseV2Adapter, InHouseV2Model
from fusionaudit_example_plugin.model import InHouseV2, V2Config, build_model, load_checkpoint, save_checkpoint

__all__ = ["InHouseV2", "InHouseV2Adapter", "InHouseV2Model", "V2Config", "build_model", "load_checkpoint",
           "save_checkpoint"]
